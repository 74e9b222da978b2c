"""PipelinedTrainer: the first steps against a plain numpy pipeline, resume, update_prob, errors."""

import keras
import numpy as np
import pytest
import tensorflow as tf

import sg_keras
from conftest import fcn, randomize_synthesizers
from sg_keras.pipeline import PipelinedTrainer
from sg_keras.validation import ArgumentError

LR, SG_LR = 0.1, 0.05


def tanh_chain(hidden, context_dim=None, width=4, inputs=3, outputs=2):
    """Input → `hidden` decoupled Dense(tanh) layers with linear synthesizers → Dense head."""
    keras.utils.set_random_seed(3)
    layers = [keras.Input((inputs,))]
    layers += [sg_keras.DecoupledLayer(keras.layers.Dense(width, activation="tanh"),
                                       context_dim=context_dim) for _ in range(hidden)]
    model = keras.Sequential(layers + [keras.layers.Dense(outputs)])
    randomize_synthesizers(model)
    return model


def weights_of(model):
    """Per hidden stage `[W, b, A, a]` (A: the synthesizer's kernel), then the head's `[W, b]`."""
    stages = [[layer.layer.kernel.numpy(), layer.layer.bias.numpy(),
               *[v.numpy() for v in layer.synthesizer.trainable_variables]]
              for layer in model.layers[:-1]]
    return stages + [[model.layers[-1].kernel.numpy(), model.layers[-1].bias.numpy()]]


def numpy_pipeline(weights, batches, use_context):
    """The pipelined schedule written out in numpy; yields the weights after every step.

    Hidden stage: h = tanh(a W + b), ĝ = [h, c] A + a_s (linear synthesizer),
    update with the VJP of ĝ/N. Head: z = a W + b, mean squared error. Every
    stage works from the state at the start of the step; the synthesizer of
    stage k regresses, on the activation it kept from the previous step, on N
    times the input gradient stage k+1 sends back.
    """
    hidden = len(weights) - 1
    kept = [None] * hidden   # (activation, labels) in flight out of each hidden stage
    for t, (x, y) in enumerate(batches):
        updates, sent_back, new_kept = {}, {}, list(kept)
        for k in range(hidden + 1):
            if t < k:
                continue
            a, labels = (x, y) if k == 0 else kept[k - 1]
            n = a.shape[0]
            if k < hidden:
                w, b, big_a, small_a = weights[k]
                h = np.tanh(a @ w + b)
                s = np.concatenate([h, labels], 1) if use_context else h
                down = (s @ big_a + small_a) / n
                pre = down * (1 - h ** 2)
                new_kept[k] = (h, labels)
            else:
                w, b = weights[k]
                z = a @ w + b
                pre = 2 * (z - labels) / z.size
            updates[k] = [a.T @ pre, pre.sum(0)]
            sent_back[k] = pre @ w.T
        for k in range(hidden):
            if t < k + 1:
                continue
            h, labels = kept[k]
            s = np.concatenate([h, labels], 1) if use_context else h
            _, _, big_a, small_a = weights[k]
            n = h.shape[0]
            out = 2 * (s @ big_a + small_a - n * sent_back[k + 1]) / n
            weights[k][2] = big_a - SG_LR * s.T @ out
            weights[k][3] = small_a - SG_LR * out.sum(0)
        for k, (gw, gb) in updates.items():
            weights[k][0] = weights[k][0] - LR * gw
            weights[k][1] = weights[k][1] - LR * gb
        kept = new_kept
        yield [[p.copy() for p in stage] for stage in weights]


def data(steps, batch=5, inputs=3, outputs=2, seed=0):
    rng = np.random.default_rng(seed)
    return [(rng.normal(size=(batch, inputs)).astype("float32"),
             rng.normal(size=(batch, outputs)).astype("float32")) for _ in range(steps)]


def sgd_pipeline(model, mode):
    return PipelinedTrainer(model, mode, loss=keras.losses.MeanSquaredError(),
                            optimizer=keras.optimizers.SGD(LR),
                            sg_optimizer=keras.optimizers.SGD(SG_LR))


@pytest.mark.parametrize("hidden,mode", [(1, "dni"), (2, "cdni")])
def test_first_three_steps_match_a_numpy_pipeline(hidden, mode):
    model = tanh_chain(hidden, context_dim=2 if mode == "cdni" else None)
    trainer = sgd_pipeline(model, mode)
    batches = data(3)
    start = [[p.astype("float64") for p in stage] for stage in weights_of(model)]
    for step, expected in enumerate(numpy_pipeline(start, batches, mode == "cdni")):
        trainer.train_step(*batches[step])
        for stage, (got, want) in enumerate(zip(weights_of(model), expected)):
            for got_part, want_part in zip(got, want):
                np.testing.assert_allclose(got_part, want_part, rtol=1e-5, atol=1e-6,
                                           err_msg=f"step {step}, stage {stage}")
    assert int(trainer.iterations.numpy()) == 3


