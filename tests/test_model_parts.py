"""Finding a model's decoupled layers, its variable groups and its cDNI context."""

import keras
import numpy as np
import pytest

import sg_keras
from conftest import fcn
from sg_keras.model_parts import (context_dim_of, decoupled_layers, label_context,
                                  module_variables, split_variables)


def test_decoupled_layers_and_variable_groups_of_a_nested_model():
    inner = fcn(blocks=2)
    model = keras.Sequential([keras.Input((8,)), inner, keras.layers.Dense(3)])
    layers = decoupled_layers(model)
    assert {id(layer) for layer in layers} == {id(layer) for layer in inner.layers[:2]}
    network, synthesizers = split_variables(model)
    assert {id(v) for v in synthesizers} == {id(v) for layer in layers
                                             for v in layer.synthesizer.trainable_variables}
    assert not {id(v) for v in network} & {id(v) for v in synthesizers}
    assert len(network) + len(synthesizers) == len(model.trainable_variables)
    groups = module_variables(model)
    assert [[v.path for v in g] for g in groups] == [
        [v.path for v in layer.layer.trainable_variables] for layer in layers]


def test_context_dim_must_be_shared():
    assert context_dim_of(fcn(context_dim=5)) == 5 and context_dim_of(fcn()) is None
    model = keras.Sequential([keras.Input((4,)),
                              sg_keras.DecoupledLayer(keras.layers.Dense(3), context_dim=2),
                              sg_keras.DecoupledLayer(keras.layers.Dense(3), context_dim=3)])
    with pytest.raises(ValueError, match="different `context_dim`s"):
        context_dim_of(model)


def test_label_context_one_hot_or_passed_through():
    np.testing.assert_array_equal(label_context(keras.ops.convert_to_tensor([2, 0]), 3),
                                  [[0, 0, 1], [1, 0, 0]])
    one_hot = keras.ops.convert_to_tensor([[0.0, 1.0, 0.0]])
    np.testing.assert_array_equal(label_context(one_hot, 3), one_hot)
