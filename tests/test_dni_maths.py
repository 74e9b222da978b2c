"""The DNI maths, checked against numpy written from the formulas (one device and R replicas)."""

import numpy as np
import pytest
import tensorflow as tf

from sg_keras import dni_maths

RNG = np.random.default_rng(0)
G_HAT = RNG.normal(size=(4, 3)).astype("float32")      # per-example synthetic gradients
DELTA = RNG.normal(size=(4, 3)).astype("float32")      # gradient of the mean loss at h


@pytest.mark.parametrize("normaliser", [4.0, 8.0])     # the local batch, or a global one
def test_target_loss_and_its_gradient(normaliser):
    target = dni_maths.regression_target(tf.constant(DELTA), normaliser)
    np.testing.assert_allclose(target, normaliser * DELTA, rtol=1e-6)
    loss = dni_maths.synthesizer_loss(tf.constant(G_HAT), target, normaliser)
    np.testing.assert_allclose(float(loss), ((G_HAT - normaliser * DELTA) ** 2).sum() / normaliser,
                               rtol=1e-5)
    g = tf.Variable(G_HAT)
    with tf.GradientTape() as tape:
        autodiff = dni_maths.synthesizer_loss(g, target, normaliser)
    np.testing.assert_allclose(
        dni_maths.synthesizer_output_gradient(tf.constant(G_HAT), target, normaliser),
        tape.gradient(autodiff, g), rtol=1e-5)


def test_the_target_carries_no_gradient():
    delta = tf.Variable(DELTA)
    with tf.GradientTape() as tape:
        loss = dni_maths.synthesizer_loss(tf.constant(G_HAT),
                                          dni_maths.regression_target(delta, 4.0), 4.0)
    assert tape.gradient(loss, delta) is None


def test_replicas_sum_to_one_replica_on_the_global_batch():
    """Two halves normalised by the global batch add up to the whole batch's loss."""
    target = dni_maths.regression_target(tf.constant(DELTA), 4.0)
    whole = dni_maths.synthesizer_loss(tf.constant(G_HAT), target, 4.0)
    halves = [dni_maths.synthesizer_loss(tf.constant(G_HAT[i:i + 2]), target[i:i + 2], 4.0)
              for i in (0, 2)]
    np.testing.assert_allclose(float(whole), float(sum(halves)), rtol=1e-6)
    assert float(dni_maths.local_batch(tf.constant(G_HAT[:2]))) == 2.0


@pytest.mark.parametrize("combine, bp_lambda, expected", [
    ("replace", 0.0, G_HAT / 4),
    ("replace", 0.25, 0.25 * DELTA + 0.75 * G_HAT / 4),
    ("add", 0.0, DELTA + G_HAT / 4),
])
def test_applied_gradient(combine, bp_lambda, expected):
    got = dni_maths.applied_gradient(tf.constant(G_HAT), tf.constant(DELTA), 4.0,
                                     combine=combine, bp_lambda=bp_lambda)
    np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-7)


def test_clipping_bounds_each_examples_norm_before_scaling():
    got = dni_maths.applied_gradient(tf.constant(G_HAT), None, 4.0, clip_norm=0.5).numpy()
    norms = np.linalg.norm(G_HAT, axis=1, keepdims=True)
    np.testing.assert_allclose(got, G_HAT * np.minimum(1.0, 0.5 / norms) / 4, rtol=1e-5)


def test_unknown_combination_is_rejected():
    with pytest.raises(ValueError, match="`combine`"):
        dni_maths.applied_gradient(tf.constant(G_HAT), tf.constant(DELTA), 4.0, combine="mix")
