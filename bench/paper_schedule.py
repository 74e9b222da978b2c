"""Towards the paper's MNIST schedule: the 3-layer cDNI FCN of configs/paper_mnist_fcn3_cdni.cfg.

Runs `python train.py --flagfile=configs/paper_mnist_fcn3_cdni.cfg` (500k
steps of batch 256, Adam 3e-5 divided by 10 at 300k and 400k, linear
synthesizers) into bench/results/runs/paper_mnist_fcn3_cdni for at most
--minutes, then stops it with SIGTERM, on which train.py saves a checkpoint:
running the same command again resumes where it stopped. Reports how far the
run got and the test error at each of its evaluations (every 10k steps).

Writes bench/results/paper_schedule.{json,md} and paper_schedule.png.

    python bench/paper_schedule.py                # reported budget (resumes)
    python bench/paper_schedule.py --minutes 1    # smoke check
"""

import argparse
import subprocess
import sys
import time

import tensorflow as tf

import common
from sg_keras import plots
from sg_keras.history import MetricsLog

CONFIG = "configs/paper_mnist_fcn3_cdni.cfg"
TOTAL_STEPS = 500_000


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--minutes", type=float, default=60.0, help="wall-time budget of this call")
    args = parser.parse_args()
    mnist = common.require_mnist()
    model_dir = common.RUNS / "paper_mnist_fcn3_cdni"
    child = [sys.executable, "train.py", f"--flagfile={CONFIG}", f"--model_dir={model_dir}",
             f"--data_path={mnist}"]
    print(" ".join(child), flush=True)
    started = time.perf_counter()
    with subprocess.Popen(child, cwd=common.REPO) as process:
        try:
            process.wait(timeout=60 * args.minutes)
        except subprocess.TimeoutExpired:
            process.terminate()   # train.py checkpoints on SIGTERM
            process.wait()
    wall = time.perf_counter() - started

    latest = tf.train.latest_checkpoint(model_dir / "checkpoints")
    reached = int(latest.rsplit("-", 1)[1]) if latest else 0
    log = MetricsLog(model_dir / "metrics.jsonl", resume_step=sys.maxsize)
    steps, accuracies = log.series("accuracy", "eval")
    rows = [{"step": step, "test error %": 100 * (1 - accuracy)}
            for step, accuracy in zip(steps, accuracies)]
    notes = [f"Reached step {reached:,} of {TOTAL_STEPS:,} ({100 * reached / TOTAL_STEPS:.1f} %); "
             f"this call ran {wall / 60:.1f} min (budget {args.minutes:g} min), exit status "
             f"{process.returncode}" + (" (finished)." if reached >= TOTAL_STEPS else
                                        "; run the same command to continue."),
             f"Schedule ({CONFIG}): batch 256, Adam 3e-5 for network and synthesizers, x0.1 at "
             "300k and 400k steps, linear synthesizers, cDNI, bootstrapped targets; test error "
             "on the 10,000 MNIST test images at each evaluation."]
    common.write_results("paper_schedule", "The paper's MNIST cDNI schedule, 3-layer FCN",
                         ["step", "test error %"], rows, notes, reached_step=reached,
                         wall_s=wall, exit_status=process.returncode)
    if steps:
        plots.save_png(plots.error_curves({"cdni (paper schedule)": (steps, [r["test error %"]
                                                                             for r in rows])},
                                          "MNIST test error, 3-layer cDNI FCN, paper schedule"),
                       common.RESULTS / "paper_schedule.png")


if __name__ == "__main__":
    main()
