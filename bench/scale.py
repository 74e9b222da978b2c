"""Data parallelism: examples/s and accuracy of 1 and 2 replicas at the same global batch.

The CPU is split into two logical devices and `MirroredStrategy` runs one
replica on each. Both logical devices share the same cores (2 on the machine
this was written on, shared with other users), so this measures the overhead
of the distributed step (slicing, all-reduces, the cross-replica apply), not
a speed-up: on separate GPUs or machines each replica would have its own
compute. The accuracy runs train the MNIST FCN (`train.py`'s defaults) for
the same steps on the same global batches with 1 and 2 replicas, which
make the same updates (up to float32 summation order).

    nice -n 10 python bench/scale.py [--steps 300] [--rounds 5]
"""

import argparse

import tensorflow as tf

tf.config.set_logical_device_configuration(
    tf.config.list_physical_devices("CPU")[0], [tf.config.LogicalDeviceConfiguration()] * 2)

import numpy as np  # noqa: E402

from benchlib import paths, tables, timing, training  # noqa: E402

SETTINGS = {"mode": "cdni", "num_layers": 3, "measure_every": 0}


def strategies():
    return {"1 replica": None, "2 replicas": tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"])}


def build(train_split, strategy):
    tf.keras.utils.set_random_seed(0)
    if strategy is None:
        return timing.make_trainer(train_split.x.shape[1:], **SETTINGS)
    with strategy.scope():
        return timing.make_trainer(train_split.x.shape[1:], **SETTINGS)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=300,
                        help="training steps of each accuracy run")
    parser.add_argument("--rounds", type=int, default=5, help="timing rounds of 20 steps")
    args = parser.parse_args()
    from sg_keras.job import data

    train_split, test_split = paths.load_mnist()
    held = timing.batches(train_split, 50)
    trainers = {name: build(train_split, strategy) for name, strategy in strategies().items()}
    times = timing.step_times({name: t.train_step for name, t in trainers.items()}, held,
                              warmup=10, rounds=args.rounds, block=20)
    rows = []
    weights = {}
    for name, strategy in strategies().items():
        trainer = build(train_split, strategy)
        for x, y in data.train_batches(train_split, training.BATCH_SIZE, 0).take(args.steps):
            trainer.train_step(x, y)
        result = trainer.evaluate(data.eval_batches(test_split))
        weights[name] = [v.numpy() for v in trainer.model.variables]
        seconds = float(np.median(times[name]))
        rows.append({"replicas": name, "ms/step": round(1000 * seconds, 2),
                     "examples/s": round(training.BATCH_SIZE / seconds),
                     "test accuracy": round(100 * result["accuracy"], 2),
                     "test loss": round(result["loss"], 4), "times": times[name]})
    ratio = rows[1]["examples/s"] / rows[0]["examples/s"]
    drift = max(float(np.abs(a - b).max()) for a, b in zip(*weights.values()))
    notes = [f"global batch {training.BATCH_SIZE}, cDNI FCN of train.py ({SETTINGS}); speed: median "
             f"of {args.rounds} interleaved rounds of 20 steps on 50 batches held in memory",
             f"2 replicas / 1 replica throughput: {ratio:.2f}x. The two logical devices share the "
             "same CPU cores, so this is the cost of the distributed step, not a speed-up.",
             f"accuracy after {args.steps} steps on the same global batches; largest weight "
             f"difference between the two runs: {drift:.2e} (float32 summation order, grown "
             "over the steps: Adam moves a weight whose gradient is near 0 by up to the "
             "learning rate per step whichever sign it gets)"]
    tables.write_results("scale", "1 vs 2 replicas (MirroredStrategy, two logical CPU devices)",
                         ["replicas", "ms/step", "examples/s", "test accuracy", "test loss"], rows,
                         notes, ratio=ratio, max_weight_difference=drift)


if __name__ == "__main__":
    main()
