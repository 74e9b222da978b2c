"""Low-rank linear synthesizers against full rank: MNIST test error, 3-layer FCN.

Every cell is the FCN of `sg_keras.job.networks.fcn` (256 units, linear
synthesizers, DNI between every pair of layers) trained on the budget of
`bench/accuracy.py` (30 epochs of batch 256, Adam 1e-3 decayed x0.1 at 60 %
and 80 % of the steps, the same seeds), with the synthesizers' output layer
full rank or factored through `--ranks` units (`DenseSynthesizer(rank=r)`,
`--synth_rank` of train.py). Target: a low-rank cDNI within 0.1 pp of full
rank's test error. The step-time side is in `bench/speed.py`.

Writes bench/results/low_rank.{json,md}.

    python bench/low_rank.py                                      # reported budget
    python bench/low_rank.py --seeds 0 --epochs 0.2 --ranks 8     # smoke check
"""

import argparse
import statistics

import common

TARGET_GAP = 0.1   # pp of test error over full rank's, for cDNI


def synthesizer_macs(rank, units=256, context=0):
    """Multiply-adds per example of one linear synthesizer: forward and weight gradients."""
    inputs = units + context
    return 2 * (inputs * units if rank is None else inputs * rank + rank * units)


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--modes", nargs="+", default=["cdni", "dni"], choices=["cdni", "dni"])
    parser.add_argument("--ranks", type=int, nargs="+", default=[16, 64])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--epochs", type=float, default=30.0)
    args = parser.parse_args()
    common.require_mnist()
    budget = common.schedule(args.epochs)

    errors, walls = {}, {}
    for mode in args.modes:
        for rank in [None] + args.ranks:
            label = "full" if rank is None else f"r{rank}"
            errors[mode, rank], walls[mode, rank], _ = common.train_seeds(
                f"low_rank/fcn3_{mode}_{label}", args.seeds, mode=mode, num_layers=3,
                synth_rank=rank, eval_every=budget["train_steps"], measure_every=0, **budget)

    rows = []
    for (mode, rank), cell in errors.items():
        full = statistics.mean(errors[mode, None])
        gap = statistics.mean(cell) - full
        met = ""
        if mode == "cdni" and rank is not None:
            met = "yes" if gap <= TARGET_GAP else f"no: {gap - TARGET_GAP:+.2f} pp over"
        rows.append({"mode": mode, "synthesizer rank": "full (256)" if rank is None else rank,
                     "synthesizer MACs/example": synthesizer_macs(
                         rank, context=10 if mode == "cdni" else 0),
                     "test error %": statistics.mean(cell),
                     "per seed %": ", ".join(f"{e:.2f}" for e in cell),
                     "vs full rank (pp)": None if rank is None else f"{gap:+.2f}",
                     "within 0.1 pp": met, "wall s": statistics.mean(walls[mode, rank]),
                     "per_seed_error": cell})
    notes = [f"Budget per cell: {args.epochs:g} epochs = {budget['train_steps']} steps of batch "
             f"{common.BATCH_SIZE}, Adam 1e-3 (network and synthesizers) x0.1 at steps "
             f"{', '.join(budget['lr_decay_steps'])}; SG target bootstrap; seeds {args.seeds}; "
             "error on the 10,000 MNIST test images (mean over seeds).",
             "Synthesizer MACs: per decoupled layer and example, forward plus weight gradients "
             "(a 3-layer FCN has two decoupled layers)."]
    common.write_results("low_rank", "Low-rank vs full-rank linear synthesizers, 3-layer MNIST FCN",
                         ["mode", "synthesizer rank", "synthesizer MACs/example", "test error %",
                          "per seed %", "vs full rank (pp)", "within 0.1 pp", "wall s"],
                         rows, notes, budget=budget, seeds=args.seeds)


if __name__ == "__main__":
    main()
