"""Mixed precision: mixed_bfloat16 trains DNI and cDNI; mixed_float16 is refused by name."""

import contextlib

import keras
import numpy as np
import pytest

import sg_keras
from conftest import batch, dense_block


@contextlib.contextmanager
def policy(name):
    keras.mixed_precision.set_global_policy(name)
    try:
        yield
    finally:
        keras.mixed_precision.set_global_policy("float32")


def small_model(context_dim=None):
    keras.utils.set_random_seed(0)
    return sg_keras.DNIModel.from_model(keras.Sequential(
        [keras.Input((8,))]
        + [sg_keras.DecoupledLayer(dense_block(16), context_dim=context_dim, name=f"dni{i}")
           for i in (1, 2)]
        + [keras.layers.Dense(5, dtype="float32")]))


@pytest.mark.parametrize("mode", ["dni", "cdni"])
def test_mixed_bfloat16_trains_with_bfloat16_synthesizers_and_float32_regression(mode):
    with policy("mixed_bfloat16"):
        model = small_model(context_dim=5 if mode == "cdni" else None)
        trainer = sg_keras.DNITrainer(model, mode=mode)
        x, y = batch(16)
        logs = [trainer.train_step(x, y) for _ in range(3)][-1]
        synthesizer = model.get_layer("dni1").synthesizer
        assert synthesizer.compute_dtype == "bfloat16"
        assert {v.dtype for v in synthesizer.trainable_variables} == {"float32"}
        assert {v.dtype for v in trainer.sg_optimizer.variables[1:]} == {"float32"}
        assert logs["sg_loss/dni1"].dtype == "float32" and float(logs["sg_loss/dni1"]) > 0
        assert np.isfinite(float(logs["loss"]))
        parts = trainer.inspect(x, y)["dni1"]
        assert parts["synthetic"].dtype == "bfloat16" and np.abs(parts["synthetic"]).max() > 0
        model.compile(optimizer="adam", loss=keras.losses.SparseCategoricalCrossentropy(
            from_logits=True), mode=mode)
        history = model.fit(x, y, batch_size=8, epochs=1, verbose=0).history
        assert np.isfinite(history["loss"] + history["sg_loss/dni2"]).all()


def test_mixed_float16_is_refused_in_both_front_ends_naming_the_way_out():
    with policy("mixed_float16"):
        model = small_model()
        with pytest.raises(ValueError, match="mixed_bfloat16"):
            sg_keras.DNITrainer(model, mode="dni")
        with pytest.raises(ValueError, match="mixed_bfloat16"):
            model.compile(optimizer="adam", loss="sparse_categorical_crossentropy")
