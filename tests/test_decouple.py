"""sg_keras.decouple: the same layers, wrapped, in a DNIModel; names, predicates, applications."""

import keras
import numpy as np
import pytest

import sg_keras
from sg_keras.synthesizers import ConvSynthesizer, DenseSynthesizer

LOSS = keras.losses.SparseCategoricalCrossentropy(from_logits=True)


def functional(nested=False):
    keras.utils.set_random_seed(0)
    inputs = keras.Input((6,))
    block = keras.Sequential([keras.Input((6,)), keras.layers.Dense(8, name="inner"),
                              keras.layers.ReLU(name="inner_relu")], name="nested")
    h = block(inputs) if nested else keras.layers.Dense(8, name="hidden")(inputs)
    h = keras.layers.Dense(8, activation="relu", name="second")(h)
    return keras.Model(inputs, keras.layers.Dense(3, name="logits")(h), name="net")


def test_named_layers_are_wrapped_around_the_same_objects():
    model = functional()
    dni = sg_keras.decouple(model, ["hidden", "second"], context_dim=3,
                            synthesizer=DenseSynthesizer(hidden_layers=1, hidden_units=4))
    assert isinstance(dni, sg_keras.DNIModel) and dni.name == "net"
    for name in ("hidden", "second"):
        layer = dni.get_layer(name)
        assert isinstance(layer, sg_keras.DecoupledLayer) and layer.context_dim == 3
        assert layer.layer is model.get_layer(name)
        assert layer.synthesizer.hidden_layers == 1
        assert layer.synthesizer.name == f"{name}_synthesizer"
    assert dni.get_layer("hidden").synthesizer is not dni.get_layer("second").synthesizer
    assert dni.get_layer("logits") is model.get_layer("logits")
    x = np.random.default_rng(0).normal(size=(4, 6)).astype("float32")
    np.testing.assert_array_equal(dni(x), model(x))
    trainer = sg_keras.DNITrainer(dni, mode="cdni")
    trainer.train_step(x, np.array([0, 1, 2, 0]))
    np.testing.assert_array_equal(dni(x), model(x))      # the weights are shared


def test_predicate_reaches_layers_inside_a_nested_model():
    model = functional(nested=True)
    dni = sg_keras.decouple(model, lambda layer: layer.name == "inner")
    nested = dni.get_layer("nested")
    assert isinstance(nested.get_layer("inner"), sg_keras.DecoupledLayer)
    assert nested.get_layer("inner").layer is model.get_layer("nested").get_layer("inner")
    assert [layer.name for layer in sg_keras.model_parts.decoupled_layers(dni)] == ["inner"]
    x = np.ones((2, 6), "float32")
    np.testing.assert_array_equal(dni(x), model(x))


def test_unknown_names_and_bad_arguments_are_refused_by_name():
    model = functional()
    with pytest.raises(ValueError, match=r"`layers`.*\['nope'\].*'hidden'"):
        sg_keras.decouple(model, ["hidden", "nope"])
    with pytest.raises(ValueError, match="`layers`"):
        sg_keras.decouple(model, "hidden")
    with pytest.raises(ValueError, match="`synthesizer`"):
        sg_keras.decouple(model, ["hidden"], synthesizer=3)
    with pytest.raises(ValueError, match="`model`"):
        sg_keras.decouple(keras.layers.Dense(2), ["hidden"])


def check_application(model, names, tmp_path, x, y):
    """Decouples `names`, trains with fit and DNITrainer, and reloads with identical outputs."""
    dni = sg_keras.decouple(model, names, synthesizer=lambda layer: ConvSynthesizer(
        hidden_layers=0, kernel_size=1, name=f"{layer.name}_synthesizer"))
    assert all(dni.get_layer(name).layer is model.get_layer(name) for name in names)
    dni.compile(optimizer=keras.optimizers.Adam(1e-3), loss=LOSS)
    history = dni.fit(x, y, batch_size=len(x), epochs=1, verbose=0).history
    assert np.isfinite(history["loss"]).all() and f"sg_loss/{names[0]}" in history
    trainer = sg_keras.DNITrainer(dni, mode="dni")
    logs = trainer.train_step(x, y)
    assert np.isfinite(float(logs["loss"]))
    path = tmp_path / "model.keras"
    dni.save(path)
    loaded = keras.models.load_model(path)
    np.testing.assert_allclose(loaded.predict(x, verbose=0), dni.predict(x, verbose=0),
                               rtol=1e-5, atol=1e-6)


def images(n=4, classes=10):
    rng = np.random.default_rng(0)
    return rng.normal(size=(n, 32, 32, 3)).astype("float32"), np.arange(n) % classes


def test_residual_cnn_decoupled_at_its_sums(tmp_path):
    keras.utils.set_random_seed(0)
    inputs = keras.Input((8, 8, 3))
    h = keras.layers.Conv2D(4, 3, padding="same", name="stem")(inputs)
    for index in range(2):
        branch = keras.layers.Conv2D(4, 3, padding="same", activation="relu")(h)
        h = keras.layers.Add(name=f"block{index}_add")([h, branch])
    outputs = keras.layers.Dense(3)(keras.layers.GlobalAveragePooling2D()(h))
    model = keras.Model(inputs, outputs)
    x = np.random.default_rng(0).normal(size=(4, 8, 8, 3)).astype("float32")
    check_application(model, ["block0_add", "block1_add"], tmp_path, x, np.array([0, 1, 2, 0]))


@pytest.mark.slow
def test_mobilenet_v2_decoupled_at_its_residual_sums(tmp_path):
    model = keras.applications.MobileNetV2(weights=None, input_shape=(32, 32, 3), classes=10,
                                           alpha=0.35, classifier_activation=None)
    adds = [layer.name for layer in model.layers if layer.name.endswith("_add")]
    assert len(adds) == 10 and all(isinstance(model.get_layer(n), keras.layers.Add)
                                   for n in adds)
    check_application(model, adds[:2], tmp_path, *images())


@pytest.mark.slow
@pytest.mark.parametrize("family, chosen", [
    ("ResNet50V2", lambda layer: layer.name.endswith("_out")),
    ("MobileNetV2", lambda layer: layer.name.endswith("_add")),
    ("DenseNet121", lambda layer: layer.name.endswith("_concat")),
    ("EfficientNetB0", lambda layer: layer.name.endswith("_add"))])
def test_keras_applications_decouple_train_and_reload(tmp_path, family, chosen):
    model = getattr(keras.applications, family)(weights=None, input_shape=(32, 32, 3),
                                                 classes=10, classifier_activation=None)
    names = [layer.name for layer in model.layers if chosen(layer)]
    assert names, family
    check_application(model, names, tmp_path, *images())
