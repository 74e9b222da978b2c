"""StepEngine: the guard decided on the device, and fit's NaN/Inf handling."""

import keras
import numpy as np
import pytest

import sg_keras
from conftest import batch, fcn, randomize_synthesizers

LOSS = keras.losses.SparseCategoricalCrossentropy(from_logits=True)


def poison(model):
    """NaN in the second decoupled layer's synthesizer bias: its ĝ becomes NaN."""
    model.layers[1].synthesizer.trainable_variables[1].assign(np.full(16, np.nan, "float32"))


def state(model, optimizers):
    return [v.numpy().copy() for v in model.variables + [w for o in optimizers
                                                        for w in o.variables]]


@pytest.mark.parametrize("jit_compile", [False, True])
def test_after_a_refused_step_every_step_is_refused_until_checked(jit_compile):
    """The bad step is recorded on the device and later steps are refused: the state stays
    that of the bad step even where no graph assertion stops the loop (XLA drops them)."""
    model = fcn()
    trainer = sg_keras.DNITrainer(model, mode="dni", jit_compile=jit_compile)
    x, y = batch(16)
    trainer.train_step(x, y)
    poison(model)
    try:
        trainer.train_step(x, y)
    except sg_keras.NonFiniteError as error:
        assert error.step == 1
    model.layers[1].synthesizer.trainable_variables[1].assign(np.zeros(16, "float32"))
    before = state(model, trainer.engine.optimizers())
    try:                                     # healthy again, but the run has stopped
        trainer.train_step(x, y)
    except sg_keras.NonFiniteError as error:
        assert error.step == 1
    for a, b in zip(before, state(model, trainer.engine.optimizers())):
        np.testing.assert_array_equal(a, b)
    with pytest.raises(sg_keras.NonFiniteError, match="at step 1 in: synthetic gradient of "
                       + model.layers[1].name):
        trainer.check_finite()


def test_fit_raises_naming_the_step_and_keeps_the_weights_of_the_bad_step():
    model = sg_keras.DNIModel.from_model(fcn())
    model.compile(optimizer=keras.optimizers.SGD(0.1), loss=LOSS)
    x, y = batch(32)
    model.fit(x[:16], y[:16], batch_size=16, verbose=0)
    poison(model)
    before = state(model, [model.optimizer, model.sg_optimizer])
    with pytest.raises(sg_keras.NonFiniteError, match="at step 1 in: synthetic gradient"):
        model.fit(x, y, batch_size=16, epochs=2, shuffle=False, verbose=0)
    for a, b in zip(before, state(model, [model.optimizer, model.sg_optimizer])):
        np.testing.assert_array_equal(a, b)


def test_fit_can_skip_nonfinite_steps():
    model = sg_keras.DNIModel.from_model(fcn())
    model.compile(optimizer=keras.optimizers.SGD(0.1), loss=LOSS, on_nonfinite="skip")
    poison(model)
    head = [v.numpy().copy() for v in model.layers[-1].trainable_variables]
    model.fit(*batch(32), batch_size=16, verbose=0)
    for a, b in zip(head, model.layers[-1].trainable_variables):
        np.testing.assert_array_equal(a, b.numpy())
    assert int(model.optimizer.iterations.numpy()) == 0


def sgd_trainer(model, on_nonfinite="raise", **options):
    return sg_keras.DNITrainer(model, mode="dni", optimizer=keras.optimizers.Adam(1e-2),
                               sg_optimizer=keras.optimizers.Adam(1e-2), on_nonfinite=on_nonfinite,
                               **options)


@pytest.mark.parametrize("on_nonfinite", ["raise", "skip_module"])
def test_a_frozen_synthesizer_step_applies_the_same_network_update_and_trains_no_synthesizer(
        on_nonfinite):
    """synth_update_every=2: step 0 trains everything, step 1 updates the network from the
    same ĝ as a trainer that trains its synthesizers every step, and leaves the synthesizers'
    weights and optimizer alone (its sg_loss is missing, not 0)."""
    reference, model = fcn(), fcn()
    for each in (reference, model):
        randomize_synthesizers(each)
    every, every_other = (sgd_trainer(reference, on_nonfinite),
                          sgd_trainer(model, on_nonfinite, synth_update_every=2))
    x, y = batch(16)
    for trainer in (every, every_other):
        trainer.train_step(x[:8], y[:8])
    synthesizers = [layer.synthesizer for layer in model.layers[:2]]
    trained_once = [v.numpy().copy() for s in synthesizers for v in s.trainable_variables]
    logs = [trainer.train_step(x[8:], y[8:]) for trainer in (every, every_other)]
    network = {id(v) for v in every_other.engine.network_variables}
    for a, b in zip(reference.trainable_variables, model.trainable_variables):
        if id(b) in network:
            np.testing.assert_allclose(b.numpy(), a.numpy(), rtol=1e-6, atol=1e-7, err_msg=b.path)
    after = [v for s in synthesizers for v in s.trainable_variables]
    for variable, old in zip(after, trained_once):
        np.testing.assert_array_equal(variable.numpy(), old, err_msg=variable.path)
    assert [int(t.sg_optimizer.iterations.numpy()) for t in (every, every_other)] == [2, 1]
    losses = [[float(v) for key, v in log.items() if key.startswith("sg_loss/")] for log in logs]
    assert len(losses[0]) == len(losses[1]) == 2
    assert np.isfinite(losses[0]).all() and np.isnan(losses[1]).all()


def test_skip_module_on_healthy_steps_updates_as_the_whole_step_guard():
    """Per-module optimizers and guards change nothing while every part is finite."""
    reference, model = fcn(), fcn()
    whole, per_module = sgd_trainer(reference, "raise"), sgd_trainer(model, "skip_module")
    x, y = batch(32)
    for start in range(0, 32, 8):
        whole.train_step(x[start:start + 8], y[start:start + 8])
        logs = per_module.train_step(x[start:start + 8], y[start:start + 8])
    assert float(logs["skipped"]) == 0.0
    for a, b in zip(reference.variables, model.variables):
        np.testing.assert_allclose(b.numpy(), a.numpy(), rtol=1e-6, atol=1e-7, err_msg=b.path)


def test_skip_module_skips_only_the_groups_holding_nan():
    """ĝ of the second module is NaN: that module and the synthesizers (whose targets carry
    the NaN down) keep their weights and statistics; the first module (updated from its own
    ĝ) and the head (from the loss) make exactly the update of a healthy model."""
    healthy, model = fcn(), fcn()
    for each in (healthy, model):
        randomize_synthesizers(each)
    x, y = batch(16)
    sgd_trainer(healthy, "skip_module").train_step(x, y)
    poison(model)
    before = [v.numpy().copy() for v in model.variables]
    logs = sgd_trainer(model, "skip_module").train_step(x, y)
    assert float(logs["skipped"]) == 1.0
    assert [float(logs[f"updated/{layer.name}"]) for layer in model.layers[:2]] == [1.0, 0.0]
    first, second, head = model.layers
    kept = second.layer.variables + first.synthesizer.variables + second.synthesizer.variables
    kept_ids = {id(v) for v in kept}
    for variable, old, reference in zip(model.variables, before, healthy.variables):
        if id(variable) in kept_ids:
            np.testing.assert_array_equal(variable.numpy(), old, err_msg=variable.path)
        elif variable.trainable:
            np.testing.assert_allclose(variable.numpy(), reference.numpy(), rtol=1e-6,
                                       err_msg=variable.path)
            assert not np.array_equal(variable.numpy(), old), variable.path
