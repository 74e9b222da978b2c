"""Synthesizers: zero-initialised output, context fed as the paper does."""

import keras
import numpy as np
import pytest

from sg_keras.synthesizers import (Conv1DSynthesizer, ConvSynthesizer, DenseSynthesizer,
                                  default_synthesizer)


def output_layer(synth):
    return synth.net.layers[-1]


@pytest.mark.parametrize("hidden", [0, 2])
def test_dense_synthesizer_starts_at_zero_with_zero_kernel_and_bias(hidden):
    synth = DenseSynthesizer(hidden_layers=hidden, hidden_units=32)
    out = synth(np.random.default_rng(0).normal(size=(4, 7)).astype("float32"), training=True)
    assert out.shape == (4, 7)
    np.testing.assert_array_equal(out, 0.0)
    last = output_layer(synth)
    np.testing.assert_array_equal(last.kernel, 0.0)
    np.testing.assert_array_equal(last.bias, 0.0)
    kinds = [type(layer).__name__ for layer in synth.net.layers]
    assert kinds == ["Dense", "BatchNormalization", "ReLU"] * hidden + ["Dense"]


def test_dense_synthesizer_without_batch_norm_is_dense_relu_blocks_and_round_trips():
    synth = DenseSynthesizer(hidden_layers=2, hidden_units=8, batch_norm=False)
    h = np.random.default_rng(0).normal(size=(3, 5)).astype("float32")
    synth(h)
    assert [type(layer).__name__ for layer in synth.net.layers] == ["Dense", "ReLU"] * 2 + ["Dense"]
    first, _, second, _, output = synth.net.layers
    output.kernel.assign(np.ones((8, 5), "float32"))
    hidden = np.maximum(np.maximum(h @ first.kernel.numpy() + first.bias.numpy(), 0)
                        @ second.kernel.numpy() + second.bias.numpy(), 0)
    np.testing.assert_allclose(synth(h), hidden @ np.ones((8, 5)), rtol=1e-5, atol=1e-5)
    clone = keras.saving.deserialize_keras_object(keras.saving.serialize_keras_object(synth))
    assert clone.batch_norm is False


def test_low_rank_synthesizer_starts_at_zero_and_computes_h_p_w_plus_b():
    synth = DenseSynthesizer(rank=3)
    h = np.random.default_rng(0).normal(size=(5, 8)).astype("float32")
    np.testing.assert_array_equal(synth(h, context=None), 0.0)
    project, output = synth.net.layers
    assert project.kernel.shape == (8, 3) and project.bias is None
    assert output.kernel.shape == (3, 8)
    rng = np.random.default_rng(1)
    output.kernel.assign(rng.normal(size=(3, 8)).astype("float32"))
    output.bias.assign(rng.normal(size=8).astype("float32"))
    expected = h @ project.kernel.numpy() @ output.kernel.numpy() + output.bias.numpy()
    np.testing.assert_allclose(synth(h), expected, rtol=1e-5, atol=1e-6)
    clone = keras.saving.deserialize_keras_object(keras.saving.serialize_keras_object(synth))
    assert clone.rank == 3


def test_conv_synthesizer_starts_at_zero_and_keeps_the_activation_shape():
    synth = ConvSynthesizer(hidden_layers=1, filters=4, kernel_size=3)
    out = synth(np.ones((2, 5, 6, 3), "float32"), context=np.eye(4, dtype="float32")[:2])
    assert out.shape == (2, 5, 6, 3)
    np.testing.assert_array_equal(out, 0.0)
    np.testing.assert_array_equal(output_layer(synth).bias, 0.0)
    kinds = [type(layer).__name__ for layer in synth.net.layers]
    assert kinds == ["Conv2D", "BatchNormalization", "ReLU", "Conv2D"]


def test_dense_context_is_concatenated_to_the_activation():
    synth = DenseSynthesizer()
    h = np.random.default_rng(1).normal(size=(3, 4)).astype("float32")
    c = np.eye(3, dtype="float32")
    synth(h, context=c)
    rng = np.random.default_rng(2)
    kernel, bias = rng.normal(size=(7, 4)), rng.normal(size=4)
    output_layer(synth).set_weights([kernel, bias])
    np.testing.assert_allclose(synth(h, context=c), np.concatenate([h, c], 1) @ kernel + bias,
                               rtol=1e-5, atol=1e-5)


