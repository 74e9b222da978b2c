"""RecurrentDNI against hand computations (tiny LSTM, a few steps)."""

import keras
import numpy as np
import pytest
import tensorflow as tf

from sg_keras.recurrent import RecurrentDNI, per_step_sigmoid_bits, per_step_softmax_bits
from sg_keras.validation import ArgumentError

BATCH, LENGTH, INPUTS, UNITS, OUTPUTS = 4, 5, 2, 3, 2


def make(truncation=2, synthesizer="linear", lr=0.1, sg_lr=0.1, aux=False, seed=0):
    keras.utils.set_random_seed(seed)
    return RecurrentDNI(keras.layers.LSTMCell(UNITS), keras.layers.Dense(OUTPUTS),
                        truncation=truncation, loss=per_step_sigmoid_bits,
                        optimizer=keras.optimizers.SGD(lr), synthesizer=synthesizer,
                        sg_optimizer=keras.optimizers.SGD(sg_lr) if synthesizer else None,
                        aux=aux)


def data(seed=1):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(BATCH, LENGTH, INPUTS)).astype("float32")
    y = rng.integers(0, 2, size=(BATCH, LENGTH, OUTPUTS)).astype("float32")
    w = rng.integers(0, 2, size=(BATCH, LENGTH)).astype("float32")
    w[:, -1] = 1.0
    return x, y, w


def randomise_synthesizer(core, scale=0.3, seed=2):
    rng = np.random.default_rng(seed)
    for v in core.synthesizer.trainable_variables:
        v.assign(scale * rng.normal(size=v.shape).astype("float32"))


def hand_unroll(core, state, x):
    predictions = []
    for t in range(x.shape[1]):
        out, state = core.cell(x[:, t], state)
        predictions.append(core.readout(out))
    return list(state), predictions


def hand_loss(core, predictions, y, w):
    return sum(tf.reduce_sum(per_step_sigmoid_bits(y[:, t], p) * w[:, t])
               for t, p in enumerate(predictions)) / BATCH


def linear_synth(core, flat):
    kernel, bias = core.synthesizer.trainable_variables
    return flat @ kernel + bias


def chunk_with_random_synthesizer(part, seed, clip=None):
    """A core whose linear synthesizer is random, a random first state and one chunk's results."""
    core = make(truncation=2)
    core.sg_clip_norm = clip
    x, y, w = data()
    core.build(INPUTS)
    randomise_synthesizer(core)
    rng = np.random.default_rng(seed)
    start = [tf.constant(rng.normal(size=(BATCH, UNITS)).astype("float32")) for _ in range(2)]
    xc, yc, wc = x[:, part], y[:, part], w[:, part]
    return core, start, xc, yc, wc, core.chunk_gradients(start, xc, yc, wc)


def test_chunk_update_is_bptt_plus_jacobian_transpose_of_the_synthetic_gradient():
    core, start, xc, yc, wc, result = chunk_with_random_synthesizer(slice(0, 2), seed=3)

    theta = core.core_variables
    with tf.GradientTape(persistent=True) as tape:
        end, predictions = hand_unroll(core, start, xc)
        loss = hand_loss(core, predictions, yc, wc)
        end_flat = tf.concat(end, -1)
        entries = tf.unstack(tf.reshape(end_flat, [-1]))        # s_end[b, i], row-major
    synthetic = linear_synth(core, end_flat).numpy()            # δ̂ = s_end K + b
    bptt = tape.gradient(loss, theta)
    for got, g, v in zip(result["core_gradients"], bptt, theta):
        # (∂s_end/∂θ)ᵀ δ̂/N, one Jacobian row ∂s_end[b, i]/∂θ at a time.
        rows = [tape.gradient(entry, v) for entry in entries]
        expected = g.numpy() + sum(c * r.numpy() for c, r in zip((synthetic / BATCH).ravel(), rows)
                                   if r is not None)     # None: the readout does not reach s_end
        np.testing.assert_allclose(got.numpy(), expected, rtol=1e-4, atol=1e-6)
    np.testing.assert_allclose(np.concatenate(result["synthetic_end"], -1), synthetic, rtol=1e-5)


def clipped(synthetic, clip):
    """Each example's δ̂ of each state part (h, c) scaled to an L2 norm of at most `clip`."""
    if clip is None:
        return synthetic
    parts = np.split(synthetic, 2, axis=-1)
    return np.concatenate([p * np.minimum(1.0, clip / np.linalg.norm(p, axis=-1, keepdims=True))
                           for p in parts], -1)


