"""The sequence tasks in the run loop: resume (curriculum, carried LSTM state), output lines,
outputs, signals, errors."""

import json
import os
import re
import signal

import numpy as np
import pytest

from sg_keras.job import experiment, tasks
from sg_keras.job.config import Config, ConfigError


def config(model_dir, **kwargs):
    settings = dict(model_dir=str(model_dir), task="copy", mode="dni", units=4, truncation=2,
                    batch_size=4, train_steps=4, log_every=2, measure_every=2,
                    checkpoint_every=2, curriculum_threshold=5.0, curriculum_window=2,
                    plots=False)
    return Config(**{**settings, **kwargs})


def restored(cfg):
    """The task of `cfg` with the latest checkpoint of its directory restored."""
    job = experiment._Run(cfg)
    job.close()
    return job.task


def weights_and_state(cfg):
    task = restored(cfg)
    variables = [v.numpy() for v in task.core.core_variables]
    if task.core.synthesizer is not None:
        variables += [v.numpy() for v in task.core.synthesizer.trainable_variables]
    state = [s.numpy() for s in task.state] if cfg.task == "char_lm" else []
    curriculum = task.curriculum.state() if cfg.task != "char_lm" else None
    return variables, state, curriculum, int(task.step.numpy())


def assert_same(a, b):
    for x, y in zip(a, b):
        np.testing.assert_allclose(x, y, rtol=1e-5, atol=1e-6)


@pytest.fixture
def text(tmp_path):
    path = tmp_path / "text.txt"
    path.write_text("to be or not to be, that is the question. " * 20, encoding="utf-8")
    return str(path)


@pytest.mark.parametrize("task, extra", [("copy", {}), ("char_lm", {"sequence_length": 5})])
def test_an_interrupted_run_resumes_where_it_stopped(tmp_path, text, task, extra):
    options = dict(task=task, text_path=text, aux=True, **extra)
    straight = experiment.run(config(tmp_path / "a", **options))
    experiment.run(config(tmp_path / "b", train_steps=2, **options))
    resumed = experiment.run(config(tmp_path / "b", **options))
    assert resumed["resumed_from"].endswith("ckpt-2") and resumed["step"] == 4
    a = weights_and_state(config(tmp_path / "a", **options))
    b = weights_and_state(config(tmp_path / "b", **options))
    assert_same(a[0], b[0])            # weights of cell, readout, aux head, synthesizer
    assert_same(a[1], b[1])            # char_lm: the carried LSTM state, mid-stream
    assert a[2] == b[2] and a[3] == b[3] == 4
    if task == "copy":
        assert straight["level"] > 1    # the curriculum moved, and resumed with its level
    else:
        assert any(np.abs(s).sum() > 0 for s in a[1])
        assert straight["eval_bpc"] == pytest.approx(resumed["eval_bpc"], rel=1e-5)


def test_copy_prints_the_start_progress_eval_and_done_lines(tmp_path, capsys):
    summary = experiment.run(config(tmp_path, plots=True))
    assert summary["task"] == "copy" and summary["step"] == 4
    lines = capsys.readouterr().out.splitlines()
    assert lines[:2] == [f"starting a new run in {tmp_path}",
                         "4 steps to go of 4 (batch 4); speed and time left are printed every "
                         "2 steps"]
    number = r"[-\d.e]+"
    assert re.fullmatch(rf"step 2/4 \(50%\) \| loss {number} \| sg_loss {number} \| sg_norm "
                        rf"{number} \| per_symbol_error {number} \| N \d \| solved \d \| "
                        rf"{number} steps/s \| ETA \?", lines[2]), lines[2]
    assert re.search(r"\| ETA \d:\d\d:\d\d$", lines[3]), lines[3]
    assert "aux_loss" not in "\n".join(lines)           # --aux=false: no such column
    assert re.fullmatch(r"eval at step 4: N \d \| largest N solved \d", lines[4]), lines[4]
    assert re.fullmatch(rf"done: step 4/4 in 0:00:\d\d \| N {summary['level']} \| largest N "
                        rf"solved {summary['solved']}", lines[5]), lines[5]
    records = [json.loads(line) for line in open(tmp_path / "metrics.jsonl")]
    keys = set().union(*records)
    assert {"loss", "N", "solved", "sg_loss", "cosine/boundary1", "cosine/mean"} <= keys
    assert "aux_loss" not in keys
    for name in ("curriculum.png", "cosine.png", "run_config.json", "flags.json"):
        assert os.path.exists(tmp_path / name)
    assert os.listdir(tmp_path / "train")


