"""Complete unlock: one step's updates against a hand computation with plain tapes."""

import keras
import numpy as np
import pytest
import tensorflow as tf

import sg_keras
from conftest import batch, dense_block, randomize_synthesizers
from sg_keras.unlock import CompleteUnlockTrainer

LOSS = keras.losses.SparseCategoricalCrossentropy(from_logits=True)
LR = 0.1


def chain(context_dim=None):
    """x(8) → decoupled Dense(16, tanh) → decoupled Dense(16, tanh) → Dense(5)."""
    keras.utils.set_random_seed(5)
    return keras.Sequential([
        keras.Input((8,)),
        sg_keras.DecoupledLayer(dense_block(16, batch_norm=False, activation="tanh"),
                                context_dim=context_dim),
        sg_keras.DecoupledLayer(dense_block(16, batch_norm=False, activation="tanh"),
                                context_dim=context_dim),
        keras.layers.Dense(5)])


def vjp(fn, inputs, variables, cotangent=None):
    with tf.GradientTape() as tape:
        tape.watch(inputs)
        out = fn(inputs)
    return out, tape.gradient(out, [inputs] + variables, output_gradients=cotangent)


@pytest.mark.parametrize("mode", ["dni", "cdni"])
def test_one_step_equals_the_hand_computation(mode):
    model = chain(5 if mode == "cdni" else None)
    randomize_synthesizers(model)
    trainer = CompleteUnlockTrainer(model, mode=mode, loss=LOSS, input_hidden_layers=0,
                                    optimizer=keras.optimizers.SGD(LR),
                                    sg_optimizer=keras.optimizers.SGD(LR),
                                    input_optimizer=keras.optimizers.SGD(LR))
    rng = np.random.default_rng(3)
    for variable in [v for m in trainer.input_models for v in m.trainable_variables]:
        variable.assign(rng.normal(0, 0.3, variable.shape).astype("float32"))
    x, y = batch(6)
    x = tf.constant(x)
    first, second, head = model.layers
    context = tf.one_hot(y, 5) if mode == "cdni" else None
    n = 6.0
    before = {v.path: v.numpy().copy() for v in model.trainable_variables +
              [v for m in trainer.input_models for v in m.trainable_variables]}

    # The real chain: targets of the input models.
    h1 = first.layer(x)
    h2 = second.layer(h1)
    inputs = [x] + [m(x) for m in trainer.input_models]
    expected = {}
    for model_k, target in zip(trainer.input_models, (h1, h2)):
        with tf.GradientTape() as tape:
            loss = tf.reduce_sum(tf.square(model_k(x) - target)) / n
        for v, g in zip(model_k.trainable_variables, tape.gradient(loss, model_k.trainable_variables)):
            expected[v.path] = before[v.path] - LR * g.numpy()
    # Hidden modules: Jᵀ ĝ/N at their own (synthetic) input; the head: the true gradient.
    arriving = []
    for layer, module_input in ((first, inputs[0]), (second, inputs[1])):
        out = layer.layer(module_input)
        g_hat = layer.synthetic_gradient(out, context)
        _, grads = vjp(layer.layer, module_input, layer.layer.trainable_variables, g_hat / n)
        arriving.append(grads[0])
        for v, g in zip(layer.layer.trainable_variables, grads[1:]):
            expected[v.path] = before[v.path] - LR * g.numpy()
    with tf.GradientTape() as tape:
        tape.watch(inputs[2])
        loss = LOSS(y, head(inputs[2]))
    grads = tape.gradient(loss, [inputs[2]] + head.trainable_variables)
    arriving.append(grads[0])
    for v, g in zip(head.trainable_variables, grads[1:]):
        expected[v.path] = before[v.path] - LR * g.numpy()
    # Synthesizer k regresses on N times the gradient at module k+1's input.
    for layer, module_input, delta in ((first, inputs[0], arriving[1]),
                                       (second, inputs[1], arriving[2])):
        out = layer.layer(module_input)
        synth = layer.synthesizer.trainable_variables
        with tf.GradientTape() as tape:
            loss = tf.reduce_sum(tf.square(layer.synthetic_gradient(out, context) - n * delta)) / n
        for v, g in zip(synth, tape.gradient(loss, synth)):
            expected[v.path] = before[v.path] - LR * g.numpy()

    logs = trainer.train_step(x, y)
    for variable in model.trainable_variables + [v for m in trainer.input_models
                                                 for v in m.trainable_variables]:
        np.testing.assert_allclose(variable.numpy(), expected[variable.path], rtol=1e-4,
                                   atol=1e-6, err_msg=variable.path)
    assert set(logs) == {"loss", "accuracy", f"sg_loss/{first.name}", f"sg_loss/{second.name}",
                         f"input_loss/{second.name}", f"input_loss/{head.name}"}


