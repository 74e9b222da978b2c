"""The DNI backward, checked against independent VJPs computed by hand."""

import numpy as np
import pytest
import tensorflow as tf

from conftest import batch, fcn, randomize_synthesizers
from sg_keras.interception import GradientInterception
from sg_keras.engine import dni_gradients
from sg_keras.model_parts import split_variables

LOSS = tf.keras.losses.SparseCategoricalCrossentropy(from_logits=True)


def vjp(fn, primal, cotangent, sources):
    """(∂fn/∂sources)ᵀ · cotangent with a plain tape."""
    with tf.GradientTape() as tape:
        tape.watch(primal)
        out = fn(primal)
    return tape.gradient(out, sources, output_gradients=cotangent)


def manual_forward(model, x):
    """h1, h2 and the logits, computed without any interception."""
    first, second, head = model.layers
    h1 = first.layer(x, training=True)
    h2 = second.layer(h1, training=True)
    return h1, h2, head(h2)


def regression_gradient(layer, h, target, context=None):
    """∇φ mean_b ‖M(h) − target‖², computed independently of the backward."""
    with tf.GradientTape() as tape:
        pred = layer.synthetic_gradient(h, context, training=True)
        loss = tf.reduce_mean(tf.reduce_sum(tf.square(pred - target), axis=1))
    return tape.gradient(loss, layer.synthesizer.trainable_variables), loss


def assert_all_close(actual, expected, atol=1e-5):
    for a, e in zip(actual, expected):
        np.testing.assert_allclose(np.asarray(a), np.asarray(e), atol=atol, rtol=1e-4)


@pytest.fixture(params=["eager", "graph"])
def run(request):
    """Runs a function eagerly or traced, so both code paths are checked."""
    return (lambda fn, *a: fn(*a)) if request.param == "eager" else (
        lambda fn, *a: tf.function(fn)(*a))


def test_forward_is_identity_and_inference_is_the_wrapped_layer():
    model = fcn(batch_norm=False)
    randomize_synthesizers(model)
    x, _ = batch()
    h1, h2, logits = manual_forward(model, x)
    with GradientInterception():
        np.testing.assert_array_equal(model(x, training=True), logits)
    np.testing.assert_array_equal(model(x), logits)
    np.testing.assert_array_equal(model.predict(x, verbose=0), logits)


def test_module_update_and_gradient_below_are_vjps_of_the_synthetic_gradient(run):
    model = fcn(batch_norm=False, activation="tanh")
    randomize_synthesizers(model)
    x, y = batch()
    first, second, _ = model.layers
    network, _ = split_variables(model)

    def step(x):
        with tf.GradientTape() as tape:
            tape.watch(x)
            with GradientInterception():
                loss = LOSS(y, model(x, training=True))
        return tape.gradient(loss, [x] + network)

    grads = run(step, tf.constant(x))
    h1, h2, _ = manual_forward(model, x)
    b = len(x)
    g1 = first.synthetic_gradient(h1, training=True) / b
    g2 = second.synthetic_gradient(h2, training=True) / b
    # The gradient below the first module is (∂h1/∂x)ᵀ ĝ1 / B, its weights get (∂h1/∂θ)ᵀ ĝ1 / B.
    x_var = tf.constant(x)
    with tf.GradientTape() as tape:
        tape.watch(x_var)
        h = first.layer(x_var, training=True)
    expected_x, *expected_theta1 = tape.gradient(
        h, [x_var] + first.layer.trainable_variables, output_gradients=g1)
    expected_theta2 = vjp(second.layer, h1, g2, second.layer.trainable_variables)
    assert_all_close(grads[0], expected_x)
    assert_all_close(grads[1:3], expected_theta1)
    assert_all_close(grads[3:5], expected_theta2)
    assert float(tf.reduce_max(tf.abs(g1))) > 1e-3, "the check needs a non-zero ĝ"


