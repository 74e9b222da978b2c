"""The private Keras names in sg_keras.keras_compat still exist and still mean the same."""

import importlib

import keras
import pytest

from sg_keras import DecoupledLayer, keras_compat

# Where each private name lives; an upgrade that moves one fails here, naming it.
PRIVATE = [("keras.src.models.functional", "Functional"),
           ("keras.src.models.model", "functional_init_arguments")]


@pytest.mark.parametrize("module, name", PRIVATE)
def test_private_keras_names_exist(module, name):
    found = getattr(importlib.import_module(module), name, None)
    assert found is not None, (
        f"Keras {keras.__version__} no longer has {module}.{name}: update "
        "sg_keras/keras_compat.py (and the keras bound in pyproject.toml).")


def test_functional_models_are_functional_and_arguments_are_recognised():
    inputs = keras.Input((3,))
    model = keras.Model(inputs, keras.layers.Dense(2)(inputs))
    assert isinstance(model, keras_compat.Functional)
    assert keras_compat.functional_init_arguments((inputs, model.outputs), {})
    assert keras_compat.functional_init_arguments((), {"inputs": inputs, "outputs": model.outputs})
    assert not keras_compat.functional_init_arguments((), {"name": "net"})


def test_flatten_layers_finds_nested_layers():
    inner = DecoupledLayer(keras.layers.Dense(4), name="inner")
    model = keras.Sequential([keras.Input((3,)), keras.Sequential([inner], name="block"),
                              keras.layers.Dense(2)])
    assert inner in keras_compat.flatten_layers(model)
    assert model in keras_compat.flatten_layers(model)


def test_loss_tracker_is_the_compiled_loss_mean():
    model = keras.Sequential([keras.Input((3,)), keras.layers.Dense(2)])
    model.compile(optimizer="sgd", loss="mse")
    tracker = keras_compat.loss_tracker(model)
    assert isinstance(tracker, keras.metrics.Mean)
    model.fit(keras.ops.ones((4, 3)), keras.ops.zeros((4, 2)), epochs=1, verbose=0)
    assert float(tracker.count) > 0
