"""Soak test: does a long `train.py` run keep its memory and its checkpoints bounded?

Runs `python train.py` as a child process: the 3-layer cDNI FCN on real MNIST
for 100,000 steps with a checkpoint every 500 steps (--keep_checkpoints left
at its default, 3), a test evaluation (with plots) every 4,000 steps and the
cosine measurement every 100. Warm-up (--warmup), which the "start" sample
follows, runs by default to 1,000 steps past the first evaluation, so
one-time costs (tracing the evaluation, the first plots) are not counted as
drift. At each of the child's progress lines ("step N/100000 ...") it reads
the child's resident memory (VmRSS from /proc/PID/status) and appends it to
`bench/results/runs/soak/soak_samples.jsonl`. Reports the RSS after warm-up,
at 25 %, 50 %, 75 % and the end, the drift between them, the slope of a line
fitted after warm-up and over the last half (does it level off?), and the
number of checkpoints on disk at the end.

Resumable: stopped with Ctrl-C or SIGTERM, it stops the child (which saves a
checkpoint), writes a partial report and exits; `--resume` continues the same
run (the child resumes from its checkpoint, the samples file is kept; each
restart starts a new process, whose RSS is reported as its own segment).

Writes bench/results/soak.{json,md} and soak_rss.png.

    nice -n 15 python bench/soak.py                             # reported budget
    nice -n 15 python bench/soak.py --resume                    # continue a stopped soak
    python bench/soak.py --steps 1500 --eval_every 300 --warmup 600 --checkpoint_every 200  # smoke
"""

import argparse
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time

import numpy as np
from matplotlib.figure import Figure

from benchlib import figures, paths, tables, timing

PROGRESS = re.compile(r"^step\s+(\d+)/(\d+)")
RESUMED = re.compile(r"^resuming from .* \(step (\d+)\)")
FLAT = 0.05   # "flat": RSS at the end within 5 % of the RSS after warm-up
MODEL_DIR = paths.RUNS / "soak"
SAMPLES = MODEL_DIR / "soak_samples.jsonl"


def _parse_args():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--steps", type=int, default=100000)
    parser.add_argument("--checkpoint_every", type=int, default=500)
    parser.add_argument("--eval_every", type=int, default=4000)
    parser.add_argument("--warmup", type=int,
                        help="steps before the 'start' RSS sample (default: eval_every + 1000)")
    parser.add_argument("--resume", action="store_true",
                        help="continue the soak in bench/results/runs/soak instead of starting over")
    args = parser.parse_args()
    if args.warmup is None:
        args.warmup = args.eval_every + 1000
    if not args.warmup < args.steps:
        parser.error(f"--warmup={args.warmup} must be below --steps={args.steps} "
                     "(by default --warmup is --eval_every + 1000)")
    if args.resume and not SAMPLES.is_file():
        parser.error(f"--resume: no soak to resume ({SAMPLES} not found)")
    return args


def _load_samples():
    """`[{"step", "rss_mb", "segment", "wall_s"}]` recorded so far."""
    with open(SAMPLES, encoding="utf-8") as handle:
        return [json.loads(line) for line in handle if line.strip()]


def _run_child(child, samples, segment):
    """Runs train.py, appending one sample per progress line; returns (exit status, tail)."""
    tail, started = [], time.perf_counter()
    process = subprocess.Popen(child, cwd=paths.REPO, stdout=subprocess.PIPE,
                               stderr=subprocess.STDOUT, text=True, bufsize=1)
    previous = signal.signal(signal.SIGTERM, lambda *_: process.send_signal(signal.SIGTERM))
    try:
        with open(SAMPLES, "a", encoding="utf-8") as record:
            for line in process.stdout:
                resumed, match = RESUMED.match(line), PROGRESS.match(line)
                if resumed:   # the child went back to its checkpoint: drop later samples
                    samples[:] = [s for s in samples if s["step"] <= int(resumed.group(1))]
                    SAMPLES.write_text("".join(json.dumps(s) + "\n" for s in samples))
                if match:
                    sample = {"step": int(match.group(1)),
                              "rss_mb": timing.status_mb("VmRSS", process.pid),
                              "segment": segment, "wall_s": time.perf_counter() - started}
                    samples.append(sample)
                    record.write(json.dumps(sample) + "\n")
                    record.flush()
                if not match or int(match.group(1)) % 5000 == 0:
                    print(line, end="", flush=True)
                tail = (tail + [line])[-20:]
    except KeyboardInterrupt:
        process.send_signal(signal.SIGINT)
    finally:
        process.wait()
        signal.signal(signal.SIGTERM, previous)
    return process.returncode, tail


