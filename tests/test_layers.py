"""DecoupledLayer: inference, defaults, cDNI context, serialisation, bad input."""

import keras
import numpy as np
import pytest
import tensorflow as tf

import sg_keras
from conftest import batch, dense_block, fcn, randomize_synthesizers
from sg_keras.interception import GradientInterception
from sg_keras.synthesizers import ConvSynthesizer, DenseSynthesizer


def test_inference_is_exactly_the_wrapped_layer():
    block = dense_block(6)
    layer = sg_keras.DecoupledLayer(block)
    x, _ = batch()
    np.testing.assert_array_equal(layer(x), block(x))
    np.testing.assert_array_equal(layer(x, training=False), block(x, training=False))


@pytest.mark.parametrize("input_shape, kind", [
    ((None, 4), DenseSynthesizer), ((None, 7, 4), DenseSynthesizer),
    ((None, 5, 5, 1), ConvSynthesizer), ((None, 2, 3, 2, 4), DenseSynthesizer)])
def test_default_synthesizers_follow_the_output_rank(input_shape, kind):
    wrapped = (keras.layers.Conv2D(2, 3, padding="same") if len(input_shape) == 4
               else keras.layers.Dense(3))
    layer = sg_keras.DecoupledLayer(wrapped)
    layer.build(input_shape)
    assert isinstance(layer.synthesizer, kind)
    h = np.random.default_rng(0).normal(size=(2, *wrapped.compute_output_shape(input_shape)[1:]))
    assert layer.synthetic_gradient(h).shape == h.shape
    assert float(np.abs(layer.synthetic_gradient(h)).max()) == 0.0   # zero-initialised


def test_conv_layer_trains_and_synthetic_gradient_has_the_activation_shape():
    keras.utils.set_random_seed(0)
    layer = sg_keras.DecoupledLayer(keras.layers.Conv2D(3, 3, padding="same", activation="relu"),
                                    synthesizer=ConvSynthesizer(hidden_layers=1, filters=4,
                                                                kernel_size=3))
    model = keras.Sequential([keras.Input((6, 6, 1)), layer, keras.layers.Flatten(),
                              keras.layers.Dense(4)])
    trainer = sg_keras.DNITrainer(model, mode="dni", measure_every=1)
    x = np.random.default_rng(0).normal(size=(5, 6, 6, 1)).astype("float32")
    y = np.arange(5) % 4
    before = [v.numpy() for v in layer.synthesizer.trainable_variables]
    logs = trainer.train_step(x, y)
    assert set(logs) >= {"loss", "accuracy", f"sg_loss/{layer.name}", f"cosine/{layer.name}"}
    after = [v.numpy() for v in layer.synthesizer.trainable_variables]
    assert any(np.abs(a - b).max() > 0 for a, b in zip(after, before)), "synthesizer learned"
    kernel = layer.layer.kernel.numpy()
    trainer.train_step(x, y)   # now ĝ is not zero: the convolution updates from it
    assert np.abs(layer.layer.kernel.numpy() - kernel).max() > 0
    h = layer.layer(x)
    assert layer.synthetic_gradient(h).shape == h.shape == (5, 6, 6, 3)
    assert float(tf.reduce_max(tf.abs(layer.synthetic_gradient(h, training=True)))) > 0


def test_context_changes_the_synthetic_gradient_as_a_concatenated_input():
    layer = sg_keras.DecoupledLayer(keras.layers.Dense(4), context_dim=3)
    layer.build((None, 2))
    kernel = np.random.default_rng(0).normal(size=(7, 4)).astype("float32")
    layer.synthesizer.net.layers[-1].set_weights([kernel, np.zeros(4, "float32")])
    h = np.ones((2, 4), "float32")
    first = layer.synthetic_gradient(h, context=np.eye(3, dtype="float32")[[0, 0]])
    second = layer.synthetic_gradient(h, context=np.eye(3, dtype="float32")[[1, 2]])
    assert np.abs(first - second).max() > 0.1
    np.testing.assert_allclose(second[1] - first[1], kernel[6] - kernel[4], rtol=1e-5)


def test_context_errors_name_the_context():
    layer = sg_keras.DecoupledLayer(keras.layers.Dense(4), context_dim=3)
    layer.build((None, 2))
    h = np.ones((2, 4), "float32")
    with pytest.raises(ValueError, match="`context`"):
        layer.synthetic_gradient(h, context=np.ones((2, 5), "float32"))
    with pytest.raises(ValueError, match="`context`"):
        layer.synthetic_gradient(h)
    with pytest.raises(ValueError, match="`context`"):
        with GradientInterception(context=tf.ones((2, 4))):
            layer(np.ones((2, 2), "float32"), training=True)
    with pytest.raises(ValueError, match="`context`"):
        layer(np.ones((2, 2), "float32"), training=True)    # no scope, no context
    plain = sg_keras.DecoupledLayer(keras.layers.Dense(4))
    plain.build((None, 2))
    with pytest.raises(ValueError, match="`context`"):
        plain.synthetic_gradient(h, context=np.ones((2, 3), "float32"))


