"""Step time of plain Keras, sg_keras backprop, DNI and cDNI, against the multiply-add floor.

For each MNIST FCN (`sg_keras.job.networks.fcn`: depth 3 or 6 layers, hidden
width 256, 1024 or 4096, Dense → BatchNorm → ReLU blocks, batch 256, Adam)
it times, interleaved in one process on the same in-memory MNIST batches:

* keras fit: the compiled step `fit` runs (`model.train_function`) of the
  plain model (no DecoupledLayer), with the loss and accuracy metrics;
* keras tape: a plain `tf.function` GradientTape step of the plain model;
* sg backprop: `DNITrainer(mode="backprop")` on the plain model (the engine's
  guard, step counter and metrics, no synthesizers);
* sg dni / sg cdni: `DNITrainer` with full-rank linear synthesizers;
* sg dni rR / sg cdni rR: rank-R linear synthesizers
  (`DenseSynthesizer(rank=R)`, the ranks `bench/low_rank.py` validates);
* ... kK: the synthesizers train on every K-th step only
  (`synth_update_every=K`);
* fit dni: `DNIModel`'s compiled `fit` step (`train_function`), full rank.

Every row also gets its multiply-adds per example and step (dense layers
only: forward, weight gradients, input gradients below the first layer; a
synthesizer adds its forward and weight gradients, and a low-rank one also
the gradient at its R hidden units; with kK, the synthesizers' backward and
the input gradients above the decoupled layers, which only make their
targets, count on one step in K) and the *floor*: its multiply-adds over
plain backprop's, the ratio an arithmetic-bound step could not beat. "vs
floor" is the measured ratio to keras fit divided by the floor.

Timing: after a warm-up, `--rounds` rounds; in each, every configuration runs
a block of steps (sized to about --block_s seconds), in an order rotated from
round to round; ratios are medians of per-round ratios (IQR in brackets).

Targets (issue "The DNI step at its cost floor"): sg backprop within 1.03x of
keras fit; sg dni (full rank) within 1.10x of keras fit times its floor; a
low-rank dni within 1.15x of keras fit at width 1024.

Writes bench/results/speed.{json,md} and speed.png, again after each shape
(a run stopped part-way keeps the shapes it finished). Every configuration of
a shape is in memory at once: 6x4096 with every method needs more than this
machine's 24 GiB, so time it with a few `--methods`.

    python bench/speed.py                                        # reported budget
    python bench/speed.py --shapes 6x4096 --methods "keras fit" "sg dni r32"
    python bench/speed.py --shapes 3x256 --rounds 2 --block_s 0.05   # smoke check
"""

import argparse
import gc
import re
import statistics
import time

import keras
import numpy as np
import tensorflow as tf
from matplotlib.figure import Figure

from benchlib import figures, paths, tables, timing, training
import sg_keras
from sg_keras.job import networks

LOSS = keras.losses.SparseCategoricalCrossentropy(from_logits=True)
CLASSES, PIXELS = 10, 784
METHODS = ("keras fit", "keras tape", "sg backprop", "sg dni", "sg cdni", "sg dni r32",
           "sg cdni r32", "sg dni r64", "sg cdni r64", "sg dni k4", "sg dni r32 k2",
           "sg dni r64 k2", "sg dni r64 k4", "fit dni")


def dense_layers(depth, width):
    """Multiply-adds per example of each dense layer's forward pass."""
    dims = [PIXELS] + [width] * (depth - 1) + [CLASSES]
    return [a * b for a, b in zip(dims, dims[1:])]


def dense_macs(depth, width):
    """Backprop multiply-adds per example of the FCN: forward, weight and input gradients."""
    layers = dense_layers(depth, width)
    return 2 * sum(layers) + sum(layers[1:])


def setting_of(method, letter):
    """The number after " r" (rank) or " k" (synthesizer update interval) in a method's name
    ("sg dni r64 k4" → 64, 4), or None."""
    found = re.search(rf" {letter}(\d+)\b", method)
    return int(found.group(1)) if found else None


