"""Train an MNIST classifier with synthetic gradients (DNI / cDNI) or backprop.

    python train.py --flagfile=configs/mnist_cdni.cfg --data_path=../shared/data/mnist.npz

All flags: `python train.py --help`. Installed, the same job is `sg-keras-train` (or
`python -m sg_keras`); this file only hides TensorFlow's start-up lines first, then runs
`sg_keras.job.cli`.
"""

import os


def _start_tensorflow_quietly():
    """Imports TensorFlow with its C++ start-up lines (oneDNN, CUDA probes) hidden.

    They reach stderr before any log level applies. Set TF_CPP_MIN_LOG_LEVEL
    yourself to see them; Python errors are shown either way.
    """
    if "TF_CPP_MIN_LOG_LEVEL" in os.environ:
        return
    os.environ["TF_CPP_MIN_LOG_LEVEL"] = "2"
    stderr, devnull = os.dup(2), os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, 2)
    try:
        import tensorflow as tf
        tf.constant(0.0) + 0.0   # the device probes run at the first operation
    finally:
        os.dup2(stderr, 2)
        os.close(devnull)
        os.close(stderr)


_start_tensorflow_quietly()

from sg_keras.job import cli  # noqa: E402
# The names the in-process tests of the command line reach through this module.
from sg_keras.job.cli import config_lib, experiment, main  # noqa: E402,F401

if __name__ == "__main__":
    cli.run()
