"""Recurrent DNI against truncated BPTT on the Copy task, with an LSTM cell.

    python examples/recurrent_copy.py          # tiny: 40 batches at N = 4 (seconds)
    python examples/recurrent_copy.py --full   # 1,500 batches at N = 6

Copy: read `N` random binary vectors and a delimiter, then write them back. With truncation
`T` smaller than the sequence, truncated BPTT cannot carry the gradient of the answer back
to the reading steps; recurrent DNI adds a synthetic gradient of the future losses at every
chunk boundary, so the reading steps learn. The training job runs the full task with its
curriculum (`train.py --flagfile=configs/copy_dni_t3.cfg`).
"""

import argparse

import keras
import numpy as np

import sg_keras
from sg_keras.recurrent import per_step_sigmoid_bits

BITS = 4


def copy_batch(rng, batch, n):
    """`(x, y, weights)` of a Copy batch: `n` vectors, a delimiter, `n` answers."""
    length = 2 * n + 1
    pattern = rng.integers(0, 2, (batch, n, BITS)).astype("float32")
    x = np.zeros((batch, length, BITS + 1), "float32")
    y = np.zeros((batch, length, BITS), "float32")
    x[:, :n, :BITS], x[:, n, BITS] = pattern, 1.0   # the pattern, then the delimiter
    y[:, n + 1:] = pattern
    weights = np.zeros((batch, length), "float32")
    weights[:, n + 1:] = 1.0                         # only the answer is scored
    return x, y, weights


def train(method, batches, n, truncation, seed=0):
    keras.utils.set_random_seed(seed)
    core = sg_keras.RecurrentDNI(
        keras.layers.LSTMCell(64), keras.layers.Dense(BITS), truncation=truncation,
        loss=per_step_sigmoid_bits, optimizer=keras.optimizers.Adam(3e-3),
        synthesizer="linear" if method == "dni" else None,   # None: truncated BPTT
        sg_clip_norm=1.0 if method == "dni" else None)
    rng = np.random.default_rng(seed)
    for _ in range(batches):
        logs = core.train_sequence(*copy_batch(rng, 32, n))
    bits_per_symbol = float(logs["loss"]) / (n * BITS)
    print(f"{method}: loss of the last batch {bits_per_symbol:.3f} bits per answer bit")
    return bits_per_symbol


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--full", action="store_true", help="1,500 batches at N = 6")
    parser.add_argument("--truncation", type=int, default=3)
    args = parser.parse_args(argv)
    batches, n = (1500, 6) if args.full else (40, 4)
    return {method: train(method, batches, n, args.truncation) for method in ("bptt", "dni")}


if __name__ == "__main__":
    main()
