"""DecoupledLayer around any layer: several inputs, keyword inputs, sequences, several outputs."""

import keras
import numpy as np
import pytest
import tensorflow as tf

import sg_keras
from sg_keras.interception import GradientInterception
from sg_keras.synthesizers import DenseSynthesizer

LOSS = keras.losses.SparseCategoricalCrossentropy(from_logits=True)


def softmax(z):
    e = np.exp(z - z.max(-1, keepdims=True))
    return e / e.sum(-1, keepdims=True)


def random_weights(layer, seed=0, scale=0.5):
    rng = np.random.default_rng(seed)
    for variable in layer.trainable_variables:
        variable.assign(rng.normal(0.0, scale, variable.shape).astype("float32"))


def round_trip(tmp_path, model):
    path = tmp_path / "model.keras"
    model.save(path)
    return keras.models.load_model(path)


def test_add_of_two_branches_sends_g_over_n_down_both_and_each_branch_gets_its_vjp():
    keras.utils.set_random_seed(0)
    x_in = keras.Input((3,))
    left, right = keras.layers.Dense(4, name="left"), keras.layers.Dense(4, name="right")
    add = sg_keras.DecoupledLayer(keras.layers.Add(), name="sum")
    head = keras.layers.Dense(2, name="head")
    model = keras.Model(x_in, head(add([left(x_in), right(x_in)])))
    random_weights(add.synthesizer, seed=1)
    x = np.random.default_rng(2).normal(size=(5, 3)).astype("float32")
    y = np.array([0, 1, 1, 0, 1])
    sources = left.trainable_variables + right.trainable_variables + head.trainable_variables
    synth_vars = add.synthesizer.trainable_variables
    with GradientInterception() as scope, tf.GradientTape() as tape:
        loss = LOSS(y, model(x, training=True))
    grads = tape.gradient(loss, sources + synth_vars)

    (wl, bl), (wr, br), (wh, bh) = [(v[0].numpy(), v[1].numpy()) for v in
                                    (left.weights, right.weights, head.weights)]
    k, c = [v.numpy() for v in add.synthesizer.net.layers[-1].weights]
    n = len(x)
    h = x @ wl + bl + x @ wr + br
    g = h @ k + c                                          # ĝ
    down = g / n
    for (dw, db) in (grads[0:2], grads[2:4]):             # both branches: Jᵀ(ĝ/N)
        np.testing.assert_allclose(dw, x.T @ down, rtol=1e-4, atol=1e-6)
        np.testing.assert_allclose(db, down.sum(0), rtol=1e-4, atol=1e-6)
    delta = (softmax(h @ wh + bh) - np.eye(2)[y]) / n @ wh.T   # the true ∂L/∂h
    target = n * delta
    np.testing.assert_allclose(scope.interceptions[0].target, target, rtol=1e-4, atol=1e-6)
    residual = 2 * (g - target) / n
    np.testing.assert_allclose(grads[6], h.T @ residual, rtol=1e-4, atol=1e-6)
    np.testing.assert_allclose(grads[7], residual.sum(0), rtol=1e-4, atol=1e-6)
    np.testing.assert_allclose(float(scope.interceptions[0].sg_loss),
                               ((g - target) ** 2).sum() / n, rtol=1e-4)


