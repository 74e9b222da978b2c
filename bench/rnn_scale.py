"""Recurrent DNI at a larger scale: Copy at T = 3 with an LSTM of 256 units and 8-bit symbols.

The NTM Copy setting as far as it is recalled (NOT verified against the
paper's text): an LSTM of 256 units, symbols of 8 random bits plus a
delimiter channel, the curriculum on N. Truncated BPTT and DNI (linear
synthesizer of `(h, c)`, δ̂ bounded at 1.0 per example and state part, Adam
3e-3 for core and synthesizer: the `configs/copy_*_t3.cfg` settings) each
train for `--steps` batches of 32 sequences through the training job
(`train.py`), in `bench/results/runs/rnn_scale/`; so does DNI + Aux (the same,
with the auxiliary loss at weight 0.1). The job checkpoints every 500 batches
and resumes where it stopped, so the bench can be interrupted and started again
with the same command. The table reads each run's `metrics.jsonl`: the
largest N solved after so many batches, i.e. where the curriculum climbs
and where it stalls.

Paper (Table 1, as recalled): Copy at T = 3, BPTT 8, DNI 14 (ratio 1.75), DNI + Aux 17.

    python bench/rnn_scale.py --steps 50000                 # every method, seed 0, resumable
    python bench/rnn_scale.py --steps 50000 --seeds 2       # another seed
    python bench/rnn_scale.py --steps 50000 --table         # the table of what has run
"""

import argparse
import json
import subprocess
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from benchlib import paths, tables  # noqa: E402

RUNS = paths.RUNS / "rnn_scale"
CONFIGS = {"bptt": "configs/copy_bptt_t3.cfg", "dni": "configs/copy_dni_t3.cfg",
           "dni_aux": "configs/copy_dni_aux_t3.cfg"}
PAPER = {"bptt": 8, "dni": 14, "dni_aux": 17}
BATCH = 32   # --batch_size of the configs/copy_*_t3.cfg flagfiles
MARKS = (1000, 2500, 5000, 10000, 20000, 30000, 40000, 50000, 75000, 100000)


def model_dir(method, seed, args):
    return RUNS / f"copy_{method}_t3_u{args.units}_b{args.bits}_seed{seed}"


def train(method, seed, args):
    """Runs (or resumes) one job until `--steps` batches; its exit status."""
    command = [sys.executable, "train.py", f"--flagfile={CONFIGS[method]}",
               f"--model_dir={model_dir(method, seed, args)}", f"--units={args.units}",
               f"--bits={args.bits}", f"--train_steps={args.steps}", f"--seed={seed}",
               "--measure_every=1000", "--log_every=500", "--plots=false"]
    print(" ".join(command), flush=True)
    return subprocess.run(command, cwd=paths.REPO, check=False).returncode


def curve(method, seed, args):
    """`[(batches, largest N solved)]` from the run's metrics log (training rows)."""
    path = model_dir(method, seed, args) / "metrics.jsonl"
    if not path.is_file():
        return []
    points = {}
    for line in path.read_text().splitlines():
        row = json.loads(line) if line.strip() else {}
        if "solved" in row and "step" in row:
            points[int(row["step"])] = int(row["solved"])
    return sorted(points.items())


def at(points, step):
    reached = [solved for s, solved in points if s <= step]
    return reached[-1] if reached and points[-1][0] >= step else None


def _joined(values):
    return "/".join("-" if v is None else f"{v:g}" for v in values)


def rows_of(curves, seeds, steps):
    """One row per mark: each method's N per seed and the per-seed ratios to BPTT."""
    rows = []
    for mark in (m for m in MARKS if m <= steps):
        solved = {method: [at(curves[method, seed], mark) for seed in seeds]
                  for method in CONFIGS}
        if all(v is None for values in solved.values() for v in values):
            continue
        row = {"batches": mark, "sequences": BATCH * mark,
               **{method: _joined(values) for method, values in solved.items()}}
        for method, ratio in (("dni", "DNI / BPTT"), ("dni_aux", "Aux / BPTT")):
            row[ratio] = _joined(round(n / b, 2) if n is not None and b else None
                                 for n, b in zip(solved[method], solved["bptt"]))
        rows.append(row)
    return rows


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--steps", type=int, default=50000,
                        help=f"training batches (of {BATCH} sequences) per run")
    parser.add_argument("--units", type=int, default=256)
    parser.add_argument("--bits", type=int, default=8)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0])
    parser.add_argument("--methods", nargs="+", default=list(CONFIGS), choices=list(CONFIGS))
    parser.add_argument("--table", action="store_true", help="only write the table")
    args = parser.parse_args()
    if not args.table:
        for seed in args.seeds:
            for method in args.methods:
                if train(method, seed, args):
                    sys.exit(f"{method}, seed {seed}: the job stopped early; rerun the same "
                             "command to resume")
    seeds = sorted({int(path.name.rsplit("seed", 1)[1]) for path in
                    RUNS.glob(f"copy_*_t3_u{args.units}_b{args.bits}_seed*")} | set(args.seeds))
    curves = {(method, seed): curve(method, seed, args) for method in CONFIGS for seed in seeds}
    last = {f"{method}, seed {seed}": points[-1] for (method, seed), points in curves.items()
            if points}
    notes = [f"Copy, T = 3, LSTM {args.units}, {args.bits}-bit symbols, batch {BATCH}, Adam 3e-3; "
             f"seeds {', '.join(map(str, seeds))} joined by '/' ('-': not run that far); largest "
             f"N solved after so many training batches of {BATCH} sequences (curriculum: N += 1 "
             "when the mean per-symbol error of the last 10 batches is below 0.15 bits); DNI: "
             "linear synthesizer, δ̂ bounded at 1.0; DNI + Aux: the same, auxiliary loss weight "
             "0.1. "
             f"Reached so far (batches, N): {last}.",
             f"Paper (Table 1, as recalled, not verified): BPTT {PAPER['bptt']}, DNI "
             f"{PAPER['dni']} (ratio {PAPER['dni'] / PAPER['bptt']:.2f}), DNI + Aux "
             f"{PAPER['dni_aux']}; the NTM Copy setting (256 units, 8 bits) is also recalled, "
             "not verified.",
             "Resume: rerun the command; each job restarts from its last checkpoint."]
    tables.write_results(f"rnn_scale_u{args.units}_b{args.bits}",
                         "Recurrent DNI at scale: Copy, T = 3, largest N against training batches",
                         ["batches", "sequences", *CONFIGS, "DNI / BPTT", "Aux / BPTT"],
                         rows_of(curves, seeds, args.steps), notes,
                         curves={f"{m}, seed {s}": p for (m, s), p in curves.items()})


if __name__ == "__main__":
    main()