class DynamicWidth(keras.layers.Layer):
    """Output width known only at run time."""

    def call(self, x):
        return tf.reshape(x, [tf.shape(x)[0], -1])

    def compute_output_shape(self, input_shape):
        return (input_shape[0], None)


class BrokenShape(keras.layers.Layer):
    def call(self, x):
        return x

    def compute_output_spec(self, x):
        raise RuntimeError("cannot say")


@pytest.mark.parametrize("layer", [DynamicWidth(), BrokenShape()])
def test_layer_without_inferable_output_shape_is_rejected(layer):
    with pytest.raises(ValueError, match="`layer`"):
        sg_keras.DecoupledLayer(layer).build((None, 3, 2))


def test_synthesizer_with_wrong_output_shape_is_rejected():
    layer = sg_keras.DecoupledLayer(keras.layers.Dense(4), synthesizer=keras.layers.Dense(5))
    with pytest.raises(ValueError, match="`synthesizer`"):
        layer.build((None, 3))


@pytest.mark.parametrize("kwargs, name", [
    ({"layer": "dense"}, "layer"),
    ({"layer": keras.layers.Dense(2), "synthesizer": lambda h: h}, "synthesizer"),
    ({"layer": keras.layers.Dense(2), "context_dim": 0}, "context_dim"),
])
def test_bad_constructor_arguments_name_the_argument(kwargs, name):
    with pytest.raises(ValueError, match=f"`{name}`"):
        sg_keras.DecoupledLayer(**kwargs)


def test_custom_synthesizer_is_used():
    synth = keras.Sequential([keras.layers.Dense(4, kernel_initializer="ones")])
    layer = sg_keras.DecoupledLayer(keras.layers.Dense(4), synthesizer=synth)
    layer.build((None, 2))
    np.testing.assert_allclose(layer.synthetic_gradient(np.ones((1, 4), "float32")), [[4.0] * 4])


def test_get_config_round_trip():
    layer = sg_keras.DecoupledLayer(dense_block(5), context_dim=10, name="dl",
                                    synthesizer=DenseSynthesizer(hidden_layers=1, hidden_units=8))
    clone = sg_keras.DecoupledLayer.from_config(layer.get_config())
    assert clone.name == "dl" and clone.context_dim == 10
    assert clone.synthesizer.hidden_layers == 1 and clone.synthesizer.hidden_units == 8
    assert [type(x).__name__ for x in clone.layer.layers] == ["Dense", "BatchNormalization",
                                                              "Activation"]


@pytest.mark.parametrize("context_dim", [None, 5])
def test_keras_file_round_trip_keeps_outputs_and_synthetic_gradients(tmp_path, context_dim):
    model = fcn(context_dim=context_dim)
    randomize_synthesizers(model)
    trainer = sg_keras.DNITrainer(model, mode="cdni" if context_dim else "dni")
    x, y = batch(16)
    for _ in range(3):
        trainer.train_step(x, y)
    path = tmp_path / "model.keras"
    model.save(path)
    loaded = keras.models.load_model(path)
    np.testing.assert_array_equal(loaded(x), model(x))
    context = np.eye(5, dtype="float32")[y] if context_dim else None
    h = x
    for original, restored in zip(model.layers[:2], loaded.layers[:2]):
        assert isinstance(restored, sg_keras.DecoupledLayer)
        h = original.layer(h)
        expected = original.synthetic_gradient(h, context)
        assert float(tf.reduce_max(tf.abs(expected))) > 0
        np.testing.assert_array_equal(restored.synthetic_gradient(h, context), expected)


def test_functional_model_with_decoupled_layer():
    inputs = keras.Input((8,))
    hidden = sg_keras.DecoupledLayer(dense_block(6))(inputs)
    model = keras.Model(inputs, keras.layers.Dense(3)(hidden))
    x, y = batch()
    trainer = sg_keras.DNITrainer(model, mode="dni")
    decoupled = model.layers[1]
    before = [v.numpy() for v in decoupled.synthesizer.trainable_variables]
    logs = trainer.train_step(x, y % 3)
    assert np.isfinite(float(logs["loss"])) and float(logs[f"sg_loss/{decoupled.name}"]) > 0
    after = [v.numpy() for v in decoupled.synthesizer.trainable_variables]
    assert all(np.abs(a - b).max() > 0 for a, b in zip(after, before)), "synthesizer learned"
