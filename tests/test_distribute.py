"""tf.distribute: R replicas on a global batch train exactly as one device on it.

Two logical CPU devices must be configured before TensorFlow starts, and
would change every other test's devices, so the two-replica checks run in
one child process (`python tests/test_distribute.py replicas OUT.json`, the
`replica_checks` fixture): it trains on one device and on two replicas and
reports the differences, which the tests below assert. Run as
`python tests/test_distribute.py OUT.npz` it is one worker of the two-worker
`MultiWorkerMirroredStrategy` test.
"""

import contextlib
import functools
import json
import os
import socket
import subprocess
import sys

import keras
import numpy as np
import pytest
import tensorflow as tf

import sg_keras
from conftest import REPO, batch, fcn, randomize_synthesizers
from sg_keras import distribute
from sg_keras.dni_model import DNIModel
from sg_keras.job.config import Config, ConfigError
from sg_keras.metrics import cosine_from_parts, cosine_parts

LOSS = keras.losses.SparseCategoricalCrossentropy(from_logits=True)
GLOBAL_BATCH, STEPS = 16, 3
CONFIGS = {
    # true-target, frozen-synthesizer and measured steps, clipping, drawn updates, skipping
    "dni_schedule": ("dni", {"true_gradient_every": 3, "measure_every": 2, "sg_clip_norm": 0.5,
                             "update_prob": 0.5, "on_nonfinite": "skip", "seed": 3,
                             "synth_update_every": 4}),
    "cdni_true_targets": ("cdni", {"sg_target": "true", "bp_lambda": 0.3}),
    # per-module guards and optimizers (each decided across the replicas)
    "dni_skip_module": ("dni", {"on_nonfinite": "skip_module"}),
}
# fit runs the trainer's engine: one config (every kind of step) checks its distributed path
FIT_CONFIGS = ("dni_schedule",)


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
    parts = [slice(i * GLOBAL_BATCH, (i + 1) * GLOBAL_BATCH) for i in steps]
    return [{key: float(value) for key, value in trainer.train_step(x[part], y[part]).items()}
            for part in parts]


_REFERENCES = {}


def reference(name):
    """Weights and logs of one device on the global batches (computed once per config)."""
    if name not in _REFERENCES:
        mode, options = CONFIGS[name]
        trainer = make_trainer(mode, options)
        logs = train(trainer, *batch(GLOBAL_BATCH * STEPS))
        _REFERENCES[name] = (list(weights(trainer.model).values()), logs)
    return _REFERENCES[name]


def largest_difference(expected, model):
    """The largest absolute difference between `expected` weights and `model`'s."""
    actual = list(weights(model).values())
    assert len(actual) == len(expected)
    return max(float(np.abs(a - b).max()) for a, b in zip(expected, actual))


def largest_log_difference(logs, expected_logs):
    """The largest relative difference between two runs' logs (their keys must match)."""
    worst = 0.0
    for got, want in zip(logs, expected_logs):
        assert [k.split("/")[0] for k in got] == [k.split("/")[0] for k in want]
        for a, b in zip(got.values(), want.values()):
            if not (np.isnan(a) and np.isnan(b)):
                worst = max(worst, abs(a - b) / max(abs(b), 1e-6))
    return worst


# The checks made in the child process (two logical CPU devices); each returns numbers.

def check_helpers():
    strategy = mirrored()
    a = np.arange(8, dtype="float32").reshape(4, 2) - 3.0
    b = np.cos(np.arange(8, dtype="float32")).reshape(4, 2)

    @tf.function
    def run():
        def replica():
            part_a, part_b = distribute.local_part(a), distribute.local_part(b)
            return (distribute.global_batch(part_a), distribute.sum_over_replicas(part_a),
                    cosine_from_parts(distribute.sum_over_replicas(
                        cosine_parts(part_a, part_b))))
        return distribute.first_replica(strategy, strategy.run(replica))

    normaliser, summed, cosine = run()
    return {"normaliser": float(normaliser), "summed": summed.numpy().tolist(),
            "cosine": float(cosine)}


def check_trainer(name):
    expected, expected_logs = reference(name)
    trainer = make_trainer(*CONFIGS[name], mirrored())
    logs = train(trainer, *batch(GLOBAL_BATCH * STEPS))
    return {"weights": largest_difference(expected, trainer.model),
            "logs": largest_log_difference(logs, expected_logs),
            "updated": sorted({log[key] for log in logs for key in log
                               if key.startswith("updated/")})}


