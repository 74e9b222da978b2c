"""DNIModel: fit equals DNITrainer, model kinds, saving, inference, callbacks, bad input."""

import keras
import numpy as np
import pytest
import tensorflow as tf

import sg_keras
from conftest import batch, dense_block, fcn, randomize_synthesizers
from sg_keras.dni_model import DNIModel, FunctionalDNIModel

LOSS = keras.losses.SparseCategoricalCrossentropy(from_logits=True)


def values(variables):
    return [v.numpy().copy() for v in variables]


def changed(before, variables):
    return any(np.abs(b - v.numpy()).max() > 0 for b, v in zip(before, variables))


def separable(n=128, seed=0):
    """Five well-separated Gaussian classes in 8 dimensions."""
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 5, size=n)
    x = rng.normal(0, 3, size=(5, 8))[y] + rng.normal(size=(n, 8))
    return x.astype("float32"), y.astype("int64")


def branching_model():
    """stem → two decoupled branches, summed with the stem (residual) → head."""
    keras.utils.set_random_seed(3)
    inputs = keras.Input((8,))
    stem = keras.layers.Dense(16, activation="relu", name="stem")(inputs)
    branches = [sg_keras.DecoupledLayer(dense_block(16), name=name)(stem)
                for name in ("branch_a", "branch_b")]
    merged = keras.layers.Add()([stem, *branches])
    return DNIModel(inputs, keras.layers.Dense(5, name="head")(merged))


class SubclassedNet(DNIModel):
    """A decoupled cDNI block and an ordinary head, as a subclassed model."""

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.block = sg_keras.DecoupledLayer(dense_block(16), context_dim=5)
        self.head = keras.layers.Dense(5)

    def call(self, x, training=None):
        return self.head(self.block(x, training=training))


def optimizer_state(optimizers):
    return [v for optimizer in optimizers for v in optimizer.variables]


@pytest.mark.parametrize("mode, options", [   # every option at least once, every mode
    ("backprop", {}),
    ("dni", {"true_gradient_every": 2, "measure_every": 3, "synth_update_every": 4}),
    ("dni", {"sg_target": "true", "bp_lambda": 0.5, "sg_clip_norm": 0.05}),
    ("cdni", {"update_prob": 0.5, "seed": 4}),
    ("dni", {"update_prob": 0.5, "sg_clip_norm": 1.0, "on_nonfinite": "skip", "seed": 1}),
    ("cdni", {"on_nonfinite": "skip_module", "measure_every": 2, "synth_update_every": 3}),
])
def test_fit_makes_the_same_steps_as_the_trainer(mode, options):
    context_dim = 5 if mode == "cdni" else None
    reference, model = fcn(context_dim=context_dim), fcn(context_dim=context_dim)
    for m in (reference, model):
        randomize_synthesizers(m)
    trainer = sg_keras.DNITrainer(reference, mode=mode, loss=LOSS,
                                  optimizer=keras.optimizers.Adam(1e-2),
                                  sg_optimizer=keras.optimizers.Adam(1e-2), **options)
    x, y = batch(64)
    logs = [trainer.train_step(x[i:i + 16], y[i:i + 16]) for i in range(0, 64, 16)]
    dni = DNIModel.from_model(model)
    dni.compile(optimizer=keras.optimizers.Adam(1e-2), loss=LOSS,
                sg_optimizer=keras.optimizers.Adam(1e-2), mode=mode, **options)
    history = dni.fit(x, y, batch_size=16, epochs=1, shuffle=False, verbose=0).history
    # Network, synthesizers, BN statistics, then every optimizer's state.
    expected_state = reference.variables + optimizer_state(trainer.engine.optimizers())
    state = model.variables + optimizer_state([dni.optimizer, dni.sg_optimizer,
                                               *dni.module_optimizers])
    assert len(state) == len(expected_state)
    for a, b in zip(expected_state, state):
        np.testing.assert_allclose(b.numpy(), a.numpy(), rtol=1e-6, atol=1e-7, err_msg=b.path)
    names = {a.name: b.name for a, b in zip(reference.layers, model.layers)}
    expected = {key.split("/")[0] + "/" + names[key.split("/")[1]]:
                np.nanmean([float(log[key]) for log in logs])
                for key in logs[0] if key.startswith(("sg_loss/", "cosine/"))}
    assert set(history) == {"loss"} | set(expected)
    assert mode == "backprop" or expected
    for key, value in expected.items():
        assert history[key][0] == pytest.approx(value, rel=1e-5)
    assert history["loss"][0] == pytest.approx(np.mean([float(log["loss"]) for log in logs]),
                                               rel=1e-5)


