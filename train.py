"""Train an MNIST classifier with synthetic gradients (DNI / cDNI) or backprop.

    python train.py --flagfile=configs/mnist_cdni.cfg --data_path=../shared/data/mnist.npz

All flags: `python train.py --help`. The work is done by `sg_keras.job.experiment`.
"""

import os
import sys


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

from absl import app, flags, logging  # noqa: E402

from sg_keras.job import config as config_lib  # noqa: E402
from sg_keras.job import experiment  # noqa: E402

config_lib.define_flags()
flags.adopt_module_key_flags(config_lib)   # so that --help lists them


def _fail(message):
    print(f"error: {message}", file=sys.stderr)
    sys.exit(1)


def main(argv):
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


if __name__ == "__main__":
    app.run(main)
