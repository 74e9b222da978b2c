"""StepEngine: the guard decided on the device, and fit's NaN/Inf handling."""

import keras
import numpy as np
import pytest

import sg_keras
from conftest import batch, fcn

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