def test_branches_of_a_residual_model_both_learn():
    model = branching_model()
    model.compile(optimizer=keras.optimizers.Adam(1e-2), loss=LOSS)
    branches = [model.get_layer(name) for name in ("branch_a", "branch_b")]
    parts = [(branch.layer, branch.synthesizer) for branch in branches]
    before = [[values(part.trainable_variables) for part in pair] for pair in parts]
    history = model.fit(*separable(), batch_size=32, epochs=8, verbose=0).history
    assert history["loss"][-1] < 0.5 * history["loss"][0]
    for branch, pair, starts in zip(branches, parts, before):
        for part, start in zip(pair, starts):   # the module (from ĝ) and its synthesizer
            assert changed(start, part.trainable_variables), part.name
        assert history[f"sg_loss/{branch.name}"][-1] < history[f"sg_loss/{branch.name}"][0]


def test_subclassed_model_builds_in_fit_and_picks_cdni():
    model = SubclassedNet()
    model.compile(optimizer=keras.optimizers.Adam(1e-2), loss=LOSS, metrics=["accuracy"])
    assert model.get_compile_config()["mode"] == "cdni"
    history = model.fit(*separable(), batch_size=32, epochs=5, verbose=0).history
    assert set(history) == {"loss", "accuracy", f"sg_loss/{model.block.name}"}
    assert history["loss"][-1] < 0.5 * history["loss"][0]
    assert DNIModel.__bases__ == (keras.Model,), "functional DNIModels leave the class alone"


def test_saved_model_predicts_the_same_and_resumes_training(tmp_path):
    x, y = separable(64)
    model = branching_model()
    model.compile(optimizer=keras.optimizers.Adam(1e-2), loss=LOSS, metrics=["accuracy"],
                  sg_optimizer=keras.optimizers.SGD(1e-3), true_gradient_every=3, bp_lambda=0.2,
                  synth_update_every=2)
    model.fit(x, y, batch_size=16, epochs=1, verbose=0)
    model.save(tmp_path / "model.keras")
    loaded = keras.saving.load_model(tmp_path / "model.keras")
    assert isinstance(loaded, FunctionalDNIModel)
    np.testing.assert_array_equal(loaded.predict(x, verbose=0), model.predict(x, verbose=0))
    config = loaded.get_compile_config()
    assert (config["true_gradient_every"], config["bp_lambda"],
            config["synth_update_every"]) == (3, 0.2, 2)
    assert isinstance(loaded.sg_optimizer, keras.optimizers.SGD)
    for a, b in ((model.optimizer, loaded.optimizer), (model.sg_optimizer, loaded.sg_optimizer)):
        for u, v in zip(a.variables, b.variables):
            np.testing.assert_array_equal(u.numpy(), v.numpy())
    for m in (model, loaded):   # the step count (4) keeps the true-gradient schedule in phase
        m.fit(x, y, batch_size=16, epochs=1, shuffle=False, verbose=0)
    for a, b in zip(model.variables, loaded.variables):
        np.testing.assert_allclose(b.numpy(), a.numpy(), rtol=1e-6, atol=1e-7)


