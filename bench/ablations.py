"""Ablations of cDNI and DNI on the 3-layer MNIST FCN: synthesizer, SG target, update probability.

Each variant changes one setting of the baseline (linear synthesizer,
bootstrapped SG target, update probability 1):

* synthesizer hidden layers: 0 (baseline), 1, 2 (1024 units, Dense → BN → ReLU);
* SG target: bootstrap (baseline), true gradient (a full backward pass every
  step), periodic true-gradient regression every 10 steps (--true_gradient_every=10);
* update probability p: 1 (baseline), 0.5, 0.2.

Every cell gets the same reduced budget (default 10 epochs of batch 256, Adam
1e-3 x0.1 at 60 % and 80 % of the steps); a backprop row gives the reference.
Reports the final test error (mean over seeds), its change from the baseline
of the same mode, and the final synthetic/true gradient cosine per layer.

Writes bench/results/ablations.{json,md}.

    python bench/ablations.py                                    # reported budget
    python bench/ablations.py --epochs 0.2 --seeds 0 --modes cdni  # smoke check
"""

import argparse
import statistics

from benchlib import paths, tables, training

VARIANTS = {
    "baseline": {},
    "synthesizer 1x1024": {"synth_layers": 1},
    "synthesizer 2x1024": {"synth_layers": 2},
    "target: true gradient": {"sg_target": "true"},
    "target: true every 10 steps": {"true_gradient_every": 10},
    "update prob. 0.5": {"update_prob": 0.5},
    "update prob. 0.2": {"update_prob": 0.2},
}


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--modes", nargs="+", default=["cdni", "dni"], choices=["cdni", "dni"])
    parser.add_argument("--variants", nargs="+", default=list(VARIANTS), choices=list(VARIANTS))
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--epochs", type=float, default=10.0)
    parser.add_argument("--measure_every", type=int, default=50)
    args = parser.parse_args()
    paths.require_mnist()
    budget = training.schedule(args.epochs)

    def cell(name, **settings):
        errors, walls, logs = training.train_seeds(f"ablations/{name}", args.seeds, num_layers=3,
                                                 **budget, **settings)
        return {"test error %": statistics.mean(errors),
                "per seed %": ", ".join(f"{e:.2f}" for e in errors),
                "wall s": statistics.mean(walls), "per_seed_error": errors, "logs": logs}

    rows = [{"variant": "backprop (reference)", "mode": "backprop",
             **cell("backprop", mode="backprop", measure_every=0)}]
    for mode in args.modes:
        for variant in args.variants:
            name = f"{mode}_{variant.replace(' ', '_').replace(':', '').replace('.', '')}"
            row = {"variant": variant, "mode": mode,
                   **cell(name, mode=mode, measure_every=args.measure_every, **VARIANTS[variant])}
            cosines = training.final_cosines(row["logs"])
            row["final cosine per layer"] = ", ".join(f"{c:.2f}" for c in cosines.values())
            row["final_cosine"] = cosines
            rows.append(row)
    baselines = {row["mode"]: row["test error %"] for row in rows if row["variant"] == "baseline"}
    for row in rows:
        del row["logs"]
        if row["variant"] != "baseline" and row["mode"] in baselines:
            row["vs baseline (pp)"] = f"{row['test error %'] - baselines[row['mode']]:+.2f}"
    notes = [f"Budget per cell: {args.epochs:g} epochs = {budget['train_steps']} steps of batch "
             f"{training.BATCH_SIZE}, Adam 1e-3 x0.1 at steps {', '.join(budget['lr_decay_steps'])}; "
             f"3-layer FCN (256 units); seeds {args.seeds}; test error on the 10,000 MNIST test "
             "images (mean over seeds).",
             "Baseline: linear synthesizer, bootstrapped SG target, update probability 1; each "
             "variant changes one setting.",
             "Final cosine: mean cos(synthetic, true gradient) over the last "
             f"{training.TAIL:.0%} of the measurements, layers bottom to top; measured every "
             f"{args.measure_every} steps, and on every step that computes the true gradient "
             "anyway: every step for 'target: true gradient', every 10th step for 'target: "
             "true every 10 steps'."]
    tables.write_results(
        "ablations", "Ablations at 3 layers: synthesizer depth, SG target, update probability",
        ["variant", "mode", "test error %", "per seed %", "vs baseline (pp)",
         "final cosine per layer", "wall s"], rows, notes, budget=budget, seeds=args.seeds)


if __name__ == "__main__":
    main()
