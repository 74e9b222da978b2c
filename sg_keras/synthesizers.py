"""Synthesizers: small models `M(h[, c])` that predict `∂L/∂h`.

Every synthesizer here

* is a Keras layer called as `synthesizer(h, context=None)`, returning a
  tensor of `h`'s shape (the per-example gradient of the summed loss),
* infers its output size from `h` when it is built, and
* zero-initialises its final layer, kernel *and* bias, so training starts
  from a zero synthetic gradient.

The context (cDNI, e.g. a one-hot label) is concatenated to `h` as the paper
does: along the features for dense synthesizers, and tiled over the spatial
positions as extra channels for convolutional ones.

A custom synthesizer may be any Keras layer with the same contract; for cDNI
it must accept a `context` keyword argument.

Example:

>>> synth = DenseSynthesizer(hidden_layers=1, hidden_units=64)
>>> synth(np.zeros((2, 8)), context=np.eye(2)).shape
TensorShape([2, 8])
"""

import keras
from keras import layers

from sg_keras.validation import int_at_least


def _hidden_block(make_linear, name, batch_norm=True):
    return [make_linear(f"{name}_linear"),
            *([layers.BatchNormalization(name=f"{name}_bn")] if batch_norm else []),
            layers.ReLU(name=f"{name}_relu")]


@keras.saving.register_keras_serializable(package="sg_keras")
class DenseSynthesizer(layers.Layer):
    """MLP synthesizer for rank-2 activations `(batch, features)`.

    `hidden_layers` blocks of Dense → BatchNorm → ReLU (Dense → ReLU with
    `batch_norm=False`), then a zero-initialised linear layer with as many
    units as `h` has features. `hidden_layers=0` is the paper's linear
    synthesizer.

    With `rank=r` the output layer is factored through `r` units: a bias-free
    projection to `r` (Glorot-initialised, trained) and the zero-initialised
    `r → features` layer, so `ĝ` still starts at 0. A linear synthesizer then
    costs `2·r·U` multiply-adds per example instead of `U²` (U features; half
    in the forward pass, half in its weight gradients): the cheap option for
    wide layers.

    Args:
        hidden_layers: number of hidden blocks (the paper uses 0–2).
        hidden_units: width of each hidden block (paper: 1024).
        rank: None (full rank) or the rank of the output layer.
        batch_norm: BatchNorm in the hidden blocks (the paper's setting).

    Example:

    >>> synth = DenseSynthesizer()          # linear
    >>> float(keras.ops.max(keras.ops.abs(synth(np.ones((4, 16))))))
    0.0
    >>> low = DenseSynthesizer(rank=4)
    >>> low(np.ones((2, 64))).shape, low.count_params()      # 64*4 + 4*64 + 64
    (TensorShape([2, 64]), 576)
    """

    def __init__(self, hidden_layers=0, hidden_units=1024, rank=None, batch_norm=True, **kwargs):
        super().__init__(**kwargs)
        self.hidden_layers = int_at_least(hidden_layers, 0, "hidden_layers")
        self.hidden_units = int_at_least(hidden_units, 1, "hidden_units")
        self.rank = None if rank is None else int_at_least(rank, 1, "rank")
        self.batch_norm = bool(batch_norm)

    def build(self, h_shape, context_shape=None):
        def linear(name):
            return layers.Dense(self.hidden_units, name=name)

        blocks = []
        for i in range(self.hidden_layers):
            blocks += _hidden_block(linear, f"hidden{i}", self.batch_norm)
        if self.rank is not None:
            blocks.append(layers.Dense(self.rank, use_bias=False, name="project"))
        blocks.append(layers.Dense(h_shape[-1], kernel_initializer="zeros",
                                   bias_initializer="zeros", name="output"))
        self.net = keras.Sequential(blocks, name="mlp")
        features = h_shape[-1] + (context_shape[-1] if context_shape else 0)
        self.net.build((None, features))

    def call(self, h, context=None, training=None):
        if context is not None:
            h = keras.ops.concatenate([h, keras.ops.cast(context, h.dtype)], axis=-1)
        return self.net(h, training=training)

    def compute_output_shape(self, h_shape, context_shape=None):
        return h_shape

    def get_config(self):
        return {**super().get_config(), "hidden_layers": self.hidden_layers,
                "hidden_units": self.hidden_units, "rank": self.rank,
                "batch_norm": self.batch_norm}


@keras.saving.register_keras_serializable(package="sg_keras")
class ConvSynthesizer(layers.Layer):
    """Convolutional synthesizer for rank-4 activations `(batch, H, W, C)`.

    `hidden_layers` blocks of Conv2D → BatchNorm → ReLU ('same' padding), then
    a zero-initialised Conv2D with `C` filters. The paper's CIFAR-10 setting is
    two hidden layers of 128 5×5 filters, the default here.

    Args:
        hidden_layers: number of hidden conv blocks.
        filters: filters of each hidden block.
        kernel_size: kernel size of every conv layer, including the output.

    Example:

    >>> ConvSynthesizer(hidden_layers=1, filters=4)(np.ones((1, 6, 6, 3))).shape
    TensorShape([1, 6, 6, 3])
    """

    def __init__(self, hidden_layers=2, filters=128, kernel_size=5, **kwargs):
        super().__init__(**kwargs)
        self.hidden_layers = int_at_least(hidden_layers, 0, "hidden_layers")
        self.filters = int_at_least(filters, 1, "filters")
        self.kernel_size = int_at_least(kernel_size, 1, "kernel_size")

    def build(self, h_shape, context_shape=None):
        def conv(name):
            return layers.Conv2D(self.filters, self.kernel_size, padding="same", name=name)

        blocks = []
        for i in range(self.hidden_layers):
            blocks += _hidden_block(conv, f"hidden{i}")
        blocks.append(layers.Conv2D(h_shape[-1], self.kernel_size, padding="same",
                                    kernel_initializer="zeros", bias_initializer="zeros",
                                    name="output"))
        self.net = keras.Sequential(blocks, name="convnet")
        channels = h_shape[-1] + (context_shape[-1] if context_shape else 0)
        self.net.build((None, h_shape[1], h_shape[2], channels))

    def call(self, h, context=None, training=None):
        if context is not None:
            shape = keras.ops.shape(h)
            context = keras.ops.cast(context, h.dtype)[:, None, None, :]
            context = keras.ops.broadcast_to(
                context, (shape[0], shape[1], shape[2], keras.ops.shape(context)[-1]))
            h = keras.ops.concatenate([h, context], axis=-1)
        return self.net(h, training=training)

    def compute_output_shape(self, h_shape, context_shape=None):
        return h_shape

    def get_config(self):
        return {**super().get_config(), "hidden_layers": self.hidden_layers,
                "filters": self.filters, "kernel_size": self.kernel_size}


def default_synthesizer(rank, name=None):
    """The synthesizer `DecoupledLayer` uses when none is given.

    Rank 2 → linear `DenseSynthesizer`; rank 4 → `ConvSynthesizer` with the
    paper's CIFAR setting. Other ranks need an explicit synthesizer.
    """
    if rank == 2:
        return DenseSynthesizer(name=name)
    if rank == 4:
        return ConvSynthesizer(name=name)
    raise ValueError(
        f"No default synthesizer for rank-{rank} activations; pass `synthesizer=` "
        "(a Keras layer mapping h to a tensor of h's shape).")
