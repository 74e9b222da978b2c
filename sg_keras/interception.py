"""Gradient interception: the custom-gradient identity behind `DecoupledLayer`.

In training a `DecoupledLayer` returns its wrapped layer's output `h` through
`intercept(...)`, an identity whose backward function is a thin adapter over
`sg_keras.dni_maths`: it

* receives the gradient `δ` that arrives at `h` from above,
* sends `applied_gradient(ĝ, δ, N)` down in its place, and
* returns, as the gradient of the synthesizer's variables, the VJP of
  `synthesizer_output_gradient(ĝ, regression_target(δ, N), N)` through the
  synthesizer.

`ĝ = M(h[, c])` is computed once, in the forward pass, under a tape that the
backward function reuses; so one `tape.gradient(loss, variables)` over any
Keras graph yields the DNI updates of every module and of every synthesizer.

`GradientInterception` is the scope a training loop opens around the forward
pass. It carries what the forward pass cannot know by itself: the context
(cDNI labels), the normaliser `N` (the global batch; by default each
activation's own batch), BP(λ) and clipping. It collects one `Interception`
per decoupled call. By default a `tape.gradient` call makes the synthetic
backward pass; inside `with scope.backward(BackwardPass(...))` it makes a
true pass (every interception lets `δ` through, to measure `∂L/∂h`),
regresses the synthesizers on given true gradients, or applies `ĝ` without
training the synthesizers (no regression target, no backward through them).

Example:

>>> model = keras.Sequential([keras.Input((4,)),
...                           DecoupledLayer(keras.layers.Dense(8), context_dim=3),
...                           keras.layers.Dense(3)])
>>> x, y = tf.ones((6, 4)), tf.constant([0, 1, 2, 0, 1, 2])
>>> loss_fn = keras.losses.SparseCategoricalCrossentropy(from_logits=True)
>>> with GradientInterception(context=tf.one_hot(y, 3)) as scope:
...     with tf.GradientTape() as tape:
...         loss = loss_fn(y, model(x, training=True))
>>> grads = tape.gradient(loss, model.trainable_variables)
>>> [float(i.sg_loss) > 0 for i in scope.interceptions]   # ĝ starts at 0: loss ‖N·δ‖²/N
[True]
"""

import contextlib
import dataclasses
import threading
from typing import Any, List, Mapping, Optional

import tensorflow as tf

from sg_keras import dni_maths
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


@dataclasses.dataclass(frozen=True)
class BackwardPass:
    """How the interceptions behave in one `tape.gradient` call.

    Attributes:
        true: pass the arriving gradient down unchanged and train no
            synthesizer (a true backward pass, to measure `∂L/∂h`).
        targets: `{interception index: ∂L/∂h}`; those synthesizers regress on
            the given true gradient (of the mean loss) instead of the arriving
            one.
        train_synthesizers: False: send `ĝ` down as usual, but compute no
            regression target and no synthesizer gradient (None), so the
            arriving `δ` is not needed either.
    """

    true: bool = False
    targets: Optional[Mapping[int, tf.Tensor]] = None
    train_synthesizers: bool = True


SYNTHETIC_PASS = BackwardPass()
TRUE_PASS = BackwardPass(true=True)
FROZEN_PASS = BackwardPass(train_synthesizers=False)


@dataclasses.dataclass(eq=False)
class Interception:
    """One decoupled call: what the forward pass saw, and what its backward reported.

    Attributes:
        layer: the `DecoupledLayer` that was called.
        index: its position among the scope's interceptions (forward order).
        activation: `h`, the wrapped layer's output.
        synthetic: `ĝ = M(h[, c])`, the per-example synthetic gradient.
        output: the intercepted output (the identity of `h`).
        target: set by a synthetic backward pass: the regression target `N·δ`
            (float32).
        sg_loss: set by a synthetic backward pass: `Σ ‖ĝ − target‖² / N` (float32).
        leaf: which of the layer's decoupled outputs this is (0 for the first
            or only one).
    """

    layer: Any
    index: int
    activation: tf.Tensor
    synthetic: tf.Tensor
    output: Optional[tf.Tensor] = None
    target: Optional[tf.Tensor] = None
    sg_loss: Optional[tf.Tensor] = None
    leaf: int = 0


