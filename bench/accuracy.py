"""Final MNIST test error of FCNs with 3-6 layers: backprop vs DNI vs cDNI.

Every cell is the FCN of `sg_keras.job.networks.fcn` (256 units, linear
synthesizers, DNI between every pair of layers) trained for the same budget:
by default 30 epochs of batch 256, Adam 1e-3 decayed x0.1 at 60 % and 80 % of
the steps. Targets at 3 layers: cDNI's error within 0.3 percentage points of
backprop's, DNI's within 1.0.

From the same runs it draws
* test_error_vs_step.png: test error against step at 3 layers (mean over seeds);
* gradient_fidelity.png: per-layer cosine between synthetic and true gradient
  over training (`cosine/LAYER`, logged every --measure_every steps), DNI
  and cDNI, one row per depth (mean over seeds).

Writes bench/results/accuracy.{json,md} and the two PNGs.

    python bench/accuracy.py                                                  # reported budget
    python bench/accuracy.py --layers 3 --seeds 0 --epochs 0.5 --eval_every 20  # smoke check
"""

import argparse
import statistics

import numpy as np
from matplotlib.figure import Figure

from benchlib import figures, paths, tables, training
from sg_keras.job import plots
from sg_keras.options import MODES

TARGET_GAP = {"cdni": 0.3, "dni": 1.0}   # pp of test error over backprop's, at 3 layers


def mean_series(logs, key, split):
    """`(steps, mean over runs)` of a metric that every run logged at the same steps."""
    steps, _ = logs[0].series(key, split)
    return steps, np.mean([log.series(key, split)[1] for log in logs], axis=0)


def verdict(mode, layers, gap):
    if layers != 3 or mode not in TARGET_GAP:
        return ""
    if gap <= TARGET_GAP[mode]:
        return f"yes (<= {TARGET_GAP[mode]} pp)"
    return f"no: {gap - TARGET_GAP[mode]:.2f} pp over {TARGET_GAP[mode]} pp"


def fidelity_figure(logs, depths):
    figure = Figure(figsize=(10, 2.8 * len(depths)), layout="constrained")
    axes = figure.subplots(len(depths), 2, squeeze=False, sharey=True)
    for row, layers in enumerate(depths):
        for column, mode in enumerate(("dni", "cdni")):
            ax = axes[row, column]
            runs = logs[layers, mode]
            for key in runs[0].keys("cosine/"):
                ax.plot(*mean_series(runs, key, "train"), linewidth=0.8,
                        label=key.split("/", 1)[1])
            ax.axhline(0.0, color="grey", linewidth=0.5)
            ax.set(title=f"{mode}, {layers} layers", xlabel="step", ylabel="cosine",
                   ylim=(-0.2, 1.0))
            ax.legend(fontsize=7, ncol=2)
    figure.suptitle("cos(synthetic gradient, true gradient) per decoupled layer")
    return figure


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--layers", type=int, nargs="+", default=[3, 4, 5, 6])
    parser.add_argument("--modes", nargs="+", default=list(MODES), choices=MODES)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--epochs", type=float, default=30.0)
    parser.add_argument("--eval_every", type=int, default=117, help="steps between test evals")
    parser.add_argument("--measure_every", type=int, default=50,
                        help="steps between cosine measurements")
    args = parser.parse_args()
    paths.require_mnist()
    budget = training.schedule(args.epochs)

    errors, walls, logs = {}, {}, {}
    for layers in args.layers:
        for mode in args.modes:
            errors[layers, mode], walls[layers, mode], logs[layers, mode] = training.train_seeds(
                f"accuracy/fcn{layers}_{mode}", args.seeds, mode=mode, num_layers=layers,
                eval_every=args.eval_every, measure_every=args.measure_every, **budget)

    rows = []
    for (layers, mode), cell in errors.items():
        reference = errors.get((layers, "backprop"))
        gap = statistics.mean(cell) - statistics.mean(reference) if reference else None
        cosines = training.final_cosines(logs[layers, mode]) if mode != "backprop" else {}
        rows.append({"layers": layers, "mode": mode, "test error %": statistics.mean(cell),
                     "per seed %": ", ".join(f"{e:.2f}" for e in cell),
                     "vs backprop (pp)": None if mode == "backprop" or gap is None
                     else f"{gap:+.2f}",
                     "target met": verdict(mode, layers, gap) if gap is not None else "",
                     "final cosine per layer": ", ".join(f"{c:.2f}" for c in cosines.values()),
                     "wall s": statistics.mean(walls[layers, mode]),
                     "per_seed_error": cell, "final_cosine": cosines})
    notes = [f"Budget per cell: {args.epochs:g} epochs = {budget['train_steps']} steps of batch "
             f"{training.BATCH_SIZE}, Adam 1e-3 (network and synthesizers) x0.1 at steps "
             f"{', '.join(budget['lr_decay_steps'])}; linear synthesizers, SG target bootstrap; "
             f"seeds {args.seeds}; error on the 10,000 MNIST test images (mean over seeds).",
             "Targets at 3 layers: cDNI within 0.3 pp of backprop's error, DNI within 1.0 pp.",
             "Final cosine: mean cos(synthetic, true gradient) over the last "
             f"{training.TAIL:.0%} of the measurements (every {args.measure_every} steps), "
             "layers bottom to top."]
    tables.write_results(
        "accuracy", "MNIST FCN test error by depth: backprop vs DNI vs cDNI",
        ["layers", "mode", "test error %", "per seed %", "vs backprop (pp)", "target met",
         "final cosine per layer", "wall s"], rows, notes, budget=budget, seeds=args.seeds)

    curve_depth = 3 if 3 in args.layers else args.layers[0]
    curves = {}
    for mode in args.modes:
        steps, accuracy = mean_series(logs[curve_depth, mode], "accuracy", "eval")
        curves[mode] = (steps, 100 * (1 - accuracy))
    plots.save_png(plots.error_curves(curves, f"MNIST test error, {curve_depth}-layer FCN "
                                              f"(mean of {len(args.seeds)} seeds)"),
                   paths.RESULTS / "test_error_vs_step.png")
    if {"dni", "cdni"} <= set(args.modes):
        figures.save_figure(fidelity_figure(logs, args.layers), "gradient_fidelity")


if __name__ == "__main__":
    main()
