"""What sg_keras's backprop mode costs over plain Keras, and how much of it is the NaN/Inf guard.

For each MNIST FCN (`--shapes`, batch 256, Adam) it times, interleaved in one
process on the same in-memory batches (as `bench/speed.py`):

* keras fit, keras tape: a plain Keras `fit` step and a plain GradientTape step;
* sg backprop: `DNITrainer(mode="backprop")`, the engine with its guard;
* sg backprop, guard on the loss only: the same step where the guard checks
  only the loss (an ablation made here by replacing
  `sg_keras.engine.finiteness_parts`, not a user option): the difference to
  "sg backprop" is the cost of checking every gradient and statistic;
* sg backprop, no log window: the same step whose logs are not summed on the
  device (`LogWindow.add` replaced here, another ablation).

Ratios are medians of per-round ratios to the keras tape step (IQR in
brackets). The differences are a few percent, less than a shared machine's
noise in wall time: on a loaded machine, `--clock process` times this
process's CPU time instead (what waiting for other users' work leaves out;
with several threads it still counts their spinning), and `--threads 1`
runs TensorFlow's ops one at a time.

Writes bench/results/guard_cost.{json,md} (wall clock, TensorFlow's default
threads), else guard_cost_CLOCK[_threadsN].{json,md}.

    python bench/guard_cost.py                                  # reported budget
    python bench/guard_cost.py --shapes 3x256 --rounds 100 --block_s 0.1 --clock process
    python bench/guard_cost.py --shapes 3x256 --rounds 2        # smoke check
"""

import argparse
import statistics
import time

import tensorflow as tf

from benchlib import paths, tables, timing, training
import speed
from sg_keras import engine, step_logs

METHODS = ("keras fit", "keras tape", "sg backprop", "sg backprop, guard on the loss only",
           "sg backprop, no log window")
CLOCKS = {"wall": time.perf_counter, "process": time.process_time}


def loss_only(loss, interceptions, variables, gradients, state=()):
    """`finiteness_parts` reduced to the loss (the ablation)."""
    return [("loss", None, loss)]


def ablated(owner, name, replacement, depth, width, batches):
    """The "sg backprop" stepper traced while `owner.name` is `replacement`."""
    original = getattr(owner, name)
    setattr(owner, name, replacement)
    try:
        stepper = speed.stepper("sg backprop", depth, width, batches)
        stepper(*batches[0])   # traced now, with the ablation
    finally:
        setattr(owner, name, original)
    return stepper


def steppers(depth, width, batches):
    made = {method: speed.stepper(method, depth, width, batches) for method in METHODS[:3]}
    made[METHODS[3]] = ablated(engine, "finiteness_parts", loss_only, depth, width, batches)
    made[METHODS[4]] = ablated(step_logs.LogWindow, "add", lambda self, logs: logs, depth, width,
                               batches)
    return made


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--shapes", nargs="+", default=["3x256", "6x256", "3x1024", "6x1024"])
    parser.add_argument("--rounds", type=int, default=15)
    parser.add_argument("--block_s", type=float, default=0.5, help="seconds per timed block")
    parser.add_argument("--clock", choices=sorted(CLOCKS), default="wall",
                        help="wall time, or this process's CPU time")
    parser.add_argument("--threads", type=int, default=0,
                        help="TensorFlow's intra- and inter-op threads (0: its default)")
    args = parser.parse_args()
    paths.require_mnist()
    if args.threads:
        tf.config.threading.set_intra_op_parallelism_threads(args.threads)
        tf.config.threading.set_inter_op_parallelism_threads(args.threads)
    train_split, _ = paths.load_mnist()
    batches = timing.batches(train_split, 20)
    rows = []
    for shape in args.shapes:
        depth, width = map(int, shape.split("x"))
        made = steppers(depth, width, batches)
        block = speed.block_size(made, batches, args.block_s, warmup=5)
        times = timing.step_times(made, batches, warmup=0, rounds=args.rounds, block=block,
                                  clock=CLOCKS[args.clock])
        for method in METHODS:
            ratio, text = timing.ratio(times, method, "keras tape")
            rows.append({"shape": shape, "method": method,
                         "step ms": 1000 * statistics.median(times[method]),
                         "vs keras tape": text, "ratio": ratio})
            print(rows[-1], flush=True)
    name = "guard_cost" if (args.clock, args.threads) == ("wall", 0) else (
        f"guard_cost_{args.clock}" + (f"_threads{args.threads}" if args.threads else ""))
    clock = "wall time" if args.clock == "wall" else "this process's CPU time"
    threads = f"{args.threads} TensorFlow threads" if args.threads else "TensorFlow's threads"
    tables.write_results(
        name, "sg_keras backprop against plain Keras, with and without the full guard",
        ["shape", "method", "step ms", "vs keras tape"], rows,
        [f"Batch {training.BATCH_SIZE} of real MNIST held in memory; {args.rounds} rounds, blocks "
         f"of about {args.block_s} s, interleaved and rotated; ratios are medians of per-round "
         f"ratios to the keras tape step (IQR in brackets); {clock}, {threads}."])


if __name__ == "__main__":
    main()
