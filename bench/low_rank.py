"""Low-rank linear synthesizers against full rank: MNIST test error, 3-layer FCN.

Every cell is the FCN of `sg_keras.job.networks.fcn` (256 units, linear
synthesizers, DNI between every pair of layers) trained on the budget of
`bench/accuracy.py` (30 epochs of batch 256, Adam 1e-3 decayed x0.1 at 60 %
and 80 % of the steps, the same seeds), with the synthesizers' output layer
full rank or factored through `--ranks` units (`DenseSynthesizer(rank=r)`,
`--synth_rank` of train.py), each low-rank one trained on every k-th step
for each k of `--every` (`--synth_update_every`; 1: every step). Target: a
low-rank cDNI within 0.1 pp of full rank's test error. The step-time side is
in `bench/speed.py`.

Writes bench/results/low_rank.{json,md} (low_rank_k4.{json,md} with --every 4).

    python bench/low_rank.py                                      # reported budget
    python bench/low_rank.py --modes cdni --ranks 64 --every 4    # rank 64, trained every 4th step
    python bench/low_rank.py --seeds 0 --epochs 0.2 --ranks 8     # smoke check
"""

import argparse
import statistics

from benchlib import paths, tables, training

TARGET_GAP = 0.1   # pp of test error over full rank's, for cDNI


def synthesizer_macs(rank, units=256, context=0, every=1):
    """Multiply-adds per example and step of one linear synthesizer: its forward, and its
    weight gradients on one step in `every`."""
    inputs = units + context
    forward = inputs * units if rank is None else inputs * rank + rank * units
    return round(forward + forward / every)


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--modes", nargs="+", default=["cdni", "dni"], choices=["cdni", "dni"])
    parser.add_argument("--ranks", type=int, nargs="+", default=[16, 64])
    parser.add_argument("--every", type=int, nargs="+", default=[1],
                        help="train the low-rank synthesizers every k-th step, for each k")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--epochs", type=float, default=30.0)
    args = parser.parse_args()
    paths.require_mnist()
    budget = training.schedule(args.epochs)

    cells = [(None, 1)] + [(rank, every) for rank in args.ranks for every in args.every]
    errors, walls = {}, {}
    for mode in args.modes:
        for rank, every in cells:
            label = ("full" if rank is None else f"r{rank}") + (f"_k{every}" if every > 1 else "")
            errors[mode, rank, every], walls[mode, rank, every], _ = training.train_seeds(
                f"low_rank/fcn3_{mode}_{label}", args.seeds, mode=mode, num_layers=3,
                synth_rank=rank, synth_update_every=every, eval_every=budget["train_steps"],
                measure_every=0, **budget)

    rows = []
    for (mode, rank, every), cell in errors.items():
        full = statistics.mean(errors[mode, None, 1])
        gap = statistics.mean(cell) - full
        met = ""
        if mode == "cdni" and rank is not None:
            met = "yes" if gap <= TARGET_GAP else f"no: {gap - TARGET_GAP:+.2f} pp over"
        rows.append({"mode": mode, "synthesizer rank": "full (256)" if rank is None else rank,
                     "trained every k steps": every,
                     "synthesizer MACs/example": synthesizer_macs(
                         rank, context=10 if mode == "cdni" else 0, every=every),
                     "test error %": statistics.mean(cell),
                     "per seed %": ", ".join(f"{e:.2f}" for e in cell),
                     "vs full rank (pp)": None if rank is None else f"{gap:+.2f}",
                     "within 0.1 pp": met, "wall s": statistics.mean(walls[mode, rank, every]),
                     "per_seed_error": cell})
    notes = [f"Budget per cell: {args.epochs:g} epochs = {budget['train_steps']} steps of batch "
             f"{training.BATCH_SIZE}, Adam 1e-3 (network and synthesizers) x0.1 at steps "
             f"{', '.join(budget['lr_decay_steps'])}; SG target bootstrap; seeds {args.seeds}; "
             "error on the 10,000 MNIST test images (mean over seeds).",
             "Synthesizer MACs: per decoupled layer, example and step, forward plus weight "
             "gradients on the steps that train it (a 3-layer FCN has two decoupled layers)."]
    name = "low_rank" + "".join(f"_k{every}" for every in args.every if every > 1)
    tables.write_results(name, "Low-rank vs full-rank linear synthesizers, 3-layer MNIST FCN",
                         ["mode", "synthesizer rank", "trained every k steps",
                          "synthesizer MACs/example", "test error %", "per seed %",
                          "vs full rank (pp)", "within 0.1 pp", "wall s"],
                         rows, notes, budget=budget, seeds=args.seeds, every=args.every)


if __name__ == "__main__":
    main()