@pytest.mark.parametrize("regress_on_true", [False, True])
def test_synthesizer_gradients_regress_on_bootstrap_or_true_targets(run, regress_on_true):
    model = fcn(batch_norm=False, activation="tanh")
    randomize_synthesizers(model)
    x, y = batch()
    first, second, head = model.layers
    _, synth = split_variables(model)

    def step(x):
        result = dni_gradients(model, LOSS, x, y, synth, regress_on_true=regress_on_true)
        return result.gradients, [r.sg_loss for r in result.interceptions]

    grads, sg_losses = run(step, tf.constant(x))
    h1, h2, _ = manual_forward(model, x)
    b = len(x)
    # Topmost decoupled module: the target is the true per-example gradient B·∂L/∂h2.
    true_h2 = vjp(lambda h: LOSS(y, head(h)), h2, None, h2)
    # Lower module: bootstrap = ĝ2 / B back-propagated through module 2; true = ∂L/∂h1.
    if regress_on_true:
        delta1 = vjp(lambda h: LOSS(y, head(second.layer(h, training=True))), h1, None, h1)
    else:
        delta1 = vjp(lambda h: second.layer(h, training=True), h1,
                     second.synthetic_gradient(h2, training=True) / b, h1)
    expected1, loss1 = regression_gradient(first, h1, b * delta1)
    expected2, loss2 = regression_gradient(second, h2, b * true_h2)
    assert_all_close(grads[:2], expected1)
    assert_all_close(grads[2:], expected2)
    assert_all_close(sg_losses, [loss1, loss2])
    assert float(tf.reduce_max(tf.abs(delta1))) > 1e-4


def test_true_backward_leaks_nothing_into_the_synthetic_one():
    """A measured step (true pass first) gives the same network gradients."""
    model = fcn(batch_norm=False)
    randomize_synthesizers(model)
    x, y = batch()
    variables = model.trainable_variables
    plain = dni_gradients(model, LOSS, x, y, variables)
    measured = dni_gradients(model, LOSS, x, y, variables, measure=True)
    network, _ = split_variables(model)
    assert_all_close(measured.gradients[:len(network)], plain.gradients[:len(network)], atol=0)
    h1, h2, _ = manual_forward(model, x)
    true_h2 = vjp(lambda h: LOSS(y, model.layers[2](h)), h2, None, h2)
    assert_all_close(measured.true_gradients[1:], [true_h2])


@pytest.mark.parametrize("bp_lambda", [0.0, 0.3, 1.0])
def test_bp_lambda_mixes_true_and_synthetic_gradient(bp_lambda):
    model = fcn(blocks=1, batch_norm=False)
    randomize_synthesizers(model)
    x, y = batch()
    layer, head = model.layers
    x_t = tf.constant(x)
    with tf.GradientTape() as tape:
        tape.watch(x_t)
        with GradientInterception(bp_lambda=bp_lambda):
            loss = LOSS(y, model(x_t, training=True))
    got = tape.gradient(loss, x_t)
    h = layer.layer(x)
    delta = vjp(lambda a: LOSS(y, head(a)), h, None, h)
    mixed = bp_lambda * delta + (1 - bp_lambda) * layer.synthetic_gradient(h, training=True) / len(x)
    assert_all_close([got], [vjp(layer.layer, x_t, mixed, x_t)])


def test_bp_lambda_out_of_range_is_rejected():
    with pytest.raises(ValueError, match="`bp_lambda`"):
        GradientInterception(bp_lambda=1.5)


def test_synthetic_gradient_scale_does_not_depend_on_batch_size():
    """Batch X and batch [X; X] give the same updates and the same targets."""
    model = fcn(batch_norm=False, activation="tanh")
    randomize_synthesizers(model)
    x, y = batch()
    variables = model.trainable_variables
    single = dni_gradients(model, LOSS, x, y, variables)
    double = dni_gradients(model, LOSS, np.concatenate([x, x]), np.concatenate([y, y]), variables)
    assert_all_close(double.gradients, single.gradients)
    for one, two in zip(single.interceptions, double.interceptions):
        assert_all_close([two.target[:len(x)], two.target[len(x):]], [one.target, one.target])
        assert_all_close([two.sg_loss], [one.sg_loss])
    # The per-example target of the topmost module is the gradient of the *summed* loss.
    h2 = manual_forward(model, x)[1]
    summed = vjp(lambda h: tf.reduce_sum(
        tf.keras.losses.sparse_categorical_crossentropy(y, model.layers[2](h), from_logits=True)),
        h2, None, h2)
    assert_all_close([single.interceptions[1].target], [summed])


def test_records_are_collected_in_forward_order():
    model = fcn()
    x, y = batch()
    result = dni_gradients(model, LOSS, x, y, model.trainable_variables)
    assert [r.layer for r in result.interceptions] == model.layers[:2]
    for record in result.interceptions:
        assert record.synthetic.shape == record.activation.shape
