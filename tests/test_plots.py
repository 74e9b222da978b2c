"""Plots: every figure renders to a valid PNG, written atomically."""

import numpy as np
import tensorflow as tf

from sg_keras.job import plots
from sg_keras.job.history import MetricsLog


def decode(png):
    image = tf.image.decode_png(png)
    assert image.shape[0] > 100 and image.shape[1] > 100
    return image


def test_all_figures_render(tmp_path):
    log = MetricsLog(tmp_path / "m.jsonl", 0)
    for step in (1, 2, 3):
        log.append({"step": step, "split": "train", "loss": 1.0 / step, "sg_loss/dni1": 0.1 * step,
                    "cosine/dni1": 0.2 * step})
        log.append({"step": step, "split": "eval", "loss": 1.5 / step})
    report = {"dni1": {"true": np.random.randn(8, 5), "synthetic": np.random.randn(8, 5)}}
    images = np.random.randint(0, 255, (10, 28, 28)).astype(np.uint8)
    for png in (plots.loss_curves(log), plots.cosine_curves(log), plots.gradient_heatmaps(report),
                plots.prediction_grid(images, np.arange(10), np.arange(10)[::-1]),
                plots.error_curves({"dni": ([1, 2], [5.0, 3.0])})):
        decode(png)


def test_save_png_replaces_atomically(tmp_path):
    path = tmp_path / "x.png"
    plots.save_png(b"first", path)
    plots.save_png(b"second", path)
    assert path.read_bytes() == b"second"
    assert [p.name for p in tmp_path.iterdir()] == ["x.png"]
