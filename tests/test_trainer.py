"""DNITrainer: update rules, modes, schedules, metrics, checkpoints, bad input."""

import keras
import numpy as np
import pytest
import tensorflow as tf

import sg_keras
from conftest import batch, dense_block, fcn, randomize_synthesizers
from sg_keras.metrics import cosine_similarity

LOSS = keras.losses.SparseCategoricalCrossentropy(from_logits=True)


def values(variables):
    return [v.numpy().copy() for v in variables]


def changed(before, variables):
    return [bool(np.abs(b - v.numpy()).max() > 0) for b, v in zip(before, variables)]


def test_first_dni_step_changes_only_the_head_and_the_top_synthesizer():
    model = fcn()
    first, second, head = model.layers
    trainer = sg_keras.DNITrainer(model, mode="dni", optimizer=keras.optimizers.Adam(1e-2))
    groups = [first.layer.trainable_variables, second.layer.trainable_variables,
              head.trainable_variables, first.synthesizer.trainable_variables,
              second.synthesizer.trainable_variables]
    before = [values(g) for g in groups]
    trainer.train_step(*batch(16))
    modules, top_module, head_vars, low_synth, top_synth = [
        changed(b, g) for b, g in zip(before, groups)]
    assert not any(modules) and not any(top_module), "zero ĝ: decoupled modules unchanged"
    assert all(head_vars), "the head gets the true gradient"
    assert not any(low_synth), "its bootstrap target is 0 on the first step"
    assert all(top_synth), "the topmost synthesizer regresses on the true gradient"


def test_sgd_update_of_a_module_is_minus_lr_times_vjp_of_synthetic_gradient():
    model = fcn(batch_norm=False, activation="tanh")
    randomize_synthesizers(model)
    first = model.layers[0]
    x, y = batch()
    h = first.layer(x)
    g_hat = first.synthetic_gradient(h, training=True) / len(x)
    with tf.GradientTape() as tape:
        out = first.layer(x)
    expected_grads = tape.gradient(out, first.layer.trainable_variables, output_gradients=g_hat)
    before = values(first.layer.trainable_variables)
    trainer = sg_keras.DNITrainer(model, mode="dni", optimizer=keras.optimizers.SGD(0.5))
    trainer.train_step(x, y)
    for b, g, v in zip(before, expected_grads, first.layer.trainable_variables):
        np.testing.assert_allclose(v.numpy(), b - 0.5 * g.numpy(), rtol=1e-5, atol=1e-6)
    assert max(float(tf.reduce_max(tf.abs(g))) for g in expected_grads) > 1e-3


def test_backprop_mode_equals_a_plain_gradient_tape_step():
    model = fcn()
    reference = keras.Sequential([keras.Input((8,)), dense_block(16), dense_block(16),
                                  keras.layers.Dense(5)])
    reference.set_weights(model.layers[0].layer.get_weights() + model.layers[1].layer.get_weights()
                          + model.layers[2].get_weights())
    # SGD, not Adam: the bias before BatchNorm has a zero gradient up to float noise,
    # which Adam would scale up to a full step.
    trainer = sg_keras.DNITrainer(model, mode="backprop", optimizer=keras.optimizers.SGD(0.1))
    optimizer = keras.optimizers.SGD(0.1)
    for seed in range(3):
        x, y = batch(16, seed=seed)
        logs = trainer.train_step(x, y)
        with tf.GradientTape() as tape:
            loss = LOSS(y, reference(x, training=True))
        optimizer.apply(tape.gradient(loss, reference.trainable_variables),
                        reference.trainable_variables)
        np.testing.assert_allclose(float(logs["loss"]), float(loss), rtol=1e-6)
        assert set(logs) == {"loss", "accuracy"}
    network, synthesizer = sg_keras.model_parts.split_variables(model)
    pairs = list(zip(network, reference.trainable_variables)) + list(
        zip(model.non_trainable_variables, reference.non_trainable_variables))
    for a, b in pairs:
        np.testing.assert_allclose(a.numpy(), b.numpy(), rtol=1e-5, atol=1e-6)
    np.testing.assert_array_equal(np.concatenate([v.numpy().ravel() for v in synthesizer]), 0.0)


