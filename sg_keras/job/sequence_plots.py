"""Figures of a sequence-task run: curriculum progress and bits per character.

Both read a run's `MetricsLog` and return a matplotlib `Figure`
(`sg_keras.job.plots.to_png` / `save_png` render and write it).

Example:

>>> png = plots.to_png(curriculum_curve(metrics_log))       # doctest: +SKIP
"""

from matplotlib.figure import Figure


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
