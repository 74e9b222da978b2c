"""Figures of a run, drawn with matplotlib's object API (no pyplot, no display).

Every plotting function draws one figure and returns it as PNG bytes
(rendered by `to_png`, which takes any matplotlib `Figure`); `save_png` writes
them atomically, so a run killed mid-write leaves the previous plot.

Example:

>>> png = loss_curves(metrics_log)                  # doctest: +SKIP
>>> save_png(png, "runs/mnist/loss.png")            # doctest: +SKIP
"""

import io
import os

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure


def to_png(figure):
    """A matplotlib `Figure` rendered as PNG bytes (100 dpi, tight bounding box)."""
    FigureCanvasAgg(figure)
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=100, bbox_inches="tight")
    return buffer.getvalue()


def save_png(png, path):
    """Writes PNG bytes to `path` atomically."""
    temporary = f"{path}.tmp"
    with open(temporary, "wb") as handle:
        handle.write(png)
    os.replace(temporary, path)


def _layer_name(key):
    return key.split("/", 1)[1]


def loss_curves(log):
    """Task loss (train and test) and each layer's synthesizer loss against step."""
    figure = Figure(figsize=(11, 4), layout="constrained")
    task, synth = figure.subplots(1, 2)
    for split, style in (("train", "-"), ("eval", "o-")):
        steps, values = log.series("loss", split)
        if steps:
            task.plot(steps, values, style, label="test" if split == "eval" else split)
    task.set(title="Task loss", xlabel="step", ylabel="cross-entropy", yscale="log")
    task.legend()
    for key in log.keys("sg_loss/"):
        synth.plot(*log.series(key), label=_layer_name(key))
    synth.set(title="Synthesizer loss  mean‖ĝ − target‖²", xlabel="step", yscale="log")
    if log.keys("sg_loss/"):
        synth.legend()
    else:
        synth.text(0.5, 0.5, "no decoupled layers (backprop)", ha="center",
                   transform=synth.transAxes)
    return to_png(figure)


def cosine_curves(log):
    """Cosine similarity between synthetic and true gradient, per layer, against step."""
    figure = Figure(figsize=(6, 4))
    axes = figure.subplots()
    for key in log.keys("cosine/"):
        axes.plot(*log.series(key), marker=".", label=_layer_name(key))
    axes.axhline(0.0, color="grey", linewidth=0.5)
    axes.set(title="cos(synthetic, true gradient)", xlabel="step", ylabel="cosine",
             ylim=(-0.2, 1.0))
    if log.keys("cosine/"):
        axes.legend()
    return to_png(figure)


def gradient_heatmaps(report, examples=32, units=64):
    """True and synthetic gradients of one batch side by side, one row per layer.

    Args:
        report: `DNITrainer.inspect(x, y)`.
        examples, units: how many rows (examples) and columns (units) to show.
    """
    rows = max(1, len(report))
    figure = Figure(figsize=(9, 2.8 * rows), layout="constrained")
    axes = np.atleast_2d(figure.subplots(rows, 2, squeeze=False))
    for row, (name, parts) in enumerate(sorted(report.items())):
        true = parts["true"].reshape(len(parts["true"]), -1)[:examples, :units]
        synthetic = parts["synthetic"].reshape(len(parts["synthetic"]), -1)[:examples, :units]
        scale = float(np.abs(true).max()) or 1.0
        for column, (title, values) in enumerate((("true ∂L/∂h", true), ("synthetic ĝ", synthetic))):
            image = axes[row, column].imshow(values, cmap="RdBu_r", vmin=-scale, vmax=scale,
                                             aspect="auto", interpolation="nearest")
            axes[row, column].set(title=f"{name}: {title}", xlabel="unit", ylabel="example")
        figure.colorbar(image, ax=list(axes[row]))
    return to_png(figure)


def prediction_grid(images, labels, predictions, columns=8):
    """Test digits with their predicted labels (red where wrong)."""
    count = len(images)
    rows = -(-count // columns)
    figure = Figure(figsize=(1.4 * columns, 1.6 * rows))
    axes = figure.subplots(rows, columns, squeeze=False)
    for index, ax in enumerate(axes.flat):
        ax.axis("off")
        if index < count:
            ax.imshow(np.squeeze(images[index]), cmap="gray_r")
            right = predictions[index] == labels[index]
            ax.set_title(f"{predictions[index]} ({labels[index]})",
                         color="black" if right else "red", fontsize=10)
    figure.suptitle("prediction (label)")
    return to_png(figure)


def error_curves(curves, title="Test error"):
    """Test error % against step for several runs: `{label: (steps, errors)}`."""
    figure = Figure(figsize=(7, 4.5))
    axes = figure.subplots()
    for label, (steps, errors) in curves.items():
        axes.plot(steps, errors, marker=".", label=label)
    axes.set(title=title, xlabel="step", ylabel="test error %", yscale="log")
    axes.legend()
    return to_png(figure)