def test_evaluate_and_predict_are_those_of_the_unwrapped_model():
    x, y = separable(64)
    wrapped = fcn()
    plain = keras.Sequential([keras.Input((8,)), dense_block(16), dense_block(16),
                              keras.layers.Dense(5)])
    dni = DNIModel.from_model(wrapped)
    dni.compile(optimizer="adam", loss=LOSS, metrics=["accuracy"])
    dni.fit(x, y, batch_size=16, epochs=1, verbose=0)
    plain.set_weights([w for layer in wrapped.layers
                       for w in getattr(layer, "layer", layer).get_weights()])
    plain.compile(loss=LOSS, metrics=["accuracy"])
    np.testing.assert_array_equal(dni.predict(x, verbose=0), plain.predict(x, verbose=0))
    assert dni.evaluate(x, y, verbose=0, return_dict=True) == pytest.approx(
        plain.evaluate(x, y, verbose=0, return_dict=True))


def test_standard_callbacks(tmp_path):
    x, y = separable(64)
    model = branching_model()
    model.compile(optimizer=keras.optimizers.Adam(1e-2), loss=LOSS, metrics=["accuracy"])
    callbacks = [keras.callbacks.TensorBoard(tmp_path / "logs"),
                 keras.callbacks.ModelCheckpoint(tmp_path / "last.keras"),
                 keras.callbacks.EarlyStopping(monitor="sg_loss/branch_a", mode="min",
                                               min_delta=100.0, patience=0)]
    history = model.fit(x, y, batch_size=16, epochs=10, validation_data=(x, y), verbose=0,
                        callbacks=callbacks).history
    assert len(history["loss"]) == 2, "EarlyStopping stops at the second epoch"
    assert set(history) == {"loss", "accuracy", "sg_loss/branch_a", "sg_loss/branch_b",
                            "val_loss", "val_accuracy"}
    saved = keras.saving.load_model(tmp_path / "last.keras")
    np.testing.assert_array_equal(saved.predict(x, verbose=0), model.predict(x, verbose=0))
    logged = {}
    for path in (tmp_path / "logs" / "train").glob("events.out.tfevents.*"):
        for event in tf.compat.v1.train.summary_iterator(str(path)):
            for value in event.summary.value:
                logged.setdefault(value.tag, []).append(float(tf.make_ndarray(value.tensor)))
    np.testing.assert_allclose(logged["epoch_sg_loss/branch_b"], history["sg_loss/branch_b"],
                               rtol=1e-6)


@pytest.mark.parametrize("kwargs, name", [
    ({"mode": "sgd"}, "mode"),
    ({"mode": "cdni"}, "mode"),
    ({"sg_target": "oracle"}, "sg_target"),
    ({"true_gradient_every": -1}, "true_gradient_every"),
    ({"measure_every": 0.5}, "measure_every"),
    ({"bp_lambda": 1.5}, "bp_lambda"),
    ({"sg_optimizer": "same"}, "sg_optimizer"),
    ({"sg_optimizer": "nonsense"}, "sg_optimizer"),
])
def test_bad_compile_arguments_name_the_argument(kwargs, name):
    model = DNIModel.from_model(fcn())
    optimizer = keras.optimizers.Adam()
    if kwargs.get("sg_optimizer") == "same":
        kwargs = {"sg_optimizer": optimizer}
    with pytest.raises(ValueError, match=f"`{name}`"):
        model.compile(optimizer=optimizer, loss=LOSS, **kwargs)


def test_models_that_cannot_be_dni_models_are_reported():
    with pytest.raises(ValueError, match="`model` must be a built Sequential or functional"):
        DNIModel.from_model(SubclassedNet())
    with pytest.raises(ValueError, match="`mode`='dni' but"):
        DNIModel.from_model(fcn(context_dim=5)).compile(loss=LOSS, mode="dni")

    class FunctionalStyle(DNIModel):
        def __init__(self):
            inputs = keras.Input((3,))
            super().__init__(inputs, keras.layers.Dense(2)(inputs))

    with pytest.raises(ValueError, match="must derive from FunctionalDNIModel"):
        FunctionalStyle()
    assert DNIModel.__bases__ == (keras.Model,)
