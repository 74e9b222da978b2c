"""tf.distribute: R replicas on a global batch train exactly as one device on it (DESIGN §6.1).

The module splits the CPU into two logical devices before TensorFlow starts
its runtime (pytest imports every test module before it runs any test), so
`MirroredStrategy` has two replicas. Run as a script it is one worker of the
two-worker `MultiWorkerMirroredStrategy` test.
"""

import contextlib
import functools
import json
import os
import socket
import subprocess
import sys

import tensorflow as tf

if __name__ != "__main__":
    tf.config.set_logical_device_configuration(
        tf.config.list_physical_devices("CPU")[0], [tf.config.LogicalDeviceConfiguration()] * 2)

import keras  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402

import sg_keras  # noqa: E402
from conftest import REPO, batch, fcn, randomize_synthesizers  # noqa: E402
from sg_keras import distribute  # noqa: E402
from sg_keras.dni_model import DNIModel  # noqa: E402

LOSS = keras.losses.SparseCategoricalCrossentropy(from_logits=True)
GLOBAL_BATCH, STEPS = 16, 3
CONFIGS = {
    # every kind of step (true-target, plain, measured), clipping, drawn updates, skipping
    "dni_schedule": ("dni", {"true_gradient_every": 3, "measure_every": 2, "sg_clip_norm": 0.5,
                             "update_prob": 0.5, "on_nonfinite": "skip", "seed": 3}),
    "cdni_true_targets": ("cdni", {"sg_target": "true", "bp_lambda": 0.3}),
    "dni": ("dni", {}),
}


@functools.lru_cache(maxsize=None)
def mirrored():
    """One strategy for the module: two strategies on the same devices in one process would
    number their collective operations alike, and TensorFlow would mix them up."""
    return tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"])


def scope(strategy):
    return strategy.scope() if strategy is not None else contextlib.nullcontext()


def make_model(mode, seed=2):
    """The tiny FCN (no BatchNorm) with non-zero synthesizers: ĝ ≠ 0 from the first step."""
    model = fcn(units=8, batch_norm=False, context_dim=5 if mode == "cdni" else None)
    randomize_synthesizers(model, seed=seed)
    return model


def sgd():
    return keras.optimizers.SGD(0.1)


def make_trainer(mode, options, strategy=None, seed=2):
    with scope(strategy):
        model = make_model(mode, seed)
        optimizer, sg_optimizer = sgd(), sgd()
    return sg_keras.DNITrainer(model, mode, loss=LOSS, optimizer=optimizer,
                               sg_optimizer=sg_optimizer, strategy=strategy, **options)


def weights(model):
    return {v.path: v.numpy().copy() for v in model.variables}


def train(trainer, x, y, steps=range(STEPS)):
    return [{key: float(value) for key, value in trainer.train_step(
        x[i * GLOBAL_BATCH:(i + 1) * GLOBAL_BATCH], y[i * GLOBAL_BATCH:(i + 1) * GLOBAL_BATCH]).items()}
        for i in steps]


_REFERENCES = {}


def reference(name):
    """Weights and logs of one device on the global batches (computed once per config)."""
    if name not in _REFERENCES:
        mode, options = CONFIGS[name]
        trainer = make_trainer(mode, options)
        logs = train(trainer, *batch(GLOBAL_BATCH * STEPS))
        _REFERENCES[name] = (list(weights(trainer.model).values()), logs)
    return _REFERENCES[name]


def assert_same_weights(expected, model, atol=1e-5):
    actual = list(weights(model).values())
    assert len(actual) == len(expected)
    for a, b, variable in zip(expected, actual, model.variables):
        np.testing.assert_allclose(b, a, rtol=0, atol=atol, err_msg=variable.path)


