"""Soak test: does a long `train.py` run keep its memory and its checkpoints bounded?

Runs `python train.py` as a child process: the 3-layer cDNI FCN on real MNIST
for 20,000 steps with a checkpoint every 500 steps (--keep_checkpoints left at
its default, 3), a test evaluation (with plots) every 4,000 steps and the
cosine measurement every 100. Warm-up (--warmup), which the "start" sample
follows, runs by default to 1,000 steps past the first evaluation, so
one-time costs (tracing the evaluation, the first plots) are not counted as
drift. At each of the child's progress lines ("step N/20000 ...") it reads
the child's resident memory (VmRSS from /proc/PID/status). Reports the RSS
after warm-up, at the middle and at the end, the drift between them and the
slope of a line fitted after warm-up, and the number of checkpoints on disk
at the end.

Writes bench/results/soak.{json,md} and soak_rss.png.

    python bench/soak.py                                        # reported budget
    python bench/soak.py --steps 1500 --eval_every 300 --warmup 600 --checkpoint_every 200  # smoke
"""

import argparse
import os
import re
import shutil
import subprocess
import sys
import time

import numpy as np
from matplotlib.figure import Figure

import common

PROGRESS = re.compile(r"^step\s+(\d+)/(\d+)")
FLAT = 0.05   # "flat": RSS at the end within 5 % of the RSS after warm-up


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--steps", type=int, default=20000)
    parser.add_argument("--checkpoint_every", type=int, default=500)
    parser.add_argument("--eval_every", type=int, default=4000)
    parser.add_argument("--warmup", type=int,
                        help="steps before the 'start' RSS sample (default: eval_every + 1000)")
    args = parser.parse_args()
    if args.warmup is None:
        args.warmup = args.eval_every + 1000
    if not args.warmup < args.steps:
        parser.error(f"--warmup={args.warmup} must be below --steps={args.steps} "
                     "(by default --warmup is --eval_every + 1000)")
    mnist = common.require_mnist()
    model_dir = common.RUNS / "soak"
    shutil.rmtree(model_dir, ignore_errors=True)
    child = [sys.executable, "train.py", "--mode=cdni", "--num_layers=3",
             f"--train_steps={args.steps}", f"--checkpoint_every={args.checkpoint_every}",
             f"--eval_every={args.eval_every}", "--log_every=100", "--measure_every=100",
             # relative to the child's working directory (the repository), so the
             # command recorded in the results holds no machine paths
             f"--model_dir={os.path.relpath(model_dir, common.REPO)}",
             f"--data_path={os.path.relpath(mnist, common.REPO)}"]
    print(" ".join(child), flush=True)

    started = time.perf_counter()
    samples, tail = [], []
    with subprocess.Popen(child, cwd=common.REPO, stdout=subprocess.PIPE,
                          stderr=subprocess.STDOUT, text=True, bufsize=1) as process:
        for line in process.stdout:
            match = PROGRESS.match(line)
            if match:
                samples.append((int(match.group(1)), common.status_mb("VmRSS", process.pid)))
            if not match or int(match.group(1)) % 1000 == 0:
                print(line, end="", flush=True)
            tail = (tail + [line])[-20:]
    wall = time.perf_counter() - started
    if process.returncode != 0:
        sys.exit(f"train.py failed with exit status {process.returncode}:\n{''.join(tail)}")

    steps = np.array([s for s, _ in samples])
    rss = np.array([r for _, r in samples])
    after = steps >= args.warmup
    middle_index = np.argmin(abs(steps - args.steps / 2))
    start, middle, end = rss[after][0], rss[middle_index], rss[-1]
    slope = np.polyfit(steps[after], rss[after], 1)[0] * 10000
    checkpoints = sorted(p.name for p in (model_dir / "checkpoints").glob("ckpt-*.index"))
    drift = end - start
    rows = [{"point": "start (after warm-up)", "step": int(steps[after][0]), "RSS MB": start},
            {"point": "middle", "step": int(steps[middle_index]), "RSS MB": middle},
            {"point": "end", "step": int(steps[-1]), "RSS MB": end},
            {"point": "max after warm-up", "step": int(steps[after][np.argmax(rss[after])]),
             "RSS MB": float(rss[after].max())}]
    notes = [f"Drift end - start: {drift:+.1f} MB ({100 * drift / start:+.2f} %); fitted slope "
             f"after warm-up {slope:+.1f} MB per 10,000 steps; "
             f"{'flat' if abs(drift) <= FLAT * start else 'NOT flat'} "
             f"(criterion: |drift| <= {FLAT:.0%} of the start RSS).",
             f"Checkpoints on disk at the end: {len(checkpoints)} ({', '.join(checkpoints)}); "
             f"bound --keep_checkpoints=3 (default); {args.steps // args.checkpoint_every} saved "
             "during the run.",
             f"Child: {' '.join(child[1:])}. Wall time {wall:.0f} s; RSS sampled at each of "
             f"{len(samples)} progress lines (every 100 steps)."]
    common.write_results("soak", f"Soak: {args.steps} cDNI steps through train.py, child RSS",
                         ["point", "step", "RSS MB"], rows, notes,
                         samples=samples, checkpoints=checkpoints, wall_s=wall)

    figure = Figure(figsize=(6, 3.5), layout="constrained")
    axes = figure.subplots()
    axes.plot(steps, rss, linewidth=1)
    axes.axvline(args.warmup, color="grey", linewidth=0.5, linestyle="--")
    axes.set(title="train.py resident memory (VmRSS), 3-layer cDNI FCN", xlabel="step",
             ylabel="RSS (MB)", ylim=(0, rss.max() * 1.1))
    common.save_figure(figure, "soak_rss")


if __name__ == "__main__":
    main()
