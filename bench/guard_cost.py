"""What sg_keras's backprop mode costs over plain Keras, and how much of it is the NaN/Inf guard.

For each MNIST FCN (`--shapes`, batch 256, Adam) it times, interleaved in one
process on the same in-memory batches (as `bench/speed.py`):

* keras fit, keras tape: a plain Keras `fit` step and a plain GradientTape step;
* sg backprop: `DNITrainer(mode="backprop")`, the engine with its guard;
* sg backprop, guard on the loss only: the same step where the guard checks
  only the loss (an ablation made here by replacing
  `sg_keras.engine.finiteness_parts`, not a user option): the difference to
  "sg backprop" is the cost of checking every gradient and statistic.

Ratios are medians of per-round ratios to the keras tape step (IQR in
brackets). Run it on an otherwise idle machine: the differences are a few
percent, less than a shared machine's noise.

Writes bench/results/guard_cost.{json,md}.

    python bench/guard_cost.py                                  # reported budget
    python bench/guard_cost.py --shapes 3x256 --rounds 2        # smoke check
"""

import argparse
import statistics

from benchlib import paths, tables, timing, training
import speed
from sg_keras import engine

METHODS = ("keras fit", "keras tape", "sg backprop", "sg backprop, guard on the loss only")


def loss_only(loss, interceptions, variables, gradients, state=()):
    """`finiteness_parts` reduced to the loss (the ablation)."""
    return [("loss", None, loss)]


def steppers(depth, width, batches):
    made = {method: speed.stepper(method, depth, width, batches) for method in METHODS[:3]}
    checked = engine.finiteness_parts
    engine.finiteness_parts = loss_only
    try:
        made[METHODS[3]] = speed.stepper("sg backprop", depth, width, batches)
        made[METHODS[3]](*batches[0])   # traced now, with the ablated guard
    finally:
        engine.finiteness_parts = checked
    return made


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--shapes", nargs="+", default=["3x256", "6x256", "3x1024", "6x1024"])
    parser.add_argument("--rounds", type=int, default=15)
    parser.add_argument("--block_s", type=float, default=0.5, help="seconds per timed block")
    args = parser.parse_args()
    paths.require_mnist()
    train_split, _ = paths.load_mnist()
    batches = timing.batches(train_split, 20)
    rows = []
    for shape in args.shapes:
        depth, width = map(int, shape.split("x"))
        made = steppers(depth, width, batches)
        block = speed.block_size(made, batches, args.block_s, warmup=5)
        times = timing.step_times(made, batches, warmup=0, rounds=args.rounds, block=block)
        for method in METHODS:
            ratio, text = timing.ratio(times, method, "keras tape")
            rows.append({"shape": shape, "method": method,
                         "step ms": 1000 * statistics.median(times[method]),
                         "vs keras tape": text, "ratio": ratio})
            print(rows[-1], flush=True)
    tables.write_results(
        "guard_cost", "sg_keras backprop against plain Keras, with and without the full guard",
        ["shape", "method", "step ms", "vs keras tape"], rows,
        [f"Batch {training.BATCH_SIZE} of real MNIST held in memory; {args.rounds} rounds, blocks "
         f"of about {args.block_s} s, interleaved and rotated; ratios are medians of per-round "
         "ratios to the keras tape step (IQR in brackets)."])


if __name__ == "__main__":
    main()
