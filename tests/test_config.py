"""Config: flags generated from the dataclass, validation naming the flag."""

import dataclasses
import json
from pathlib import Path

import pytest
from absl import flags

from sg_keras.job.config import Config, ConfigError, config_from_flags, define_flags


def test_every_field_is_a_flag_with_the_same_default():
    values = flags.FlagValues()
    define_flags(values)
    values(["train.py", "--model_dir=/tmp/x", "--mode=dni", "--lr_decay_steps=10,20"])
    config = config_from_flags(values)
    assert config.mode == "dni" and config.decay_boundaries() == [10, 20]
    for field in dataclasses.fields(Config):
        if field.name not in ("model_dir", "mode", "lr_decay_steps"):
            assert getattr(config, field.name) == getattr(Config(), field.name), field.name


CONFIGS = sorted((Path(__file__).resolve().parents[1] / "configs").glob("*.cfg"))


@pytest.mark.parametrize("flagfile", CONFIGS, ids=[c.stem for c in CONFIGS])
def test_every_shipped_flagfile_is_a_valid_config(flagfile):
    values = flags.FlagValues()
    define_flags(values)
    values(["train.py", f"--flagfile={flagfile}"])
    config = config_from_flags(values)      # validates
    assert config.model_dir


@pytest.mark.parametrize("changes, flag", [
    ({"model_dir": ""}, "model_dir"),
    ({"mode": "sgd"}, "mode"),
    ({"num_layers": 1}, "num_layers"),
    ({"batch_size": 0}, "batch_size"),
    ({"update_prob": 0.0}, "update_prob"),
    ({"update_prob": 1.5}, "update_prob"),
    ({"bp_lambda": 2.0}, "bp_lambda"),
    ({"learning_rate": 0.0}, "learning_rate"),
    ({"sg_learning_rate": -1.0}, "sg_learning_rate"),
    ({"lr_decay_steps": ["20", "10"]}, "lr_decay_steps"),
    ({"lr_decay_steps": ["ten"]}, "lr_decay_steps"),
    ({"lr_decay_factor": 0.0}, "lr_decay_factor"),
    ({"epochs": 0.0}, "epochs"),
    ({"sg_clip_norm": -1.0}, "sg_clip_norm"),
    ({"keep_checkpoints": 0}, "keep_checkpoints"),
    ({"mode": "backprop", "true_gradient_every": 5}, "true_gradient_every"),
    ({"on_nonfinite": "stop"}, "on_nonfinite"),
    ({"schedule": "pipelined", "on_nonfinite": "skip"}, "on_nonfinite"),
    ({"schedule": "pipelined", "bp_lambda": 0.5}, "bp_lambda"),
    ({"synth_update_every": 0}, "synth_update_every"),
    ({"mode": "dni", "schedule": "pipelined", "synth_update_every": 2}, "synth_update_every"),
    ({"mode": "dni", "unlock": "complete", "synth_update_every": 2}, "synth_update_every"),
    ({"task": "copy", "mode": "dni", "train_steps": 5, "update_prob": 0.5}, "update_prob"),
])
def test_bad_values_name_the_flag(changes, flag):
    with pytest.raises(ConfigError, match=f"^--{flag}="):
        Config(**{"model_dir": "/tmp/x", **changes}).validate()


def test_steps_from_epochs_or_explicit():
    assert Config(epochs=2.5).total_steps(100) == 250
    assert Config(train_steps=7, epochs=2).total_steps(100) == 7


def test_architecture_holds_what_the_checkpoint_depends_on():
    arch = Config(mode="dni", update_prob=0.5).architecture()
    assert arch == {"mode": "dni", "num_layers": 3, "units": 256, "synth_layers": 0,
                    "synth_units": 1024, "synth_rank": None, "update_prob<1": True}


def test_json_holds_the_decay_steps_as_numbers():
    record = json.loads(Config(model_dir="/tmp/x", lr_decay_steps=["300", "400"]).to_json())
    assert record["lr_decay_steps"] == [300, 400] and record["model_dir"] == "/tmp/x"