def test_multi_head_attention_with_value_and_mask_trains_and_reloads(tmp_path):
    keras.utils.set_random_seed(0)
    query, value = keras.Input((4, 6)), keras.Input((5, 6))
    mask = keras.Input((4, 5), dtype="bool")
    attention = keras.layers.MultiHeadAttention(2, 3, name="mha")
    decoupled = sg_keras.DecoupledLayer(attention, name="attention")
    h = decoupled(query, value, attention_mask=mask)
    model = keras.Model([query, value, mask], keras.layers.Dense(3)(h))
    rng = np.random.default_rng(0)
    inputs = [rng.normal(size=(2, 4, 6)).astype("float32"),
              rng.normal(size=(2, 5, 6)).astype("float32"), rng.random((2, 4, 5)) > 0.3]
    np.testing.assert_allclose(decoupled(inputs[0], inputs[1], attention_mask=inputs[2]),
                               attention(inputs[0], inputs[1], attention_mask=inputs[2]),
                               rtol=1e-6)
    assert isinstance(decoupled.synthesizer, DenseSynthesizer)
    trainer = sg_keras.DNITrainer(model, mode="dni")
    y = np.array([[0, 1, 2, 0], [1, 1, 2, 2]])
    logs = [trainer.train_step(inputs, y) for _ in range(2)][-1]
    assert np.isfinite(float(logs["loss"])) and float(logs["sg_loss/attention"]) > 0
    loaded = round_trip(tmp_path, model)
    np.testing.assert_allclose(loaded(inputs), model(inputs), rtol=1e-6)


