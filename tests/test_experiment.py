"""The training job end to end on a few hundred examples: outputs, resume, plots."""

import glob
import hashlib
import json
import os
import re
import signal

import keras
import numpy as np
import pytest
import tensorflow as tf

from conftest import REPO, write_npz
from sg_keras.job import data, experiment, plots, tasks
from sg_keras.job.config import Config
from sg_keras.job.metrics_log import MetricsLog


def tiny(model_dir, data_path, **changes):
    settings = dict(model_dir=str(model_dir), data_path=str(data_path), mode="cdni", units=32,
                    batch_size=32, train_steps=24, log_every=4, eval_every=12,
                    checkpoint_every=12, measure_every=6, seed=3)
    return Config(**{**settings, **changes})


def events(directory):
    """`(tag, step)` of every summary value in a TensorBoard directory."""
    found = []
    for path in glob.glob(os.path.join(directory, "events.out.tfevents.*")):
        for event in tf.compat.v1.train.summary_iterator(path):
            found += [(value.tag, event.step) for value in event.summary.value]
    return found


def event_tags(directory):
    return {tag for tag, _ in events(directory)}


def fingerprint(directory):
    return {str(p.relative_to(directory)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(directory.rglob("*")) if p.is_file()}


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory, small_npz):
    model_dir = tmp_path_factory.mktemp("run")
    summary = experiment.run(tiny(model_dir, small_npz))
    return model_dir, summary


def test_run_writes_checkpoints_events_metrics_plots_and_model(finished_run, small_npz):
    model_dir, summary = finished_run
    assert summary["step"] == 24 and summary["resumed_from"] is None
    assert sorted(os.listdir(model_dir / "checkpoints")) == [
        "checkpoint", "ckpt-12.data-00000-of-00001", "ckpt-12.index",
        "ckpt-24.data-00000-of-00001", "ckpt-24.index"]
    train_tags, eval_tags = event_tags(model_dir / "train"), event_tags(model_dir / "eval")
    for layer in ("dni1", "dni2"):
        assert {f"sg_loss/{layer}", f"cosine/{layer}", f"synthetic_gradient/{layer}",
                f"true_gradient/{layer}"} <= train_tags
    assert {"loss", "accuracy", "learning_rate/network", "learning_rate/synthesizer",
            "steps_per_sec", "plots/loss", "plots/cosine", "plots/gradients",
            "plots/predictions"} <= train_tags
    assert {"loss", "accuracy"} <= eval_tags
    for name in ("loss", "cosine", "gradients", "predictions"):
        assert tf.image.decode_png((model_dir / f"{name}.png").read_bytes()).shape[0] > 100
    log = MetricsLog(model_dir / "metrics.jsonl", resume_step=10**9)
    assert log.series("loss", "eval")[0] == [12, 24]
    # measured at steps 1, 7, 13, 19; each logged with its log interval, as the loss is
    assert log.series("cosine/dni1")[0] == [4, 8, 16, 20]
    assert log.series("loss")[0] == [4, 8, 12, 16, 20, 24]
    train_events = events(model_dir / "train")
    assert sorted(s for t, s in train_events if t == "cosine/dni1") == [4, 8, 16, 20]
    assert sorted(s for t, s in train_events if t == "loss") == [4, 8, 12, 16, 20, 24]
    steps, accuracy = log.series("accuracy", "eval")
    assert accuracy[-1] == pytest.approx(summary["test_accuracy"])
    model = keras.models.load_model(model_dir / "model.keras")
    with np.load(small_npz) as arrays:
        x = arrays["x_test"].astype("float32") / 255.0
        predicted = np.argmax(model.predict(x, verbose=0), 1)
        assert np.mean(predicted == arrays["y_test"]) == pytest.approx(summary["test_accuracy"])


def readme_snippet(name):
    """The README's Python block that follows the marker `<!-- name -->`."""
    readme = (REPO / "README.md").read_text(encoding="utf-8")
    return re.search(rf"<!-- {name} -->\s*```python\n(.*?)```", readme, re.S).group(1)


def test_readme_load_and_predict_snippet(finished_run, small_npz, capsys):
    model_dir, summary = finished_run
    code = (readme_snippet("load-and-predict")
            .replace("runs/mnist_cdni/model.keras", str(model_dir / "model.keras"))
            .replace("../shared/data/mnist.npz", str(small_npz)))
    exec(compile(code, "README.md", "exec"), {})
    assert capsys.readouterr().out == f"test accuracy {summary['test_accuracy']:.4f}\n"


