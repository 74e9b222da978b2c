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
    assert int(trainer.step.numpy()) == 1
    assert set(trainer.evaluate(x, y)) == {"loss", "accuracy"}


def test_recurrent_dni_meets_the_sequence_protocol():
    core = sg_keras.RecurrentDNI(keras.layers.LSTMCell(4), keras.layers.Dense(2), truncation=2,
                                 loss=sg_keras.recurrent.per_step_sigmoid_bits,
                                 optimizer=keras.optimizers.Adam(1e-3))
    assert isinstance(core, SequenceTrainer)
    assert not isinstance(core, Trainer)


def test_a_class_missing_a_member_does_not_meet_it():
    class NoGuard:
        options = checkpoint = step = log_window = None

        def train_step(self, x, y):
            return {}

    assert not isinstance(NoGuard(), Trainer)
