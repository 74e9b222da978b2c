"""TensorBoard summaries of a run: `MODEL_DIR/train` and `MODEL_DIR/eval`.

Tags: `loss`, `accuracy`, `sg_loss/LAYER`, `cosine/LAYER`, `learning_rate/network`,
`learning_rate/synthesizer`, `steps_per_sec` (train); `loss`, `accuracy`
(eval); histograms `synthetic_gradient/LAYER` and `true_gradient/LAYER`; and
the plots as images under `plots/NAME`.

Example:

>>> summaries = Summaries("runs/mnist")                     # doctest: +SKIP
>>> summaries.scalars("train", step, {"loss": 0.3})          # doctest: +SKIP
"""

import os

import tensorflow as tf


class Summaries:
    """One `tf.summary` writer per split under the model directory."""

    def __init__(self, model_dir):
        self._writers = {split: tf.summary.create_file_writer(os.path.join(model_dir, split))
                         for split in ("train", "eval")}

    def scalars(self, split, step, values):
        with self._writers[split].as_default(step=step):
            for name, value in values.items():
                tf.summary.scalar(name, float(value))

    def gradient_histograms(self, step, report):
        """Histograms of synthetic and true gradients from `DNITrainer.inspect`."""
        with self._writers["train"].as_default(step=step):
            for layer, parts in report.items():
                tf.summary.histogram(f"synthetic_gradient/{layer}", parts["synthetic"])
                tf.summary.histogram(f"true_gradient/{layer}", parts["true"])

    def image(self, step, name, png):
        with self._writers["train"].as_default(step=step):
            tf.summary.image(f"plots/{name}", tf.image.decode_png(png, channels=4)[None])

    def flush(self):
        for writer in self._writers.values():
            writer.flush()

    def close(self):
        for writer in self._writers.values():
            writer.close()
