"""The NaN/Inf guard's parts: every tensor of a step it checks, and the one reduction per part.

A training step applies its update only when every part is finite (see
`StepEngine`); the parts' names say what went wrong.

>>> variable = keras.Variable([1.0, float("inf")], name="kernel")
>>> parts = finiteness_parts(tf.constant(0.5), [], [variable], [tf.ones(2)], state=[variable])
>>> [(name, bool(tf.math.is_finite(part_sum(value)))) for name, _, value in parts]
[('loss', True), ('gradient of kernel', True), ('statistic kernel', False)]
"""

import tensorflow as tf

from sg_keras.metrics import interception_keys


def finiteness_parts(loss, interceptions, variables, gradients, state=()):
    """Every part of a step the NaN/Inf guard checks, as `(name, owner, tensor)`.

    The parts are the loss (owner None), each layer's ĝ (owner: its
    `DecoupledLayer`), each gradient (owner: its variable) and each statistic
    in `state` (owner: the variable itself); the names say which part went wrong.
    """
    parts = [("loss", None, loss)]
    for key, interception in zip(interception_keys(interceptions), interceptions):
        parts.append((f"synthetic gradient of {key}", interception.layer, interception.synthetic))
    for variable, gradient in zip(variables, gradients):
        if gradient is not None:
            parts.append((f"gradient of {variable.path}", variable, gradient))
    parts += [(f"statistic {variable.path}", variable, variable) for variable in state]
    return parts


def part_sum(value):
    """The float32 sum of a tensor: non-finite when any element is (one cheap reduction per
    part of `finiteness_parts`; a sum that overflows is flagged too, rightly)."""
    return tf.reduce_sum(tf.cast(value, tf.float32))
