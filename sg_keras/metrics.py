"""Step metrics: the cosine (whole, or from parts that add over replicas), accuracy, keys.

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
    """A unique name per decoupled call: the layer's name (`NAME_k` for its k-th decoupled
    output, k >= 1), indexed by the call if it repeats."""
    names = [interception.layer.name + (f"_{interception.leaf}" if interception.leaf else "")
             for interception in interceptions]
    return [name if names.count(name) == 1 else f"{name}_{index}"
            for index, name in enumerate(names)]


def accuracy(y, predictions):
    """Arg-max accuracy of class scores, or None where the labels are not classes.

    * Integer labels of the predictions' shape minus the last axis (`(B,)`
      with `(B, C)`, `(B, T)` with `(B, T, V)`; a trailing axis of 1 is
      dropped first): the fraction of positions whose arg-max is the label,
      over all positions.
    * Labels of the predictions' shape (one-hot, C > 1): arg-max against
      arg-max.
    * Anything else (e.g. float regression targets): None, so the trainers
      report no accuracy.

    The decision reads the static ranks and shapes.

    >>> float(accuracy(np.array([[1, 0]]), np.array([[[0.1, 0.9], [0.2, 0.8]]])))
    0.5
    >>> accuracy(np.array([0.5, 1.5]), np.array([[0.4], [1.2]])) is None
    True
    """
    y, predictions = tf.convert_to_tensor(y), tf.convert_to_tensor(predictions)
    rank = predictions.shape.rank
    if y.shape.rank is None or rank is None or rank < 2 or predictions.shape[-1] == 1:
        return None
    if y.dtype.is_integer and (y.shape.rank == rank - 1
                               or (y.shape.rank == rank and y.shape[-1] == 1)):
        return sparse_accuracy(y, predictions)
    if y.shape.rank == rank and y.shape[-1] == predictions.shape[-1]:
        return sparse_accuracy(tf.argmax(y, axis=-1), predictions)
    return None


def sparse_accuracy(y, predictions):
    """Fraction of positions whose arg-max matches the integer label (labels: the
    predictions' shape minus the last axis, or with a trailing axis of 1)."""
    predicted = tf.argmax(predictions, axis=-1)
    labels = tf.reshape(tf.cast(y, tf.int64), tf.shape(predicted))
    return tf.reduce_mean(tf.cast(tf.equal(predicted, labels), tf.float32))


def cosine_parts(a, b):
    """`[a·b, ‖a‖², ‖b‖²]` of the flattened tensors: sums, so they add over replicas."""
    a = tf.reshape(tf.cast(a, tf.float32), [-1])
    b = tf.reshape(tf.cast(b, tf.float32), [-1])
    return tf.stack([tf.reduce_sum(a * b), tf.reduce_sum(a * a), tf.reduce_sum(b * b)])


def cosine_from_parts(parts):
    """The cosine from `cosine_parts` (summed over replicas); 0 if either norm is 0."""
    return tf.math.divide_no_nan(parts[0], tf.sqrt(parts[1]) * tf.sqrt(parts[2]))