def test_conv_context_is_tiled_as_extra_channels():
    synth = ConvSynthesizer(hidden_layers=0, kernel_size=1)
    h = np.random.default_rng(1).normal(size=(2, 3, 3, 2)).astype("float32")
    c = np.eye(2, dtype="float32")
    synth(h, context=c)
    rng = np.random.default_rng(3)
    kernel, bias = rng.normal(size=(1, 1, 4, 2)), rng.normal(size=2)
    output_layer(synth).set_weights([kernel, bias])
    tiled = np.broadcast_to(c[:, None, None, :], (2, 3, 3, 2))
    expected = np.concatenate([h, tiled], -1) @ kernel[0, 0] + bias
    np.testing.assert_allclose(synth(h, context=c), expected, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("make, name", [
    (lambda: DenseSynthesizer(hidden_layers=-1), "hidden_layers"),
    (lambda: DenseSynthesizer(hidden_units=0), "hidden_units"),
    (lambda: DenseSynthesizer(hidden_layers=1.5), "hidden_layers"),
    (lambda: DenseSynthesizer(rank=0), "rank"),
    (lambda: ConvSynthesizer(filters="many"), "filters"),
    (lambda: ConvSynthesizer(kernel_size=0), "kernel_size"),
])
def test_bad_hyper_parameters_name_the_argument(make, name):
    with pytest.raises(ValueError, match=f"`{name}`"):
        make()


def test_default_synthesizer_follows_the_rank():
    assert [type(default_synthesizer(rank)) for rank in (2, 3, 4, 5)] == [
        DenseSynthesizer, DenseSynthesizer, ConvSynthesizer, DenseSynthesizer]
    with pytest.raises(ValueError, match="`synthesizer=`"):
        default_synthesizer(1)


def _random_weights(layer, seed=0):
    rng = np.random.default_rng(seed)
    for variable in layer.trainable_variables:
        variable.assign(rng.normal(0.0, 0.5, variable.shape).astype("float32"))


def test_dense_synthesizer_per_position_with_context_per_example_and_per_position():
    rng = np.random.default_rng(1)
    h = rng.normal(size=(2, 3, 4)).astype("float32")
    per_position = np.eye(5, dtype="float32")[rng.integers(0, 5, size=(2, 3))]
    synth = DenseSynthesizer()
    synth(h, context=per_position)
    _random_weights(synth)
    kernel, bias = [v.numpy() for v in synth.net.layers[-1].weights]
    np.testing.assert_allclose(synth(h, context=per_position),
                               np.concatenate([h, per_position], -1) @ kernel + bias, rtol=1e-5)
    per_example = per_position[:, 0]
    tiled = np.broadcast_to(per_example[:, None], (2, 3, 5))
    np.testing.assert_allclose(synth(h, context=per_example),
                               np.concatenate([h, tiled], -1) @ kernel + bias, rtol=1e-5)
    with pytest.raises(ValueError, match="`context`"):
        synth(h, context=per_position[:, :, None])


def test_conv1d_synthesizer_is_causal_and_zero_at_start():
    h = np.random.default_rng(2).normal(size=(1, 6, 3)).astype("float32")
    synth = Conv1DSynthesizer(kernel_size=3)
    assert float(np.abs(synth(h)).max()) == 0.0
    _random_weights(synth)
    changed = h.copy()
    changed[:, 4:] += 1.0      # the future of step 3
    np.testing.assert_allclose(synth(changed)[:, :4], synth(h)[:, :4], rtol=1e-6)
    assert float(np.abs(synth(changed)[:, 4:] - synth(h)[:, 4:]).max()) > 0
    same = Conv1DSynthesizer(kernel_size=3, causal=False)
    same(h)
    _random_weights(same)
    assert float(np.abs(same(changed)[:, 3] - same(h)[:, 3]).max()) > 0   # sees step 4
    clone = Conv1DSynthesizer.from_config(same.get_config())
    assert (clone.kernel_size, clone.causal) == (3, False)


def test_conv_synthesizer_takes_a_context_map_per_pixel():
    h = np.zeros((2, 4, 4, 3), "float32")
    synth = ConvSynthesizer(hidden_layers=0, kernel_size=1)
    per_pixel = np.zeros((2, 4, 4, 2), "float32")
    per_pixel[0, 1, 2, 1] = 1.0
    synth(h, context=per_pixel)
    _random_weights(synth)
    out = synth(h, context=per_pixel).numpy()
    kernel, bias = [v.numpy() for v in synth.net.layers[-1].weights]
    np.testing.assert_allclose(out[0, 1, 2], kernel[0, 0, 4] + bias, rtol=1e-5)
    np.testing.assert_allclose(out[1, 1, 2], bias, rtol=1e-5)


def test_config_round_trip():
    synth = ConvSynthesizer(hidden_layers=1, filters=8, kernel_size=3, name="s")
    clone = keras.saving.deserialize_keras_object(keras.saving.serialize_keras_object(synth))
    assert (clone.hidden_layers, clone.filters, clone.kernel_size, clone.name) == (1, 8, 3, "s")
