"""train.py as a user runs it: a flagfile run, and every bad-flag case."""

import contextlib
import importlib.util
import io
import os
import re
import signal
import subprocess
import sys
import time

import pytest
from absl import app, flags

from conftest import REPO
from sg_keras.job import experiment


def train(*args, env=None, timeout=300):
    """Runs train.py from the repository root; returns the CompletedProcess."""
    environment = {key: value for key, value in os.environ.items()
                   if key != "TF_CPP_MIN_LOG_LEVEL"}   # as a user runs it
    environment.update(env or {})
    return subprocess.run([sys.executable, "train.py", *args], cwd=REPO, env=environment,
                          capture_output=True, text=True, timeout=timeout)


def train_module():
    """train.py imported as a module, once per process (it defines the flags)."""
    if "train_main" not in sys.modules:
        spec = importlib.util.spec_from_file_location("train_main", REPO / "train.py")
        sys.modules["train_main"] = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(sys.modules["train_main"])
    return sys.modules["train_main"]


def train_here(*args):
    """What `train.py ARGS` does, run in this process: absl's flag parsing with its usage
    errors, then train.py's `main`, as `app.run` calls them. Returns a CompletedProcess
    with the exit status and what was printed (TensorFlow is already imported here, so this
    skips its start-up: the tests that check a real process's output use `train`)."""
    module, out, err, status = train_module(), io.StringIO(), io.StringIO(), 0
    flags.FLAGS.unparse_flags()
    try:
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            module.main(app.parse_flags_with_usage(["train.py", *args]))
    except SystemExit as exit_:
        status = exit_.code
    finally:
        flags.FLAGS.unparse_flags()
    return subprocess.CompletedProcess(["train.py", *args], status, out.getvalue(),
                                       err.getvalue())


def test_flagfile_run_trains_and_reports(tmp_path, small_npz):
    result = train("--flagfile=configs/quick.cfg", f"--data_path={small_npz}",
                   f"--model_dir={tmp_path}", "--units=32", "--batch_size=64", "--epochs=2",
                   "--log_every=5", "--eval_every=10")
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines[0] == f"starting a new run in {tmp_path}"
    assert lines[1] == ("20 steps to go of 20 (2 epochs of batch 64); speed and time left are "
                        "printed every 5 steps")
    progress = r"step +{}/20 \({}%\) \| loss [\d.]+ \| acc +[\d.]+% \| [\d.]+ steps/s \| ETA {}"
    assert re.fullmatch(progress.format(5, 25, r"\?"), lines[2]), lines[2]   # still tracing
    assert re.fullmatch(progress.format(10, 50, r"\d:\d\d:\d\d"), lines[3]), lines[3]
    assert lines[-2].startswith("done: step 20/20 in ") and "test accuracy" in lines[-2]
    assert lines[-1].startswith(f"outputs in {tmp_path}")
    assert (tmp_path / "checkpoints" / "ckpt-20.index").exists()


@pytest.mark.parametrize("args, message", [
    (["--nope=1"], "Unknown command line flag 'nope'"),
    (["--batch_size=abc"], "flag --batch_size=abc: invalid literal"),
    (["--mode=sgd"], "flag --mode=sgd: value should be one of"),
    (["--update_prob=2"], "--update_prob=2.0: must be in (0.0, 1.0], got 2.0."),
    (["--flagfile=does/not/exist.cfg"], "Unable to open flagfile"),
    (["--data_path=does/not/exist.npz"], "--data_path 'does/not/exist.npz' does not exist"),
    (["--epochs=0"], "--epochs=0.0: must be > 0"),
    (["positional"], "unexpected arguments: positional"),
])
def test_bad_flags_exit_nonzero_with_a_message_and_write_nothing(tmp_path, args, message):
    model_dir = tmp_path / "run"
    result = train_here(f"--model_dir={model_dir}", *args)
    assert result.returncode != 0
    assert message in result.stderr
    assert len(result.stderr.strip().splitlines()) <= 2, result.stderr   # absl adds a hint line
    assert not model_dir.exists()


def test_a_bad_flag_in_a_real_process_exits_with_one_line():
    result = train("--model_dir=unused", "--update_prob=2")
    assert result.returncode == 1
    assert result.stderr == ("error: --update_prob=2.0: must be in (0.0, 1.0], got 2.0.\n")


def test_missing_model_dir_is_named():
    result = train_here("--data_path=x.npz")
    assert result.returncode != 0 and "--model_dir='': a directory for this run is required" in (
        result.stderr)


def test_unreachable_tfds_download_fails_within_seconds(tmp_path, monkeypatch):
    monkeypatch.setenv("SG_KERAS_DOWNLOAD_PROBE", "127.0.0.1:9")
    started = time.monotonic()
    result = train_here(f"--model_dir={tmp_path / 'run'}", f"--data_dir={tmp_path / 'tfds'}")
    assert result.returncode == 1
    assert "cannot be reached" in result.stderr and "--data_path" in result.stderr
    assert time.monotonic() - started < 30


@pytest.mark.parametrize("signum, status", [(signal.SIGTERM, 143), (signal.SIGINT, 130)])
def test_exit_status_after_a_signal(monkeypatch, signum, status):
    """train.py exits 128 + the signal number once `run` has saved a checkpoint and stopped."""
    train_main = train_module()

    def interrupted(config):
        raise experiment.Interrupted(signum)

    monkeypatch.setattr(train_main.config_lib, "config_from_flags", lambda: None)
    monkeypatch.setattr(train_main.experiment, "run", interrupted)
    with pytest.raises(SystemExit) as exited:
        train_main.main(["train.py"])
    assert exited.value.code == status
