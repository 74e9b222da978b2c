"""Run directories and checkpoints: resume, refuse damaged or foreign ones, touch nothing."""

import hashlib
import os

import keras
import numpy as np
import pytest

import conftest
import sg_keras
from conftest import batch, fcn
from sg_keras.job.checkpoints import CheckpointError, Checkpoints, RunDirectory


def fingerprint(directory):
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(directory.rglob("*")) if p.is_file()}


def test_run_directory_records_and_checks_the_architecture(tmp_path):
    RunDirectory(tmp_path / "run", {"mode": "dni", "units": 8}).close()
    RunDirectory(tmp_path / "run", {"mode": "dni", "units": 8}).close()
    before = fingerprint(tmp_path)
    with pytest.raises(CheckpointError, match="--mode: saved 'dni', now 'cdni'"):
        RunDirectory(tmp_path / "run", {"mode": "cdni", "units": 8})
    assert fingerprint(tmp_path) == before


def test_a_setting_absent_from_an_older_record_is_named_as_the_default(tmp_path):
    RunDirectory(tmp_path, {"mode": "dni"}).close()
    with pytest.raises(CheckpointError, match="--model: not recorded \\(the default\\), now 'cnn'"):
        RunDirectory(tmp_path, {"mode": "dni", "model": "cnn"})
    RunDirectory(tmp_path / "cnn", {"mode": "dni", "model": "cnn"}).close()
    with pytest.raises(CheckpointError, match="--model: saved 'cnn', now the default"):
        RunDirectory(tmp_path / "cnn", {"mode": "dni"})


def test_a_held_directory_is_refused_naming_its_holder(tmp_path):
    with RunDirectory(tmp_path, {"mode": "dni"}):
        with pytest.raises(CheckpointError, match=rf"--model_dir {tmp_path} is in use by process "
                                                  rf"{os.getpid()} on \S+ \(started 20"):
            RunDirectory(tmp_path, {"mode": "dni"})
    RunDirectory(tmp_path, {"mode": "dni"}).close()   # released
    assert (tmp_path / "run.lock").read_text() == ""