def test_learns_a_separable_problem_and_composes_at_inference():
    rng = np.random.default_rng(0)
    centers = rng.normal(0, 3, size=(5, 8))
    y = rng.integers(0, 5, size=512)
    x = (centers[y] + rng.normal(size=(512, 8))).astype("float32")
    trainer = CompleteUnlockTrainer(chain(5), mode="cdni", loss=LOSS,
                                    optimizer=keras.optimizers.Adam(3e-3))
    start = trainer.evaluate(x, y)
    key = f"input_loss/{trainer.stages[1].layers[-1].name}"
    first = float(trainer.train_step(x[:64], y[:64])[key])
    for _ in range(25):
        for i in range(0, 512, 64):
            logs = trainer.train_step(x[i:i + 64], y[i:i + 64])
    end = trainer.evaluate(x, y)   # the plain chain: layers trained apart still compose
    assert end["accuracy"] > 0.9 and end["loss"] < 0.5 * start["loss"]
    assert float(logs[key]) < 0.5 * first


def test_models_that_cannot_be_unlocked_are_reported():
    with pytest.raises(ValueError, match="keras.Sequential"):
        inputs = keras.Input((3,))
        CompleteUnlockTrainer(keras.Model(inputs, keras.layers.Dense(2)(inputs)))
    plain = keras.Sequential([keras.Input((3,)), keras.layers.Dense(2)])
    with pytest.raises(ValueError, match="has no DecoupledLayer"):
        CompleteUnlockTrainer(plain)
    with pytest.raises(ValueError, match="'dni' or 'cdni'"):
        CompleteUnlockTrainer(chain(), mode="backprop")


def test_input_models_with_the_label_read_the_image_and_the_one_hot_label():
    model = chain(5)
    trainer = CompleteUnlockTrainer(model, mode="cdni", loss=LOSS, input_hidden_layers=0,
                                    optimizer=keras.optimizers.SGD(LR), input_context=True)
    x, y = batch(6)
    features = np.concatenate([x, np.eye(5, dtype="float32")[y]], -1)   # (6, 8 + 5)
    first_input = trainer.input_models[0]
    h1 = model.layers[0].layer(tf.constant(x))
    with tf.GradientTape() as tape:
        loss = tf.reduce_sum(tf.square(first_input(features) - h1)) / 6.0
    expected = [v.numpy() - LR * g.numpy() for v, g in zip(
        first_input.trainable_variables, tape.gradient(loss, first_input.trainable_variables))]
    logs = trainer.train_step(tf.constant(x), y)
    np.testing.assert_allclose(float(logs[f"input_loss/{model.layers[1].name}"]), float(loss),
                               rtol=1e-5)
    for variable, value in zip(first_input.trainable_variables, expected):
        np.testing.assert_allclose(variable.numpy(), value, rtol=1e-4, atol=1e-6)
    with pytest.raises(ValueError, match="input_context"):
        CompleteUnlockTrainer(chain(), mode="dni", input_context=True)


def test_inspect_compares_the_synthetic_and_true_gradients_of_the_real_chain():
    model = chain()
    randomize_synthesizers(model)
    trainer = CompleteUnlockTrainer(model, mode="dni", loss=LOSS)
    x, y = batch(6)
    first, second, head = model.layers
    h1 = first.layer(tf.constant(x))
    with tf.GradientTape() as tape:
        tape.watch(h1)
        h2 = second.layer(h1)
        loss = LOSS(y, head(h2))
    report = trainer.inspect(tf.constant(x), y)
    assert list(report) == [first.name, second.name]
    np.testing.assert_allclose(report[first.name]["true"], 6 * tape.gradient(loss, h1).numpy(),
                               rtol=1e-4, atol=1e-6)
    np.testing.assert_allclose(report[first.name]["synthetic"],
                               first.synthetic_gradient(h1).numpy(), rtol=1e-5, atol=1e-6)
