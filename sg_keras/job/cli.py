"""The training job's command line: `sg-keras-train`, `python -m sg_keras` and `train.py`.

    sg-keras-train --flagfile=quick --data_path=mnist.npz
    sg-keras-train --flagfile=configs/mnist_cdni.cfg --epochs=5

`--flagfile` takes a path or the name of a shipped flagfile (`quick`, `mnist_cdni`,
`copy_dni_t3`, ...: the files of the repository's `configs/`, installed with the package
as `sg_keras.job.configs`); a path that exists wins over a name. All flags:
`sg-keras-train --help`.

Installed from a wheel, TensorFlow's C++ start-up lines (CPU features, CUDA probes) reach
stderr before any Python code can hide them; `train.py` in a checkout hides them because
it runs before TensorFlow is imported.
"""

import importlib.resources
import pathlib
import sys

from absl import app, flags, logging

from sg_keras.job import config as config_lib
from sg_keras.job import experiment

config_lib.define_flags()
flags.adopt_module_key_flags(config_lib)   # so that --help lists them

_CHECKOUT_CONFIGS = pathlib.Path(__file__).resolve().parents[2] / "configs"


def shipped_configs():
    """The shipped flagfiles as `{name: path}` (`quick` → `.../quick.cfg`).

    >>> "quick" in shipped_configs()
    True
    """
    try:
        folder = importlib.resources.files("sg_keras.job.configs")
    except ModuleNotFoundError:   # a checkout (editable install or none): configs/ at its top
        folder = _CHECKOUT_CONFIGS
    return {entry.name[:-len(".cfg")]: entry for entry in folder.iterdir()
            if entry.name.endswith(".cfg")}


def resolve_flagfiles(argv):
    """`argv` with each `--flagfile=NAME` of a shipped flagfile replaced by its path.

    A value that names an existing file is kept, so is one that is neither (absl then
    reports it); `NAME.cfg` is accepted for `NAME`.

    >>> resolve_flagfiles(["prog", "--flagfile=quick", "--epochs=1"])[1].endswith("quick.cfg")
    True
    >>> resolve_flagfiles(["prog", "--flagfile=missing.cfg"])
    ['prog', '--flagfile=missing.cfg']
    """
    resolved = []
    for argument in argv:
        prefix, _, value = argument.partition("=")
        if prefix in ("--flagfile", "-flagfile") and value and not pathlib.Path(value).exists():
            shipped = shipped_configs().get(value.removesuffix(".cfg"))
            if shipped is not None:
                argument = f"{prefix}={shipped}"
        resolved.append(argument)
    return resolved


def _fail(message):
    print(f"error: {message}", file=sys.stderr)
    sys.exit(1)


def main(argv):
    """Runs the job on the parsed flags (`absl.app.run` calls it with what is left of argv).

    Exits 1 with a one-line `error: ...` for a bad flag, data set or model directory, and
    130 (Ctrl-C) or 143 (SIGTERM) once a checkpoint is saved.
    """
    if len(argv) > 1:
        _fail(f"unexpected arguments: {' '.join(argv[1:])} (flags are written --name=value)")
    if not flags.FLAGS["verbosity"].present:
        logging.set_verbosity(logging.WARNING)   # TensorFlow's INFO lines drown the progress
    try:
        experiment.run(config_lib.config_from_flags())
    except experiment.EXPECTED_ERRORS as error:
        _fail(error)
    except KeyboardInterrupt as error:   # a checkpoint was saved: 130 for Ctrl-C, 143 for SIGTERM
        sys.exit(getattr(error, "exit_status", 130))


def run(argv=None):
    """The console script `sg-keras-train`: flagfiles by name or path, then `main`."""
    app.run(main, argv=resolve_flagfiles(sys.argv if argv is None else argv))
