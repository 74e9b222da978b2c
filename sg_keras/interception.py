"""Gradient interception: the custom-gradient identity behind `DecoupledLayer`.

In training a `DecoupledLayer` returns its wrapped layer's output `h` through
`intercept(...)`, an identity whose backward function

* receives the gradient `δ` that actually arrives at `h` from above (the
  synthesizer's regression target),
* sends the synthetic gradient `ĝ / B` down in place of `δ`, and
* returns, as the gradient of the synthesizer's variables, the gradient of the
  regression loss `mean_b ‖ĝ_b − B·δ_b‖²`.

`ĝ = M(h[, c])` is computed once, in the forward pass, under a tape that the
backward function reuses; so one `tape.gradient(loss, variables)` over any
Keras graph yields the DNI updates of every module and of every synthesizer.

Scale (per-example gradients): the task loss is assumed to be a mean over the
batch, so `δ = ∂L_sum/∂h / B`. Synthesizers predict the per-example gradient
`∂L_sum/∂h` (target `B·δ`) and the backward divides by `B` where it applies
the prediction, so a trained synthesizer does not depend on the batch size.

`GradientInterception` is the scope a training loop opens around the forward
pass: it carries the context (cDNI labels), switches interception on or off and
collects one `InterceptionRecord` per decoupled call, through which the loop
reads the synthesizer losses and can ask for a true-gradient pass.

Example:

>>> with GradientInterception(context=one_hot_labels) as scope:   # doctest: +SKIP
...     with tf.GradientTape() as tape:
...         loss = loss_fn(y, model(x, training=True))
>>> grads = tape.gradient(loss, model.trainable_variables)        # doctest: +SKIP
>>> [float(r.sg_loss) for r in scope.records]                     # doctest: +SKIP
"""

import dataclasses
import threading
from typing import Any, Callable, List, Optional

import tensorflow as tf

from sg_keras.validation import in_interval

_local = threading.local()


def _scopes():
    if not hasattr(_local, "scopes"):
        _local.scopes = []
    return _local.scopes


def current_scope():
    """Returns the innermost active `GradientInterception`, or None."""
    scopes = _scopes()
    return scopes[-1] if scopes else None


@dataclasses.dataclass(eq=False)
class InterceptionRecord:
    """What one decoupled call saw in the forward pass and its backward set.

    Attributes set in the forward pass:
        layer: the `DecoupledLayer` that was called.
        activation: `h`, the wrapped layer's output.
        output: the intercepted output (identity of `h`); a training loop asks
            for gradients with respect to it to get the true `∂L/∂h`.
        synthetic: `ĝ = M(h[, c])`, the per-example synthetic gradient.

    Switches read by the backward function (set them between two
    `tape.gradient` calls of a persistent tape):
        pass_true: pass the arriving gradient down unchanged and train nothing
            (a true backward pass, for diagnostics and true targets).
        true_gradient: when set, the synthesizer regresses on this gradient
            (of the mean loss, as returned by `tape.gradient`) instead of the
            one that arrives in this backward pass.

    Set by the backward function (synthetic pass):
        target: the per-example regression target (`B·δ`).
        sg_loss: `mean_b ‖ĝ_b − target_b‖²`.
    """

    layer: Any
    activation: tf.Tensor
    synthetic: tf.Tensor
    output: Optional[tf.Tensor] = None
    pass_true: bool = False
    true_gradient: Optional[tf.Tensor] = None
    target: Optional[tf.Tensor] = None
    sg_loss: Optional[tf.Tensor] = None


class GradientInterception:
    """Scope for a training forward pass through `DecoupledLayer`s.

    Args:
        context: optional tensor `(batch, context_dim)` given to the
            synthesizers of layers built with `context_dim` (cDNI: one-hot
            labels).
        enabled: if False, decoupled layers behave exactly like their wrapped
            layer in training too (plain backprop; synthesizers are not run).
        bp_lambda: BP(λ) mixing in [0, 1]: pass down `λ·δ + (1 − λ)·ĝ/B`.
            0 (default) is pure DNI.
        clip_norm: if set, each example's synthetic gradient is clipped to
            this L2 norm where it is applied (the synthesizer still regresses
            on its unclipped prediction).

    Example:

    >>> with GradientInterception(context=tf.one_hot(y, 10)) as scope:  # doctest: +SKIP
    ...     logits = model(x, training=True)
    """

    def __init__(self, context=None, enabled=True, bp_lambda=0.0, clip_norm=None):
        self.context = context
        self.enabled = bool(enabled)
        self.bp_lambda = in_interval(bp_lambda, 0.0, 1.0, "bp_lambda")
        self.clip_norm = (None if clip_norm is None
                          else in_interval(clip_norm, 0.0, float("inf"), "clip_norm", low_open=True))
        self.records: List[InterceptionRecord] = []

    def __enter__(self):
        _scopes().append(self)
        return self

    def __exit__(self, *exc_info):
        _scopes().remove(self)
        return False


def intercept(h, synthesize: Callable[[tf.Tensor], tf.Tensor], record_factory, bp_lambda=0.0,
              clip_norm=None):
    """Returns `h` unchanged, with its backward replaced by the DNI backward.

    Args:
        h: the activation to decouple.
        synthesize: `h -> ĝ`, the synthesizer call (with its context bound).
            It is run here, once, under a tape kept for the backward pass.
        record_factory: `(activation, synthetic) -> InterceptionRecord`; the
            record through which the backward is steered and reports.
        bp_lambda: BP(λ) mixing weight of the arriving gradient.
        clip_norm: optional per-example L2 norm bound of the applied `ĝ`.

    Returns:
        `(output, record)`.
    """
    records = []

    @tf.custom_gradient
    def decoupled_identity(h):
        with tf.GradientTape(persistent=True) as tape:
            synthetic = synthesize(h)
        record = record_factory(h, synthetic)
        records.append(record)

        def backward(delta, variables=None):
            variables = variables or []
            if record.pass_true:
                return delta, [None] * len(variables)
            batch = tf.cast(tf.shape(h)[0], delta.dtype)
            arriving = delta if record.true_gradient is None else record.true_gradient
            target = tf.stop_gradient(arriving) * batch
            residual = synthetic - target
            record.target = target
            record.sg_loss = tf.reduce_mean(
                tf.reduce_sum(tf.reshape(tf.square(residual), [tf.shape(h)[0], -1]), axis=1))
            variable_grads = tape.gradient(
                synthetic, variables, output_gradients=2.0 * residual / batch)
            applied = synthetic
            if clip_norm is not None:
                axes = list(range(1, len(synthetic.shape)))
                applied = tf.clip_by_norm(synthetic, clip_norm, axes=axes)
            down = applied / batch
            if bp_lambda:
                down = bp_lambda * delta + (1.0 - bp_lambda) * down
            return down, variable_grads

        return tf.identity(h), backward

    output = decoupled_identity(h)
    record = records[0]
    record.output = output
    return output, record
