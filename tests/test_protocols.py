"""Every trainer meets its contract in `sg_keras.protocols`."""

import keras
import pytest

import sg_keras
from sg_keras.protocols import SequenceTrainer, Trainer

from conftest import batch, fcn


def trainers():
    yield "DNITrainer", sg_keras.DNITrainer(fcn(), mode="dni")
    yield "PipelinedTrainer", sg_keras.PipelinedTrainer(fcn(), mode="dni", devices=["/cpu:0"])
    yield "CompleteUnlockTrainer", sg_keras.CompleteUnlockTrainer(fcn(), mode="dni")


@pytest.mark.parametrize("name,trainer", list(trainers()), ids=lambda value: str(value)[:30])
def test_every_trainer_meets_the_trainer_protocol(name, trainer):
    assert isinstance(trainer, Trainer), name
    assert not isinstance(trainer, SequenceTrainer)
    x, y = batch()
    logs = trainer.train_step(x, y)
    assert "loss" in logs
    trainer.check_finite()   # a finite step: nothing raised
    assert trainer.nonfinite_variables() == []
    assert int(trainer.iterations.numpy()) == 1
    assert set(trainer.evaluate(x, y)) == {"loss", "accuracy"}


def test_recurrent_dni_meets_the_sequence_protocol():
    core = sg_keras.RecurrentDNI(keras.layers.LSTMCell(4), keras.layers.Dense(2), truncation=2,
                                 loss=sg_keras.recurrent.per_step_sigmoid_bits,
                                 optimizer=keras.optimizers.Adam(1e-3))
    assert isinstance(core, SequenceTrainer)
    assert not isinstance(core, Trainer)


def test_a_class_missing_a_member_does_not_meet_it():
    class NoGuard:
        options = checkpoint = iterations = log_window = None

        def train_step(self, x, y):
            return {}

    assert not isinstance(NoGuard(), Trainer)


def test_the_options_object_whole_or_keywords_not_both():
    options = sg_keras.DNIOptions(mode="dni", measure_every=3)
    assert sg_keras.DNITrainer(fcn(), options=options).options is options
    assert sg_keras.DNITrainer(fcn(), measure_every=3).options == options
    with pytest.raises(ValueError, match="`options` is given with `measure_every`"):
        sg_keras.DNITrainer(fcn(), options=options, measure_every=3)
    pipelined = sg_keras.PipelinedTrainer(fcn(), options=sg_keras.DNIOptions(update_prob=0.5),
                                          devices=["/cpu:0"])
    assert pipelined.options.update_prob == 0.5
    with pytest.raises(ValueError, match="`measure_every` is not supported by the pipelined"):
        sg_keras.PipelinedTrainer(fcn(), options=options, devices=["/cpu:0"])
    unlock = sg_keras.CompleteUnlockTrainer(fcn(), options=sg_keras.DNIOptions(mode="dni"))
    assert unlock.options.mode is sg_keras.Mode.DNI
    with pytest.raises(ValueError, match="`measure_every` is not supported by complete unlock"):
        sg_keras.CompleteUnlockTrainer(fcn(), options=options)
    inputs = keras.Input((8,))
    model = sg_keras.DNIModel(inputs, keras.layers.Dense(5)(
        sg_keras.DecoupledLayer(keras.layers.Dense(4))(inputs)))
    model.compile("adam", "sparse_categorical_crossentropy", options=options)
    assert model._dni_options is options
    with pytest.raises(ValueError, match="`options` is given with `mode`"):
        model.compile("adam", "sparse_categorical_crossentropy", options=options, mode="dni")