@keras.saving.register_keras_serializable(package="tests")
class TransformerBlock(keras.layers.Layer):
    """Causal self-attention and a feed-forward network, each residual with LayerNorm."""

    def __init__(self, units, heads=2, **kwargs):
        super().__init__(**kwargs)
        self.units, self.heads = units, heads
        self.attention = keras.layers.MultiHeadAttention(heads, units // heads)
        self.norm1, self.norm2 = keras.layers.LayerNormalization(), keras.layers.LayerNormalization()
        self.ffn = keras.Sequential([keras.layers.Dense(2 * units, activation="relu"),
                                     keras.layers.Dense(units)])

    def call(self, x):
        x = x + self.attention(self.norm1(x), self.norm1(x), use_causal_mask=True)
        return x + self.ffn(self.norm2(x))

    def get_config(self):
        return {**super().get_config(), "units": self.units, "heads": self.heads}


def causal_lm(vocab=7, units=8, blocks=2, context_dim=None):
    keras.utils.set_random_seed(3)
    tokens = keras.Input((5,), dtype="int32")
    h = keras.layers.Embedding(vocab, units)(tokens)
    for index in range(blocks):
        h = sg_keras.DecoupledLayer(TransformerBlock(units), context_dim=context_dim,
                                    name=f"block{index}")(h)
    return sg_keras.DNIModel(tokens, keras.layers.Dense(vocab, name="logits")(h))


def lm_batch(vocab=7, n=4, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.integers(0, vocab, size=(n, 5)).astype("int32")
    return x, np.roll(x, -1, axis=1)     # next-token labels (batch, time)


@pytest.mark.parametrize("mode", ["backprop", "dni", "cdni"])
def test_causal_transformer_lm_with_labels_per_position_trains_in_every_mode(mode):
    model = causal_lm(context_dim=7 if mode == "cdni" else None)
    assert [type(layer.synthesizer) for layer in model.layers[2:4]] == [DenseSynthesizer] * 2
    trainer = sg_keras.DNITrainer(model, mode=mode, optimizer=keras.optimizers.Adam(1e-2))
    x, y = lm_batch()
    losses = [float(trainer.train_step(x, y)["loss"]) for _ in range(8)]
    assert all(np.isfinite(losses)) and losses[-1] < losses[0]
    logits = model(x).numpy()
    expected = (logits.argmax(-1) == y).mean()
    result = trainer.evaluate(x, y)
    np.testing.assert_allclose(result["accuracy"], expected, rtol=1e-6)
    logs = trainer.train_step(x, y)
    if mode != "backprop":
        assert float(logs["sg_loss/block0"]) > 0 and float(logs["sg_loss/block1"]) > 0


def test_causal_transformer_lm_trains_through_fit_and_reloads(tmp_path):
    model = causal_lm(context_dim=7)
    model.compile(optimizer=keras.optimizers.Adam(1e-2), loss=LOSS, metrics=["accuracy"])
    x, y = lm_batch(n=8)
    history = model.fit(x, y, batch_size=4, epochs=2, verbose=0).history
    assert np.isfinite(history["loss"]).all()
    assert {"sg_loss/block0", "sg_loss/block1", "accuracy"} <= set(history)
    loaded = round_trip(tmp_path, model)
    np.testing.assert_allclose(loaded.predict(x, verbose=0), model.predict(x, verbose=0),
                               rtol=1e-5, atol=1e-6)


def test_lstm_sequences_decoupled_with_the_default_synthesizer_train_and_reload(tmp_path):
    keras.utils.set_random_seed(0)
    tokens = keras.Input((6,), dtype="int32")
    h = keras.layers.Embedding(5, 4, mask_zero=True)(tokens)
    h = sg_keras.DecoupledLayer(keras.layers.LSTM(8, return_sequences=True), name="lstm")(h)
    model = keras.Model(tokens, keras.layers.Dense(5)(keras.layers.LSTM(4)(h)))
    x = np.random.default_rng(0).integers(0, 5, size=(3, 6)).astype("int32")
    y = np.array([1, 2, 3])
    trainer = sg_keras.DNITrainer(model, mode="dni", measure_every=1)
    logs = [trainer.train_step(x, y) for _ in range(2)][-1]
    assert np.isfinite(float(logs["loss"])) and -1 <= float(logs["cosine/lstm"]) <= 1
    np.testing.assert_allclose(round_trip(tmp_path, model)(x), model(x), rtol=1e-6)


def test_lstm_with_states_gets_one_synthesizer_per_float_output(tmp_path):
    keras.utils.set_random_seed(0)
    seq = keras.Input((4, 3))
    lstm = sg_keras.DecoupledLayer(keras.layers.LSTM(5, return_state=True), name="rnn",
                                   synthesizer=[None, DenseSynthesizer(hidden_layers=1,
                                                                       hidden_units=4), None])
    output, state_h, state_c = lstm(seq)
    model = keras.Model(seq, keras.layers.Dense(2)(
        keras.layers.Concatenate()([output, state_h, state_c])))
    assert lstm.synthesizer is None and len(lstm.synthesizers) == 3
    assert lstm.synthesizers[1].hidden_layers == 1
    assert [lstm.synthesizers[i].name for i in (0, 2)] == ["rnn_synthesizer",
                                                           "rnn_synthesizer_2"]   # defaults
    x = np.random.default_rng(0).normal(size=(3, 4, 3)).astype("float32")
    trainer = sg_keras.DNITrainer(model, mode="dni")
    logs = [trainer.train_step(x, np.array([0, 1, 1])) for _ in range(2)][-1]
    assert {"sg_loss/rnn", "sg_loss/rnn_1", "sg_loss/rnn_2"} <= set(logs)
    assert all(float(logs[key]) > 0 for key in ("sg_loss/rnn", "sg_loss/rnn_1", "sg_loss/rnn_2"))
    g = lstm.synthetic_gradient(lstm.layer(x))
    assert len(g) == 3 and [t.shape for t in g] == [(3, 5)] * 3
    clone = sg_keras.DecoupledLayer.from_config(lstm.get_config())
    assert [s is None or s.hidden_layers for s in clone.output_synthesizers] == [0, 1, 0]
    loaded = round_trip(tmp_path, model)
    restored = loaded.get_layer("rnn")
    for expected, got in zip(g, restored.synthetic_gradient(restored.layer(x))):
        np.testing.assert_array_equal(got, expected)
    np.testing.assert_allclose(loaded(x), model(x), rtol=1e-6)


def test_synthesizers_that_do_not_fit_the_outputs_are_refused():
    with pytest.raises(ValueError, match="`synthesizer`.*3 float outputs"):
        sg_keras.DecoupledLayer(keras.layers.LSTM(2, return_state=True),
                                synthesizer=DenseSynthesizer()).build((None, 4, 3))
    with pytest.raises(ValueError, match="`synthesizer`.*one float output"):
        sg_keras.DecoupledLayer(keras.layers.Dense(2),
                                synthesizer=[None, None]).build((None, 3))
    with pytest.raises(ValueError, match="`synthesizer`"):
        sg_keras.DecoupledLayer(keras.layers.Dense(2), synthesizer=[])
