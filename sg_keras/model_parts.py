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
    synthesizer = [v for layer in decoupled_layers(model) for each in layer.synthesizers
                   for v in each.trainable_variables]
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
    """cDNI context of labels of any shape: one per example or one per position.

    Integer labels are class indices, one-hot on a new last axis: `(B,)` →
    `(B, C)`, a context per example (a synthesizer tiles it over the
    positions of its activation), and `(B, T)` → `(B, T, C)`, a context per
    position (e.g. next-token targets); a trailing axis of 1 is dropped
    first. Float labels whose last axis is `context_dim` are one-hot already
    and pass through (as float32); other float labels are taken as class
    indices.

    >>> label_context(tf.constant([[1, 0, 2]]), 3).shape
    TensorShape([1, 3, 3])
    """
    if labels.dtype.is_floating and labels.shape.rank and labels.shape[-1] == context_dim:
        return tf.cast(labels, tf.float32)
    if labels.shape.rank and labels.shape.rank > 1 and labels.shape[-1] == 1:
        labels = tf.squeeze(labels, -1)
    return tf.one_hot(tf.cast(labels, tf.int32), context_dim)


def check_precision(model):
    """Refuses a model with float16 layers (`mixed_float16`), which DNI does not train.

    Under `mixed_float16` the loss is scaled (by `LossScaleOptimizer`), so the
    gradient that arrives at a decoupled activation, the synthesizers'
    regression target, is scaled too; sg_keras does not unscale it.
    """
    half = [layer.name for layer in flatten_layers(model)
            if getattr(layer, "compute_dtype", None) == "float16"]
    if half:
        raise ValueError(
            f"`model`: layers {half[:3]} compute in float16 (mixed_float16), whose loss "
            "scaling DNI does not support. Use "
            "keras.mixed_precision.set_global_policy('mixed_bfloat16') (it needs no loss "
            "scaling) or float32.")


def float_state(model):
    """The model's non-trainable float variables (e.g. BatchNorm statistics)."""
    return [v for v in model.non_trainable_variables if "float" in str(v.dtype)]
