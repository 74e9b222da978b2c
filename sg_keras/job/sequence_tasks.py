"""Sequence-task data: Copy and Repeat Copy batches, their curriculum, and char-LM text streams.

Copy (after Graves et al. 2014's NTM tasks, which the DNI paper follows): the
network reads `N` random binary vectors of `bits` bits, then a delimiter step,
then must reproduce the `N` vectors, one per step, while its input is blank.
Repeat Copy: it reads `N` vectors and a delimiter carrying a repeat count `R`
(drawn uniformly from 1..`max_repeats`, given as `R / max_repeats`), then must
output the pattern `R` times followed by an end marker (an extra output bit).
Only the output phase is scored: a step's loss is the sigmoid cross-entropy in
bits summed over its output bits (`sg_keras.recurrent.per_step_sigmoid_bits`).

The curriculum raises `N` by one whenever the per-symbol error (bits per
scored step), averaged over the last `window` training batches, falls below
`threshold`; the figure of merit is the largest `N` solved.

Character-level language modelling reads a text (TFDS `tiny_shakespeare`, or
any local text file) as `batch` parallel streams; a batch is the next `length`
characters of every stream, the state carries over from batch to batch, and
the loss is bits per character.

Example:

>>> x, y, w = copy_batch(np.random.default_rng(0), batch=2, length=3, bits=4)
>>> x.shape, y.shape, w.shape, w[0].tolist()
((2, 7, 6), (2, 7, 4), (2, 7), [0.0, 0.0, 0.0, 0.0, 1.0, 1.0, 1.0])
"""

import collections
import dataclasses
from pathlib import Path

import numpy as np

from sg_keras.validation import ArgumentError, int_at_least

COPY_TASKS = ("copy", "repeat_copy")   # the tasks of `task_batch`


def copy_batch(rng, batch, length, bits):
    """A Copy batch: inputs `(B, 2N+1, bits+2)`, targets `(B, 2N+1, bits)`, weights `(B, 2N+1)`."""
    steps = 2 * length + 1
    pattern = rng.integers(0, 2, size=(batch, length, bits)).astype("float32")
    x = np.zeros((batch, steps, bits + 2), "float32")
    x[:, :length, :bits] = pattern
    x[:, length, bits] = 1.0                     # delimiter
    y = np.zeros((batch, steps, bits), "float32")
    y[:, length + 1:] = pattern
    w = np.zeros((batch, steps), "float32")
    w[:, length + 1:] = 1.0
    return x, y, w


def repeat_copy_batch(rng, batch, length, bits, max_repeats):
    """A Repeat Copy batch: `N` vectors, a delimiter with `R/max_repeats`, then `R` copies + end."""
    repeats = rng.integers(1, max_repeats + 1, size=batch)
    steps = length + 1 + max_repeats * length + 1
    pattern = rng.integers(0, 2, size=(batch, length, bits)).astype("float32")
    x = np.zeros((batch, steps, bits + 2), "float32")
    x[:, :length, :bits] = pattern
    x[:, length, bits] = 1.0
    x[:, length, bits + 1] = repeats / max_repeats
    y = np.zeros((batch, steps, bits + 1), "float32")
    w = np.zeros((batch, steps), "float32")
    for i, r in enumerate(repeats):
        out = slice(length + 1, length + 1 + r * length)
        y[i, out, :bits] = np.tile(pattern[i], (r, 1))
        y[i, length + 1 + r * length, bits] = 1.0   # end marker
        w[i, length + 1:length + 2 + r * length] = 1.0
    return x, y, w


def task_batch(task, rng, batch, length, bits, max_repeats=2):
    """`copy_batch` or `repeat_copy_batch` by name."""
    if task == "copy":
        return copy_batch(rng, batch, length, bits)
    if task == "repeat_copy":
        return repeat_copy_batch(rng, batch, length, bits, max_repeats)
    raise ArgumentError("task", f"must be one of {COPY_TASKS}, got {task!r}")


def output_features(task, bits):
    """Output bits per step of a task (Repeat Copy adds the end marker)."""
    return bits + (task == "repeat_copy")


def per_symbol_error(loss, weights):
    """Bits per scored step: the batch's summed loss per example over its mean scored steps."""
    return float(loss) / float(np.mean(np.sum(weights, axis=1)))


@dataclasses.dataclass
class Curriculum:
    """Raises the sequence length `level` when the recent per-symbol error is below `threshold`.

    >>> c = Curriculum(level=1, threshold=0.15, window=2)
    >>> [c.update(e) for e in (0.5, 0.1, 0.1, 0.1)], c.level, c.solved
    ([False, False, True, False], 2, 1)
    """

    level: int = 1
    threshold: float = 0.15
    window: int = 10
    recent: list = dataclasses.field(default_factory=list)

    def update(self, error):
        """Records one batch's error; returns True when the level went up."""
        self.recent = (self.recent + [float(error)])[-self.window:]
        if len(self.recent) == self.window and np.mean(self.recent) < self.threshold:
            self.level += 1
            self.recent = []
            return True
        return False

    @property
    def solved(self):
        """The largest sequence length solved so far (0: none)."""
        return self.level - 1

    def state(self):
        return {"level": self.level, "recent": list(self.recent)}

    def restore(self, state):
        self.level, self.recent = int(state["level"]), [float(e) for e in state["recent"]]


# ------------------------------------------------------------------ character LM

Text = collections.namedtuple("Text", ["ids", "vocabulary"])


def encode(text):
    """Character ids of `text` over its sorted set of characters."""
    if not text:
        raise ArgumentError("text_path", "the text is empty")
    vocabulary = sorted(set(text))
    index = {c: i for i, c in enumerate(vocabulary)}
    return Text(np.array([index[c] for c in text], "int32"), "".join(vocabulary))


def load_text(text_path=None, data_dir=None):
    """The training text: a local UTF-8 file, or TFDS `tiny_shakespeare`'s train split."""
    if text_path:
        path = Path(text_path)
        if not path.is_file():
            raise ArgumentError("text_path", f"no such file: {text_path}")
        return encode(path.read_text(encoding="utf-8", errors="replace"))
    import tensorflow_datasets as tfds

    from sg_keras.job.data import _download_reachable
    if data_dir is None and not _download_reachable():
        raise ArgumentError("text_path", "tiny_shakespeare is not downloadable here (offline): "
                            "pass --text_path=FILE")
    dataset = tfds.load("tiny_shakespeare", split="train", data_dir=data_dir,
                        download=data_dir is None)
    text = "".join(example["text"].numpy().decode("utf-8") for example in dataset)
    return encode(text)


def stream_batches(ids, batch, length, start=0):
    """`(inputs, targets)` id arrays `(batch, length)` of `batch` parallel streams, forever.

    Batch `k` holds characters `[k·length, (k+1)·length)` of every stream (and the
    next character as target), wrapping round; `start` skips the first batches
    (resume).
    """
    batch = int_at_least(batch, 1, "batch_size")
    span = (len(ids) - 1) // batch
    if span < length:
        raise ArgumentError("text_path", f"the text ({len(ids)} characters) is too short for "
                            f"{batch} streams of {length} characters")
    per_stream = span // length
    streams = np.stack([ids[i * span:i * span + span + 1] for i in range(batch)])
    k = start
    while True:
        j = (k % per_stream) * length
        yield streams[:, j:j + length], streams[:, j + 1:j + length + 1]
        k += 1


def one_hot(ids, depth):
    return np.eye(depth, dtype="float32")[ids]
