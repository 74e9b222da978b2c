"""One DNI training step's gradients, shared by `DNITrainer` and `DNIModel`.

`dni_gradients` runs the forward pass inside a `GradientInterception` scope
and returns the gradients of every requested variable: for the network those
are the DNI updates (each decoupled module sees its synthetic gradient), for
the synthesizers the gradients of their regression losses. With
`measure=True` it first makes one true backward pass (every interception
passes the arriving gradient through) to get `∂L/∂h` at each decoupled layer,
for the cosine similarity and, with `regress_on_true=True`, as the
synthesizers' targets.
"""

import collections

import tensorflow as tf

from sg_keras.interception import GradientInterception
from sg_keras.layers import DecoupledLayer

StepResult = collections.namedtuple(
    "StepResult", ["loss", "predictions", "gradients", "records", "true_gradients"])


def decoupled_layers(model):
    """All `DecoupledLayer`s inside `model` (nested models included)."""
    return [layer for layer in model._flatten_layers(include_self=True, recursive=True)
            if isinstance(layer, DecoupledLayer)]


def split_variables(model):
    """Returns `(network_variables, synthesizer_variables)` of `model`."""
    synthesizer = [v for layer in decoupled_layers(model)
                   for v in layer.synthesizer.trainable_variables]
    synthesizer_ids = {id(v) for v in synthesizer}
    network = [v for v in model.trainable_variables if id(v) not in synthesizer_ids]
    return network, synthesizer


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


def dni_gradients(model, loss_fn, x, y, variables, *, context=None, enabled=True,
                  bp_lambda=0.0, measure=False, regress_on_true=False):
    """Forward and backward pass of one training step.

    Args:
        model: a Keras model, possibly containing `DecoupledLayer`s.
        loss_fn: `(y, predictions) -> scalar` mean loss.
        x, y: one batch.
        variables: the variables to differentiate (network and synthesizers).
        context: cDNI context (see `label_context`).
        enabled: False for plain backprop.
        bp_lambda: BP(λ) mix, see `GradientInterception`.
        measure: also compute the true `∂L/∂h` at each decoupled layer.
        regress_on_true: train the synthesizers on those true gradients
            instead of the bootstrapped ones (needs `measure`).

    Returns:
        A `StepResult`; `true_gradients` is None unless `measure`.
    """
    measure = measure or regress_on_true
    with tf.GradientTape(persistent=measure) as tape:
        with GradientInterception(context=context, enabled=enabled, bp_lambda=bp_lambda) as scope:
            predictions = model(x, training=True)
        loss = loss_fn(y, predictions)
    records = scope.records
    true_gradients = None
    if measure and records:
        for record in records:
            record.pass_true = True
        true_gradients = tape.gradient(loss, [record.output for record in records])
        for record, true_gradient in zip(records, true_gradients):
            record.pass_true = False
            if regress_on_true:
                record.true_gradient = true_gradient
    gradients = tape.gradient(loss, variables)
    del tape
    return StepResult(loss, predictions, gradients, records, true_gradients)


def cosine_similarity(a, b):
    """Cosine of the angle between two tensors, flattened; 0 if either is 0."""
    a = tf.reshape(tf.cast(a, tf.float32), [-1])
    b = tf.reshape(tf.cast(b, tf.float32), [-1])
    norms = tf.norm(a) * tf.norm(b)
    return tf.math.divide_no_nan(tf.reduce_sum(a * b), norms)


def layer_metrics(result):
    """Per decoupled call: `sg_loss/NAME` and, when measured, `cosine/NAME`.

    The cosine compares the synthetic gradient with the true per-example
    gradient over the whole batch (both flattened).
    """
    metrics = {}
    names = [record.layer.name for record in result.records]
    true_gradients = result.true_gradients or [None] * len(names)
    for index, (name, record, true_gradient) in enumerate(
            zip(names, result.records, true_gradients)):
        key = name if names.count(name) == 1 else f"{name}_{index}"
        if record.sg_loss is not None:
            metrics[f"sg_loss/{key}"] = record.sg_loss
        if true_gradient is not None:
            metrics[f"cosine/{key}"] = cosine_similarity(record.synthetic, true_gradient)
    return metrics


def sparse_accuracy(y, predictions):
    """Fraction of rows whose arg-max matches the integer label."""
    labels = tf.cast(tf.reshape(y, [-1]), tf.int64)
    return tf.reduce_mean(tf.cast(tf.equal(tf.argmax(predictions, axis=-1), labels), tf.float32))
