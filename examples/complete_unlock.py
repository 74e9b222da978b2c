"""Complete unlock: every module trains on a synthetic input and a synthetic gradient.

    python examples/complete_unlock.py          # tiny: 80 steps on synthetic data (seconds)
    python examples/complete_unlock.py --full   # 3,000 steps

`sg_keras.CompleteUnlockTrainer` cuts a Sequential chain after each `DecoupledLayer` into
modules. Module k > 1 does not wait for the layers below: it trains on `I_k(x)`, a linear
model of the network input that regresses on the real activation it stands in for; nor
for the layers above: it updates from its synthetic gradient. At inference the chain is the
plain model.
"""

import argparse

import keras
import numpy as np

import sg_keras

PROTOTYPES = np.random.default_rng(0).random((10, 64))


def data(n, seed):
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 10, n)
    return np.clip(PROTOTYPES[y] + rng.normal(0, 0.5, (n, 64)), 0, 1).astype("float32"), y


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--full", action="store_true", help="3,000 steps")
    args = parser.parse_args(argv)
    steps = 3000 if args.full else 80
    keras.utils.set_random_seed(0)

    def block():
        return keras.Sequential([keras.layers.Dense(128),
                                 keras.layers.BatchNormalization(momentum=0.9),
                                 keras.layers.ReLU()])

    model = keras.Sequential([keras.Input((64,)),
                              sg_keras.DecoupledLayer(block(), context_dim=10, name="dni1"),
                              sg_keras.DecoupledLayer(block(), context_dim=10, name="dni2"),
                              keras.layers.Dense(10)])
    trainer = sg_keras.CompleteUnlockTrainer(model, mode="cdni",
                                             optimizer=keras.optimizers.Adam(1e-3))
    x, y = data(64 * steps, seed=0)
    for step in range(steps):
        logs = trainer.train_step(x[64 * step:64 * (step + 1)], y[64 * step:64 * (step + 1)])
    print("last step: " + ", ".join(f"{key} {float(value):.4f}" for key, value in
                                    sorted(logs.items())))
    x_test, y_test = data(1000, seed=1)
    result = trainer.evaluate(x_test, y_test)
    print(f"complete unlock: test accuracy {float(result['accuracy']):.4f}")
    return result


if __name__ == "__main__":
    main()
