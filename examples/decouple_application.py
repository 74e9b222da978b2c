"""Decouple a `keras.applications` model at its residual sums with `sg_keras.decouple`.

    python examples/decouple_application.py          # tiny: MobileNetV2 (alpha 0.35), one
                                                     # step on 16 random 32x32 images
    python examples/decouple_application.py --full   # CIFAR-10 (downloaded by Keras), 5 epochs

`sg_keras.decouple(model, layers)` returns a `DNIModel` whose named layers are
`DecoupledLayer`s around the same layer objects (the weights are shared with the original
model, nothing is copied); here every `*_add` layer, where MobileNetV2's residual branches
join, gets a convolutional synthesizer.
"""

import argparse

import keras
import numpy as np

import sg_keras


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--full", action="store_true", help="CIFAR-10, 5 epochs")
    args = parser.parse_args(argv)
    keras.utils.set_random_seed(0)
    if args.full:
        (x, y), (x_test, y_test) = keras.datasets.cifar10.load_data()
        x, x_test = x.astype("float32") / 255.0, x_test.astype("float32") / 255.0
    else:
        rng = np.random.default_rng(0)
        x, y = rng.random((16, 32, 32, 3)).astype("float32"), rng.integers(0, 10, 16)
    base = keras.applications.MobileNetV2(weights=None, input_shape=(32, 32, 3), classes=10,
                                          alpha=1.0 if args.full else 0.35,
                                          classifier_activation=None)
    residual_sums = [layer.name for layer in base.layers if layer.name.endswith("_add")]
    # --full: the default synthesizer of a rank-4 activation (the paper's CIFAR setting, two
    # hidden 5x5 convolutions of 128 filters); tiny: a template, one linear 5x5 convolution,
    # of which each decoupled layer gets its own copy.
    template = None if args.full else sg_keras.synthesizers.ConvSynthesizer(hidden_layers=0)
    model = sg_keras.decouple(base, residual_sums, synthesizer=template)
    print(f"decoupled {len(residual_sums)} residual sums: {', '.join(residual_sums)}")
    model.compile(optimizer=keras.optimizers.Adam(1e-3), metrics=["accuracy"],
                  loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    history = model.fit(x, y, batch_size=128 if args.full else 16,
                        epochs=5 if args.full else 1, verbose=2 if args.full else 0)
    logs = {key: round(values[-1], 4) for key, values in history.history.items()}
    print(f"last epoch: loss {logs['loss']}, {len(logs) - 2} synthesizer losses")
    if args.full:
        result = model.evaluate(x_test, y_test, return_dict=True, verbose=0)
        print(f"test accuracy {result['accuracy']:.4f}")
    return logs


if __name__ == "__main__":
    main()