def test_unwritable_model_dir_is_reported(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("x")
    with pytest.raises(CheckpointError, match="--model_dir .* is not a writable directory"):
        RunDirectory(blocker, {})
    with pytest.raises(CheckpointError, match="not a writable directory"):
        RunDirectory(blocker / "below", {})


def test_foreign_checkpoints_without_run_config_are_refused(tmp_path):
    (tmp_path / "checkpoints").mkdir()
    (tmp_path / "checkpoints" / "checkpoint").write_text("x")
    with pytest.raises(CheckpointError, match="no run_config.json"):
        RunDirectory(tmp_path, {"mode": "dni"})


def make_trainer(units=16):
    return sg_keras.DNITrainer(fcn(units=units), mode="dni", optimizer=keras.optimizers.Adam())


def saved_run(tmp_path):
    trainer = make_trainer()
    checkpoints = Checkpoints(tmp_path, trainer.checkpoint, trainer.iterations, keep=2)
    for _ in range(3):
        trainer.train_step(*batch(16))
        checkpoints.save()
    return trainer, checkpoints


def assert_same_state(trainer, fresh):
    """Every weight and optimizer variable (both optimizers) of `fresh` equals `trainer`'s."""
    def state(t):
        return t.model.variables + t.optimizer.variables + t.sg_optimizer.variables

    for a, b in zip(state(trainer), state(fresh), strict=True):
        np.testing.assert_array_equal(a.numpy(), b.numpy(), err_msg=a.path)


def test_save_keeps_the_last_n_and_restore_resumes(tmp_path):
    trainer, checkpoints = saved_run(tmp_path)
    assert sorted(p.name for p in tmp_path.glob("*.index")) == ["ckpt-2.index", "ckpt-3.index"]
    assert checkpoints.latest.endswith("ckpt-3")
    fresh = make_trainer()
    restored = Checkpoints(tmp_path, fresh.checkpoint, fresh.iterations, keep=2).restore_latest()
    assert restored.endswith("ckpt-3") and int(fresh.iterations.numpy()) == 3
    assert_same_state(trainer, fresh)
    empty = make_trainer()
    assert Checkpoints(tmp_path / "none", empty.checkpoint, empty.iterations, 2).restore_latest() is None


def flip_bytes(path, start=40, count=16):
    """Corrupts a file in place, keeping its size (as a bad disk sector would)."""
    content = bytearray(path.read_bytes())
    content[start:start + count] = bytes(b ^ 0xFF for b in content[start:start + count])
    path.write_bytes(bytes(content))


def saved_states(tmp_path, keep=3):
    """Three checkpoints; returns the trainer's weights after each step, by step."""
    trainer = make_trainer()
    checkpoints = Checkpoints(tmp_path, trainer.checkpoint, trainer.iterations, keep=keep)
    states = {}
    for step in (1, 2, 3):
        trainer.train_step(*batch(16, seed=step))
        checkpoints.save()
        states[step] = [v.numpy() for v in trainer.model.variables]
    return states


@pytest.mark.parametrize("damage", ["flip", "truncate", "missing_index"])
def test_corrupt_newest_checkpoint_falls_back_to_the_newest_intact_one(tmp_path, damage):
    states = saved_states(tmp_path)
    data_file = tmp_path / "ckpt-3.data-00000-of-00001"
    if damage == "flip":
        flip_bytes(data_file)
    elif damage == "truncate":
        data_file.write_bytes(data_file.read_bytes()[:100])
    else:
        (tmp_path / "ckpt-3.index").unlink()
    damaged = data_file.read_bytes()
    fresh = make_trainer()
    checkpoints = Checkpoints(tmp_path, fresh.checkpoint, fresh.iterations, keep=3)
    assert checkpoints.restore_latest().endswith("ckpt-2") and int(fresh.iterations.numpy()) == 2
    for value, saved in zip(fresh.model.variables, states[2], strict=True):
        np.testing.assert_array_equal(value.numpy(), saved)
    [(path, why)] = checkpoints.skipped
    assert path.endswith("ckpt-3") and why
    if damage == "flip":
        assert "Checksum does not match" in why
    # set aside, byte for byte, where no later save or clean-up reaches it
    assert (tmp_path / "corrupt" / data_file.name).read_bytes() == damaged
    assert checkpoints.latest.endswith("ckpt-2")
    fresh.train_step(*batch(16, seed=3))
    assert checkpoints.save().endswith("ckpt-3")
    assert (tmp_path / "corrupt" / data_file.name).read_bytes() == damaged
    assert sorted(p.name for p in tmp_path.glob("*.index")) == [
        "ckpt-1.index", "ckpt-2.index", "ckpt-3.index"]


@pytest.mark.parametrize("damage", ["data", "index", "state"])
def test_no_intact_checkpoint_is_refused_and_left_as_it_was(tmp_path, damage):
    saved_states(tmp_path, keep=2)
    for step in (2, 3):
        if damage == "data":
            flip_bytes(tmp_path / f"ckpt-{step}.data-00000-of-00001")
        elif damage == "index":
            (tmp_path / f"ckpt-{step}.index").write_bytes(b"garbage" * 10)
    if damage == "state":
        (tmp_path / "checkpoint").write_text("{{{ not a checkpoint state")
    before = fingerprint(tmp_path)
    fresh = make_trainer()
    with pytest.raises(CheckpointError, match="cannot be restored.*Nothing was changed"):
        Checkpoints(tmp_path, fresh.checkpoint, fresh.iterations, keep=2).restore_latest()
    assert int(fresh.iterations.numpy()) == 0
    assert fingerprint(tmp_path) == before


def test_checkpoint_of_another_architecture_is_refused(tmp_path):
    saved_run(tmp_path)
    other = make_trainer(units=12)
    with pytest.raises(CheckpointError, match="does not match this model|another architecture"):
        Checkpoints(tmp_path, other.checkpoint, other.iterations, keep=2).restore_latest()
    plain = keras.Sequential([keras.Input((8,)), conftest.dense_block(16), conftest.dense_block(16),
                              keras.layers.Dense(5)])
    backprop = sg_keras.DNITrainer(plain, mode="backprop", optimizer=keras.optimizers.Adam())
    with pytest.raises(CheckpointError, match="another architecture"):
        Checkpoints(tmp_path, backprop.checkpoint, backprop.iterations, keep=2).restore_latest()


def test_checkpoint_saved_but_not_yet_recorded_is_recovered(tmp_path):
    """Killed between writing ckpt-N and the index file that lists it."""
    trainer, _ = saved_run(tmp_path)
    (tmp_path / "checkpoint").unlink()
    fresh = make_trainer()
    checkpoints = Checkpoints(tmp_path, fresh.checkpoint, fresh.iterations, keep=2)
    assert checkpoints.restore_latest().endswith("ckpt-3") and int(fresh.iterations.numpy()) == 3
    assert_same_state(trainer, fresh)
    assert checkpoints.latest.endswith("ckpt-3")
    fresh.train_step(*batch(16))
    assert checkpoints.save().endswith("ckpt-4")
    assert sorted(p.name for p in tmp_path.glob("*.index")) == [
        "ckpt-2.index", "ckpt-3.index", "ckpt-4.index"]


def test_only_an_interrupted_first_save_means_a_fresh_start(tmp_path):
    (tmp_path / "ckpt-50_temp").mkdir()
    (tmp_path / "ckpt-50_temp" / "part-00000-of-00001.data-00000-of-00001").write_bytes(b"x")
    trainer = make_trainer()
    assert Checkpoints(tmp_path, trainer.checkpoint, trainer.iterations, 2).restore_latest() is None
