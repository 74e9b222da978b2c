"""The private Keras names sg_keras relies on, in one place.

Keras 3 has no public name for these. `tests/test_keras_compat.py` fails with
a message naming the missing one when a Keras upgrade moves them;
`pyproject.toml` caps `keras` below the next major version.

* `Functional`: the class of functional models (`DNIModel(inputs, outputs)`
  must become one, as `keras.Model(inputs, outputs)` does).
* `functional_init_arguments(args, kwargs)`: whether constructor arguments
  describe a functional model.
* `flatten_layers(model)`: every layer inside `model`, nested ones included.
* `loss_tracker(model)`: the compiled model's running mean of the loss (the
  `loss` that `fit` reports), which a custom `train_step` updates.
"""

from keras.src.models.functional import Functional
from keras.src.models.model import functional_init_arguments

__all__ = ["Functional", "flatten_layers", "functional_init_arguments", "loss_tracker"]


def flatten_layers(model):
    """`model` and every layer inside it, nested models' layers included."""
    return model._flatten_layers(include_self=True, recursive=True)


def loss_tracker(model):
    """The `keras.metrics.Mean` behind the `loss` that a compiled model's `fit` reports."""
    return model._loss_tracker
