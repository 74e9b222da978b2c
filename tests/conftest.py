"""Shared fixtures: tiny models and the optional real MNIST file."""

import os
import pathlib

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import keras  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402

import sg_keras  # noqa: E402
import sg_keras.model_parts  # noqa: E402

REPO = pathlib.Path(__file__).resolve().parents[1]
MNIST_PATH = REPO.parent / "shared" / "data" / "mnist.npz"


def dense_block(units, batch_norm=True, activation="relu"):
    """Dense → (BatchNorm) → activation, as the paper's FCN hidden layer."""
    layers = [keras.layers.Dense(units)]
    if batch_norm:
        layers.append(keras.layers.BatchNormalization())
    layers.append(keras.layers.Activation(activation))
    return keras.Sequential(layers)


def fcn(input_dim=8, units=16, classes=5, blocks=2, context_dim=None, batch_norm=True,
        activation="relu", synthesizer=None):
    """Input → `blocks` decoupled hidden blocks → Dense(classes) head."""
    keras.utils.set_random_seed(1)
    layers = [keras.Input((input_dim,))]
    for _ in range(blocks):
        layers.append(sg_keras.DecoupledLayer(
            dense_block(units, batch_norm, activation), context_dim=context_dim,
            synthesizer=synthesizer() if synthesizer else None))
    layers.append(keras.layers.Dense(classes))
    return keras.Sequential(layers)


def randomize_synthesizers(model, scale=0.3, seed=2):
    """Gives every synthesizer non-zero weights so that ĝ ≠ 0."""
    rng = np.random.default_rng(seed)
    for layer in sg_keras.model_parts.decoupled_layers(model):
        for variable in layer.synthesizer.trainable_variables:
            variable.assign(rng.normal(0.0, scale, variable.shape).astype("float32"))


def batch(n=6, input_dim=8, classes=5, seed=0):
    rng = np.random.default_rng(seed)
    return (rng.normal(size=(n, input_dim)).astype("float32"),
            rng.integers(0, classes, size=n).astype("int64"))


@pytest.fixture
def mnist_path():
    if not MNIST_PATH.exists():
        pytest.skip(f"{MNIST_PATH} is not present")
    return MNIST_PATH


def write_npz(path, **arrays):
    np.savez(path, **arrays)
    return path


@pytest.fixture(scope="session")
def small_npz(tmp_path_factory):
    """A few hundred Keras-layout MNIST examples: real ones when the file is there."""
    path = tmp_path_factory.mktemp("data") / "small_mnist.npz"
    if MNIST_PATH.exists():
        with np.load(MNIST_PATH) as full:
            return write_npz(path, x_train=full["x_train"][:640], y_train=full["y_train"][:640],
                             x_test=full["x_test"][:200], y_test=full["y_test"][:200])
    rng = np.random.default_rng(0)
    prototypes = rng.integers(0, 256, size=(10, 28, 28))

    def draw(n):
        labels = rng.integers(0, 10, size=n)
        noise = rng.integers(-40, 40, size=(n, 28, 28))
        return np.clip(prototypes[labels] + noise, 0, 255).astype(np.uint8), labels.astype(np.uint8)

    (x_train, y_train), (x_test, y_test) = draw(640), draw(200)
    return write_npz(path, x_train=x_train, y_train=y_train, x_test=x_test, y_test=y_test)
