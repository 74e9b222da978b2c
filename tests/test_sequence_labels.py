"""Labels per position: accuracy, the cDNI context and a per-position synthesizer's exact maths."""

import keras
import numpy as np
import tensorflow as tf

import sg_keras
from sg_keras.interception import GradientInterception
from sg_keras.metrics import accuracy
from sg_keras.model_parts import label_context

LOSS = keras.losses.SparseCategoricalCrossentropy(from_logits=True)


def softmax(z):
    e = np.exp(z - z.max(-1, keepdims=True))
    return e / e.sum(-1, keepdims=True)


def test_accuracy_over_every_position_for_sparse_and_one_hot_labels_and_none_otherwise():
    rng = np.random.default_rng(0)
    logits = rng.normal(size=(3, 4, 5)).astype("float32")
    labels = rng.integers(0, 5, size=(3, 4))
    expected = (logits.argmax(-1) == labels).mean()
    np.testing.assert_allclose(float(accuracy(labels, logits)), expected, rtol=1e-6)
    one_hot = np.eye(5, dtype="float32")[labels]
    np.testing.assert_allclose(float(accuracy(one_hot, logits)), expected, rtol=1e-6)
    flat = logits[:, 0]
    np.testing.assert_allclose(float(accuracy(labels[:, :1], flat)),   # (B, 1) labels
                               (flat.argmax(-1) == labels[:, 0]).mean(), rtol=1e-6)
    assert accuracy(rng.normal(size=(3,)), rng.normal(size=(3, 1))) is None   # regression
    assert accuracy(rng.normal(size=(3, 4)).astype("float32"), logits) is None


def test_label_context_per_example_and_per_position():
    per_position = label_context(tf.constant([[1, 0], [2, 2]]), 3)
    np.testing.assert_array_equal(per_position, np.eye(3)[[[1, 0], [2, 2]]])
    np.testing.assert_array_equal(label_context(tf.constant([[2], [0]]), 3), np.eye(3)[[2, 0]])
    one_hot = tf.constant(np.eye(3, dtype="float32")[[[1, 0]]])
    np.testing.assert_array_equal(label_context(one_hot, 3), one_hot)


def test_per_position_synthesizer_with_per_position_context_matches_numpy():
    keras.utils.set_random_seed(0)
    b, t, f, d, v = 3, 4, 2, 5, 6
    inputs = keras.Input((t, f))
    block = sg_keras.DecoupledLayer(keras.layers.Dense(d), context_dim=v, name="block")
    head = keras.layers.Dense(v)
    model = keras.Model(inputs, head(block(inputs)))
    rng = np.random.default_rng(1)
    for variable in block.synthesizer.trainable_variables:
        variable.assign(rng.normal(0.0, 0.5, variable.shape).astype("float32"))
    x = rng.normal(size=(b, t, f)).astype("float32")
    y = rng.integers(0, v, size=(b, t))
    context = label_context(tf.constant(y), v)
    sources = block.layer.trainable_variables + block.synthesizer.trainable_variables
    with GradientInterception(context=context) as scope, tf.GradientTape() as tape:
        loss = LOSS(y, model(x, training=True))
    grads = tape.gradient(loss, sources)

    w, c0 = [v_.numpy() for v_ in block.layer.weights]
    k, c = [v_.numpy() for v_ in block.synthesizer.net.layers[-1].weights]
    wh, bh = [v_.numpy() for v_ in head.weights]
    h = x @ w + c0
    inputs_of_m = np.concatenate([h, np.eye(v)[y]], axis=-1)
    g = inputs_of_m @ k + c                                          # ĝ[b, t]
    interception = scope.interceptions[0]
    np.testing.assert_allclose(interception.synthetic, g, rtol=1e-5, atol=1e-6)
    delta = (softmax(h @ wh + bh) - np.eye(v)[y]) / (b * t) @ wh.T   # mean over B·T positions
    target = b * delta                                                # N = B, the batch
    np.testing.assert_allclose(interception.target, target, rtol=1e-4, atol=1e-6)
    np.testing.assert_allclose(float(interception.sg_loss), ((g - target) ** 2).sum() / b,
                               rtol=1e-4)
    residual = 2 * (g - target) / b
    np.testing.assert_allclose(grads[2], np.einsum("bti,btj->ij", inputs_of_m, residual),
                               rtol=1e-4, atol=1e-6)
    np.testing.assert_allclose(grads[3], residual.sum((0, 1)), rtol=1e-4, atol=1e-6)
    down = g / b                                                      # ĝ/N sent down
    np.testing.assert_allclose(grads[0], np.einsum("bti,btj->ij", x, down), rtol=1e-4, atol=1e-6)
    np.testing.assert_allclose(grads[1], down.sum((0, 1)), rtol=1e-4, atol=1e-6)