@pytest.mark.parametrize("clip", [None, 0.05])
def test_synthesizer_target_is_the_gradient_reaching_the_first_state(clip):
    core, start, xc, yc, wc, result = chunk_with_random_synthesizer(slice(2, 4), seed=4, clip=clip)

    start_flat = tf.concat(start, -1)
    with tf.GradientTape(persistent=True) as tape:
        tape.watch(start_flat)
        end, predictions = hand_unroll(core, tf.split(start_flat, 2, -1), xc)
        loss = hand_loss(core, predictions, yc, wc)
        end_flat = tf.concat(end, -1)
        entries = tf.unstack(tf.reshape(end_flat, [-1]))
    synthetic = linear_synth(core, end_flat).numpy()
    if clip is not None:     # the bound is active: some δ̂ are longer than it
        assert np.linalg.norm(synthetic[:, :UNITS], axis=-1).max() > clip
    synthetic = clipped(synthetic, clip)     # the bootstrapped target uses the applied δ̂
    jacobian = np.stack([tape.gradient(e, start_flat).numpy() for e in entries])  # (B·2U, B, 2U)
    arriving = tape.gradient(loss, start_flat).numpy() + np.tensordot(
        (synthetic / BATCH).ravel(), jacobian, axes=1)
    target = BATCH * arriving
    np.testing.assert_allclose(np.concatenate(result["target"], -1), target, rtol=1e-4,
                               atol=1e-6)
    # The linear synthesizer's gradients: M(s0) = s0 K + b regressed on the target.
    residual = linear_synth(core, start_flat).numpy() - target
    kernel_grad, bias_grad = result["sg_gradients"]
    np.testing.assert_allclose(kernel_grad.numpy(), start_flat.numpy().T @ (2 * residual / BATCH),
                               rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(bias_grad.numpy(), (2 * residual / BATCH).sum(0), rtol=1e-4,
                               atol=1e-5)
    np.testing.assert_allclose(float(result["sg_loss"]), (residual ** 2).sum() / BATCH, rtol=1e-4)


def _sgd_reference(core, chunks, x, y, w, lr):
    """Truncated BPTT by hand: one SGD step per chunk, state carried with its gradient cut."""
    state = core.initial_state(BATCH)
    for start in range(0, LENGTH, chunks):
        part = slice(start, start + chunks)
        with tf.GradientTape() as tape:
            state, predictions = hand_unroll(core, state, x[:, part])
            loss = hand_loss(core, predictions, y[:, part], w[:, part])
        for v, g in zip(core.core_variables, tape.gradient(loss, core.core_variables)):
            v.assign_sub(lr * g)
        state = [tf.stop_gradient(s) for s in state]
    return [v.numpy() for v in core.core_variables]


@pytest.mark.parametrize("truncation", [LENGTH, LENGTH + 3])
def test_truncation_at_least_the_sequence_length_is_full_bptt(truncation):
    x, y, w = data()
    core = make(truncation=truncation)
    core.build(INPUTS)
    randomise_synthesizer(core)           # unused: the sequence ends in its only chunk
    reference = make(truncation=truncation, synthesizer=None)
    reference.build(INPUTS)
    for v, r in zip(core.core_variables, reference.core_variables):
        r.assign(v)
    core.train_sequence(x, y, w)
    expected = _sgd_reference(reference, LENGTH, x, y, w, lr=0.1)
    for v, e in zip(core.core_variables, expected):
        np.testing.assert_allclose(v.numpy(), e, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("synthesizer", ["linear", None])
def test_zero_synthesizer_is_truncated_bptt(synthesizer):
    x, y, w = data()
    core = make(truncation=2, synthesizer=synthesizer, sg_lr=0.0)   # M stays zero
    core.build(INPUTS)
    reference = make(truncation=2, synthesizer=None)
    reference.build(INPUTS)
    for v, r in zip(core.core_variables, reference.core_variables):
        r.assign(v)
    logs = core.train_sequence(x, y, w)
    expected = _sgd_reference(reference, 2, x, y, w, lr=0.1)
    for v, e in zip(core.core_variables, expected):
        np.testing.assert_allclose(v.numpy(), e, rtol=1e-5, atol=1e-6)
    assert logs["sg_norm"] == 0.0


def test_zero_synthesizer_differs_from_bptt_once_it_learns():
    x, y, w = data()
    trained, frozen = make(truncation=2), make(truncation=2, sg_lr=0.0)
    for core in (trained, frozen):
        core.train_sequence(x, y, w)
    # Chunk 2 trains M(s_2); chunk 3 starts at s_4 and bootstraps nothing (last), but the
    # second chunk's δ̂ = M(s_4) was zero then: the first sequence agrees...
    for a, b in zip(trained.core_variables, frozen.core_variables):
        np.testing.assert_allclose(a.numpy(), b.numpy(), rtol=1e-5, atol=1e-6)
    # ...and the second does not, because M learned from the first.
    assert np.max(np.abs(trained.synthesizer.trainable_variables[0].numpy())) > 0
    for core in (trained, frozen):
        core.train_sequence(x, y, w)
    assert not all(np.allclose(a.numpy(), b.numpy(), atol=1e-7)
                   for a, b in zip(trained.core_variables, frozen.core_variables))


def test_aux_loss_regresses_every_step_on_the_chunk_end_synthetic_gradient():
    core = make(truncation=2, aux=True)
    x, y, w = data()
    core.build(INPUTS)
    randomise_synthesizer(core)
    start = core.initial_state(BATCH)
    result = core.chunk_gradients(start, x[:, :2], y[:, :2], w[:, :2])
    synthetic = np.concatenate(result["synthetic_end"], -1)
    state, errors = start, []
    for t in range(2):
        out, state = core.cell(x[:, t], state)
        errors.append(np.sum((core.aux_head(out).numpy() - synthetic) ** 2) / BATCH)
    np.testing.assert_allclose(float(result["aux_loss"]), np.mean(errors), rtol=1e-4)


@pytest.mark.parametrize("aux_weight", [1.0, 0.25])
def test_aux_gradient_of_the_core_is_the_weighted_regression_on_the_stopped_end_prediction(
        aux_weight):
    """Core gradient = BPTT + (∂s_end/∂θ)ᵀ δ̂/N + w·∂/∂θ mean_t Σ‖A(o_t) − δ̂‖²/N, δ̂ a constant.

    The auxiliary target is the synthetic gradient at the chunk's end, per
    example (not divided by N), with no gradient through it; the synthesizer's
    own target leaves the auxiliary loss out.
    """
    core = make(truncation=2, aux=True)
    core.aux_weight = aux_weight
    x, y, w = data()
    core.build(INPUTS)
    randomise_synthesizer(core)
    rng = np.random.default_rng(7)
    start = [tf.constant(rng.normal(size=(BATCH, UNITS)).astype("float32")) for _ in range(2)]
    xc, yc, wc = x[:, :2], y[:, :2], w[:, :2]
    result = core.chunk_gradients(start, xc, yc, wc)
    plain = make(truncation=2)   # the same chunk without Aux: its target must be unchanged
    plain.build(INPUTS)
    for a, b in zip(plain.cell.variables + plain.readout.variables +
                    plain.synthesizer.variables,
                    core.cell.variables + core.readout.variables + core.synthesizer.variables):
        a.assign(b)
    without = plain.chunk_gradients(start, xc, yc, wc)

    theta = core.core_variables
    with tf.GradientTape(persistent=True) as tape:
        state, outputs, predictions = start, [], []
        for t in range(2):
            out, state = core.cell(xc[:, t], state)
            outputs.append(out)
            predictions.append(core.readout(out))
        loss = hand_loss(core, predictions, yc, wc)
        end_flat = tf.concat(list(state), -1)
        synthetic = tf.constant(linear_synth(core, end_flat).numpy())   # δ̂, per example
        aux = sum(tf.reduce_sum(tf.square(core.aux_head(o) - synthetic)) / BATCH
                  for o in outputs) / 2
        objective = loss + aux_weight * aux
        entries = tf.unstack(tf.reshape(end_flat, [-1]))
    for got, g, v in zip(result["core_gradients"], tape.gradient(objective, theta), theta):
        rows = [tape.gradient(entry, v) for entry in entries]
        expected = (0 if g is None else g.numpy()) + sum(
            c * r.numpy() for c, r in zip((synthetic.numpy() / BATCH).ravel(), rows)
            if r is not None)
        np.testing.assert_allclose(got.numpy(), expected, rtol=1e-4, atol=1e-6, err_msg=v.path)
    np.testing.assert_allclose(float(result["aux_loss"]), float(aux), rtol=1e-5)
    for a, b in zip(result["target"], without["target"]):
        np.testing.assert_allclose(a.numpy(), b.numpy(), rtol=1e-5, atol=1e-7)
    # a small step along −gradient lowers the weighted auxiliary loss (its sign)
    head = core.aux_head.trainable_variables
    before = float(aux)
    for v, g in zip(theta, result["core_gradients"]):
        if any(v is h for h in head):
            v.assign_sub(1e-3 * g)
    after = sum(tf.reduce_sum(tf.square(core.aux_head(o) - synthetic)) / BATCH
                for o in outputs) / 2
    assert float(after) < before


def test_state_carries_across_batches_without_bootstrapping_stop():
    core = make(truncation=2, synthesizer=None)
    x, y, w = data()
    core.train_sequence(x, y, w, ends=False)
    carried = [s.numpy() for s in core.last_state]
    predictions, final = core.predict_sequence(x)
    assert any(np.abs(c).sum() > 0 for c in carried)
    assert predictions.shape == (BATCH, LENGTH, OUTPUTS)
    assert len(final) == 2


def test_boundary_gradients_match_full_bptt_at_the_boundary():
    core = make(truncation=2)
    x, y, w = data()
    core.build(INPUTS)
    randomise_synthesizer(core)
    pairs = core.boundary_gradients(x, y, w)
    assert len(pairs) == 2          # boundaries after steps 2 and 4
    # The true gradient at the last boundary is that of the last step's loss only.
    state = core.initial_state(BATCH)
    state, _ = hand_unroll(core, state, x[:, :4])
    flat = tf.concat(state, -1)
    with tf.GradientTape() as tape:
        tape.watch(flat)
        _, predictions = hand_unroll(core, tf.split(flat, 2, -1), x[:, 4:])
        loss = hand_loss(core, predictions, y[:, 4:], w[:, 4:])
    np.testing.assert_allclose(pairs[1][1].numpy(), BATCH * tape.gradient(loss, flat).numpy(),
                               rtol=1e-4, atol=1e-6)
    np.testing.assert_allclose(pairs[1][0].numpy(), linear_synth(core, flat).numpy(), rtol=1e-5)


def test_boundary_cosines_are_those_of_the_whole_batch_at_each_boundary():
    core = make(truncation=2)
    x, y, w = data()
    core.build(INPUTS)
    randomise_synthesizer(core)
    expected = []
    for synthetic, true in core.boundary_gradients(x, y, w):
        a, b = synthetic.numpy().ravel(), true.numpy().ravel()
        expected.append(a @ b / (np.linalg.norm(a) * np.linalg.norm(b)))
    assert len(expected) == 2
    np.testing.assert_allclose(core.boundary_cosines(x, y, w), expected, rtol=1e-5)


def test_softmax_bits():
    logits = tf.zeros((2, 4))
    np.testing.assert_allclose(per_step_softmax_bits(tf.constant([0, 3]), logits).numpy(),
                               [2.0, 2.0], rtol=1e-6)


@pytest.mark.parametrize("kwargs, argument", [
    (dict(truncation=0), "truncation"),
    (dict(synthesizer="mlp"), "synthesizer"),
    (dict(synthesizer=None, aux=True), "aux"),
    (dict(aux_weight=-1.0), "aux_weight"),
    (dict(sg_clip_norm=0.0), "sg_clip_norm"),
])
def test_bad_arguments_name_the_argument(kwargs, argument):
    options = {"truncation": 2, "loss": per_step_sigmoid_bits,
               "optimizer": keras.optimizers.SGD(0.1), **kwargs}
    with pytest.raises((ArgumentError, ValueError), match=argument):
        RecurrentDNI(keras.layers.LSTMCell(2), keras.layers.Dense(2), **options)


def test_context_conditions_the_synthetic_gradient():
    keras.utils.set_random_seed(0)
    core = RecurrentDNI(keras.layers.LSTMCell(UNITS), keras.layers.Dense(OUTPUTS), truncation=2,
                        loss=per_step_sigmoid_bits, optimizer=keras.optimizers.SGD(0.1),
                        context_dim=3)
    x, y, w = data()
    core.build(INPUTS)
    randomise_synthesizer(core)
    context = np.eye(3, dtype="float32")[[0, 1, 2, 0]]
    result = core.chunk_gradients(core.initial_state(BATCH), x[:, :2], y[:, :2], w[:, :2],
                                  context=context)
    end, _ = hand_unroll(core, core.initial_state(BATCH), x[:, :2])
    features = tf.concat([tf.concat(end, -1), context], -1)     # cDNI: [s_end, c]
    np.testing.assert_allclose(np.concatenate(result["synthetic_end"], -1),
                               linear_synth(core, features).numpy(), rtol=1e-5, atol=1e-6)
