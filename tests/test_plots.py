"""Plots: each figure shows what it says (decays, layer order, which examples), as PNG."""

import numpy as np
import tensorflow as tf

from sg_keras.job import plots
from sg_keras.job.metrics_log import MetricsLog


def decode(png):
    image = tf.image.decode_png(png)
    assert image.shape[0] > 100 and image.shape[1] > 100
    return image


def metrics(tmp_path):
    log = MetricsLog(tmp_path / "m.jsonl", 0)
    for step in (100, 200, 300):
        log.append({"step": step, "split": "train", "loss": 1.0 / step, "sg_loss/dni1": 0.1 * step,
                    "sg_loss/dni2": 0.2, "cosine/dni1": 0.2, "cosine/dni2": 0.5,
                    "cosine/dni10": 0.1})
        log.append({"step": step, "split": "eval", "loss": 1.5 / step})
    return log


def test_loss_curves_mark_the_learning_rate_decays_and_label_both_axes(tmp_path):
    figure = plots.loss_curves(metrics(tmp_path), decay_steps=[150, 250])
    task, synth = figure.axes
    for axes in (task, synth):
        decays = [line.get_xdata()[0] for line in axes.get_lines() if line.get_linestyle() == "--"]
        assert decays == [150, 250]
        assert "learning rate" in " ".join(t.get_text() for t in axes.get_legend().get_texts())
    assert task.get_ylabel() == "cross-entropy" and "ĝ" in synth.get_ylabel()
    decode(plots.to_png(figure))


def test_cosine_legend_runs_from_the_lowest_layer_up(tmp_path):
    figure = plots.cosine_curves(metrics(tmp_path), layers=["dni1", "dni2", "dni10"])
    labels = [t.get_text() for t in figure.axes[0].get_legend().get_texts()]
    assert labels == ["dni1 (lowest)", "dni2", "dni10 (highest)"]
    assert [line.get_ydata()[0] for line in figure.axes[0].get_lines()[:3]] == [0.2, 0.5, 0.1]


def test_gradient_heatmaps_say_which_examples_units_and_step(tmp_path):
    rng = np.random.default_rng(0)
    report = {name: {"true": rng.normal(size=(40, 70)), "synthetic": rng.normal(size=(40, 70))}
              for name in ("dni2", "dni1")}
    figure = plots.gradient_heatmaps(report, step=1200, layers=["dni1", "dni2"])
    assert figure._suptitle.get_text() == ("Gradients of the loss at step 1200: first 32 test "
                                           "examples × first 64 units of each layer")
    titles = [axes.get_title() for axes in figure.axes if axes.get_title()]
    assert titles[:2] == ["dni1 (lowest): true ∂L/∂h", "dni1 (lowest): synthetic ĝ"]
    shown = figure.axes[0].get_images()[0].get_array()
    np.testing.assert_array_equal(shown, report["dni1"]["true"][:32, :64])


def test_prediction_grid_shows_the_misclassified_with_their_true_labels():
    labels = np.arange(50) % 10
    predictions = labels.copy()
    wrong = [3, 17, 41]
    predictions[wrong] = (labels[wrong] + 1) % 10
    images = np.random.default_rng(0).integers(0, 255, (50, 28, 28)).astype(np.uint8)
    figure = plots.prediction_grid(images, labels, predictions, count=2)
    assert figure._suptitle.get_text().startswith("Misclassified: 3 of 50 test images (6.00 %)")
    shown = [(axes.get_title(), axes.get_images()[0].get_array()) for axes in figure.axes
             if axes.get_images()]
    assert [title for title, _ in shown] == ["4 (true 3)", "8 (true 7)"]
    np.testing.assert_array_equal(shown[1][1], images[17])
    none = plots.prediction_grid(images, labels, labels)
    assert none._suptitle.get_text() == "Misclassified: 0 of 50 test images (0.00 %); none"
    decode(plots.to_png(none))


def test_error_curves_render(tmp_path):
    decode(plots.error_curves({"dni": ([1, 2], [5.0, 3.0])}))


def test_save_png_replaces_atomically(tmp_path):
    path = tmp_path / "x.png"
    plots.save_png(b"first", path)
    plots.save_png(b"second", path)
    assert path.read_bytes() == b"second"
    assert [p.name for p in tmp_path.iterdir()] == ["x.png"]


def test_boundary_cosines_of_twenty_boundaries_as_a_heat_map_in_numeric_order(tmp_path):
    from sg_keras.job import sequence_plots
    log = MetricsLog(tmp_path / "m.jsonl", 0)
    for step in (100, 200, 300):
        cosines = {f"cosine/boundary{k}": k / 100 + step / 1000 for k in range(1, 21)}
        log.append({"step": step, "split": "train", **cosines,
                    "cosine/mean": float(np.mean(list(cosines.values())))})
    steps, boundaries, grid = sequence_plots.boundary_cosines(log)
    assert steps == [100, 200, 300] and boundaries == list(range(1, 21))
    np.testing.assert_allclose(grid[9], [0.2, 0.3, 0.4])   # boundary10, not boundary2's row
    figure = sequence_plots.boundary_cosine_curves(log)
    heat, mean, _ = figure.axes                              # the heat map, the mean, colour bar
    np.testing.assert_allclose(heat.collections[0].get_array().reshape(20, 3), grid)
    assert heat.get_legend() is None and "layer" not in heat.get_ylabel()
    np.testing.assert_allclose(mean.get_lines()[0].get_ydata(), grid.mean(axis=0))
    decode(plots.to_png(figure))