def test_rerun_of_a_finished_run_changes_nothing(finished_run, small_npz, capsys):
    model_dir, first = finished_run
    before = fingerprint(model_dir)
    summary = experiment.run(tiny(model_dir, small_npz))
    assert fingerprint(model_dir) == before
    assert summary["complete"] and summary["step"] == 24
    assert summary["test_accuracy"] == pytest.approx(first["test_accuracy"])
    assert capsys.readouterr().out.startswith(f"run complete at step 24 in {model_dir}")


def test_rerun_resumes_from_the_saved_step(finished_run, small_npz, capsys):
    model_dir, _ = finished_run
    summary = experiment.run(tiny(model_dir, small_npz, train_steps=36))
    assert summary["resumed_from"].endswith("ckpt-24") and summary["step"] == 36
    assert "resuming from" in capsys.readouterr().out
    log = MetricsLog(model_dir / "metrics.jsonl", resume_step=10**9)
    assert log.series("loss")[0] == [4, 8, 12, 16, 20, 24, 28, 32, 36]
    assert log.series("loss", "eval")[0] == [12, 24, 36]


def test_backprop_run_has_no_synthesizer_outputs(tmp_path, small_npz):
    summary = experiment.run(tiny(tmp_path, small_npz, mode="backprop", train_steps=8))
    assert summary["step"] == 8
    assert not (tmp_path / "cosine.png").exists() and (tmp_path / "loss.png").exists()
    assert not any(tag.startswith("sg_loss/") for tag in event_tags(tmp_path / "train"))


def test_learning_rate_decays_at_the_given_steps(tmp_path, small_npz):
    experiment.run(tiny(tmp_path, small_npz, mode="dni", train_steps=12, log_every=2,
                        lr_decay_steps=["5", "9"], learning_rate=0.01, plots=False))
    assert json.loads((tmp_path / "flags.json").read_text())["lr_decay_steps"] == [5, 9]
    log = MetricsLog(tmp_path / "metrics.jsonl", resume_step=10**9)
    steps, rates = log.series("learning_rate/network")
    assert dict(zip(steps, np.round(rates, 6))) == {2: 0.01, 4: 0.01, 6: 0.001, 8: 0.001,
                                                    10: 0.0001, 12: 0.0001}


def poisoned_batches(bad_steps):
    """`data.train_batches` whose batches at the given 0-based steps are NaN images."""
    original = data.train_batches

    def batches(split, batch_size, seed, start_step=0):
        stream = original(split, batch_size, seed, start_step).enumerate(start_step)
        bad = tf.constant(sorted(bad_steps), tf.int64)
        return stream.map(lambda step, xy: (
            tf.where(tf.reduce_any(tf.equal(step, bad)), np.float32(np.nan), xy[0]), xy[1]))

    return batches


def test_skip_mode_steps_over_bad_batches(tmp_path, small_npz, monkeypatch):
    monkeypatch.setattr(data, "train_batches", poisoned_batches({2, 5}))
    summary = experiment.run(tiny(tmp_path, small_npz, mode="dni", train_steps=8, log_every=4,
                                  on_nonfinite="skip", plots=False))
    assert summary["step"] == 8 and np.isfinite(summary["test_loss"])
    log = MetricsLog(tmp_path / "metrics.jsonl", resume_step=10**9)
    assert log.series("skipped") == ([4, 8], [0.25, 0.25])


def test_stop_mode_names_the_step_and_saves_nothing_after(tmp_path, small_npz, monkeypatch):
    monkeypatch.setattr(data, "train_batches", poisoned_batches({13}))
    with pytest.raises(experiment.RunError, match=r"NaN/Inf at step 13 in: loss; synthetic "
                       r"gradient of dni1.*the last checkpoint \(.*ckpt-12\) is intact"):
        experiment.run(tiny(tmp_path, small_npz, plots=False))
    assert sorted(p.name for p in (tmp_path / "checkpoints").glob("*.index")) == ["ckpt-12.index"]


def test_colour_images_and_class_count_come_from_the_data(tmp_path):
    """A CIFAR-shaped file with 3 classes: the network takes 32x32x3 and has 3 logits."""
    rng = np.random.default_rng(0)
    path = write_npz(tmp_path / "rgb.npz",
                     x_train=rng.integers(0, 256, (64, 32, 32, 3)).astype(np.uint8),
                     y_train=(np.arange(64) % 3).astype(np.uint8),
                     x_test=rng.integers(0, 256, (20, 32, 32, 3)).astype(np.uint8),
                     y_test=(np.arange(20) % 3).astype(np.uint8))
    summary = experiment.run(tiny(tmp_path / "run", path, train_steps=4, plots=False))
    model = keras.models.load_model(tmp_path / "run" / "model.keras")
    assert model.input_shape == (None, 32, 32, 3) and model.output_shape == (None, 3)
    with np.load(path) as arrays:
        predicted = np.argmax(model.predict(arrays["x_test"] / 255.0, verbose=0), 1)
        assert np.mean(predicted == arrays["y_test"]) == pytest.approx(summary["test_accuracy"])