def check_fit(name):
    expected, expected_logs = reference(name)
    mode, options = CONFIGS[name]
    with mirrored().scope():
        model = DNIModel.from_model(make_model(mode))
        model.compile(optimizer=sgd(), sg_optimizer=sgd(), loss=LOSS, mode=mode, **options)
    history = model.fit(*batch(GLOBAL_BATCH * STEPS), batch_size=GLOBAL_BATCH, shuffle=False,
                        verbose=0).history
    expected_sg = sorted(np.nanmean([log[key] for log in expected_logs])   # NaN: not trained
                         for key in expected_logs[0] if key.startswith("sg_loss/"))
    sg = sorted(history[key][0] for key in history if key.startswith("sg_loss/"))
    return {"weights": largest_difference(expected, model),
            "loss": [history["loss"][0], float(np.mean([log["loss"] for log in expected_logs]))],
            "sg_loss": [sg, expected_sg]}


def nan_on_the_second_replica():
    x, y = batch(GLOBAL_BATCH * 2)
    x[GLOBAL_BATCH - 1, 0] = np.nan   # the last example of the first global batch: replica 1's
    return x, y


def check_skip():
    x, y = nan_on_the_second_replica()
    single = make_trainer("dni", {"on_nonfinite": "skip"})
    trainer = make_trainer("dni", {"on_nonfinite": "skip"}, mirrored())
    before = list(weights(trainer.model).values())
    skipped = train(trainer, x, y, steps=[0])[0]["skipped"]
    unchanged = largest_difference(before, trainer.model)
    train(trainer, x, y, steps=[1])
    train(single, x, y, steps=[0, 1])
    return {"skipped": skipped, "changed_by_the_bad_step": unchanged,
            "after_the_next_step": largest_difference(list(weights(single.model).values()),
                                                      trainer.model),
            "iterations": int(trainer.optimizer.iterations.numpy())}


def check_raise():
    x, y = nan_on_the_second_replica()
    trainer = make_trainer("dni", {}, mirrored())
    before = list(weights(trainer.model).values())
    result = {}
    try:
        train(trainer, x, y, steps=[0])
    except sg_keras.NonFiniteError as error:
        result["trainer"] = [error.step, largest_difference(before, trainer.model)]
    with mirrored().scope():
        model = DNIModel.from_model(make_model("dni"))
        model.compile(optimizer=sgd(), sg_optimizer=sgd(), loss=LOSS)
    try:
        model.fit(x[:GLOBAL_BATCH], y[:GLOBAL_BATCH], batch_size=GLOBAL_BATCH, verbose=0)
    except sg_keras.NonFiniteError as error:
        result["fit"] = [error.step, largest_difference(before, model)]
    return result


def check_checkpoint(directory):
    mode, options = CONFIGS["dni_schedule"]
    x, y = batch(GLOBAL_BATCH * STEPS)
    trainer = make_trainer(mode, options, mirrored())
    train(trainer, x, y, steps=[0, 1])
    path = trainer.checkpoint.save(os.path.join(directory, "ckpt"))
    # Another initialisation and seed: everything must come from the checkpoint.
    resumed = make_trainer(mode, {**options, "seed": 9}, mirrored(), seed=7)
    resumed.checkpoint.restore(path).assert_consumed()
    train(resumed, x, y, steps=[2])
    return {"weights": largest_difference(reference("dni_schedule")[0], resumed.model)}


def replica_checks(out_path):
    """Every check on two logical CPU devices; writes their numbers to `out_path` (JSON)."""
    tf.config.set_logical_device_configuration(
        tf.config.list_physical_devices("CPU")[0], [tf.config.LogicalDeviceConfiguration()] * 2)
    results = {"helpers": check_helpers(), "skip": check_skip(), "raise": check_raise(),
               "checkpoint": check_checkpoint(os.path.dirname(out_path))}
    for name in CONFIGS:
        results[f"trainer/{name}"] = check_trainer(name)
    for name in FIT_CONFIGS:
        results[f"fit/{name}"] = check_fit(name)
    with open(out_path, "w", encoding="utf-8") as handle:
        json.dump(results, handle)


def run_child(args, env=None):
    return subprocess.Popen([sys.executable, __file__, *map(str, args)], cwd=REPO,
                            env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3",
                                 "CUDA_VISIBLE_DEVICES": "", **(env or {})},
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def finish(process, timeout=480):
    try:
        output, _ = process.communicate(timeout=timeout)
    finally:
        process.kill()
    assert process.returncode == 0, output[-3000:]


