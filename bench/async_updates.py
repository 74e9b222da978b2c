"""Asynchronous updates (the paper's section 3.2): test error against update probability.

The paper's 4-layer MNIST FCN (`sg_keras.job.networks.fcn`, 256 units,
Dense → BatchNorm → ReLU, DNI between every pair of layers) where each
decoupled layer updates its weights only with probability p at each step
(`update_prob`, `--update_prob` of train.py; synthesizers train every step).
p ∈ {1, 0.5, 0.2, 0.1, 0.05}, DNI and cDNI, linear synthesizers, Adam 1e-3
decayed x0.1 at 60 % and 80 % of a fixed budget.

The paper (Jaderberg et al. 2016, section 3.2 and Fig. 4) reports DNI still
reaching about 2 % test error at p = 0.2, and cDNI still training at p = 0.05,
after its long schedule; this budget is far shorter, so compare the trend.

Writes bench/results/async_updates.{json,md,png}.

    python bench/async_updates.py                            # reported budget
    python bench/async_updates.py --epochs 0.1 --probs 1 0.5   # smoke check
"""

import argparse
import statistics

from matplotlib.figure import Figure

from benchlib import figures, tables, training


def figure_of(errors, probs, modes):
    figure = Figure(figsize=(6, 4), layout="constrained")
    axes = figure.subplots()
    for mode in modes:
        axes.plot(probs, [statistics.mean(errors[mode, p]) for p in probs], marker="o",
                  label=mode)
    axes.set(xscale="log", xlabel="update probability p", ylabel="test error %",
             title="4-layer MNIST FCN, asynchronous updates")
    axes.legend()
    return figure


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--modes", nargs="+", default=["dni", "cdni"], choices=["dni", "cdni"])
    parser.add_argument("--probs", type=float, nargs="+", default=[1.0, 0.5, 0.2, 0.1, 0.05])
    args, budget = training.parse_budget(parser, epochs=10.0)

    errors = {}
    for mode in args.modes:
        for prob in args.probs:
            errors[mode, prob], _, _ = training.train_seeds(
                f"async/fcn4_{mode}_p{prob:g}", args.seeds, mode=mode, num_layers=4,
                update_prob=prob, eval_every=budget["train_steps"], measure_every=0, **budget)
    rows = [{"mode": mode, "update probability": prob, "test error %": statistics.mean(cell),
             "per seed %": ", ".join(f"{e:.2f}" for e in cell), "per_seed_error": cell}
            for (mode, prob), cell in errors.items()]
    notes = [f"Budget per cell: {args.epochs:g} epochs = {budget['train_steps']} steps of batch "
             f"{training.BATCH_SIZE}, Adam 1e-3 x0.1 at steps {', '.join(budget['lr_decay_steps'])}; "
             f"linear synthesizers; seeds {args.seeds}.",
             "Paper (section 3.2): DNI about 2 % error at p = 0.2; cDNI still trains at p = 0.05."]
    tables.write_results("async_updates", "Test error against update probability, 4-layer FCN",
                         ["mode", "update probability", "test error %", "per seed %"], rows, notes,
                         budget=budget, seeds=args.seeds)
    figures.save_figure(figure_of(errors, args.probs, args.modes), "async_updates")


if __name__ == "__main__":
    main()
