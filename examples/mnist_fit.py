"""Wrap two hidden blocks of an MNIST classifier in DecoupledLayer and train it with `fit`.

    python examples/mnist_fit.py                   # tiny: 4,096 images, 1 epoch (seconds)
    python examples/mnist_fit.py --full            # 60,000 images, 20 epochs, as the paper
    python examples/mnist_fit.py --mode=dni        # no label context
    python examples/mnist_fit.py --data_path=PATH  # Keras' mnist.npz layout

Without the MNIST file (default `../shared/data/mnist.npz` next to the checkout) it trains
on synthetic digits: ten noisy prototypes, so the script always runs.
"""

import argparse
import pathlib

import keras
import numpy as np

import sg_keras

DEFAULT_DATA = pathlib.Path(__file__).resolve().parents[2] / "shared" / "data" / "mnist.npz"


def load(path, train_size):
    """`(x_train, y_train, x_test, y_test)`: images flattened to 784 values in [0, 1]."""
    if path.exists():
        with np.load(path) as mnist:
            x, y = mnist["x_train"][:train_size], mnist["y_train"][:train_size]
            x_test, y_test = mnist["x_test"], mnist["y_test"]
        print(f"MNIST from {path}")
    else:
        print(f"no file at {path}: synthetic digits")
        rng = np.random.default_rng(0)
        prototypes = rng.random((10, 28, 28))
        y, y_test = rng.integers(0, 10, train_size), rng.integers(0, 10, 2000)
        x = np.clip(prototypes[y] + rng.normal(0, 0.5, (train_size, 28, 28)), 0, 1) * 255
        x_test = np.clip(prototypes[y_test] + rng.normal(0, 0.5, (2000, 28, 28)), 0, 1) * 255
    flat = lambda images: (images.reshape(len(images), -1) / 255.0).astype("float32")  # noqa
    return flat(x), y, flat(x_test), y_test


def block(name, momentum):
    """The paper's hidden layer: Dense(256) → BatchNorm → ReLU."""
    return keras.Sequential([keras.layers.Dense(256),
                             keras.layers.BatchNormalization(momentum=momentum),
                             keras.layers.ReLU()], name=name)


def build(mode, momentum=0.99):
    """Two decoupled blocks and a linear head; a short run wants BatchNorm `momentum` 0.9."""
    context = 10 if mode == "cdni" else None   # cDNI: the synthesizers see the one-hot label
    return sg_keras.DNIModel.from_model(keras.Sequential([
        keras.Input((784,)),
        sg_keras.DecoupledLayer(block("block1", momentum), context_dim=context, name="dni1"),
        sg_keras.DecoupledLayer(block("block2", momentum), context_dim=context, name="dni2"),
        keras.layers.Dense(10, name="logits"),
    ]))


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--full", action="store_true", help="all 60,000 images, 20 epochs")
    parser.add_argument("--mode", choices=["backprop", "dni", "cdni"], default="cdni")
    parser.add_argument("--data_path", type=pathlib.Path, default=DEFAULT_DATA)
    args = parser.parse_args(argv)
    keras.utils.set_random_seed(0)
    x, y, x_test, y_test = load(args.data_path, 60000 if args.full else 4096)
    model = build(args.mode, momentum=0.99 if args.full else 0.9)
    model.compile(optimizer=keras.optimizers.Adam(1e-3), mode=args.mode, measure_every=10,
                  loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
                  metrics=["accuracy"])
    history = model.fit(x, y, batch_size=256 if args.full else 64, epochs=20 if args.full else 1,
                        verbose=2 if args.full else 0)
    logs = {key: round(values[-1], 4) for key, values in history.history.items()}
    print(f"last epoch: {logs}")
    result = model.evaluate(x_test, y_test, return_dict=True, verbose=0)
    print(f"{args.mode}: test accuracy {result['accuracy']:.4f}")
    return result


if __name__ == "__main__":
    main()
