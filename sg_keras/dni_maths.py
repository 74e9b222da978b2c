"""The DNI maths of Jaderberg et al. (2016) as plain functions: the applied ĝ and its regression.

Every front end (the custom loop, `fit`, the recurrent trainer, the
distributed and pipelined executors) computes its synthetic-gradient updates
with these functions and nothing else.

Scale. A synthesizer predicts the *per-example* gradient: that of the summed
loss. The task loss is a mean over the batch, so the gradient `δ` that
arrives at an activation is the per-example gradient divided by the number of
examples the loss averages over: the *normaliser* `N`. On one device `N` is the
batch size; with `R` replicas each of local batch `b` (tf.distribute), Keras
divides each replica's mean loss by `R`, so `N = R·b`, the global batch. Every
function takes `N` explicitly.

* `regression_target(δ, N) = N·δ`, with the gradient stopped: what `M` learns.
* `synthesizer_loss(ĝ, t, N) = Σ ‖ĝ − t‖² / N`: summed over the local examples,
  so that the sum over replicas is the global batch mean.
* `synthesizer_output_gradient(ĝ, t, N) = 2·(ĝ − t) / N`: its gradient with
  respect to `ĝ`, which a VJP through the synthesizer turns into the
  synthesizer's weight gradients.
* `applied_gradient(ĝ, δ, N, ...)`: what flows below the activation:
  `ĝ/N` (replace, DNI), `δ + ĝ/N` (add, recurrent DNI at a truncation
  boundary), `λ·δ + (1 − λ)·ĝ/N` (BP(λ)); `ĝ` may first be clipped to a
  per-example L2 norm.

Example (one example, `N = 2`):

>>> g, delta = tf.constant([[4.0, 0.0]]), tf.constant([[0.5, 0.5]])
>>> regression_target(delta, 2.0).numpy().tolist()
[[1.0, 1.0]]
>>> float(synthesizer_loss(g, regression_target(delta, 2.0), 2.0))
5.0
>>> applied_gradient(g, delta, 2.0).numpy().tolist()
[[2.0, 0.0]]
>>> applied_gradient(g, delta, 2.0, combine="add").numpy().tolist()
[[2.5, 0.5]]
>>> applied_gradient(g, delta, 2.0, clip_norm=2.0).numpy().tolist()
[[1.0, 0.0]]
"""

import tensorflow as tf

COMBINE = ("replace", "add")


def local_batch(h):
    """The number of examples in `h` (its leading dimension), as a float scalar."""
    return tf.cast(tf.shape(h)[0], h.dtype)


def regression_target(arriving, normaliser):
    """The per-example regression target `N·δ` of a synthesizer (no gradient flows into it).

    Args:
        arriving: `δ`, the gradient of the (mean) loss at the activation:
            bootstrapped (through the synthetic gradients above) or true.
        normaliser: `N`, the number of examples the loss averages over.
    """
    return tf.stop_gradient(arriving) * tf.cast(normaliser, arriving.dtype)


def synthesizer_loss(synthetic, target, normaliser):
    """`Σ_local ‖ĝ − target‖² / N`: the batch mean of the squared error when `N` is the batch."""
    residual = synthetic - target
    return tf.reduce_sum(tf.square(residual)) / tf.cast(normaliser, residual.dtype)


def synthesizer_output_gradient(synthetic, target, normaliser):
    """`∂ synthesizer_loss / ∂ĝ = 2·(ĝ − target) / N`."""
    return 2.0 * (synthetic - target) / tf.cast(normaliser, synthetic.dtype)


def clip_per_example(synthetic, clip_norm):
    """Clips each example's `ĝ` (all axes but the first) to L2 norm `clip_norm`."""
    return tf.clip_by_norm(synthetic, clip_norm, axes=list(range(1, len(synthetic.shape))))


def applied_gradient(synthetic, arriving, normaliser, *, combine="replace", bp_lambda=0.0,
                     clip_norm=None):
    """The gradient that flows below a decoupled activation.

    Args:
        synthetic: `ĝ`, the per-example synthetic gradient.
        arriving: `δ`, the gradient arriving from above (used by "add" and BP(λ);
            may be None for pure "replace").
        normaliser: `N`, see the module docstring.
        combine: "replace" (DNI: `ĝ/N` instead of `δ`) or "add" (`δ + ĝ/N`: the
            synthetic gradient of the future, added at a truncation boundary).
        bp_lambda: with "replace", BP(λ): `λ·δ + (1 − λ)·ĝ/N`.
        clip_norm: optional per-example L2 bound applied to `ĝ` first.
    """
    if combine not in COMBINE:
        raise ValueError(f"`combine` must be one of {COMBINE}, got {combine!r}.")
    if clip_norm is not None:
        synthetic = clip_per_example(synthetic, clip_norm)
    down = synthetic / tf.cast(normaliser, synthetic.dtype)
    if combine == "add":
        return arriving + down
    if bp_lambda:
        down = bp_lambda * arriving + (1.0 - bp_lambda) * down
    return down
