"""TensorBoard summaries of a run: `MODEL_DIR/train` and `MODEL_DIR/eval`.

A failed write (a full disk, no permission) raises `WriteError` naming the
directory.

Tags: `loss`, `accuracy`, `sg_loss/LAYER`, `cosine/LAYER`, `learning_rate/network`,
`learning_rate/synthesizer`, `steps_per_sec` (train); `loss`, `accuracy`
(eval); histograms `synthetic_gradient/LAYER` and `true_gradient/LAYER`; and
the plots as images under `plots/NAME`.

Example:

>>> summaries = Summaries("runs/mnist")                     # doctest: +SKIP
>>> summaries.scalars("train", step, {"loss": 0.3})          # doctest: +SKIP
"""

import contextlib
import os

import tensorflow as tf

from sg_keras.job.files import WriteError, reason


class Summaries:
    """One `tf.summary` writer per split under the model directory."""

    def __init__(self, model_dir):
        self._directory = model_dir
        with self._writing(""):
            self._writers = {split: tf.summary.create_file_writer(os.path.join(model_dir, split))
                             for split in ("train", "eval")}

    @contextlib.contextmanager
    def _writing(self, split, step=None):
        """Writes into `split` (at `step`); a failed write becomes `WriteError`."""
        try:
            if step is None:
                yield
            else:
                with self._writers[split].as_default(step=step):
                    yield
        except (OSError, tf.errors.OpError) as error:
            raise WriteError(os.path.join(self._directory, split), reason(error)) from error

    def scalars(self, split, step, values):
        with self._writing(split, step):
            for name, value in values.items():
                tf.summary.scalar(name, float(value))

    def gradient_histograms(self, step, report):
        """Histograms of synthetic and true gradients from `DNITrainer.inspect`."""
        with self._writing("train", step):
            for layer, parts in report.items():
                tf.summary.histogram(f"synthetic_gradient/{layer}", parts["synthetic"])
                tf.summary.histogram(f"true_gradient/{layer}", parts["true"])

    def image(self, step, name, png):
        with self._writing("train", step):
            tf.summary.image(f"plots/{name}", tf.image.decode_png(png, channels=4)[None])

    def flush(self):
        for split, writer in self._writers.items():
            with self._writing(split):
                writer.flush()

    def close(self):
        for split, writer in self._writers.items():
            with self._writing(split):
                writer.close()
