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


def finiteness_sums(loss, interceptions, variables, gradients, state=()):
    """Named sums of every part of a step: NaN/Inf in a part makes its sum non-finite.

    One cheap reduction per part (the loss, each layer's ĝ, each gradient,
    each statistic in `state`); the names tell which part went wrong. A sum
    that overflows is flagged too, rightly.
    """
    parts = {"loss": loss}
    for key, interception in zip(interception_keys(interceptions), interceptions):
        parts[f"synthetic gradient of {key}"] = interception.synthetic
    for variable, gradient in zip(variables, gradients):
        if gradient is not None:
            parts[f"gradient of {variable.path}"] = gradient
    for variable in state:
        parts[f"statistic {variable.path}"] = variable
    return {name: tf.reduce_sum(tf.cast(value, tf.float32)) for name, value in parts.items()}
