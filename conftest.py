"""Names the docstring examples use (they run with `python -m pytest`, `--doctest-modules`).

It sits at the top of the repository, outside the package, so that no test file ships in
the wheel; the test modules' own fixtures are in `tests/conftest.py`.
"""

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import keras  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402
import tensorflow as tf  # noqa: E402

import sg_keras  # noqa: E402


@pytest.fixture(autouse=True)
def _doctest_names(doctest_namespace):
    doctest_namespace.update(np=np, keras=keras, tf=tf, sg_keras=sg_keras,
                             DecoupledLayer=sg_keras.DecoupledLayer)