def test_helpers_reduce_over_the_replicas():
    strategy = mirrored()
    a = np.arange(8, dtype="float32").reshape(4, 2) - 3.0
    b = np.cos(np.arange(8, dtype="float32")).reshape(4, 2)

    @tf.function
    def run():
        def replica():
            part_a, part_b = distribute.local_part(a), distribute.local_part(b)
            return (distribute.global_batch(part_a), distribute.sum_over_replicas(part_a),
                    distribute.cosine_from_parts(distribute.sum_over_replicas(
                        distribute.cosine_parts(part_a, part_b))))
        return distribute.first_replica(strategy, strategy.run(replica))

    normaliser, summed, cosine = run()
    assert float(normaliser) == 4.0
    np.testing.assert_array_equal(summed.numpy(), a[:2] + a[2:])
    expected = a.ravel() @ b.ravel() / np.linalg.norm(a) / np.linalg.norm(b)
    assert float(cosine) == pytest.approx(expected, rel=1e-6)
    assert distribute.global_batch(a) is None and distribute.sum_over_replicas(a) is a


@pytest.mark.parametrize("name", sorted(CONFIGS))
def test_two_replicas_of_the_trainer_make_the_steps_of_one_device(name):
    expected, expected_logs = reference(name)
    mode, options = CONFIGS[name]
    trainer = make_trainer(mode, options, mirrored())
    logs = train(trainer, *batch(GLOBAL_BATCH * STEPS))
    assert_same_weights(expected, trainer.model)
    for step, (got, want) in enumerate(zip(logs, expected_logs)):
        assert [k.split("/")[0] for k in got] == [k.split("/")[0] for k in want]
        np.testing.assert_allclose(list(got.values()), list(want.values()), rtol=1e-5,
                                   atol=1e-6, err_msg=f"logs of step {step}")
    if options.get("update_prob"):   # the draws did vary, and agreed with one device
        assert {log[key] for log in logs for key in log if key.startswith("updated/")} == {0, 1}


@pytest.mark.parametrize("name", sorted(CONFIGS))
def test_two_replicas_of_fit_make_the_steps_of_one_device(name):
    expected, expected_logs = reference(name)
    mode, options = CONFIGS[name]
    strategy = mirrored()
    with strategy.scope():
        model = DNIModel.from_model(make_model(mode))
        model.compile(optimizer=sgd(), sg_optimizer=sgd(), loss=LOSS, mode=mode, **options)
    history = model.fit(*batch(GLOBAL_BATCH * STEPS), batch_size=GLOBAL_BATCH, shuffle=False,
                        verbose=0).history
    assert_same_weights(expected, model)
    assert history["loss"][0] == pytest.approx(np.mean([log["loss"] for log in expected_logs]),
                                               rel=1e-5)
    sg_losses = [key for key in history if key.startswith("sg_loss/")]
    assert len(sg_losses) == 2
    expected_sg = sorted(np.mean([log[key] for log in expected_logs])
                         for key in expected_logs[0] if key.startswith("sg_loss/"))
    np.testing.assert_allclose(sorted(history[key][0] for key in sg_losses), expected_sg,
                               rtol=1e-5)


def nan_on_the_second_replica():
    x, y = batch(GLOBAL_BATCH * 2)
    x[GLOBAL_BATCH - 1, 0] = np.nan   # the last example of the first global batch: replica 1's
    return x, y


def test_a_nan_on_one_replica_skips_the_step_on_all():
    x, y = nan_on_the_second_replica()
    single = make_trainer("dni", {"on_nonfinite": "skip"})
    trainer = make_trainer("dni", {"on_nonfinite": "skip"}, mirrored())
    before = weights(trainer.model)
    logs = train(trainer, x, y, steps=[0])
    assert logs[0]["skipped"] == 1.0
    for path, value in weights(trainer.model).items():
        np.testing.assert_array_equal(value, before[path], err_msg=path)
    train(trainer, x, y, steps=[1])
    train(single, x, y, steps=[0, 1])
    assert_same_weights(list(weights(single.model).values()), trainer.model)
    assert int(trainer.optimizer.iterations.numpy()) == 1