def test_synthesizer_sees_its_target_one_step_late():
    model = tanh_chain(2)
    trainer = sgd_pipeline(model, "dni")
    logs = [trainer.train_step(x, y) for x, y in data(3)]
    names = [layer.name for layer in model.layers[:-1]]
    # stage 0's target arrives from stage 1 at step 1; stage 1's from the head at step 2
    assert [np.isnan(float(log[f"sg_loss/{names[0]}"])) for log in logs] == [True, False, False]
    assert [np.isnan(float(log[f"sg_loss/{names[1]}"])) for log in logs] == [True, True, False]
    assert [np.isnan(float(log["loss"])) for log in logs] == [True, True, False]


def variables(trainer):
    optimizers = [*trainer.stage_optimizers, *trainer.synthesizer_optimizers]
    return ([v.numpy() for v in trainer.model.variables]
            + [v.numpy() for o in optimizers for v in o.variables]
            + [v.numpy() for v in trainer.pipe.activations + trainer.pipe.labels])


def bn_trainer(seed=0):
    model = fcn(blocks=2, context_dim=5)   # BatchNorm in every block, cDNI
    randomize_synthesizers(model)
    return PipelinedTrainer(model, "cdni", optimizer=keras.optimizers.Adam(1e-2),
                            update_prob=0.6, seed=seed)


def sparse_batches(steps):
    rng = np.random.default_rng(1)
    return [(rng.normal(size=(6, 8)).astype("float32"), rng.integers(0, 5, 6))
            for _ in range(steps)]


def test_resume_mid_pipe_continues_bit_for_bit(tmp_path):
    batches = sparse_batches(4)
    straight = bn_trainer()
    for x, y in batches[:2]:
        straight.train_step(x, y)
    path = straight.checkpoint.save(str(tmp_path / "ckpt"))
    for x, y in batches[2:]:
        straight.train_step(x, y)
    keras.utils.set_random_seed(99)
    resumed = bn_trainer(seed=7)    # other weights and seed: all comes from the checkpoint
    resumed.checkpoint.restore(path)
    for x, y in batches[2:]:
        resumed.train_step(x, y)
    for got, want in zip(variables(resumed), variables(straight), strict=True):
        np.testing.assert_array_equal(got, want)


def test_update_prob_draws_per_stage_from_the_seed():
    trainer = bn_trainer(seed=4)
    kernel = trainer.model.layers[0].layer.layers[0].kernel
    draws = tf.random.Generator.from_seed(4)
    for step, (x, y) in enumerate(sparse_batches(4)):
        before = kernel.numpy()
        logs = trainer.train_step(x, y)
        drawn = (draws.uniform([2]) < 0.6).numpy()
        updated = [float(logs[f"updated/{layer.name}"]) for layer in trainer.model.layers[:2]]
        assert updated == [float(drawn[0]), float(drawn[1] and step >= 1)]
        assert (not np.array_equal(kernel.numpy(), before)) == bool(drawn[0])


def test_batchnorm_statistics_wait_for_the_stage_to_start():
    trainer = bn_trainer()
    moving = [layer.layer.layers[1].moving_mean for layer in trainer.model.layers[:2]]
    changed = []
    for x, y in sparse_batches(2):
        before = [m.numpy() for m in moving]
        trainer.train_step(x, y)
        changed.append([not np.array_equal(m.numpy(), b) for m, b in zip(moving, before)])
    assert changed == [[True, False], [True, True]]


def test_bad_arguments_are_named():
    model = tanh_chain(1)
    with pytest.raises(ArgumentError, match="`mode`"):
        PipelinedTrainer(model, "backprop")
    with pytest.raises(ArgumentError, match="`devices`"):
        PipelinedTrainer(model, "dni", devices=["/gpu:7"])
    with pytest.raises(ArgumentError, match="`update_prob`"):
        PipelinedTrainer(model, "dni", update_prob=0.0)
    inputs = keras.Input((3,))
    functional = keras.Model(inputs, keras.layers.Dense(2)(
        sg_keras.DecoupledLayer(keras.layers.Dense(4))(inputs)))
    with pytest.raises(ArgumentError, match="Sequential"):
        PipelinedTrainer(functional, "dni")