def method_macs(depth, width, method):
    """Multiply-adds per example and step of a method. Its synthesizers: forward, and weight
    gradients (and for a low-rank one the gradient at its hidden units; their input has no
    gradient) on the steps that train them, as do the input gradients above the decoupled
    layers (in DNI they only make the synthesizers' targets)."""
    macs = dense_macs(depth, width)
    if "dni" not in method:
        return macs
    every = setting_of(method, "k") or 1
    inputs = width + (CLASSES if "cdni" in method else 0)
    rank = setting_of(method, "r")
    forward = inputs * width if rank is None else inputs * rank + rank * width
    backward = forward + (0 if rank is None else rank * width)
    targets = sum(dense_layers(depth, width)[1:])
    trained = (targets + (depth - 1) * backward) / every
    return round(macs - targets + trained + (depth - 1) * forward)


def model_of(method, depth, width, seed=0):
    """The FCN a method trains (synthesizers as the method says)."""
    keras.utils.set_random_seed(seed)
    mode = "cdni" if "cdni" in method else "dni" if "dni" in method else "backprop"
    return networks.fcn((28, 28), depth, width, CLASSES, decoupled=mode != "backprop",
                        context=mode == "cdni",
                        synthesizer_rank=setting_of(method, "r")), mode


class KerasFit:
    """One compiled `fit` step per call: `train_function` on an iterator over the batches."""

    def __init__(self, model, batches, **compile_args):
        model.compile(optimizer=keras.optimizers.Adam(1e-3), loss=LOSS, metrics=["accuracy"],
                      **compile_args)
        xs = np.stack([x.numpy() for x, _ in batches])
        ys = np.stack([y.numpy() for _, y in batches])
        self.iterator = iter(tf.data.Dataset.from_tensor_slices((xs, ys)).repeat())
        model.fit(xs[0], ys[0], batch_size=len(xs[0]), epochs=1, verbose=0)   # builds everything
        self.function = model.make_train_function()

    def __call__(self, x, y):
        return self.function(self.iterator)


class KerasTape:
    """A plain GradientTape step."""

    def __init__(self, model):
        self.model, self.optimizer = model, keras.optimizers.Adam(1e-3)
        self.step = tf.function(self._step)

    def _step(self, x, y):
        with tf.GradientTape() as tape:
            loss = LOSS(y, self.model(x, training=True))
        variables = self.model.trainable_variables
        self.optimizer.apply(tape.gradient(loss, variables), variables)
        return loss

    def __call__(self, x, y):
        return self.step(x, y)


def stepper(method, depth, width, batches):
    model, mode = model_of(method, depth, width)
    if method == "keras fit":
        return KerasFit(model, batches)
    if method == "keras tape":
        return KerasTape(model)
    if method == "fit dni":
        dni = sg_keras.DNIModel.from_model(model)
        return KerasFit(dni, batches, sg_optimizer=keras.optimizers.Adam(1e-3))
    every = {"synth_update_every": setting_of(method, "k")} if mode != "backprop" else {}
    trainer = sg_keras.DNITrainer(model, mode=mode, loss=LOSS,
                                  optimizer=keras.optimizers.Adam(1e-3),
                                  **{k: v for k, v in every.items() if v})
    return trainer.train_step


def block_size(steppers, batches, block_s, warmup):
    """Steps per timed block: about `block_s` seconds at the median stepper's speed."""
    first = []
    for stepper in steppers.values():
        for index in range(warmup):
            stepper(*batches[index % len(batches)])
        start = time.perf_counter()
        stepper(*batches[0])
        first.append(time.perf_counter() - start)
    return max(2, round(block_s / statistics.median(first)))


