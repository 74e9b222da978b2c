"""Towards the paper's MNIST schedule: the 3-layer cDNI FCN of configs/paper_mnist_fcn3_cdni.cfg.

Runs `python train.py --flagfile=configs/paper_mnist_fcn3_cdni.cfg` (the
paper's schedule: hundreds of thousands of steps) into
bench/results/runs/paper_mnist_fcn3_cdni for at most --minutes, then stops
it with SIGTERM, on which train.py saves a checkpoint: running the same
command again resumes where it stopped. Reports how far the run got, the
test error at each of its evaluations and the schedule, the last two as the
flagfile sets them (read with train.py's own flag definitions).

Writes bench/results/paper_schedule.{json,md} and paper_schedule.png.

    python bench/paper_schedule.py                # reported budget (resumes)
    python bench/paper_schedule.py --minutes 1    # smoke check
"""

import argparse
import subprocess
import sys
import time

import tensorflow as tf
from absl import flags

import common
from sg_keras.job import config as config_lib
from sg_keras.job import plots
from sg_keras.job.history import MetricsLog

CONFIG = "configs/paper_mnist_fcn3_cdni.cfg"


def flagfile_config():
    """The validated `Config` that `train.py --flagfile=CONFIG` runs."""
    flag_values = flags.FlagValues()
    config_lib.define_flags(flag_values)
    flag_values(["train.py", f"--flagfile={common.REPO / CONFIG}"])
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
    parser.add_argument("--minutes", type=float, default=60.0, help="wall-time budget of this call")
    args = parser.parse_args()
    mnist = common.require_mnist()
    config = flagfile_config()
    total = config.total_steps(common.steps_per_epoch(config.batch_size))
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
    notes = [f"Reached step {reached:,} of {total:,} ({100 * reached / total:.1f} %); "
             f"this call ran {wall / 60:.1f} min (budget {args.minutes:g} min), exit status "
             f"{process.returncode}" + (" (finished)." if reached >= total else
                                        "; run the same command to continue."),
             f"Schedule ({CONFIG}): {schedule_text(config)}"]
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