def signalling_batches(signum, after):
    """`data.train_batches` that sends this process `signum` once `after` batches are out."""
    original = data.train_batches

    def batches(split, batch_size, seed, start_step=0):
        for index, batch in enumerate(original(split, batch_size, seed, start_step)):
            if index == after:
                os.kill(os.getpid(), signum)
            yield batch

    return batches


@pytest.mark.parametrize("signum, status", [(signal.SIGTERM, 143), (signal.SIGINT, 130)])
def test_signal_saves_a_checkpoint_and_gives_the_exit_status(tmp_path, small_npz, monkeypatch,
                                                             capsys, signum, status):
    monkeypatch.setattr(data, "train_batches", signalling_batches(signum, after=5))
    handlers = signal.getsignal(signal.SIGTERM), signal.getsignal(signal.SIGINT)
    with pytest.raises(experiment.Interrupted) as stopped:
        experiment.run(tiny(tmp_path, small_npz, mode="dni", train_steps=50, plots=False))
    assert stopped.value.exit_status == status
    saved = sorted(p.name for p in (tmp_path / "checkpoints").glob("*.index"))
    assert saved == ["ckpt-6.index"]   # the signal came while fetching the sixth batch:
    assert "interrupted: saved" in capsys.readouterr().out   # its step finished first
    assert (signal.getsignal(signal.SIGTERM), signal.getsignal(signal.SIGINT)) == handlers
    monkeypatch.undo()
    resumed = experiment.run(tiny(tmp_path, small_npz, mode="dni", train_steps=8, plots=False))
    assert resumed["resumed_from"].endswith("ckpt-6") and resumed["step"] == 8


def test_decays_beyond_the_last_step_are_not_drawn(tmp_path, small_npz, monkeypatch):
    drawn = []
    original = plots.loss_curves
    monkeypatch.setattr(plots, "loss_curves", lambda log, decays: drawn.append(decays) or
                        original(log, decays))
    experiment.run(tiny(tmp_path, small_npz, mode="backprop", train_steps=4,
                        lr_decay_steps=["2", "900"]))
    assert drawn == [[2]]


def test_pipelined_schedule_says_it_ignores_measure_every(tmp_path, small_npz, capsys):
    experiment.run(tiny(tmp_path, small_npz, mode="dni", schedule="pipelined", train_steps=2,
                        measure_every=1, plots=False))
    err = capsys.readouterr().err
    assert err == ("warning: --measure_every=1 is ignored with --schedule=pipelined: its step "
                   "makes no true backward pass to measure the synthetic gradients against\n")


class TwoReplicas:
    """Stands in for a two-device MirroredStrategy (a second real one in this process could mix
    up its collective operations with test_distribute's): the replicas are all that is read."""

    num_replicas_in_sync = 2

    def scope(self):
        return tf.distribute.get_strategy().scope()


def test_a_strategy_says_how_many_replicas_it_runs(tmp_path, small_npz, capsys, monkeypatch):
    monkeypatch.setattr(tasks.distribute, "make_strategy", lambda name: TwoReplicas())
    experiment.run(tiny(tmp_path, small_npz, mode="dni", strategy="mirrored", train_steps=2,
                        plots=False))
    assert ("--strategy=mirrored: 2 replicas, 16 examples each of the global batch of 32"
            in capsys.readouterr().out)


def test_the_first_eta_leaves_out_the_first_window(monkeypatch, capsys):
    clock = iter([0.0, 50.0, 51.0, 52.0])   # the first window (tracing) took 50 s, then 1 s each
    monkeypatch.setattr(experiment.time, "perf_counter", lambda: next(clock))
    progress = experiment._Progress(start=0, total=40)
    for step in (10, 20, 30):
        progress.train(step, ["loss 1"])
    assert capsys.readouterr().out.splitlines() == [
        "step 10/40 (25%) | loss 1 | 0.2 steps/s | ETA ?",
        "step 20/40 (50%) | loss 1 | 10.0 steps/s | ETA 0:00:02",
        "step 30/40 (75%) | loss 1 | 10.0 steps/s | ETA 0:00:01"]
