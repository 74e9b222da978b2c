"""The sequence job: resume (curriculum and carried LSTM state), outputs, dispatch, errors."""

import json
import os

import numpy as np
import pytest

from sg_keras.job import experiment, sequence_experiment
from sg_keras.job.config import Config, ConfigError


def config(model_dir, **kwargs):
    settings = dict(model_dir=str(model_dir), task="copy", mode="dni", units=4, truncation=2,
                    batch_size=4, train_steps=4, log_every=2, measure_every=2,
                    checkpoint_every=2, curriculum_threshold=5.0, curriculum_window=2,
                    plots=False)
    return Config(**{**settings, **kwargs})


def weights_and_state(cfg):
    job = sequence_experiment.SequenceRun(cfg)      # restores the latest checkpoint
    variables = [v.numpy() for v in job.core.core_variables]
    if job.core.synthesizer is not None:
        variables += [v.numpy() for v in job.core.synthesizer.trainable_variables]
    state = [s.numpy() for s in job.state] if job.lm else []
    return variables, state, job.curriculum.curriculum.state(), int(job.step.numpy())


def assert_same(a, b):
    for x, y in zip(a, b):
        np.testing.assert_allclose(x, y, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("task, extra", [("copy", {}), ("char_lm", {"sequence_length": 5})])
def test_an_interrupted_run_resumes_where_it_stopped(tmp_path, task, extra):
    text = tmp_path / "text.txt"
    text.write_text("to be or not to be, that is the question. " * 20, encoding="utf-8")
    options = dict(task=task, text_path=str(text), aux=True, **extra)
    straight = sequence_experiment.run(config(tmp_path / "a", **options))
    sequence_experiment.run(config(tmp_path / "b", train_steps=2, **options))
    resumed = sequence_experiment.run(config(tmp_path / "b", **options))
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


def test_outputs_and_dispatch_from_the_training_job(tmp_path):
    summary = experiment.run(config(tmp_path, plots=True))
    assert summary["task"] == "copy" and summary["step"] == 4
    records = [json.loads(line) for line in open(tmp_path / "metrics.jsonl")]
    keys = set().union(*records)
    assert {"loss", "N", "solved", "sg_loss", "cosine/boundary1", "cosine/mean"} <= keys
    for name in ("curriculum.png", "cosine.png", "run_config.json", "flags.json"):
        assert os.path.exists(tmp_path / name)
    assert os.listdir(tmp_path / "train")


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
    cfg = config(tmp_path, sg_clip_norm=0.1).validate()
    assert sequence_experiment.SequenceRun(cfg).core.sg_clip_norm == 0.1


def test_a_missing_or_short_text_is_a_config_error(tmp_path):
    with pytest.raises(ConfigError, match="--text_path"):
        sequence_experiment.run(config(tmp_path / "a", task="char_lm",
                                       text_path=str(tmp_path / "none.txt")))
    short = tmp_path / "short.txt"
    short.write_text("abc", encoding="utf-8")
    with pytest.raises(ConfigError, match="too short"):
        sequence_experiment.run(config(tmp_path / "b", task="char_lm", text_path=str(short)))
    assert not (tmp_path / "a").exists() and not (tmp_path / "b").exists()
