"""A matplotlib figure saved as `bench/results/NAME.png`."""

from benchlib import paths


def save_figure(figure, name):
    """Saves a matplotlib `Figure` as `bench/results/NAME.png` (atomically)."""
    from sg_keras.job import plots

    path = paths.RESULTS / f"{name}.png"
    plots.save_png(plots.to_png(figure), path)
    print(f"written: {path}", flush=True)
