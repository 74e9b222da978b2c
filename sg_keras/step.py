"""One DNI training step's gradients, shared by `DNITrainer` and `DNIModel`.

`dni_gradients` runs the forward pass inside a `GradientInterception` scope
and returns the gradients of every requested variable: for the network those
are the DNI updates (each decoupled module sees its synthetic gradient), for
the synthesizers the gradients of their regression losses. With
`measure=True` it first makes one true backward pass (every interception
passes the arriving gradient through) to get `∂L/∂h` at each decoupled layer,
for the cosine similarity and, with `regress_on_true=True`, as the
synthesizers' targets. `DNIOptions` holds the validated step options and
says which kind of step (plain, measured, true-target) a step number makes.
"""

import collections
import dataclasses

import tensorflow as tf

from sg_keras.interception import GradientInterception
from sg_keras.layers import DecoupledLayer
from sg_keras.validation import in_interval, int_at_least, one_of

MODES = ("backprop", "dni", "cdni")
SG_TARGETS = ("bootstrap", "true")
STEP_KINDS = ((False, False), (True, False), (True, True))
"""`(measure, regress_on_true)` of a plain, a measured and a true-target step."""

StepResult = collections.namedtuple(
    "StepResult", ["loss", "predictions", "gradients", "records", "true_gradients"])


def _due(step, every):
    """1 on the steps that are multiples of `every` (never if it is 0), else 0.

    Plain arithmetic, so `step` may be a Python int or an integer tensor.
    """
    return (every - step % every) // every if every else 0


@dataclasses.dataclass
class DNIOptions:
    """How the DNI steps are made; validated, shared by `DNITrainer` and `DNIModel`.

    The fields are the `DNITrainer` arguments of the same names. A step's
    kind, `(measure, regress_on_true)`, follows from its number.

    >>> options = DNIOptions("dni", true_gradient_every=3, measure_every=2)
    >>> [options.step_kind(step) for step in range(3)]
    [(True, True), (False, False), (True, False)]
    """

    mode: str = "dni"
    sg_target: str = "bootstrap"
    true_gradient_every: int = 0
    measure_every: int = 0
    bp_lambda: float = 0.0

    def __post_init__(self):
        self.mode = one_of(self.mode, MODES, "mode")
        self.sg_target = one_of(self.sg_target, SG_TARGETS, "sg_target")
        self.true_gradient_every = int_at_least(self.true_gradient_every, 0, "true_gradient_every")
        self.measure_every = int_at_least(self.measure_every, 0, "measure_every")
        self.bp_lambda = in_interval(self.bp_lambda, 0.0, 1.0, "bp_lambda")

    def check_layers(self, layers, context_dim):
        """Raises ValueError naming `mode` if it does not fit the model's DecoupledLayers.

        Args:
            layers: the model's `decoupled_layers`.
            context_dim: their `context_dim_of`.
        """
        if self.mode != "backprop" and not layers:
            raise ValueError(f"`mode`={self.mode!r} needs at least one DecoupledLayer in the "
                             "model; use mode='backprop' for a plain model.")
        if self.mode == "dni" and context_dim is not None:
            raise ValueError("`mode`='dni' but the model's DecoupledLayers have context_dim="
                             f"{context_dim}: use mode='cdni', or build them without it.")
        if self.mode == "cdni" and context_dim is None:
            raise ValueError("`mode`='cdni' needs DecoupledLayers built with `context_dim` "
                             "(the number of classes).")

    def step_kind_index(self, step):
        """Index into `STEP_KINDS` of step number `step` (an int or an integer tensor)."""
        if self.mode == "backprop":
            return 0
        if self.sg_target == "true":
            return 2
        regress = _due(step, self.true_gradient_every)
        return 2 * regress + _due(step, self.measure_every) * (1 - regress)

    def step_kind_indices(self):
        """The indices `step_kind_index` can return, in increasing order."""
        if self.mode == "backprop":
            return [0]
        if self.sg_target == "true":
            return [2]
        return [0] + [1] * bool(self.measure_every) + [2] * bool(self.true_gradient_every)

    def step_kind(self, step):
        """`(measure, regress_on_true)` of step number `step`."""
        return STEP_KINDS[self.step_kind_index(step)]


def clone_optimizer(optimizer):
    """A new optimizer with `optimizer`'s configuration and none of its state."""
    return optimizer.__class__.from_config(optimizer.get_config())


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
                  bp_lambda=0.0, clip_norm=None, measure=False, regress_on_true=False):
    """Forward and backward pass of one training step.

    Args:
        model: a Keras model, possibly containing `DecoupledLayer`s.
        loss_fn: `(y, predictions) -> scalar` mean loss.
        x, y: one batch.
        variables: the variables to differentiate (network and synthesizers).
        context: cDNI context (see `label_context`).
        enabled: False for plain backprop.
        bp_lambda: BP(λ) mix, see `GradientInterception`.
        clip_norm: per-example norm bound of the applied synthetic gradients.
        measure: also compute the true `∂L/∂h` at each decoupled layer.
        regress_on_true: train the synthesizers on those true gradients
            instead of the bootstrapped ones (needs `measure`).

    Returns:
        A `StepResult`; `true_gradients` is None unless `measure`.
    """
    measure = measure or regress_on_true
    with tf.GradientTape(persistent=measure) as tape:
        with GradientInterception(context=context, enabled=enabled, bp_lambda=bp_lambda,
                                  clip_norm=clip_norm) as scope:
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


def record_keys(records):
    """A unique name per decoupled call: the layer's name, indexed if it repeats."""
    names = [record.layer.name for record in records]
    return [name if names.count(name) == 1 else f"{name}_{index}"
            for index, name in enumerate(names)]


def layer_metrics(result):
    """Per decoupled call: `sg_loss/NAME` and, when measured, `cosine/NAME`.

    The cosine compares the synthetic gradient with the true per-example
    gradient over the whole batch (both flattened).
    """
    metrics = {}
    true_gradients = result.true_gradients or [None] * len(result.records)
    for key, record, true_gradient in zip(record_keys(result.records), result.records,
                                          true_gradients):
        if record.sg_loss is not None:
            metrics[f"sg_loss/{key}"] = record.sg_loss
        if true_gradient is not None:
            metrics[f"cosine/{key}"] = cosine_similarity(record.synthetic, true_gradient)
    return metrics


def sparse_accuracy(y, predictions):
    """Fraction of rows whose arg-max matches the integer label."""
    labels = tf.cast(tf.reshape(y, [-1]), tf.int64)
    return tf.reduce_mean(tf.cast(tf.equal(tf.argmax(predictions, axis=-1), labels), tf.float32))


def float_state(model):
    """The model's non-trainable float variables (e.g. BatchNorm statistics)."""
    return [v for v in model.non_trainable_variables if "float" in str(v.dtype)]


def finiteness_sums(result, variables, state=()):
    """Named sums of every part of a step: NaN/Inf in a part makes its sum non-finite.

    One cheap reduction per part (the loss, each layer's ĝ, each gradient,
    each statistic in `state`, see `float_state`); the names tell which part
    went wrong. A sum that overflows is flagged too, rightly.
    """
    parts = {"loss": result.loss}
    for key, record in zip(record_keys(result.records), result.records):
        parts[f"synthetic gradient of {key}"] = record.synthetic
    for variable, gradient in zip(variables, result.gradients):
        if gradient is not None:
            parts[f"gradient of {variable.path}"] = gradient
    for variable in state:
        parts[f"statistic {variable.path}"] = variable
    return {name: tf.reduce_sum(tf.cast(value, tf.float32)) for name, value in parts.items()}