def speed_figure(rows, shapes):
    figure = Figure(figsize=(9, 4), layout="constrained")
    axes = figure.subplots()
    width = 0.85 / (len(METHODS) - 1)
    for index, method in enumerate(METHODS[1:]):
        values = [next((r["ratio"] for r in rows if r["shape"] == s and r["method"] == method),
                       np.nan) for s in shapes]
        axes.bar(np.arange(len(shapes)) + (index - (len(METHODS) - 2) / 2) * width, values,
                 width=width, label=method)
    axes.axhline(1.0, color="grey", linewidth=0.8)
    axes.set_xticks(range(len(shapes)), [f"{s} (depth x width)" for s in shapes])
    axes.set(ylabel="step time / keras fit", title="Step time over a plain Keras fit step")
    axes.legend(fontsize=7, ncol=4)
    return figure


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--shapes", nargs="+",
                        default=["3x256", "6x256", "3x1024", "6x1024", "3x4096"],
                        help="DEPTHxWIDTH of each FCN")
    parser.add_argument("--methods", nargs="+", default=list(METHODS), choices=METHODS)
    parser.add_argument("--rounds", type=int, default=9)
    parser.add_argument("--block_s", type=float, default=0.3, help="seconds per timed block")
    parser.add_argument("--warmup", type=int, default=5, help="untimed steps per configuration")
    args = parser.parse_args()
    paths.require_mnist()
    train_split, _ = paths.load_mnist()
    batches = timing.batches(train_split, 20)

    rows, all_times = [], {}
    for shape in args.shapes:
        depth, width = map(int, shape.split("x"))
        steppers = {method: stepper(method, depth, width, batches) for method in args.methods}
        block = block_size(steppers, batches, args.block_s, args.warmup)
        times = timing.step_times(steppers, batches, warmup=0, rounds=args.rounds, block=block)
        all_times[shape] = times
        base = dense_macs(depth, width)
        for method in args.methods:
            macs = method_macs(depth, width, method)
            row = {"shape": shape, "method": method, "step ms": 1000 * statistics.median(
                times[method]), "MACs/example": macs, "floor": macs / base, "block": block}
            if "keras fit" in times:
                ratio, text = timing.ratio(times, method, "keras fit")
                row.update({"ratio": ratio, "vs keras fit": text,
                            "vs floor": ratio / row["floor"]})
            rows.append(row)
            print({k: v for k, v in row.items() if k != "block"}, flush=True)
        del steppers
        keras.backend.clear_session()
        gc.collect()
        report(rows, all_times, args)


def report(rows, all_times, args):
    """Writes the table of the shapes measured so far, its verdicts and its figure."""
    shapes = [shape for shape in args.shapes if shape in all_times]
    notes = [f"Batch {training.BATCH_SIZE} of real MNIST held in memory; {args.rounds} rounds, blocks "
             f"of about {args.block_s} s per configuration, interleaved and rotated; ratios are "
             "medians of per-round ratios to keras fit (IQR in brackets).",
             "MACs/example: dense multiply-adds per example and step (forward + weight gradients "
             "+ input gradients below the first layer; synthesizers: forward + weight gradients, "
             "and for a low-rank one the gradient at its hidden units; with kK the synthesizers' "
             "backward and the input gradients that make their targets on one step in K). "
             "floor = MACs / plain backprop MACs; vs floor = measured ratio / floor."]
    by = {(r["shape"], r["method"]): r for r in rows}
    for shape in shapes:
        checks = [("sg backprop", 1.03, 1.0, "within 1.03x of keras fit"),
                  ("sg dni", 1.10, None, "within 1.10x of keras fit x floor")]
        if shape.endswith("x1024"):
            checks += [(method, 1.15, 1.0, "within 1.15x of keras fit")
                       for method in args.methods if method.startswith("sg dni r")]
        for method, limit, scale, what in checks:
            row = by.get((shape, method))
            if row and "ratio" in row:
                value = row["ratio"] / (row["floor"] if scale is None else scale)
                notes.append(f"{shape} {method}: {value:.2f} {'<=' if value <= limit else '>'} "
                             f"{limit} ({what}): {'met' if value <= limit else 'missed'}.")
    tables.write_results(
        "speed", "Step time over a plain Keras fit step, and the multiply-add floor",
        ["shape", "method", "step ms", "vs keras fit", "MACs/example", "floor", "vs floor"],
        rows, notes, step_times_s=all_times)
    figures.save_figure(speed_figure(rows, shapes), "speed")


if __name__ == "__main__":
    main()
