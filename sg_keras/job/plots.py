"""Figures of an image-classifier run, and PNG rendering and saving for every figure.

Drawn with matplotlib's object API (no pyplot, no display).

The run's figures (`loss_curves`, `cosine_curves`, `gradient_heatmaps`,
`prediction_grid`) are returned as matplotlib `Figure`s, so what they show can
be checked; `to_png` renders any `Figure` as PNG bytes (`error_curves`, for
the benchmarks, returns those bytes directly) and `save_png` writes them
atomically, so a run killed mid-write leaves the previous plot.

Example:

>>> png = to_png(loss_curves(metrics_log, decay_steps=[3000, 4000]))   # doctest: +SKIP
>>> save_png(png, "runs/mnist/loss.png")                                # doctest: +SKIP
"""

import io

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from sg_keras.job.files import write_atomically


def to_png(figure):
    """A matplotlib `Figure` rendered as PNG bytes (100 dpi, tight bounding box)."""
    FigureCanvasAgg(figure)
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=100, bbox_inches="tight")
    return buffer.getvalue()


def save_png(png, path):
    """Writes PNG bytes to `path` atomically (`WriteError` when it cannot)."""
    write_atomically(path, png)


def _layer_name(key):
    return key.split("/", 1)[1]


def _bottom_up(names, layers):
    """`names` in the order of `layers` (bottom first) when given, else sorted."""
    order = {name: index for index, name in enumerate(layers or ())}
    return sorted(names, key=lambda name: (order.get(name, len(order)), name))


def _position(index, count):
    """"lowest" / "highest" labels for the ends of a bottom-up list of layers."""
    if count < 2:
        return ""
    return {0: " (lowest)", count - 1: " (highest)"}.get(index, "")


def loss_curves(log, decay_steps=()):
    """Task loss (train and test) and each layer's synthesizer loss against step.

    Args:
        log: the run's `MetricsLog`.
        decay_steps: steps where the learning rates were decayed, marked by
            dashed lines in both panels.
    """
    figure = Figure(figsize=(11, 4), layout="constrained")
    task, synth = figure.subplots(1, 2)
    for split, style in (("train", "-"), ("eval", "o-")):
        steps, values = log.series("loss", split)
        if steps:
            task.plot(steps, values, style, label="test" if split == "eval" else split)
    task.set(title="Task loss", xlabel="step", ylabel="cross-entropy", yscale="log")
    for key in log.keys("sg_loss/"):
        synth.plot(*log.series(key), label=_layer_name(key))
    synth.set(title="Synthesizer loss", xlabel="step", ylabel="mean ‖ĝ − target‖²",
              yscale="log")
    if not log.keys("sg_loss/"):
        synth.text(0.5, 0.5, "no decoupled layers (backprop)", ha="center",
                   transform=synth.transAxes)
    for axes in (task, synth):
        for index, step in enumerate(decay_steps):
            axes.axvline(step, color="grey", linestyle="--", linewidth=0.8,
                         label="learning rate ÷ decay" if index == 0 else None)
        if axes.get_legend_handles_labels()[0]:
            axes.legend()
    return figure


def cosine_curves(log, layers=None):
    """Cosine similarity between synthetic and true gradient, per layer, against step.

    Args:
        log: the run's `MetricsLog`.
        layers: the decoupled layers' names from the input upwards, to order
            the legend and name the lowest and highest layer (default: sorted).
    """
    figure = Figure(figsize=(6, 4))
    axes = figure.subplots()
    names = _bottom_up([_layer_name(key) for key in log.keys("cosine/")], layers)
    for index, name in enumerate(names):
        axes.plot(*log.series(f"cosine/{name}"), marker=".",
                  label=name + _position(index, len(names)))
    axes.axhline(0.0, color="grey", linewidth=0.5)
    axes.set(title="cos(synthetic, true gradient)", xlabel="step", ylabel="cosine",
             ylim=(-0.2, 1.0))
    if names:
        axes.legend(title="layer (lowest = nearest the input)", fontsize="small")
    return figure


def gradient_heatmaps(report, step=None, layers=None, examples=32, units=64):
    """True and synthetic gradients of one batch side by side, one row per layer.

    Args:
        report: `DNITrainer.inspect(x, y)`.
        step: the training step the gradients were taken at (in the title).
        layers: the decoupled layers' names from the input upwards (row order).
        examples, units: how many rows (the first examples of the batch) and
            columns (the first units of each layer) to show.
    """
    names = _bottom_up(report, layers)
    rows = max(1, len(names))
    figure = Figure(figsize=(9, 2.8 * rows + 0.4), layout="constrained")
    axes = np.atleast_2d(figure.subplots(rows, 2, squeeze=False))
    shown = None
    for row, name in enumerate(names):
        parts = report[name]
        true = parts["true"].reshape(len(parts["true"]), -1)[:examples, :units]
        synthetic = parts["synthetic"].reshape(len(parts["synthetic"]), -1)[:examples, :units]
        shown = true.shape
        scale = float(np.abs(true).max()) or 1.0
        for column, (title, values) in enumerate((("true ∂L/∂h", true), ("synthetic ĝ", synthetic))):
            image = axes[row, column].imshow(values, cmap="RdBu_r", vmin=-scale, vmax=scale,
                                             aspect="auto", interpolation="nearest")
            axes[row, column].set(title=f"{name}{_position(row, len(names))}: {title}",
                                  xlabel="unit", ylabel="test example")
        figure.colorbar(image, ax=list(axes[row]))
    if shown:
        at = f" at step {step}" if step is not None else ""
        figure.suptitle(f"Gradients of the loss{at}: first {shown[0]} test examples × first "
                        f"{shown[1]} units of each layer")
    return figure


def prediction_grid(images, labels, predictions, count=32, columns=8):
    """The first `count` misclassified test images, each with its prediction and true label.

    Args:
        images: all test images, `(N, H, W[, C])`.
        labels: their true labels, `(N,)`.
        predictions: the predicted labels, `(N,)`.
    """
    wrong = np.flatnonzero(np.asarray(predictions) != np.asarray(labels))
    shown = wrong[:count]
    rows = max(1, -(-len(shown) // columns))
    figure = Figure(figsize=(1.4 * columns, 1.6 * rows + 0.6))
    axes = figure.subplots(rows, columns, squeeze=False)
    for ax in axes.flat:
        ax.axis("off")
    for ax, index in zip(axes.flat, shown):
        ax.imshow(np.squeeze(images[index]), cmap="gray_r")
        ax.set_title(f"{predictions[index]} (true {labels[index]})", color="red", fontsize=9)
    percent = 100 * len(wrong) / max(1, len(labels))
    figure.suptitle(f"Misclassified: {len(wrong)} of {len(labels)} test images ({percent:.2f} %)"
                    + (f"; the first {len(shown)}, as prediction (true label)" if len(shown)
                       else "; none"))
    return figure


def error_curves(curves, title="Test error"):
    """Test error % against step for several runs: `{label: (steps, errors)}`."""
    figure = Figure(figsize=(7, 4.5))
    axes = figure.subplots()
    for label, (steps, errors) in curves.items():
        axes.plot(steps, errors, marker=".", label=label)
    axes.set(title=title, xlabel="step", ylabel="test error %", yscale="log")
    axes.legend()
    return to_png(figure)