def test_metrics_and_measured_cosine():
    model = fcn(batch_norm=False)
    randomize_synthesizers(model)
    trainer = sg_keras.DNITrainer(model, mode="dni", measure_every=2)
    x, y = batch()
    first, second, head = model.layers
    h1 = first.layer(x)
    h2 = second.layer(h1)
    with tf.GradientTape() as tape:
        tape.watch(h2)
        loss = LOSS(y, head(h2))
    expected = float(cosine_similarity(second.synthetic_gradient(h2, training=True),
                                       tape.gradient(loss, h2)))
    with tf.GradientTape() as tape:   # the lower layer's true gradient goes through second
        tape.watch(h1)
        loss = LOSS(y, head(second.layer(h1)))
    expected_lower = float(cosine_similarity(first.synthetic_gradient(h1, training=True),
                                             tape.gradient(loss, h1)))
    logs = trainer.train_step(x, y)
    names = [first.name, second.name]
    assert set(logs) == {"loss", "accuracy"} | {f"{k}/{n}" for k in ("sg_loss", "cosine")
                                                for n in names}
    np.testing.assert_allclose(float(logs[f"cosine/{second.name}"]), expected, rtol=1e-5)
    np.testing.assert_allclose(float(logs[f"cosine/{first.name}"]), expected_lower, rtol=1e-5)
    np.testing.assert_allclose(float(logs["accuracy"]),
                               np.mean(np.argmax(head(h2), 1) == y))
    unmeasured = trainer.train_step(x, y)   # step 1: the same keys, the cosines NaN
    assert set(unmeasured) == set(logs)
    assert all(np.isnan(float(unmeasured[f"cosine/{n}"])) for n in names)
    assert not np.isnan(float(trainer.train_step(x, y)["cosine/" + first.name]))


def test_true_target_mode_trains_the_synthesizer_on_the_true_gradient():
    model = fcn(batch_norm=False)
    randomize_synthesizers(model)
    first, second, head = model.layers
    x, y = batch()
    h1 = first.layer(x)
    with tf.GradientTape() as tape:
        tape.watch(h1)
        loss = LOSS(y, head(second.layer(h1)))
    target = tape.gradient(loss, h1) * len(x)
    with tf.GradientTape() as tape:
        pred = first.synthetic_gradient(h1, training=True)
        sg_loss = tf.reduce_mean(tf.reduce_sum(tf.square(pred - target), 1))
    grads = tape.gradient(sg_loss, first.synthesizer.trainable_variables)
    before = values(first.synthesizer.trainable_variables)
    trainer = sg_keras.DNITrainer(model, mode="dni", sg_target="true",
                                  sg_optimizer=keras.optimizers.SGD(0.1))
    logs = trainer.train_step(x, y)
    np.testing.assert_allclose(float(logs[f"sg_loss/{first.name}"]), float(sg_loss), rtol=1e-5)
    for b, g, v in zip(before, grads, first.synthesizer.trainable_variables):
        np.testing.assert_allclose(v.numpy(), b - 0.1 * g.numpy(), rtol=1e-4, atol=1e-6)


def test_update_probability_skips_whole_modules():
    model = fcn(batch_norm=False)
    randomize_synthesizers(model)
    trainer = sg_keras.DNITrainer(model, mode="dni", update_prob=0.5, seed=3)
    layers = model.layers[:2]
    counts = np.zeros(2)
    for step in range(12):
        before = [values(layer.layer.trainable_variables) for layer in layers]
        logs = trainer.train_step(*batch(seed=step))
        for i, layer in enumerate(layers):
            flag = float(logs[f"updated/{layer.name}"])
            counts[i] += flag
            assert any(changed(before[i], layer.layer.trainable_variables)) == bool(flag)
    assert 0 < counts.min() and counts.max() < 12
    module_optimizers = trainer.checkpoint.module_optimizers
    assert [int(o.iterations.numpy()) for o in module_optimizers] == counts.astype(int).tolist()
    assert int(trainer.optimizer.iterations.numpy()) == 12


def test_module_learning_rates_follow_the_training_step_not_their_update_count():
    schedule = keras.optimizers.schedules.PiecewiseConstantDecay([4], [1e-2, 1e-3])
    trainer = sg_keras.DNITrainer(fcn(), mode="dni", update_prob=0.3, seed=0,
                                  optimizer=keras.optimizers.Adam(schedule))
    for step in range(6):
        trainer.train_step(*batch(seed=step))
    module_optimizers = trainer.checkpoint.module_optimizers
    assert all(int(o.iterations.numpy()) < 4 for o in module_optimizers)
    assert [float(o.learning_rate) for o in module_optimizers] == pytest.approx([1e-3, 1e-3])


@pytest.mark.parametrize("kwargs, name", [
    ({"mode": "sgd"}, "mode"),
    ({"update_prob": 0.0}, "update_prob"),
    ({"update_prob": 1.5}, "update_prob"),
    ({"update_prob": "x"}, "update_prob"),
    ({"sg_target": "oracle"}, "sg_target"),
    ({"true_gradient_every": -1}, "true_gradient_every"),
    ({"measure_every": 0.5}, "measure_every"),
    ({"bp_lambda": -0.1}, "bp_lambda"),
    ({"mode": "cdni"}, "mode"),
])
def test_bad_arguments_name_the_argument(kwargs, name):
    with pytest.raises(ValueError, match=f"`{name}`"):
        sg_keras.DNITrainer(fcn(), **kwargs)


