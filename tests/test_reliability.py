"""Crash-safe resume, the divergence guard and hostile input, through train.py (in a real
process where its output is the point, else its `main` in this process: `train_here`)."""

import hashlib
import io
import json
import re
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
import tensorflow as tf

from conftest import REPO
from test_experiment import event_tags
from test_train_cli import train, train_here


def fingerprint(directory):
    return {str(p.relative_to(directory)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(directory.rglob("*")) if p.is_file()}


def checkpoint_values(path):
    reader = tf.train.load_checkpoint(str(path))
    return {name: reader.get_tensor(name) for name in reader.get_variable_to_shape_map()
            if not name.startswith("save_counter")}


def run_args(model_dir, data_path, *extra):
    return [f"--model_dir={model_dir}", f"--data_path={data_path}", "--mode=cdni", "--units=32",
            "--batch_size=32", "--train_steps=400", "--checkpoint_every=50", "--log_every=25",
            "--eval_every=100", "--measure_every=20", "--update_prob=0.7", "--deterministic",
            "--seed=7", *extra]


@pytest.mark.slow   # about a minute; test_experiment.py's resume tests cover resuming
def test_sigkill_then_resume_matches_an_uninterrupted_run(tmp_path, small_npz):
    killed_dir, clean_dir = tmp_path / "killed", tmp_path / "clean"
    process = subprocess.Popen([sys.executable, "train.py", *run_args(killed_dir, small_npz)],
                               cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
                               text=True)
    deadline = time.monotonic() + 240
    while not (killed_dir / "checkpoints" / "checkpoint").exists():   # a recorded checkpoint
        assert process.poll() is None and time.monotonic() < deadline, "no checkpoint written"
        time.sleep(0.01)
    process.send_signal(signal.SIGKILL)
    process.wait()
    killed_at = sorted(int(p.stem.split("-")[1])
                       for p in (killed_dir / "checkpoints").glob("ckpt-*.index"))[-1]
    assert killed_at < 400, "the run was killed before it finished"

    resumed = train(*run_args(killed_dir, small_npz))
    assert resumed.returncode == 0, resumed.stderr
    first = resumed.stdout.splitlines()[0]
    assert first.startswith("resuming from ") and first.endswith(f"(step {killed_at})"), first
    clean = train(*run_args(clean_dir, small_npz))
    assert clean.returncode == 0, clean.stderr

    final_killed = checkpoint_values(killed_dir / "checkpoints" / "ckpt-400")
    final_clean = checkpoint_values(clean_dir / "checkpoints" / "ckpt-400")
    assert final_killed.keys() == final_clean.keys() and len(final_clean) > 20
    for name, value in final_clean.items():   # bit-identical, optimizer state included
        np.testing.assert_array_equal(final_killed[name], value, err_msg=name)

    records = [json.loads(line) for line in (killed_dir / "metrics.jsonl").read_text().splitlines()]
    steps = [(r["step"], r["split"], "loss" in r) for r in records]
    assert len(steps) == len(set(steps)), "no step logged twice"
    assert [r["step"] for r in records if r["split"] == "eval"] == [100, 200, 300, 400]
    assert {"loss", "accuracy", "sg_loss/dni1"} <= event_tags(killed_dir / "train")
    for name in ("loss", "cosine", "gradients", "predictions"):
        tf.image.decode_png((killed_dir / f"{name}.png").read_bytes())
    assert not list(killed_dir.rglob("*.tmp*"))


def test_divergence_stops_with_step_and_layer_and_keeps_the_checkpoint(tmp_path, small_npz):
    args = [f"--model_dir={tmp_path}", f"--data_path={small_npz}", "--mode=dni", "--units=32",
            "--batch_size=32", "--train_steps=20", "--checkpoint_every=1",
            "--learning_rate=1e30"]
    result = train_here(*args)
    assert result.returncode == 1
    message = result.stderr.strip().splitlines()[-1]
    found = re.match(r"error: NaN/Inf (at step|in the weights after step) (\d+)", message)
    assert found and "fcn/dni" in message, message
    bad_step = int(found.group(2))   # 0-based: ckpt-N holds the N steps before it
    assert f"the last checkpoint ({tmp_path}/checkpoints/ckpt-{bad_step}) is intact" in message
    saved = sorted(p.name for p in (tmp_path / "checkpoints").glob("*.index"))
    assert saved[-1] == f"ckpt-{bad_step}.index"
    assert all(np.isfinite(v).all() for v in checkpoint_values(
        tmp_path / "checkpoints" / f"ckpt-{bad_step}").values()
        if isinstance(v, np.ndarray) and v.dtype.kind == "f")


def tiny_run(model_dir, data_path, *extra):
    result = train_here(f"--model_dir={model_dir}", f"--data_path={data_path}", "--mode=dni",
                        "--units=16", "--batch_size=64", "--train_steps=4", "--plots=false",
                        *extra)
    assert result.returncode == 0, result.stderr
    return model_dir


@pytest.fixture(scope="module")
def finished_dir(tmp_path_factory, small_npz):
    return tiny_run(tmp_path_factory.mktemp("finished"), small_npz)


@pytest.mark.parametrize("extra, message", [
    (["--mode=cdni"], "holds a run of another architecture or mode (--mode: saved 'dni', "
                      "now 'cdni')"),
    (["--units=8"], "--units: saved 16, now 8"),
    (["--num_layers=4"], "--num_layers: saved 3, now 4"),
])
def test_model_dir_of_another_architecture_is_refused_untouched(finished_dir, small_npz, extra,
                                                               message):
    before = fingerprint(finished_dir)
    result = train_here(f"--model_dir={finished_dir}", f"--data_path={small_npz}", "--units=16",
                   "--mode=dni", *extra)
    assert result.returncode == 1 and message in result.stderr
    assert fingerprint(finished_dir) == before


def test_corrupt_newest_checkpoint_resumes_from_the_previous_with_one_warning(tmp_path,
                                                                              small_npz):
    model_dir = tiny_run(tmp_path / "run", small_npz, "--checkpoint_every=2")
    data_file = model_dir / "checkpoints" / "ckpt-4.data-00000-of-00001"
    content = bytearray(data_file.read_bytes())
    content[40:56] = bytes(b ^ 0xFF for b in content[40:56])   # flipped bytes, same size
    data_file.write_bytes(bytes(content))
    result = train(f"--model_dir={model_dir}", f"--data_path={small_npz}", "--mode=dni",
                   "--units=16", "--batch_size=64", "--train_steps=6", "--plots=false")
    assert result.returncode == 0, result.stderr
    [warning] = result.stderr.strip().splitlines()   # one line, no TensorFlow noise
    assert warning.startswith("warning: skipped checkpoint ckpt-4, it is corrupt (") and (
        "Checksum does not match" in warning and warning.endswith("resumed from ckpt-2"))
    assert result.stdout.splitlines()[0].endswith("ckpt-2 (step 2)")
    assert (model_dir / "checkpoints" / "corrupt" / data_file.name).read_bytes() == content
    assert (model_dir / "checkpoints" / "ckpt-6.index").exists()


def test_unwritable_model_dir_is_refused(tmp_path, small_npz):
    blocker = tmp_path / "a_file"
    blocker.write_text("precious")
    result = train_here(f"--model_dir={blocker}", f"--data_path={small_npz}")
    assert result.returncode == 1 and "is not a writable directory" in result.stderr
    assert blocker.read_text() == "precious"


def labels_out_of_range(path):
    with np.load(path) as arrays:
        arrays = dict(arrays)
    arrays["y_test"] = arrays["y_test"] + 10
    buffer = io.BytesIO()
    np.savez(buffer, **arrays)
    return buffer.getvalue()


@pytest.mark.parametrize("content, message, run", [
    (b"", "not a readable .npz", train),    # one in a real process: no TensorFlow noise
    (b"PK\x03\x04 truncated zip", "not a readable .npz", train_here),
    (b"\x00garbage" * 100, "not a readable .npz", train_here),
    (labels_out_of_range, "test labels span 10..19; expected 0..9", train_here),
], ids=["empty", "truncated_zip", "garbage", "labels_out_of_range"])
def test_hostile_npz_through_train_py(tmp_path, small_npz, content, message, run):
    path = tmp_path / "hostile.npz"
    path.write_bytes(content(small_npz) if callable(content) else content)
    result = run(f"--model_dir={tmp_path / 'run'}", f"--data_path={path}")
    assert result.returncode == 1
    assert result.stderr.startswith("error: ") and message in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1, result.stderr


def test_flagfile_with_an_unknown_flag(tmp_path):
    flagfile = tmp_path / "bad.cfg"
    flagfile.write_text("--mode=dni\n--learning_rte=0.1\n")
    result = train_here(f"--flagfile={flagfile}", f"--model_dir={tmp_path / 'run'}")
    assert result.returncode == 1 and "Unknown command line flag 'learning_rte'" in result.stderr


def signal_once_checkpointed(args, signum):
    """Runs train.py ARGS in a real process, sends it `signum` once it has recorded a
    checkpoint; returns the CompletedProcess."""
    model_dir = next(a.split("=", 1)[1] for a in args if a.startswith("--model_dir="))
    process = subprocess.Popen([sys.executable, "train.py", *args], cwd=REPO, text=True,
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 240
    while not (REPO / model_dir / "checkpoints" / "checkpoint").exists():
        assert process.poll() is None and time.monotonic() < deadline, "no checkpoint written"
        time.sleep(0.05)
    process.send_signal(signum)
    out, err = process.communicate(timeout=120)
    return subprocess.CompletedProcess(args, process.returncode, out, err)


@pytest.mark.parametrize("task_args, signum, status", [
    (["--task=copy", "--mode=dni", "--units=4", "--truncation=2", "--batch_size=4",
      "--measure_every=0", "--curriculum_threshold=1e-6"], signal.SIGTERM, 143),
    (["--mode=dni", "--units=16", "--batch_size=32"], signal.SIGINT, 130),
], ids=["copy_sigterm", "classify_ctrl_c"])
def test_a_signal_to_a_real_run_saves_exits_and_resumes(tmp_path, small_npz, task_args, signum,
                                                        status):
    args = [f"--model_dir={tmp_path}", f"--data_path={small_npz}", *task_args,
            "--train_steps=100000", "--log_every=1", "--checkpoint_every=3", "--plots=false"]
    stopped = signal_once_checkpointed(args, signum)
    assert stopped.returncode == status, stopped.stderr
    saved = re.search(r"interrupted: saved (\S+ckpt-(\d+)); run the same command to resume",
                      stopped.stdout)
    assert saved and (tmp_path / "checkpoints" / f"ckpt-{saved.group(2)}.index").exists()
    at = int(saved.group(2))
    resumed = train_here(*args[:-3], f"--train_steps={at + 1}", "--plots=false")
    assert resumed.returncode == 0, resumed.stderr
    assert resumed.stdout.splitlines()[0] == f"resuming from {saved.group(1)} (step {at})"
