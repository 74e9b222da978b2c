"""Evaluation in inference mode: a model's mean loss and accuracy over a data set.

Every trainer evaluates its model this way: it compiles `batch_sums` once
(`compiled_batch_sums`) and averages its sums with `evaluate_batches`.

>>> model = keras.Sequential([keras.Input((2,)), keras.layers.Dense(2)])
>>> sums = compiled_batch_sums(model, keras.losses.SparseCategoricalCrossentropy(True))
>>> result = evaluate_batches(sums, np.zeros((3, 2), "float32"), np.array([0, 1, 1]))
>>> sorted(result), round(result["loss"], 4)       # zero inputs: logits 0, loss log 2
(['accuracy', 'loss'], 0.6931)
"""

import functools

import tensorflow as tf

from sg_keras.metrics import accuracy


def batch_sums(model, loss, x, y):
    """`({"loss": Σ, "accuracy": Σ}, count)` of one batch in inference mode: the batch means
    times the batch size; no "accuracy" where `metrics.accuracy` does not apply."""
    predictions = model(x, training=False)
    count = tf.cast(tf.shape(predictions)[0], tf.float32)
    sums = {"loss": loss(y, predictions) * count}
    correct = accuracy(y, predictions)
    if correct is not None:
        sums["accuracy"] = correct * count
    return sums, count


def compiled_batch_sums(model, loss):
    """`batch_sums` of `model` and `loss` as one `tf.function` `(x, y) -> (sums, count)`."""
    return tf.function(functools.partial(batch_sums, model, loss), reduce_retracing=True)


def evaluate_batches(sums_of_batch, x, y=None, batch_size=1024):
    """Mean loss and accuracy over `(x, y)` arrays or a batched `tf.data.Dataset` `x`.

    Args:
        sums_of_batch: `(x, y) -> (sums, count)`, e.g. `compiled_batch_sums(...)`.
        x, y: arrays (batched by `batch_size`), or a dataset of `(x, y)` batches
            and `y=None`.

    Returns:
        `{"loss": float, "accuracy": float}`, without "accuracy" where it does
        not apply (labels that are not classes).
    """
    batches = x if y is None else tf.data.Dataset.from_tensor_slices((x, y)).batch(batch_size)
    totals, count = {}, 0.0
    for batch_x, batch_y in batches:
        sums, batch_count = sums_of_batch(batch_x, batch_y)
        for key, value in sums.items():
            totals[key] = totals.get(key, 0.0) + float(value)
        count += float(batch_count)
    if not count:
        raise ValueError("`evaluate` got no examples: `x` (and `y`) must hold at least one.")
    return {key: total / count for key, total in totals.items()}