def test_model_problems_are_reported():
    with pytest.raises(ValueError, match="`mode`='dni'"):
        sg_keras.DNITrainer(fcn(context_dim=5), mode="dni")
    plain = keras.Sequential([keras.Input((3,)), keras.layers.Dense(2)])
    with pytest.raises(ValueError, match="`mode`='dni' needs at least one DecoupledLayer"):
        sg_keras.DNITrainer(plain, mode="dni")
    sg_keras.DNITrainer(plain, mode="backprop")
    unbuilt = keras.Sequential([sg_keras.DecoupledLayer(keras.layers.Dense(2))])
    with pytest.raises(ValueError, match="`model` must be built"):
        sg_keras.DNITrainer(unbuilt)


def test_evaluate_matches_a_direct_computation():
    model = fcn()
    trainer = sg_keras.DNITrainer(model)
    x, y = batch(50)
    result = trainer.evaluate(x, y, batch_size=16)
    logits = model(x)
    assert result["loss"] == pytest.approx(float(LOSS(y, logits)), rel=1e-5)
    assert result["accuracy"] == pytest.approx(float(np.mean(np.argmax(logits, 1) == y)))


def test_checkpoint_restores_every_piece_of_state(tmp_path):
    x, y = batch(16)
    trainer = sg_keras.DNITrainer(fcn(context_dim=5), mode="cdni", update_prob=0.7, seed=1)
    for _ in range(3):
        trainer.train_step(x, y)
    path = trainer.checkpoint.save(str(tmp_path / "ckpt"))
    fresh = sg_keras.DNITrainer(fcn(context_dim=5), mode="cdni", update_prob=0.7, seed=9)
    fresh.checkpoint.restore(path).assert_consumed()
    assert int(fresh.iterations.numpy()) == 3
    state = lambda t: values(t.model.variables + t.optimizer.variables + t.sg_optimizer.variables)
    for a, b in zip(state(trainer), state(fresh)):
        np.testing.assert_array_equal(a, b)
    for _ in range(2):
        logs_a, logs_b = trainer.train_step(x, y), fresh.train_step(x, y)
        assert [float(v) for v in logs_a.values()] == [float(v) for v in logs_b.values()]
    for a, b in zip(state(trainer), state(fresh)):
        np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize("mode", ["backprop", "dni", "cdni"])
def test_every_mode_learns_a_separable_problem(mode):
    rng = np.random.default_rng(0)
    centers = rng.normal(0, 3, size=(5, 8))
    y = rng.integers(0, 5, size=512)
    x = (centers[y] + rng.normal(size=(512, 8))).astype("float32")
    model = fcn(context_dim=5 if mode == "cdni" else None)
    trainer = sg_keras.DNITrainer(model, mode=mode, optimizer=keras.optimizers.Adam(3e-3))
    start = trainer.evaluate(x, y)
    for epoch in range(15):
        for i in range(0, 512, 64):
            trainer.train_step(x[i:i + 64], y[i:i + 64])
    end = trainer.evaluate(x, y)
    assert end["loss"] < 0.2 * start["loss"]
    assert end["accuracy"] > 0.95


def poison_second_synthesizer(model):
    """Makes the second decoupled layer's synthetic gradient NaN."""
    model.layers[1].synthesizer.trainable_variables[1].assign(
        np.full(16, np.nan, dtype="float32"))


def test_nonfinite_step_raises_naming_step_and_layer_and_changes_nothing():
    model = fcn()
    trainer = sg_keras.DNITrainer(model, mode="dni")
    x, y = batch(16)
    trainer.train_step(x, y)
    poison_second_synthesizer(model)
    before = values(model.variables + trainer.optimizer.variables)
    with pytest.raises(sg_keras.NonFiniteError, match="at step 1 in: synthetic gradient of "
                       + model.layers[1].name) as error:
        trainer.train_step(x, y)
    assert error.value.step == 1
    assert f"synthetic gradient of {model.layers[0].name}" not in error.value.parts
    after = values(model.variables + trainer.optimizer.variables)
    for b, a in zip(before, after):   # BatchNorm statistics included: they are put back
        np.testing.assert_array_equal(a, b)