def test_a_nan_on_one_replica_stops_fit_and_the_trainer_with_nothing_applied():
    x, y = nan_on_the_second_replica()
    trainer = make_trainer("dni", {}, mirrored())
    before = weights(trainer.model)
    with pytest.raises(sg_keras.NonFiniteError, match="step 0"):
        train(trainer, x, y, steps=[0])
    strategy = mirrored()
    with strategy.scope():
        model = DNIModel.from_model(make_model("dni"))
        model.compile(optimizer=sgd(), sg_optimizer=sgd(), loss=LOSS)
    with pytest.raises(sg_keras.NonFiniteError, match="step 0"):
        model.fit(x[:GLOBAL_BATCH], y[:GLOBAL_BATCH], batch_size=GLOBAL_BATCH, verbose=0)
    for model_state in (weights(trainer.model), weights(model)):
        for value, expected in zip(model_state.values(), before.values()):
            np.testing.assert_array_equal(value, expected)


def test_a_checkpoint_saved_and_restored_under_the_strategy_resumes_the_run(tmp_path):
    mode, options = CONFIGS["dni_schedule"]
    x, y = batch(GLOBAL_BATCH * STEPS)
    trainer = make_trainer(mode, options, mirrored())
    train(trainer, x, y, steps=[0, 1])
    path = trainer.checkpoint.save(str(tmp_path / "ckpt"))
    # Another initialisation and seed: everything must come from the checkpoint.
    resumed = make_trainer(mode, {**options, "seed": 9}, mirrored(), seed=7)
    resumed.checkpoint.restore(path).assert_consumed()
    train(resumed, x, y, steps=[2])
    assert_same_weights(reference("dni_schedule")[0], resumed.model)


def test_bad_arguments_under_a_strategy_are_named():
    strategy = mirrored()
    outside = make_model("dni")
    with pytest.raises(ValueError, match="`model`: variables made outside"):
        sg_keras.DNITrainer(outside, "dni", strategy=strategy)
    with strategy.scope():
        model = make_model("dni")
    with pytest.raises(ValueError, match="`jit_compile`"):
        sg_keras.DNITrainer(model, "dni", strategy=strategy, jit_compile=True)
    with pytest.raises(ValueError, match="`loss`"):
        sg_keras.DNITrainer(model, "dni", strategy=strategy,
                            loss=lambda y, p: tf.reduce_mean(tf.square(p)))
    with pytest.raises(ValueError, match="`strategy` must be one of"):
        distribute.make_strategy("tpu_pod")


def free_ports(count):
    sockets = [socket.socket() for _ in range(count)]
    for each in sockets:
        each.bind(("127.0.0.1", 0))
    ports = [each.getsockname()[1] for each in sockets]
    for each in sockets:
        each.close()
    return ports


def worker(out_path):
    """One worker of `MultiWorkerMirroredStrategy` (cluster from TF_CONFIG): 3 steps, its weights."""
    strategy = tf.distribute.MultiWorkerMirroredStrategy()
    mode, options = CONFIGS["dni_schedule"]
    trainer = make_trainer(mode, options, strategy)
    train(trainer, *batch(GLOBAL_BATCH * STEPS))
    np.savez(out_path, *weights(trainer.model).values())


def test_two_worker_processes_train_as_one_process(tmp_path):
    cluster = {"worker": [f"127.0.0.1:{port}" for port in free_ports(2)]}
    outputs = [tmp_path / f"worker{index}.npz" for index in range(2)]
    processes = []
    for index, out in enumerate(outputs):
        env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3", "CUDA_VISIBLE_DEVICES": "",
               "TF_CONFIG": json.dumps({"cluster": cluster,
                                        "task": {"type": "worker", "index": index}})}
        processes.append(subprocess.Popen(
            [sys.executable, __file__, str(out)], env=env, cwd=REPO,
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True))
    try:
        for process in processes:
            output, _ = process.communicate(timeout=240)
            assert process.returncode == 0, output[-3000:]
    finally:
        for process in processes:
            process.kill()
    first, second = ([data[f"arr_{i}"] for i in range(len(data.files))]
                     for data in (np.load(out) for out in outputs))
    for a, b in zip(first, second):
        np.testing.assert_array_equal(a, b)
    expected = reference("dni_schedule")[0]
    assert len(first) == len(expected)
    for a, b in zip(expected, first):
        np.testing.assert_allclose(b, a, rtol=0, atol=1e-5)


if __name__ == "__main__":
    worker(sys.argv[1])