class GradientInterception:
    """Scope for a training forward pass through `DecoupledLayer`s.

    Args:
        context: optional tensor `(batch, context_dim)` given to the
            synthesizers of layers built with `context_dim` (cDNI: one-hot
            labels).
        enabled: if False, decoupled layers behave exactly like their wrapped
            layer in training too (plain backprop; synthesizers are not run).
        bp_lambda: BP(λ) mixing in [0, 1]: pass down `λ·δ + (1 − λ)·ĝ/N`.
            0 (default) is pure DNI.
        clip_norm: if set, each example's synthetic gradient is clipped to
            this L2 norm where it is applied (the synthesizer still regresses
            on its unclipped prediction).
        normaliser: `N`, the number of examples the loss averages over (the
            global batch under tf.distribute); None: each activation's batch
            (its leading axis). With labels per position (`(batch, T)`) `N`
            is still the batch: the positions are part of one example's loss.

    Example:

    >>> model = keras.Sequential([keras.Input((4,)),
    ...                           DecoupledLayer(keras.layers.Dense(8), context_dim=3),
    ...                           keras.layers.Dense(3)])
    >>> with GradientInterception(context=tf.one_hot([0, 2], 3)) as scope:
    ...     logits = model(tf.ones((2, 4)), training=True)
    >>> len(scope.interceptions)
    1
    """

    def __init__(self, context=None, enabled=True, bp_lambda=0.0, clip_norm=None,
                 normaliser=None):
        self.context = context
        self.enabled = bool(enabled)
        self.bp_lambda = in_interval(bp_lambda, 0.0, 1.0, "bp_lambda")
        self.clip_norm = (None if clip_norm is None
                          else in_interval(clip_norm, 0.0, float("inf"), "clip_norm", low_open=True))
        self.normaliser = normaliser
        self.interceptions: List[Interception] = []
        self.backward_pass = SYNTHETIC_PASS

    def __enter__(self):
        _scopes().append(self)
        return self

    def __exit__(self, *exc_info):
        _scopes().remove(self)
        return False

    @contextlib.contextmanager
    def backward(self, backward_pass):
        """Makes the `tape.gradient` calls inside the block use `backward_pass`."""
        previous, self.backward_pass = self.backward_pass, backward_pass
        try:
            yield
        finally:
            self.backward_pass = previous

    def intercept(self, layer, h, synthesize, leaf=0):
        """Decouples `h` (see `intercept`) and records the `Interception`."""
        output, interception = intercept(layer, h, synthesize, self, len(self.interceptions),
                                         leaf)
        self.interceptions.append(interception)
        return output


_DEFAULT_SCOPE = GradientInterception()


def intercept(layer, h, synthesize, scope=None, index=0, leaf=0):
    """Returns `h` unchanged, with its backward replaced by the DNI backward.

    The DNI maths runs in float32 whatever `h`'s dtype (e.g. bfloat16 under a
    mixed precision policy): `ĝ` and `δ` are cast up, the gradient sent down
    is cast back to `h`'s dtype and the synthesizer's output gradient to `ĝ`'s.

    Args:
        layer: the `DecoupledLayer` being called (recorded).
        h: the activation to decouple.
        synthesize: `h -> ĝ`, the synthesizer call (with its context bound).
            It is run here, once, under a tape kept for the backward pass.
        scope: the `GradientInterception` whose options and backward pass
            apply; None: the defaults (no context, the local batch).
        index: the interception's position in `scope`.
        leaf: which of the layer's decoupled outputs `h` is.

    Returns:
        `(output, interception)`.
    """
    scope = scope or _DEFAULT_SCOPE
    made = []

    @tf.custom_gradient
    def decoupled_identity(h):
        with tf.GradientTape(persistent=True) as tape:
            synthetic = synthesize(h)
        interception = Interception(layer, index, h, synthetic, leaf=leaf)
        made.append(interception)

        def backward(delta, variables=None):
            variables = variables or []
            backward_pass = scope.backward_pass
            if backward_pass.true:
                return delta, [None] * len(variables)
            synthetic32 = tf.cast(synthetic, tf.float32)
            normaliser = tf.cast(dni_maths.local_batch(synthetic32) if scope.normaliser is None
                                 else scope.normaliser, tf.float32)
            down = tf.cast(dni_maths.applied_gradient(synthetic32, tf.cast(delta, tf.float32),
                                                      normaliser, bp_lambda=scope.bp_lambda,
                                                      clip_norm=scope.clip_norm), h.dtype)
            if not backward_pass.train_synthesizers:
                return down, [None] * len(variables)
            arriving = tf.cast((backward_pass.targets or {}).get(index, delta), tf.float32)
            target = dni_maths.regression_target(arriving, normaliser)
            interception.target = target
            interception.sg_loss = dni_maths.synthesizer_loss(synthetic32, target, normaliser)
            output_gradient = dni_maths.synthesizer_output_gradient(synthetic32, target, normaliser)
            variable_grads = tape.gradient(synthetic, variables,
                                           output_gradients=tf.cast(output_gradient,
                                                                    synthetic.dtype))
            return down, variable_grads

        return tf.identity(h), backward

    output = decoupled_identity(h)
    interception = made[0]
    interception.output = output
    return output, interception
