"""The package as installed: its dependencies, what `import sg_keras` imports, the wheel's
files, the console script's shipped flagfiles and the version."""

import importlib.metadata
import os
import subprocess
import sys
import tomllib
import zipfile

import pytest

import sg_keras
from conftest import REPO
from sg_keras.job import cli

PYPROJECT = tomllib.loads((REPO / "pyproject.toml").read_text(encoding="utf-8"))
JOB_PACKAGES = ("matplotlib", "tensorflow_datasets", "absl", "tensorboard")


def _name(requirement):
    return requirement.split(">")[0].split("<")[0].split("=")[0].split("[")[0].strip()


def test_the_library_depends_on_tensorflow_keras_and_numpy_only():
    assert sorted(map(_name, PYPROJECT["project"]["dependencies"])) == [
        "keras", "numpy", "tensorflow"]
    extras = PYPROJECT["project"]["optional-dependencies"]
    assert {"absl-py", "matplotlib", "tensorflow-datasets", "tensorboard"} <= set(
        map(_name, extras["job"]))
    assert "sg_keras[job,docs]" in extras["test"]   # the tests run the job and build the docs


def test_import_sg_keras_imports_none_of_the_jobs_packages():
    """What `import sg_keras` adds to what TensorFlow and Keras import themselves.

    TensorFlow imports absl itself, and Keras imports matplotlib when it is installed
    (keras.src.visualization); tensorflow_datasets neither does."""
    code = ("import sys, tensorflow, keras\n"
            "before = set(sys.modules)\n"
            "import sg_keras\n"
            "added = {m.split('.')[0] for m in set(sys.modules) - before}\n"
            "print(sorted(added & set(sys.argv[1:])), 'tensorflow_datasets' in sys.modules)\n")
    result = subprocess.run([sys.executable, "-c", code, *JOB_PACKAGES], capture_output=True,
                            text=True, env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3"),
                            timeout=300, cwd=REPO)
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.split("\n")[0] == "[] False"


def test_version_has_one_source():
    assert sg_keras.__version__ == importlib.metadata.version("sg_keras")
    assert PYPROJECT["tool"]["setuptools"]["dynamic"]["version"] == {
        "attr": "sg_keras._version.__version__"}


def test_every_shipped_flagfile_is_reachable_by_name():
    names = {path.stem for path in (REPO / "configs").glob("*.cfg")}
    assert set(cli.shipped_configs()) == names
    assert cli.resolve_flagfiles(["p", "--flagfile=mnist_cdni.cfg"])[1] == (
        f"--flagfile={cli.shipped_configs()['mnist_cdni']}")
    existing = str(REPO / "configs" / "quick.cfg")   # a path is kept as it is
    assert cli.resolve_flagfiles(["p", f"--flagfile={existing}"])[1] == f"--flagfile={existing}"


def test_python_dash_m_runs_the_job_with_a_shipped_flagfile(tmp_path):
    missing = tmp_path / "missing.npz"
    result = subprocess.run(
        [sys.executable, "-m", "sg_keras", "--flagfile=quick", f"--model_dir={tmp_path / 'm'}",
         f"--data_path={missing}"], capture_output=True, text=True, cwd=tmp_path, timeout=300,
        env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3",
                 PYTHONPATH=os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")])))
    assert result.returncode == 1, result.stderr[-2000:]
    assert "--data_path" in result.stderr and str(missing) in result.stderr


@pytest.fixture(scope="module")
def wheel(tmp_path_factory):
    out = tmp_path_factory.mktemp("wheel")
    result = subprocess.run([sys.executable, "-m", "pip", "wheel", str(REPO), "--no-deps",
                             "--no-build-isolation", "-q", "-w", str(out)],
                            capture_output=True, text=True, timeout=300)
    if result.returncode != 0:
        pytest.fail(result.stderr[-2000:])
    (path,) = out.glob("sg_keras-*.whl")
    return zipfile.ZipFile(path)


def test_the_wheel_ships_the_job_and_its_flagfiles_but_no_tests(wheel):
    names = wheel.namelist()
    assert not [name for name in names if "conftest" in name or name.startswith("tests/")
                or "/test_" in name]
    assert "sg_keras/job/configs/quick.cfg" in names and "sg_keras/job/cli.py" in names
    entry_points = next(name for name in names if name.endswith("entry_points.txt"))
    assert "sg-keras-train = sg_keras.job.cli:run" in wheel.read(entry_points).decode()
