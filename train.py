"""Train an MNIST classifier with synthetic gradients (DNI / cDNI) or backprop.

    python train.py --flagfile=configs/mnist_cdni.cfg --data_path=../shared/data/mnist.npz

All flags: `python train.py --help`. The work is done by `sg_keras.experiment`.
"""

import os
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from absl import app, flags, logging  # noqa: E402

from sg_keras import config as config_lib  # noqa: E402
from sg_keras import experiment  # noqa: E402

config_lib.define_flags()
flags.adopt_module_key_flags(config_lib)   # so that --help lists them


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {' '.join(argv[1:])}")
    if not flags.FLAGS["verbosity"].present:
        logging.set_verbosity(logging.WARNING)   # TensorFlow's INFO lines drown the progress
    try:
        experiment.run(config_lib.config_from_flags())
    except experiment.EXPECTED_ERRORS as error:
        print(f"error: {error}", file=sys.stderr)
        sys.exit(1)
    except KeyboardInterrupt:
        sys.exit(130)


if __name__ == "__main__":
    app.run(main)
