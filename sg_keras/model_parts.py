"""What a training step needs to know about a model: its decoupled layers and variables.

>>> model = keras.Sequential([keras.Input((4,)), DecoupledLayer(keras.layers.Dense(3)),
...                           keras.layers.Dense(2)])
>>> network, synthesizers = split_variables(model)
>>> len(network), len(synthesizers)       # two Dense layers; one linear synthesizer
(4, 2)
"""

import tensorflow as tf

from sg_keras.keras_compat import flatten_layers
from sg_keras.layers import DecoupledLayer


def decoupled_layers(model):
    """All `DecoupledLayer`s inside `model` (nested models included)."""
    return [layer for layer in flatten_layers(model) if isinstance(layer, DecoupledLayer)]


def split_variables(model):
    """Returns `(network_variables, synthesizer_variables)` of `model`."""
    synthesizer = [v for layer in decoupled_layers(model)
                   for v in layer.synthesizer.trainable_variables]
    synthesizer_ids = {id(v) for v in synthesizer}
    network = [v for v in model.trainable_variables if id(v) not in synthesizer_ids]
    return network, synthesizer


def _per_module(model, variables_of):
    """Per decoupled layer, `variables_of(wrapped layer)`, each variable counted once."""
    groups, seen = [], set()
    for layer in decoupled_layers(model):
        variables = [v for v in variables_of(layer.layer) if id(v) not in seen]
        seen.update(id(v) for v in variables)
        groups.append(variables)
    return groups


def module_variables(model):
    """Per decoupled layer, the trainable variables of its wrapped module (each counted once)."""
    return _per_module(model, lambda layer: layer.trainable_variables)


def module_state(model):
    """Per decoupled layer, the float statistics of its wrapped module (e.g. BatchNorm's)."""
    return _per_module(model, float_state)


def context_dim_of(model):
    """The context size shared by the model's cDNI layers, or None if there are none."""
    dims = {layer.context_dim for layer in decoupled_layers(model)} - {None}
    if len(dims) > 1:
        raise ValueError(f"The model's DecoupledLayers use different `context_dim`s {sorted(dims)}; "
                         "cDNI gives every layer the same one-hot label context.")
    return dims.pop() if dims else None


def label_context(labels, context_dim):
    """cDNI context: one-hot sparse labels, or labels that are already one-hot."""
    if labels.shape.rank == 2 and labels.shape[-1] == context_dim:
        return tf.cast(labels, tf.float32)
    return tf.one_hot(tf.cast(tf.reshape(labels, [-1]), tf.int32), context_dim)


def float_state(model):
    """The model's non-trainable float variables (e.g. BatchNorm statistics)."""
    return [v for v in model.non_trainable_variables if "float" in str(v.dtype)]
