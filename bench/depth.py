"""Unconditional DNI against depth: what makes the 6-layer FCN fall behind the 3-layer one.

`bench/accuracy.py` measures DNI (linear synthesizers, bootstrapped target)
at 3.95 % test error with 3 layers and 10.72 % with 6 after 30 epochs; the
paper reports 1.9 % and 4.3 % after 500k steps (+2.4 pp). Here each variant
changes one suspect at 3 and 6 layers on the same budget:

* the bootstrapped target (errors compound up the chain): `target: true`
  regresses every synthesizer on the true gradient (a control, not
  unlocked: it needs the full backward pass every step), `true every k`
  does so on every k-th step only (a periodic anchor; its cost is one
  backward pass per k steps);
* the synthesizer's generalisation: one hidden layer of 1024 units (with
  and without its own BatchNorm), its learning rate;
* the budget: the network's learning rate (`lr 3e-4`, `lr 1e-4`, the
  synthesizers following it), besides 10 against 30 epochs.

Every finished run is appended to `bench/results/depth_runs.jsonl`; a rerun
skips the runs already there, so the bench can be run in parts and resumed.
Settings are picked on seeds 0-1 (table `depth_select`) and reported on
seeds 2-4 (table `depth`); each table has one row per variant and budget.

    python bench/depth.py --seeds 0 1 --epochs 10 \\
        --variants "true every 10" "true every 5" "true every 2" baseline
    python bench/depth.py --seeds 0 1 --variants baseline "true every 100" \\
        "true every 50" "true every 20" "true every 10" "sg lr 3e-3" "sg lr 3e-4"
    python bench/depth.py --seeds 0 1 --variants "lr 3e-4" "lr 1e-4"
    python bench/depth.py --seeds 2 3 4 --variants "true every 20" baseline   # held out
    python bench/depth.py --table                                      # rewrite the tables only
"""

import argparse
import json
import statistics
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from benchlib import paths, tables, training  # noqa: E402

RUNS_FILE = paths.RESULTS / "depth_runs.jsonl"
VARIANTS = {
    "baseline": {},
    "target: true (control)": {"sg_target": "true"},
    "true every 2": {"true_gradient_every": 2},
    "true every 5": {"true_gradient_every": 5},
    "true every 10": {"true_gradient_every": 10},
    "true every 20": {"true_gradient_every": 20},
    "true every 50": {"true_gradient_every": 50},
    "true every 100": {"true_gradient_every": 100},
    "synth 1x1024": {"synth_layers": 1},
    "synth 1x1024, no BN": {"synth_layers": 1, "synth_batch_norm": False},
    "sg lr 1e-4": {"sg_learning_rate": 1e-4},
    "sg lr 3e-4": {"sg_learning_rate": 3e-4},
    "sg lr 3e-3": {"sg_learning_rate": 3e-3},
    "lr 3e-4": {"learning_rate": 3e-4},
    "lr 1e-4": {"learning_rate": 1e-4},
}
PAPER = {3: 1.9, 4: 2.2, 5: 3.4, 6: 4.3}   # Jaderberg et al., DNI FCN on MNIST, as recalled


def _done():
    if not RUNS_FILE.is_file():
        return []
    return [json.loads(line) for line in RUNS_FILE.read_text().splitlines() if line.strip()]


def run(variant, layers, seed, epochs):
    """One training run; its record (test error, wall time, final cosines)."""
    budget = training.schedule(epochs)
    name = f"depth/fcn{layers}_{variant.replace(' ', '_').replace(':', '')}_e{epochs:g}"
    errors, walls, logs = training.train_seeds(
        name, [seed], mode="dni", num_layers=layers, eval_every=budget["train_steps"],
        measure_every=100, **VARIANTS[variant], **budget)
    return {"variant": variant, "layers": layers, "seed": seed, "epochs": epochs,
            "test error %": errors[0], "wall s": walls[0],
            "final cosine": list(training.final_cosines(logs).values())}


def table(records):
    """One row per (variant, epochs) budget: mean test error at 3 and 6 layers and the gap."""
    rows = []
    for epochs in sorted({r["epochs"] for r in records}):
        for variant in VARIANTS:
            row = {"variant": variant, "epochs": epochs}
            for layers in (3, 6):
                cell = sorted((r for r in records if (r["variant"], r["layers"], r["epochs"])
                               == (variant, layers, epochs)), key=lambda r: r["seed"])
                if not cell:
                    continue
                row[f"{layers} layers %"] = statistics.mean(r["test error %"] for r in cell)
                row[f"{layers}: per seed"] = ", ".join(f"{r['seed']}: {r['test error %']:.2f}"
                                                       for r in cell)
                row[f"{layers}: wall s"] = statistics.mean(r["wall s"] for r in cell)
                row[f"{layers}: cosines"] = ", ".join(f"{c:.2f}"
                                                      for c in cell[-1]["final cosine"])
            if "3 layers %" in row and "6 layers %" in row:
                row["6 − 3 (pp)"] = row["6 layers %"] - row["3 layers %"]
            if len(row) > 2:
                rows.append(row)
    return rows


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--variants", nargs="+", default=list(VARIANTS), choices=list(VARIANTS))
    parser.add_argument("--layers", type=int, nargs="+", default=[6, 3])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1])
    parser.add_argument("--epochs", type=float, default=30.0)
    parser.add_argument("--table", action="store_true", help="only rewrite the tables")
    args = parser.parse_args()
    paths.require_mnist()
    if not args.table:
        for seed in args.seeds:
            for variant in args.variants:
                for layers in args.layers:
                    key = (variant, layers, seed, args.epochs)
                    if any((r["variant"], r["layers"], r["seed"], r["epochs"]) == key
                           for r in _done()):
                        continue
                    record = run(variant, layers, seed, args.epochs)
                    with open(RUNS_FILE, "a") as file:
                        file.write(json.dumps(record) + "\n")
    records = _done()
    for seeds, suffix in (([0, 1], "_select"), ([2, 3, 4], "")):
        chosen = [r for r in records if r["seed"] in seeds]
        if not chosen:
            continue
        columns = ["variant", "epochs", "3 layers %", "6 layers %", "6 − 3 (pp)", "3: per seed",
                   "6: per seed", "6: cosines", "6: wall s"]
        notes = [f"Unconditional DNI, MNIST FCN (256 units), batch {training.BATCH_SIZE}, "
                 "Adam 1e-3 x0.1 at 60 % and 80 % of the budget, linear synthesizers, "
                 f"unless the variant says otherwise; seeds {sorted({r['seed'] for r in chosen})} "
                 f"({'selection' if suffix else 'held out: settings picked on seeds 0-1'}).",
                 "true every k: the synthesizers regress on the true gradient every k-th step "
                 "(one full backward pass per k steps: an anchor, not a fully unlocked run); "
                 "target: true regresses on it every step (a control).",
                 f"Paper (Jaderberg et al., as recalled, 500k steps): {PAPER[3]} % at 3 layers, "
                 f"{PAPER[6]} % at 6 (+{PAPER[6] - PAPER[3]:.1f} pp).",
                 "6: cosines: final cos(synthetic, true gradient) per layer, bottom to top (last "
                 "seed)."]
        tables.write_results("depth" + suffix, "Unconditional DNI against depth", columns,
                             table(chosen), notes, runs=chosen)


if __name__ == "__main__":
    main()