def test_nonfinite_step_can_be_skipped():
    model = fcn()
    trainer = sg_keras.DNITrainer(model, mode="dni", on_nonfinite="skip")
    x, y = batch(16)
    assert float(trainer.train_step(x, y)["skipped"]) == 0.0
    poison_second_synthesizer(model)
    head = values(model.layers[2].trainable_variables)
    assert float(trainer.train_step(x, y)["skipped"]) == 1.0
    assert not any(changed(head, model.layers[2].trainable_variables))
    assert int(trainer.iterations.numpy()) == 2 and int(trainer.optimizer.iterations.numpy()) == 1


def test_synthetic_gradient_norm_clipping():
    model = fcn(blocks=1, batch_norm=False)
    randomize_synthesizers(model, scale=3.0)
    layer = model.layers[0]
    x, y = batch()
    h = layer.layer(x)
    g_hat = layer.synthetic_gradient(h, training=True).numpy()
    norms = np.linalg.norm(g_hat, axis=1, keepdims=True)
    clipped = g_hat * np.minimum(1.0, 0.5 / norms) / len(x)
    with tf.GradientTape() as tape:
        out = layer.layer(x)
    expected = tape.gradient(out, layer.layer.trainable_variables, output_gradients=clipped)
    before = values(layer.layer.trainable_variables)
    trainer = sg_keras.DNITrainer(model, mode="dni", optimizer=keras.optimizers.SGD(1.0),
                                  sg_clip_norm=0.5)
    trainer.train_step(x, y)
    assert norms.min() > 0.5, "every example is clipped"
    for b, g, v in zip(before, expected, layer.layer.trainable_variables):
        np.testing.assert_allclose(v.numpy(), b - g.numpy(), rtol=1e-5, atol=1e-6)


def test_inspect_returns_both_gradients_and_changes_no_state():
    model = fcn()
    randomize_synthesizers(model)
    trainer = sg_keras.DNITrainer(model, mode="dni", measure_every=1)
    x, y = batch(16)
    first, second, head = model.layers
    h1 = first.layer(x, training=True)   # training-mode BatchNorm, as in a step
    with tf.GradientTape() as tape:
        tape.watch(h1)
        loss = LOSS(y, head(second.layer(h1, training=True)))
    true = len(x) * tape.gradient(loss, h1).numpy()
    synthetic = first.synthetic_gradient(h1, training=True).numpy()
    before = values(model.variables)
    report = trainer.inspect(x, y)
    for a, b in zip(before, values(model.variables)):
        np.testing.assert_array_equal(a, b)
    lower = report[first.name]
    np.testing.assert_allclose(lower["activation"], h1.numpy(), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(lower["true"], true, rtol=1e-4, atol=1e-6)
    np.testing.assert_allclose(lower["synthetic"], synthetic, rtol=1e-5, atol=1e-6)
    assert report[second.name]["true"].shape == (16, 16)


def test_a_step_that_breaks_batchnorm_statistics_is_undone():
    model = fcn()
    trainer = sg_keras.DNITrainer(model, mode="dni", on_nonfinite="skip")
    x, y = batch(16)
    trainer.train_step(x, y)
    state = values(model.non_trainable_variables)
    huge = x * np.float32(1e30)   # finite input whose batch variance overflows
    logs = trainer.train_step(huge, y)
    assert float(logs["skipped"]) == 1.0
    for before, variable in zip(state, model.non_trainable_variables):
        np.testing.assert_array_equal(variable.numpy(), before)
    strict = sg_keras.DNITrainer(model, mode="dni")
    with pytest.raises(sg_keras.NonFiniteError, match="statistic .*moving_variance"):
        strict.train_step(huge, y)


def test_nonfinite_variables_names_an_overflowed_weight():
    model = fcn()
    trainer = sg_keras.DNITrainer(model, mode="dni")
    assert trainer.nonfinite_variables() == []
    model.layers[2].kernel.assign(np.full((16, 5), np.inf, "float32"))
    assert trainer.nonfinite_variables() == [model.layers[2].kernel.path]


def test_log_window_holds_the_means_since_the_last_read():
    model = fcn(batch_norm=False)
    randomize_synthesizers(model)
    trainer = sg_keras.DNITrainer(model, mode="dni", measure_every=2)
    x, y = batch()
    logs = [trainer.train_step(x, y) for _ in range(3)]   # steps 0 and 2 measure
    means = trainer.log_window.read()
    assert means["loss"] == pytest.approx(np.mean([float(log["loss"]) for log in logs]), rel=1e-6)
    key = f"cosine/{model.layers[1].name}"
    assert means[key] == pytest.approx(np.nanmean([float(log[key]) for log in logs]), rel=1e-5)
    assert trainer.log_window.read() == {}
