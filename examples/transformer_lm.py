"""A causal Transformer character language model with every block decoupled (DNI or cDNI).

    python examples/transformer_lm.py               # tiny: 2 blocks, d = 32, 30 steps
    python examples/transformer_lm.py --full        # 4 blocks, d = 128, 2,000 steps
    python examples/transformer_lm.py --mode=dni    # backprop | dni | cdni (default)

The text is TensorFlow's `THIRD_PARTY_NOTICES.txt` (it ships with every installation) or
`--text_path`; the last 10 % is held out. Each block's output is `(batch, time, d)`, so
`DecoupledLayer` gives it the default per-position synthesizer; the labels are the next
characters, `(batch, time)`, and in cDNI each position's synthesizer sees its own
next-character target as context.
"""

import argparse
import math
import pathlib

import keras
import numpy as np
import tensorflow as tf

import sg_keras


class Block(keras.layers.Layer):
    """A pre-norm Transformer block: causal self-attention and an MLP, both residual."""

    def __init__(self, width, heads, **kwargs):
        super().__init__(**kwargs)
        self.width, self.heads = width, heads
        self.norm1, self.norm2 = keras.layers.LayerNormalization(), keras.layers.LayerNormalization()
        self.attention = keras.layers.MultiHeadAttention(heads, width // heads)
        self.mlp = keras.Sequential([keras.layers.Dense(4 * width, activation="gelu"),
                                     keras.layers.Dense(width)])

    def call(self, x):
        h = self.norm1(x)
        x = x + self.attention(h, h, use_causal_mask=True)
        return x + self.mlp(self.norm2(x))

    def get_config(self):
        return {**super().get_config(), "width": self.width, "heads": self.heads}


class Embed(keras.layers.Layer):
    """Token plus learned position embeddings."""

    def __init__(self, vocab, context, width, **kwargs):
        super().__init__(**kwargs)
        self.vocab, self.context, self.width = vocab, context, width
        self.tokens = keras.layers.Embedding(vocab, width)
        self.positions = keras.layers.Embedding(context, width)

    def call(self, codes):
        return self.tokens(codes) + self.positions(keras.ops.arange(self.context))

    def get_config(self):
        return {**super().get_config(), "vocab": self.vocab, "context": self.context,
                "width": self.width}


def build(vocab, context, width, blocks):
    tokens = keras.Input((context,), dtype="int32")
    x = Embed(vocab, context, width)(tokens)
    for index in range(blocks):
        x = Block(width, heads=4, name=f"block{index + 1}")(x)
    logits = keras.layers.Dense(vocab)(keras.layers.LayerNormalization()(x))
    return keras.Model(tokens, logits)


def windows(codes, context, batch, rng):
    starts = rng.integers(0, len(codes) - context - 1, batch)
    x = np.stack([codes[s:s + context] for s in starts])
    return x, np.stack([codes[s + 1:s + context + 1] for s in starts])


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--full", action="store_true", help="4 blocks, d = 128, 2,000 steps")
    parser.add_argument("--mode", choices=["backprop", "dni", "cdni"], default="cdni")
    parser.add_argument("--text_path", type=pathlib.Path,
                        default=pathlib.Path(tf.__file__).parent / "THIRD_PARTY_NOTICES.txt")
    args = parser.parse_args(argv)
    context, width, blocks, steps = (128, 128, 4, 2000) if args.full else (32, 32, 2, 30)
    keras.utils.set_random_seed(0)
    text = args.text_path.read_text(encoding="utf-8", errors="replace")
    vocabulary = sorted(set(text))
    lookup = {character: code for code, character in enumerate(vocabulary)}
    codes = np.array([lookup[character] for character in text], "int32")
    split = int(0.9 * len(codes))
    base = build(len(vocabulary), context, width, blocks)
    model = sg_keras.decouple(base, [f"block{i + 1}" for i in range(blocks)],
                              context_dim=len(vocabulary) if args.mode == "cdni" else None)
    model.compile(optimizer=keras.optimizers.Adam(1e-3), mode=args.mode,
                  loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    rng = np.random.default_rng(0)
    batches = [windows(codes[:split], context, 32, rng) for _ in range(steps)]
    x = np.concatenate([b[0] for b in batches])
    y = np.concatenate([b[1] for b in batches])
    history = model.fit(x, y, batch_size=32, epochs=1, verbose=2 if args.full else 0)
    x_test, y_test = windows(codes[split:], context, 256, np.random.default_rng(1))
    loss = model.evaluate(x_test, y_test, batch_size=32, verbose=0, return_dict=True)["loss"]
    print(f"{args.mode}: train loss {history.history['loss'][-1]:.3f}, "
          f"held-out {loss / math.log(2):.3f} bits per character")
    return loss / math.log(2)


if __name__ == "__main__":
    main()
