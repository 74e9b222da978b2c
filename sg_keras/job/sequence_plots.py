"""Figures of a sequence-task run: curriculum, bits per character, boundary cosines.

Each reads a run's `MetricsLog` and returns a matplotlib `Figure`
(`sg_keras.job.plots.to_png` / `save_png` render and write it).

Example:

>>> png = plots.to_png(curriculum_curve(metrics_log))       # doctest: +SKIP
"""

import numpy as np
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator

BOUNDARY = "cosine/boundary"   # the log key of boundary K is cosine/boundaryK


def curriculum_curve(log):
    """Curriculum level N and the largest N solved against the training step."""
    figure = Figure(figsize=(6, 4))
    axes = figure.add_subplot()
    for key, label in (("N", "N (current)"), ("solved", "largest N solved")):
        steps, values = log.series(key)
        axes.step(steps, values, where="post", label=label)
    axes.set(xlabel="step", ylabel="sequence length N", title="Curriculum progress")
    axes.legend()
    axes.grid(alpha=0.3)
    return figure


def bpc_curves(log):
    """Training and held-out bits per character against the training step."""
    figure = Figure(figsize=(6, 4))
    axes = figure.add_subplot()
    for split in ("train", "eval"):
        steps, values = log.series("bpc", split=split)
        if steps:
            axes.plot(steps, values, marker="o" if split == "eval" else None, label=split)
    axes.set(xlabel="step", ylabel="bits per character", title="Character-level LM")
    axes.legend()
    axes.grid(alpha=0.3)
    return figure


def _edges(centres):
    """Cell edges around sorted `centres` (midpoints; half a gap beyond each end)."""
    centres = np.asarray(centres, float)
    if len(centres) == 1:
        return np.array([centres[0] - 0.5, centres[0] + 0.5])
    middle = (centres[1:] + centres[:-1]) / 2
    return np.concatenate([[2 * centres[0] - middle[0]], middle, [2 * centres[-1] - middle[-1]]])


def boundary_cosines(log):
    """`(steps, boundaries, grid)`: the cosine at boundary `boundaries[i]` and step `steps[j]`
    is `grid[i, j]` (NaN where that step's sequences had no such boundary).

    >>> from sg_keras.job.metrics_log import MetricsLog
    >>> import os, tempfile
    >>> log = MetricsLog(os.path.join(tempfile.mkdtemp(), "m.jsonl"), resume_step=0)
    >>> log.append({"step": 10, "split": "train", "cosine/boundary1": 0.5})
    >>> log.append({"step": 20, "split": "train", "cosine/boundary1": 0.7,
    ...             "cosine/boundary2": 0.1})
    >>> boundary_cosines(log)
    ([10, 20], [1, 2], array([[0.5, 0.7],
           [nan, 0.1]]))
    """
    numbers = [int(key[len(BOUNDARY):]) for key in log.keys(BOUNDARY)]
    boundaries = list(range(1, max(numbers) + 1)) if numbers else []
    series = {n: log.series(f"{BOUNDARY}{n}") for n in numbers}
    steps = sorted({step for found, _ in series.values() for step in found})
    column = {step: index for index, step in enumerate(steps)}
    grid = np.full((len(boundaries), len(steps)), np.nan)
    for n, (found, values) in series.items():
        grid[n - 1, [column[step] for step in found]] = values
    return steps, boundaries, grid


def boundary_cosine_curves(log):
    """Cosine of the synthetic and the true future gradient at each chunk boundary.

    Top: a heat map over step × boundary (boundary 1 ends the first chunk of
    the sequence; blank where the sequences were too short to have it), which
    stays readable for any number of boundaries. Bottom: the mean over the
    boundaries against step.
    """
    steps, boundaries, grid = boundary_cosines(log)
    figure = Figure(figsize=(7, 6), layout="constrained")
    heat, mean = figure.subplots(2, 1, sharex=True, height_ratios=(2, 1))
    if steps:
        image = heat.pcolormesh(_edges(steps), _edges(boundaries), np.ma.masked_invalid(grid),
                                cmap="RdBu_r", vmin=-1.0, vmax=1.0)
        figure.colorbar(image, ax=heat, label="cosine")
    heat.yaxis.set_major_locator(MaxNLocator(integer=True))
    heat.set(title="cos(synthetic, true future gradient) at each chunk boundary",
             ylabel="boundary (1 = end of the first chunk)")
    mean.plot(*log.series("cosine/mean"), marker=".")
    mean.axhline(0.0, color="grey", linewidth=0.5)
    mean.set(xlabel="step", ylabel="mean over boundaries", ylim=(-1.0, 1.0))
    mean.grid(alpha=0.3)
    return figure
