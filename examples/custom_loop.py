"""Your own training loop: a `tf.GradientTape` step with `sg_keras.GradientInterception`.

    python examples/custom_loop.py          # tiny: 60 steps on synthetic data (seconds)
    python examples/custom_loop.py --full   # 2,000 steps

Inside the scope, every `DecoupledLayer` of the forward pass sends its synthetic gradient
down in the backward pass, so one `tape.gradient` gives each decoupled block its update
and each synthesizer its regression gradient; `scope.interceptions` then holds each
layer's synthesizer loss. `sg_keras.DNITrainer` is this loop, with every option and the
NaN/Inf guard, ready made (shown at the end).
"""

import argparse

import keras
import numpy as np
import tensorflow as tf

import sg_keras


PROTOTYPES = np.random.default_rng(0).random((10, 64))


def data(n, seed):
    """`n` noisy copies of ten fixed prototypes, labelled by prototype."""
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 10, n)
    x = np.clip(PROTOTYPES[y] + rng.normal(0, 0.5, (n, 64)), 0, 1)
    return x.astype("float32"), y.astype("int32")


def build():
    def block():   # BatchNorm's statistics follow a short run closely at momentum 0.9
        return keras.Sequential([keras.layers.Dense(128),
                                 keras.layers.BatchNormalization(momentum=0.9),
                                 keras.layers.ReLU()])

    return keras.Sequential([keras.Input((64,)),
                             sg_keras.DecoupledLayer(block(), context_dim=10, name="dni1"),
                             sg_keras.DecoupledLayer(block(), context_dim=10, name="dni2"),
                             keras.layers.Dense(10)])


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--full", action="store_true", help="2,000 steps")
    args = parser.parse_args(argv)
    steps = 2000 if args.full else 60
    keras.utils.set_random_seed(0)
    model = build()
    loss_fn = keras.losses.SparseCategoricalCrossentropy(from_logits=True)
    optimizer = keras.optimizers.Adam(1e-3)   # the synthesizers' variables are the model's too

    @tf.function
    def train_step(x, y):
        with sg_keras.GradientInterception(context=tf.one_hot(y, 10)) as scope:   # cDNI
            with tf.GradientTape() as tape:
                loss = loss_fn(y, model(x, training=True))
        gradients = tape.gradient(loss, model.trainable_variables)   # synthetic backward pass
        optimizer.apply_gradients(zip(gradients, model.trainable_variables))
        return loss, [interception.sg_loss for interception in scope.interceptions]

    x, y = data(64 * steps, seed=0)
    for step in range(steps):
        batch = slice(64 * step, 64 * (step + 1))
        loss, sg_losses = train_step(x[batch], y[batch])
        if (step + 1) % (steps // 4) == 0:
            print(f"step {step + 1}: loss {float(loss):.4f}, synthesizer losses "
                  + ", ".join(f"{float(value):.4f}" for value in sg_losses))
    x_test, y_test = data(1000, seed=1)
    accuracy = np.mean(np.argmax(model.predict(x_test, verbose=0), -1) == y_test)
    print(f"own loop: test accuracy {accuracy:.4f}")

    trainer = sg_keras.DNITrainer(build(), mode="cdni", optimizer=keras.optimizers.Adam(1e-3))
    for step in range(steps):
        batch = slice(64 * step, 64 * (step + 1))
        logs = trainer.train_step(x[batch], y[batch])
    print(f"DNITrainer: {sorted(logs)}; test {trainer.evaluate(x_test, y_test)}")
    return accuracy


if __name__ == "__main__":
    main()
