"""Towards the paper's MNIST schedule: one of the configs/paper_mnist_fcn*.cfg runs.

Runs `python train.py --flagfile=configs/CONFIG.cfg` (the paper's schedule:
500k steps) into bench/results/runs/CONFIG for at most --minutes, then stops
it with SIGTERM, on which train.py saves a checkpoint: running the same
command again resumes where it stopped. Reports how far the run got, the
test error at each of its evaluations and the schedule, the last two as the
flagfile sets them (read with train.py's own flag definitions).

Writes bench/results/schedule_<CONFIG without "paper_mnist_">.{json,md,png}.

    python bench/paper_schedule.py                                   # 3-layer cDNI, resumes
    python bench/paper_schedule.py --config paper_mnist_fcn3_dni --minutes 600
    python bench/paper_schedule.py --minutes 1                       # smoke check
"""

import argparse
import subprocess
import sys
import time

import tensorflow as tf
from absl import flags

from benchlib import paths, tables, training
from sg_keras.job import config as config_lib
from sg_keras.job import plots
from sg_keras.job.metrics_log import MetricsLog

def flagfile_config(flagfile):
    """The validated `Config` that `train.py --flagfile=FLAGFILE` runs."""
    flag_values = flags.FlagValues()
    config_lib.define_flags(flag_values)
    flag_values(["train.py", f"--flagfile={paths.REPO / flagfile}"])
    return config_lib.config_from_flags(flag_values)


def schedule_text(config):
    """The training schedule of `config`, in words."""
    rates = (f"Adam {config.learning_rate:g} for network and synthesizers"
             if config.sg_learning_rate in (None, config.learning_rate) else
             f"Adam {config.learning_rate:g} (network), {config.sg_learning_rate:g} (synthesizers)")
    decay = (f", x{config.lr_decay_factor:g} at steps {', '.join(config.lr_decay_steps)}"
             if config.lr_decay_steps else "")
    synthesizers = (f"{config.synth_layers}x{config.synth_units} MLP" if config.synth_layers
                    else "linear")
    return (f"{config.num_layers}-layer FCN of {config.units} units, batch {config.batch_size}, "
            f"{rates}{decay}, {synthesizers} synthesizers, {config.mode}, "
            f"SG target {config.sg_target}; "
            f"test error on the 10,000 MNIST test images every {config.eval_every:,} steps.")


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--config", default="paper_mnist_fcn3_cdni",
                        help="flagfile name in configs/, without .cfg")
    parser.add_argument("--minutes", type=float, default=60.0, help="wall-time budget of this call")
    args = parser.parse_args()
    mnist = paths.require_mnist()
    flagfile = f"configs/{args.config}.cfg"
    config = flagfile_config(flagfile)
    total = config.total_steps(training.steps_per_epoch(config.batch_size))
    model_dir = paths.RUNS / args.config
    child = [sys.executable, "train.py", f"--flagfile={flagfile}", f"--model_dir={model_dir}",
             f"--data_path={mnist}"]
    print(" ".join(child), flush=True)
    started = time.perf_counter()
    with subprocess.Popen(child, cwd=paths.REPO) as process:
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
    notes = [f"Reached step {reached:,} of {total:,} ({100 * reached / total:.1f} %); "
             f"this call ran {wall / 60:.1f} min (budget {args.minutes:g} min), exit status "
             f"{process.returncode}" + (" (finished)." if reached >= total else
                                        "; run the same command to continue."),
             f"Schedule ({flagfile}): {schedule_text(config)}"]
    name = "schedule_" + args.config.removeprefix("paper_mnist_")
    title = f"The paper's MNIST schedule, {config.num_layers}-layer FCN, {config.mode}"
    tables.write_results(name, title, ["step", "test error %"], rows, notes,
                         reached_step=reached, wall_s=wall, exit_status=process.returncode)
    if steps:
        curve = {f"{config.mode} (paper schedule)": (steps, [r["test error %"] for r in rows])}
        plots.save_png(plots.error_curves(curve, f"MNIST test error, {title}"),
                       paths.RESULTS / f"{name}.png")


if __name__ == "__main__":
    main()
