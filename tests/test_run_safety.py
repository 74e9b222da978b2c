"""One run per model directory (an OS lock), and a failed write (full disk) that stops the run
in one line, leaves no partial file and resumes."""

import errno
import os
import signal
import subprocess
import sys
import time

import tensorflow as tf

from conftest import REPO
from sg_keras.job import files
from test_train_cli import train_here


def copy_args(model_dir, steps, *extra):
    """A tiny Copy run: N stays 1 (one traced graph), a checkpoint every 2 steps."""
    return [f"--model_dir={model_dir}", "--task=copy", "--mode=dni", "--units=4",
            "--truncation=2", "--batch_size=4", f"--train_steps={steps}", "--log_every=1",
            "--checkpoint_every=2", "--measure_every=0", "--curriculum_threshold=1e-6",
            "--plots=false", *extra]


def checkpoint_steps(model_dir):
    return sorted(int(p.stem.split("-")[1]) for p in (model_dir / "checkpoints").glob("*.index"))


def no_space(*args, **kwargs):
    raise OSError(errno.ENOSPC, "No space left on device")


def test_a_second_process_is_refused_and_a_killed_holder_blocks_nothing(tmp_path):
    holder = subprocess.Popen([sys.executable, "train.py", *copy_args(tmp_path, 10**6)], cwd=REPO,
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 240
        while not (tmp_path / "checkpoints" / "checkpoint").exists():
            assert holder.poll() is None and time.monotonic() < deadline, "no checkpoint written"
            time.sleep(0.05)
        second = train_here(*copy_args(tmp_path, 10**6))
        assert second.returncode == 1 and second.stdout == ""
        assert second.stderr.startswith(f"error: --model_dir {tmp_path} is in use by process "
                                        f"{holder.pid} on ")
        assert len(second.stderr.splitlines()) == 1, second.stderr
    finally:
        holder.send_signal(signal.SIGKILL)
        holder.wait()
    killed_at = checkpoint_steps(tmp_path)[-1]
    rerun = train_here(*copy_args(tmp_path, killed_at + 2))
    assert rerun.returncode == 0, rerun.stderr
    assert rerun.stdout.splitlines()[0].endswith(f"ckpt-{killed_at} (step {killed_at})")


def test_a_full_disk_while_checkpointing_stops_in_one_line_and_resumes(tmp_path, monkeypatch):
    original = tf.train.CheckpointManager.save

    def save(manager, checkpoint_number=None):
        if int(checkpoint_number) < 4:
            return original(manager, checkpoint_number=checkpoint_number)
        partial = os.path.join(manager.directory, f"ckpt-{int(checkpoint_number)}_temp")
        os.makedirs(partial)
        open(os.path.join(partial, "part-00000-of-00001.data-00000-of-00001"), "wb").close()
        no_space()

    monkeypatch.setattr(tf.train.CheckpointManager, "save", save)
    failed = train_here(*copy_args(tmp_path, 6))
    checkpoints = tmp_path / "checkpoints"
    assert failed.returncode == 1
    assert failed.stderr == (f"error: cannot write {checkpoints}/ckpt-4 (No space left on device)"
                             f": stopped. The last intact checkpoint is {checkpoints}/ckpt-2; "
                             "free space (or fix the permissions) and run the same command to "
                             "resume.\n")
    assert sorted(p.name for p in checkpoints.iterdir()) == [
        "checkpoint", "ckpt-2.data-00000-of-00001", "ckpt-2.index"]
    monkeypatch.undo()
    resumed = train_here(*copy_args(tmp_path, 6))
    assert resumed.returncode == 0, resumed.stderr
    assert resumed.stdout.splitlines()[0].endswith("ckpt-2 (step 2)")
    assert checkpoint_steps(tmp_path) == [2, 4, 6]


def test_a_plot_that_cannot_be_written_leaves_no_partial_file(tmp_path, monkeypatch):
    replace = os.replace
    monkeypatch.setattr(files.os, "replace", lambda source, target: no_space() if str(
        target).endswith(".png") else replace(source, target))
    failed = train_here(*copy_args(tmp_path, 4, "--plots=true", "--eval_every=3",
                                   "--checkpoint_every=1"))
    assert failed.returncode == 1 and len(failed.stderr.splitlines()) == 1, failed.stderr
    assert failed.stderr.startswith(f"error: cannot write {tmp_path}/curriculum.png (No space "
                                    f"left on device): stopped. The last intact checkpoint is "
                                    f"{tmp_path}/checkpoints/ckpt-2;")   # step 3 evaluates first
    assert not list(tmp_path.rglob("*.tmp*")) and not list(tmp_path.glob("*.png"))
    monkeypatch.undo()
    resumed = train_here(*copy_args(tmp_path, 4, "--plots=true", "--eval_every=3"))
    assert resumed.returncode == 0, resumed.stderr
    assert (tmp_path / "curriculum.png").exists() and (tmp_path / "run.lock").read_text() == ""
