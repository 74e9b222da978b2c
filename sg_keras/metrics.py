"""Step metrics: per-layer synthesizer loss and cosine, accuracy, finiteness checks.

>>> float(cosine_similarity(tf.constant([1.0, 0.0]), tf.constant([1.0, 1.0])))  # doctest: +ELLIPSIS
0.7071...
"""

import tensorflow as tf


def cosine_similarity(a, b):
    """Cosine of the angle between two tensors, flattened; 0 if either is 0."""
    a = tf.reshape(tf.cast(a, tf.float32), [-1])
    b = tf.reshape(tf.cast(b, tf.float32), [-1])
    norms = tf.norm(a) * tf.norm(b)
    return tf.math.divide_no_nan(tf.reduce_sum(a * b), norms)


def interception_keys(interceptions):
    """A unique name per decoupled call: the layer's name, indexed if it repeats."""
    names = [interception.layer.name for interception in interceptions]
    return [name if names.count(name) == 1 else f"{name}_{index}"
            for index, name in enumerate(names)]


def sparse_accuracy(y, predictions):
    """Fraction of rows whose arg-max matches the integer label."""
    labels = tf.cast(tf.reshape(y, [-1]), tf.int64)
    return tf.reduce_mean(tf.cast(tf.equal(tf.argmax(predictions, axis=-1), labels), tf.float32))


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
