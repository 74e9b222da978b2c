"""Recurrent DNI at a larger scale: Copy at T = 3 with an LSTM of 256 units and 8-bit symbols.

The NTM Copy setting as far as it is recalled (NOT verified against the
paper's text): an LSTM of 256 units, symbols of 8 random bits plus a
delimiter channel, the curriculum on N. Truncated BPTT and DNI (linear
synthesizer of `(h, c)`, δ̂ bounded at 1.0 per example and state part, Adam
3e-3 for core and synthesizer: the `configs/copy_*_t3.cfg` settings) each
train for `--steps` sequences through the training job (`train.py`), in
`bench/results/runs/rnn_scale/`. The job checkpoints every 500 sequences and
resumes where it stopped, so the bench can be interrupted and started again
with the same command. The table reads each run's `metrics.jsonl`: the
largest N solved after so many sequences, i.e. where the curriculum climbs
and where it stalls.

Paper (Table 1, as recalled): Copy at T = 3, BPTT 8 and DNI 14 (ratio 1.75).

    python bench/rnn_scale.py --steps 50000                 # both methods, resumable
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
CONFIGS = {"bptt": "configs/copy_bptt_t3.cfg", "dni": "configs/copy_dni_t3.cfg"}
PAPER = {"bptt": 8, "dni": 14}
MARKS = (1000, 2500, 5000, 10000, 20000, 30000, 40000, 50000, 75000, 100000)


def model_dir(method, args):
    return RUNS / f"copy_{method}_t3_u{args.units}_b{args.bits}_seed{args.seed}"


def train(method, args):
    """Runs (or resumes) one job until `--steps` sequences; its exit status."""
    command = [sys.executable, "train.py", f"--flagfile={CONFIGS[method]}",
               f"--model_dir={model_dir(method, args)}", f"--units={args.units}",
               f"--bits={args.bits}", f"--train_steps={args.steps}", f"--seed={args.seed}",
               "--measure_every=1000", "--log_every=500", "--plots=false"]
    print(" ".join(command), flush=True)
    return subprocess.run(command, cwd=paths.REPO, check=False).returncode


def curve(method, args):
    """`[(sequences, largest N solved)]` from the run's metrics log (training rows)."""
    path = model_dir(method, args) / "metrics.jsonl"
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


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--steps", type=int, default=50000, help="sequences per run")
    parser.add_argument("--units", type=int, default=256)
    parser.add_argument("--bits", type=int, default=8)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--methods", nargs="+", default=["dni", "bptt"], choices=list(CONFIGS))
    parser.add_argument("--table", action="store_true", help="only write the table")
    args = parser.parse_args()
    if not args.table:
        for method in args.methods:
            if train(method, args):
                print(f"{method}: the job stopped early; rerun the same command to resume",
                      flush=True)
                break
    curves = {method: curve(method, args) for method in CONFIGS}
    rows = []
    for mark in (m for m in MARKS if m <= args.steps):
        row = {"sequences": mark, **{method: at(points, mark) for method, points in
                                     curves.items()}}
        if row["bptt"] and row["dni"] is not None:
            row["DNI / BPTT"] = row["dni"] / row["bptt"]
        if row["bptt"] is not None or row["dni"] is not None:
            rows.append(row)
    last = {method: points[-1] if points else None for method, points in curves.items()}
    notes = [f"Copy, T = 3, LSTM {args.units}, {args.bits}-bit symbols, batch 32, Adam 3e-3, "
             f"seed {args.seed}; largest N solved after so many training sequences (curriculum: "
             "N += 1 when the mean per-symbol error of the last 10 batches is below 0.15 bits); "
             f"DNI: linear synthesizer, δ̂ bounded at 1.0. Reached so far (sequences, N): {last}.",
             f"Paper (Table 1, as recalled, not verified): BPTT {PAPER['bptt']}, DNI "
             f"{PAPER['dni']} (ratio {PAPER['dni'] / PAPER['bptt']:.2f}); the NTM Copy setting "
             "(256 units, 8 bits) is also recalled, not verified.",
             "Resume: rerun the command; each job restarts from its last checkpoint."]
    tables.write_results(f"rnn_scale_u{args.units}_b{args.bits}",
                         "Recurrent DNI at scale: Copy, T = 3, largest N against sequences",
                         ["sequences", "bptt", "dni", "DNI / BPTT"], rows, notes,
                         curves={m: p for m, p in curves.items()})


if __name__ == "__main__":
    main()