@pytest.fixture(scope="module")
def checks(tmp_path_factory):
    out = tmp_path_factory.mktemp("replicas") / "checks.json"
    finish(run_child(["replicas", out]))
    with open(out, encoding="utf-8") as handle:
        return json.load(handle)


def test_helpers_reduce_over_the_replicas(checks):
    a = np.arange(8, dtype="float32").reshape(4, 2) - 3.0
    b = np.cos(np.arange(8, dtype="float32")).reshape(4, 2)
    result = checks["helpers"]
    assert result["normaliser"] == 4.0   # the global batch: 2 replicas of 2
    np.testing.assert_array_equal(result["summed"], a[:2] + a[2:])
    expected = a.ravel() @ b.ravel() / np.linalg.norm(a) / np.linalg.norm(b)
    assert result["cosine"] == pytest.approx(expected, rel=1e-6)
    assert distribute.global_batch(a) is None and distribute.sum_over_replicas(a) is a


@pytest.mark.parametrize("name", sorted(CONFIGS))
def test_two_replicas_of_the_trainer_make_the_steps_of_one_device(checks, name):
    result = checks[f"trainer/{name}"]
    assert result["weights"] < 1e-5
    assert result["logs"] < 1e-5   # loss, accuracy, sg_loss, cosine, updated, skipped
    if CONFIGS[name][1].get("update_prob"):   # the draws did vary, and agreed with one device
        assert result["updated"] == [0.0, 1.0]


@pytest.mark.parametrize("name", FIT_CONFIGS)
def test_two_replicas_of_fit_make_the_steps_of_one_device(checks, name):
    result = checks[f"fit/{name}"]
    assert result["weights"] < 1e-5
    assert result["loss"][0] == pytest.approx(result["loss"][1], rel=1e-5)
    sg_losses, expected = result["sg_loss"]
    assert len(sg_losses) == 2
    np.testing.assert_allclose(sg_losses, expected, rtol=1e-5)


def test_a_nan_on_one_replica_skips_the_step_on_all(checks):
    result = checks["skip"]
    assert result["skipped"] == 1.0
    assert result["changed_by_the_bad_step"] == 0.0
    assert result["after_the_next_step"] < 1e-5 and result["iterations"] == 1


def test_a_nan_on_one_replica_stops_fit_and_the_trainer_with_nothing_applied(checks):
    assert checks["raise"] == {"trainer": [0, 0.0], "fit": [0, 0.0]}


def test_a_checkpoint_saved_and_restored_under_the_strategy_resumes_the_run(checks):
    assert checks["checkpoint"]["weights"] < 1e-5


def test_bad_arguments_under_a_strategy_are_named():
    strategy = tf.distribute.MirroredStrategy(["/cpu:0"])
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


def test_the_job_names_a_strategy_it_cannot_run():
    for settings, match in [
            ({"strategy": "tpu_pod"}, "--strategy='tpu_pod': must be one of"),
            ({"strategy": "mirrored", "jit_compile": True}, "--strategy='mirrored'"),
            ({"strategy": "multi_worker", "schedule": "pipelined"}, "--schedule=sync")]:
        with pytest.raises(ConfigError, match=match):
            Config(model_dir="runs/x", **settings).validate()
    assert Config(model_dir="runs/x", strategy="multi_worker").validate().strategy == "multi_worker"


def free_ports(count):
    sockets = [socket.socket() for _ in range(count)]
    for each in sockets:
        each.bind(("127.0.0.1", 0))
    ports = [each.getsockname()[1] for each in sockets]
    for each in sockets:
        each.close()
    return ports


def worker(out_path):
    """A `MultiWorkerMirroredStrategy` worker (cluster from TF_CONFIG): 3 steps, its weights."""
    strategy = tf.distribute.MultiWorkerMirroredStrategy()
    mode, options = CONFIGS["dni_schedule"]
    trainer = make_trainer(mode, options, strategy)
    train(trainer, *batch(GLOBAL_BATCH * STEPS))
    np.savez(out_path, *weights(trainer.model).values())


def test_two_worker_processes_train_as_one_process(tmp_path):
    cluster = {"worker": [f"127.0.0.1:{port}" for port in free_ports(2)]}
    outputs = [tmp_path / f"worker{index}.npz" for index in range(2)]
    workers = [run_child([out], env={"TF_CONFIG": json.dumps(
        {"cluster": cluster, "task": {"type": "worker", "index": index}})})
        for index, out in enumerate(outputs)]
    try:
        for process in workers:
            finish(process, timeout=240)
    finally:
        for process in workers:
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
    if sys.argv[1] == "replicas":
        replica_checks(sys.argv[2])
    else:
        worker(sys.argv[1])