def _report(args, samples, child, complete):
    steps = np.array([s["step"] for s in samples])
    rss = np.array([s["rss_mb"] for s in samples])
    segments = np.array([s["segment"] for s in samples])
    last = segments == segments[-1]   # one process: RSS across restarts is not comparable
    after = last & (steps >= args.warmup)
    if not after.any():
        after = last
    picked = [("start (after warm-up)", int(np.flatnonzero(after)[0]))]
    for fraction in (0.25, 0.5, 0.75):
        target = fraction * args.steps
        if steps[after][-1] >= target > steps[after][0]:
            picked.append((f"{fraction:.0%} of the run",
                           int(np.flatnonzero(after)[np.argmin(abs(steps[after] - target))])))
    picked.append(("end" if complete else "latest", len(steps) - 1))
    rows = [{"point": point, "step": int(steps[i]), "RSS MB": float(rss[i])} for point, i in picked]
    rows.append({"point": "max after warm-up", "step": int(steps[after][np.argmax(rss[after])]),
                 "RSS MB": float(rss[after].max())})
    start, end = rss[after][0], rss[-1]
    drift = end - start
    slope = np.polyfit(steps[after], rss[after], 1)[0] * 10000 if after.sum() > 1 else 0.0
    second = after & (steps >= (steps[after][0] + steps[-1]) / 2)
    late = np.polyfit(steps[second], rss[second], 1)[0] * 10000 if second.sum() > 1 else 0.0
    checkpoints = sorted(p.name for p in (MODEL_DIR / "checkpoints").glob("ckpt-*.index"))
    wall = sum(max(s["wall_s"] for s in samples if s["segment"] == g) for g in set(segments))
    status = ("complete" if complete else
              f"PARTIAL: stopped at step {steps[-1]} of {args.steps}; continue with "
              "`nice -n 15 python bench/soak.py --resume`")
    notes = [status,
             f"Drift end - start: {drift:+.1f} MB ({100 * drift / start:+.2f} %); fitted slope "
             f"after warm-up {slope:+.1f} MB per 10,000 steps, over the second half of that "
             f"{late:+.1f} MB per 10,000 steps; "
             f"{'flat' if abs(drift) <= FLAT * start else 'NOT flat'} "
             f"(criterion: |drift| <= {FLAT:.0%} of the start RSS).",
             f"Checkpoints on disk: {len(checkpoints)} ({', '.join(checkpoints)}); "
             "bound --keep_checkpoints=3 (default).",
             f"Child: {' '.join(child[1:])}. Child wall time {wall:.0f} s in "
             f"{len(set(segments))} process(es); statistics from the last one; RSS sampled at "
             f"each of {len(samples)} progress lines (every 100 steps)."]
    tables.write_results("soak", f"Soak: {args.steps} cDNI steps through train.py, child RSS",
                         ["point", "step", "RSS MB"], rows, notes, complete=complete,
                         samples=samples, checkpoints=checkpoints, wall_s=wall)

    figure = Figure(figsize=(7, 3.5), layout="constrained")
    axes = figure.subplots()
    for segment in sorted(set(segments)):
        mine = segments == segment
        axes.plot(steps[mine], rss[mine], linewidth=1,
                  label=f"process {segment + 1}" if len(set(segments)) > 1 else None)
    for step in range(args.eval_every, int(steps[-1]) + 1, args.eval_every):
        axes.axvline(step, color="lightgrey", linewidth=0.5, zorder=0)
    axes.axvline(args.warmup, color="grey", linewidth=0.8, linestyle="--", label="end of warm-up")
    axes.set(title="train.py resident memory (VmRSS), 3-layer cDNI FCN; grey: evaluations",
             xlabel="step", ylabel="RSS (MB)", ylim=(0, rss.max() * 1.1))
    axes.legend(loc="lower right")
    figures.save_figure(figure, "soak_rss")


def main():
    args = _parse_args()
    mnist = paths.require_mnist()
    if not args.resume:
        shutil.rmtree(MODEL_DIR, ignore_errors=True)
        MODEL_DIR.mkdir(parents=True)
        SAMPLES.touch()
    samples = _load_samples()
    segment = max((s["segment"] for s in samples), default=-1) + 1
    child = [sys.executable, "train.py", "--mode=cdni", "--num_layers=3",
             f"--train_steps={args.steps}", f"--checkpoint_every={args.checkpoint_every}",
             f"--eval_every={args.eval_every}", "--log_every=100", "--measure_every=100",
             # relative to the child's working directory (the repository), so the
             # command recorded in the results holds no machine paths
             f"--model_dir={os.path.relpath(MODEL_DIR, paths.REPO)}",
             f"--data_path={os.path.relpath(mnist, paths.REPO)}"]
    print(" ".join(child), flush=True)
    status, tail = _run_child(child, samples, segment)
    stopped = status in (130, 143, -signal.SIGINT, -signal.SIGTERM)
    if status != 0 and not stopped:
        sys.exit(f"train.py failed with exit status {status}:\n{''.join(tail)}")
    if samples:
        _report(args, samples, child, complete=status == 0)
    if stopped:
        sys.exit("stopped; continue with: nice -n 15 python bench/soak.py --resume")


if __name__ == "__main__":
    main()
