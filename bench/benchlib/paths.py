"""Where things are, what is running and on what machine.

* `REPO`, `RESULTS` (`bench/results/`), `RUNS` (the training runs' model
  directories, `bench/results/runs/`) and `MNIST` (`../shared/data/mnist.npz`
  next to the checkout; `require_mnist()` exits 0 with "skipped: ..." without it);
* `command()`: the command line, as typed from the repository root;
* `machine()`: CPU model, core count, load average at start and end,
  Python/TensorFlow/Keras versions; `machine_line(...)` says it in one line;
* `load_mnist()`: the train and test splits of real MNIST.
"""

import os
import platform
import shlex
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
RESULTS = REPO / "bench" / "results"
RUNS = RESULTS / "runs"
MNIST = REPO.parent / "shared" / "data" / "mnist.npz"
LOAD_AT_START = os.getloadavg()[0]   # other users' work shows in the load average


def require_mnist():
    """The path of real MNIST; exits 0 with a "skipped" message when it is absent."""
    if not MNIST.is_file():
        print(f"skipped: {MNIST} not found (real MNIST in Keras' mnist.npz layout)")
        sys.exit(0)
    return str(MNIST)


def load_mnist():
    """`(train, test)` splits of real MNIST, as `sg_keras.job.data.load` returns them."""
    from sg_keras.job import data

    return data.load(data_path=require_mnist())


def command():
    """The command line that is running, as typed from the repository root."""
    script = os.path.relpath(os.path.abspath(sys.argv[0]), REPO)
    return shlex.join(["python", script, *sys.argv[1:]])


def _cpu_model():
    with open("/proc/cpuinfo", encoding="utf-8") as handle:
        for line in handle:
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    return platform.processor() or "unknown"


def machine():
    """What the numbers were measured on."""
    import keras
    import tensorflow as tf

    return {"cpu": _cpu_model(), "cores": os.cpu_count(),
            "load_1min_at_start": LOAD_AT_START, "load_1min_at_end": os.getloadavg()[0],
            "python": platform.python_version(), "tensorflow": tf.__version__,
            "keras": keras.__version__, "platform": platform.platform()}


def machine_line(info):
    """`machine()`'s record in one line."""
    load = f"{info['load_1min_at_start']:.2f} at start, {info['load_1min_at_end']:.2f} at end"
    return (f"{info['cpu']}, {info['cores']} cores (1-min load average {load}), "
            f"Python {info['python']}, TensorFlow {info['tensorflow']}, Keras {info['keras']}")
