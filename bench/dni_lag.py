"""Why does DNI lag backprop on MNIST? Each hypothesis as a training run that could refute it.

The 3-layer MNIST FCN (256 units, Dense → BatchNorm → ReLU, DNI between every
pair of layers), trained --epochs (10) with Adam 1e-3 decayed x0.1 at 60 %
and 80 %, one cell per hypothesis; each reports the test error and the mean
cosine between the synthetic and the true gradient at each decoupled layer
over the last 20 % of its measurements (every 50 steps).

Hypotheses and the cells that test them:

* capacity: the linear synthesizer cannot represent `∂L/∂h` → the paper's
  synthesizer (2 hidden layers of 1024, BatchNorm, ReLU; `--synth_layers=2`);
* BatchNorm in the synthesizer → the same without it;
* the synthesizer's learning rate (it follows a moving target too slowly or
  too noisily) → x0.1 and x10 for the linear one, x0.1 for the 2x1024 one.
  The SG loss weight is the same knob: Adam divides each gradient by its own
  running scale, so multiplying the synthesizer's loss by w leaves its
  updates unchanged (up to Adam's ε); only the learning rate moves them;
* the bootstrapped target (errors of the synthesizer above feed the one
  below) → regress on the true gradient (`--sg_target=true`);
* the synthesizer's inputs (the label is missing) → cDNI, linear.

Backprop on the same budget is the reference. `bench/linear_ceiling.py` asks
the same question offline (the best linear and 2x1024 predictors of the true
gradient from `h`, with and without the label).

Writes bench/results/dni_lag.{json,md}.

    python bench/dni_lag.py                                    # reported budget
    python bench/dni_lag.py --epochs 0.1 --cells backprop "DNI, linear"   # smoke check
"""

import argparse
import statistics

from benchlib import tables, training

PAPER = {"synth_layers": 2, "synth_units": 1024}
CELLS = {
    "backprop": ("reference", {"mode": "backprop"}),
    "DNI, linear": ("baseline", {"mode": "dni"}),
    "DNI, 2x1024 synthesizer": ("capacity", {"mode": "dni", **PAPER}),
    "DNI, 2x1024 synthesizer, no BatchNorm": ("BatchNorm in the synthesizer",
                                              {"mode": "dni", **PAPER,
                                               "synth_batch_norm": False}),
    "DNI, linear, synthesizer lr x0.1": ("synthesizer learning rate",
                                         {"mode": "dni", "sg_learning_rate": 1e-4}),
    "DNI, linear, synthesizer lr x10": ("synthesizer learning rate",
                                        {"mode": "dni", "sg_learning_rate": 1e-2}),
    "DNI, 2x1024 synthesizer, lr x0.1": ("synthesizer learning rate",
                                         {"mode": "dni", **PAPER, "sg_learning_rate": 1e-4}),
    "DNI, linear, true-gradient target": ("bootstrapped target",
                                          {"mode": "dni", "sg_target": "true"}),
    "cDNI, linear": ("synthesizer inputs (the label)", {"mode": "cdni"}),
}


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--cells", nargs="+", default=list(CELLS), choices=list(CELLS))
    args, budget = training.parse_budget(parser, epochs=10.0)

    rows = []
    for cell in args.cells:
        hypothesis, settings = CELLS[cell]
        measure = 0 if settings["mode"] == "backprop" else 50
        name = "dni_lag/" + "".join(c if c.isalnum() else "_" for c in cell.lower())
        errors, walls, logs = training.train_seeds(name, args.seeds, num_layers=3,
                                                 eval_every=budget["train_steps"],
                                                 measure_every=measure, **settings, **budget)
        cosines = training.final_cosines(logs) if measure else {}
        rows.append({"cell": cell, "hypothesis": hypothesis,
                     "test error %": statistics.mean(errors),
                     "per seed %": ", ".join(f"{e:.2f}" for e in errors),
                     "cosine (lower, upper layer)": ", ".join(
                         f"{value:.2f}" for value in cosines.values()) or "",
                     "wall s": statistics.mean(walls), "cosines": cosines,
                     "per_seed_error": errors})
        print(rows[-1], flush=True)
    notes = [f"3-layer FCN, budget per cell {args.epochs:g} epochs = {budget['train_steps']} "
             f"steps of batch {training.BATCH_SIZE}, Adam 1e-3 (network and, unless stated, "
             f"synthesizers) x0.1 at steps {', '.join(budget['lr_decay_steps'])}; seeds "
             f"{args.seeds}; cosine: synthetic vs true gradient, mean over the last 20 % of the "
             "measurements (every 50 steps), per decoupled layer from the bottom."]
    tables.write_results("dni_lag", "Why DNI lags: one run per hypothesis",
                         ["cell", "hypothesis", "test error %", "per seed %",
                          "cosine (lower, upper layer)", "wall s"], rows, notes,
                         budget=budget, seeds=args.seeds)


if __name__ == "__main__":
    main()