def test_char_lm_prints_held_out_bits_per_character_and_bptt_has_no_sg_columns(tmp_path, text,
                                                                              capsys):
    summary = experiment.run(config(tmp_path, task="char_lm", text_path=text, mode="backprop",
                                    sequence_length=5, eval_every=2))
    out = capsys.readouterr().out
    bpc = f"held-out bits per character {summary['eval_bpc']:.4f}"
    assert f"eval at step 4: {bpc}" in out and re.search(rf"done: step 4/4 in \S+ \| {bpc}", out)
    assert re.search(r"eval at step 2: held-out bits per character \d", out)
    progress = [line for line in out.splitlines() if line.startswith("step ")]
    assert len(progress) == 2 and all(" | loss " in line and " | bpc " in line
                                      for line in progress)
    assert "sg_" not in out and "aux_loss" not in out and "cosine" not in out


def signal_at(signum, step):
    """`CopyTask.train_step` that sends this process `signum` while training step `step`."""
    original = tasks.CopyTask.train_step

    def train_step(self, at):
        if at == step:
            os.kill(os.getpid(), signum)
        return original(self, at)

    return train_step


@pytest.mark.parametrize("signum, status", [(signal.SIGTERM, 143), (signal.SIGINT, 130)])
def test_a_signal_finishes_the_step_saves_and_gives_the_exit_status(tmp_path, monkeypatch,
                                                                    capsys, signum, status):
    monkeypatch.setattr(tasks.CopyTask, "train_step", signal_at(signum, step=2))
    with pytest.raises(experiment.Interrupted) as stopped:
        experiment.run(config(tmp_path, train_steps=50, checkpoint_every=10, measure_every=0,
                              curriculum_threshold=1e-6))   # N stays 1: one traced graph
    assert stopped.value.exit_status == status
    assert stopped.value.saved.endswith("ckpt-3")   # step 2 (0-based) finished, then saved
    assert f"interrupted: saved {stopped.value.saved}" in capsys.readouterr().out
    monkeypatch.undo()
    resumed = experiment.run(config(tmp_path, train_steps=6, checkpoint_every=10,
                                    measure_every=0, curriculum_threshold=1e-6))
    assert resumed["resumed_from"].endswith("ckpt-3") and resumed["step"] == 6


@pytest.mark.parametrize("kwargs, flag", [
    (dict(mode="cdni"), "--mode"),
    (dict(train_steps=0), "--train_steps"),
    (dict(truncation=0), "--truncation"),
    (dict(mode="backprop", aux=True), "--aux"),
    (dict(update_prob=0.5), "--update_prob"),
    (dict(mode="backprop", sg_clip_norm=0.1), "--sg_clip_norm"),
])
def test_bad_sequence_flags_name_the_flag(tmp_path, kwargs, flag):
    with pytest.raises(ConfigError, match=flag):
        config(tmp_path, **kwargs).validate()
    assert not os.listdir(tmp_path)


def test_sg_clip_norm_reaches_the_recurrent_core(tmp_path):
    assert restored(config(tmp_path, sg_clip_norm=0.1).validate()).core.sg_clip_norm == 0.1


def test_a_missing_or_short_text_is_a_config_error(tmp_path):
    with pytest.raises(ConfigError, match="--text_path"):
        experiment.run(config(tmp_path / "a", task="char_lm",
                              text_path=str(tmp_path / "none.txt")))
    short = tmp_path / "short.txt"
    short.write_text("abc", encoding="utf-8")
    with pytest.raises(ConfigError, match="too short"):
        experiment.run(config(tmp_path / "b", task="char_lm", text_path=str(short)))
    assert not (tmp_path / "a").exists() and not (tmp_path / "b").exists()
