"""Synthesizers: small models `M(h[, c])` that predict `∂L/∂h`.

Every synthesizer here

* is a Keras layer called as `synthesizer(h, context=None)`, returning a
  tensor of `h`'s shape (the per-example gradient of the summed loss),
* infers its output size from `h` when it is built, and
* zero-initialises its final layer, kernel *and* bias, so training starts
  from a zero synthetic gradient.

The context (cDNI, e.g. a one-hot label) is concatenated to `h` on its last
axis, as the paper does: a context per example `(batch, C)` is tiled over
`h`'s positions (time steps, pixels) first; a context per position, of `h`'s
rank (e.g. `(batch, T, C)` for `h` of shape `(batch, T, F)`: the one-hot
next-token targets of a language model), is concatenated as it is.

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


def with_context(h, context):
    """`h` with `context` concatenated on its last axis (per example: tiled over positions).

    >>> with_context(np.zeros((2, 3, 4), "float32"), np.eye(2, dtype="float32")).shape
    TensorShape([2, 3, 6])
    """
    if context is None:
        return h
    context = keras.ops.cast(context, h.dtype)
    rank, context_rank = len(h.shape), len(context.shape)
    if context_rank == 2 and rank > 2:
        context = keras.ops.reshape(context, (-1,) + (1,) * (rank - 2) + (context.shape[-1],))
        context = keras.ops.broadcast_to(
            context, (*keras.ops.shape(h)[:-1], keras.ops.shape(context)[-1]))
    elif context_rank != rank:
        raise ValueError(
            f"`context` of shape {tuple(context.shape)} fits no activation of shape "
            f"{tuple(h.shape)}: give one context row per example (batch, C) or one per "
            f"position, of the activation's rank ({rank}).")
    return keras.ops.concatenate([h, context], axis=-1)


def _hidden_block(make_linear, name, batch_norm=True, dtype=None):
    return [make_linear(f"{name}_linear"),
            *([layers.BatchNormalization(name=f"{name}_bn", dtype=dtype)] if batch_norm else []),
            layers.ReLU(name=f"{name}_relu", dtype=dtype)]


class _NetSynthesizer(layers.Layer):
    """A synthesizer whose `build` makes `self.net`, called on `h` with its context."""

    def call(self, h, context=None, training=None):
        return self.net(with_context(h, context), training=training)

    def compute_output_shape(self, h_shape, context_shape=None):
        return h_shape


@keras.saving.register_keras_serializable(package="sg_keras")
class DenseSynthesizer(_NetSynthesizer):
    """MLP synthesizer on the last axis: `(batch, features)` or per position, any rank >= 2.

    `hidden_layers` blocks of Dense → BatchNorm → ReLU (Dense → ReLU with
    `batch_norm=False`), then a zero-initialised linear layer with as many
    units as `h` has features. `hidden_layers=0` is the paper's linear
    synthesizer. On `h` of rank 3 or more (e.g. `(batch, T, F)`) the same MLP
    runs at every position: `ĝ[b, t] = M(h[b, t] [, c[b, t]])`.

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
    >>> DenseSynthesizer()(np.ones((2, 5, 8)), context=np.eye(2)).shape   # per position
    TensorShape([2, 5, 8])
    """

    def __init__(self, hidden_layers=0, hidden_units=1024, rank=None, batch_norm=True, **kwargs):
        super().__init__(**kwargs)
        self.hidden_layers = int_at_least(hidden_layers, 0, "hidden_layers")
        self.hidden_units = int_at_least(hidden_units, 1, "hidden_units")
        self.rank = None if rank is None else int_at_least(rank, 1, "rank")
        self.batch_norm = bool(batch_norm)

    def build(self, h_shape, context_shape=None):
        def linear(name):
            return layers.Dense(self.hidden_units, name=name, dtype=self.dtype_policy)

        blocks = []
        for i in range(self.hidden_layers):
            blocks += _hidden_block(linear, f"hidden{i}", self.batch_norm, self.dtype_policy)
        if self.rank is not None:
            blocks.append(layers.Dense(self.rank, use_bias=False, name="project",
                                       dtype=self.dtype_policy))
        blocks.append(layers.Dense(h_shape[-1], kernel_initializer="zeros",
                                   bias_initializer="zeros", name="output",
                                   dtype=self.dtype_policy))
        self.net = keras.Sequential(blocks, name="mlp")
        features = h_shape[-1] + (context_shape[-1] if context_shape else 0)
        self.net.build((None,) * (len(h_shape) - 1) + (features,))

    def get_config(self):
        return {**super().get_config(), "hidden_layers": self.hidden_layers,
                "hidden_units": self.hidden_units, "rank": self.rank,
                "batch_norm": self.batch_norm}


@keras.saving.register_keras_serializable(package="sg_keras")
class ConvSynthesizer(_NetSynthesizer):
    """Convolutional synthesizer for rank-4 activations `(batch, H, W, C)`.

    `hidden_layers` blocks of Conv2D → BatchNorm → ReLU ('same' padding), then
    a zero-initialised Conv2D with `C` filters. The paper's CIFAR-10 setting is
    two hidden layers of 128 5×5 filters, the default here. The context is a
    row per example (tiled over the pixels) or a map per pixel `(batch, H, W, C)`.

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
            return layers.Conv2D(self.filters, self.kernel_size, padding="same", name=name,
                                 dtype=self.dtype_policy)

        blocks = []
        for i in range(self.hidden_layers):
            blocks += _hidden_block(conv, f"hidden{i}", dtype=self.dtype_policy)
        blocks.append(layers.Conv2D(h_shape[-1], self.kernel_size, padding="same",
                                    kernel_initializer="zeros", bias_initializer="zeros",
                                    name="output", dtype=self.dtype_policy))
        self.net = keras.Sequential(blocks, name="convnet")
        channels = h_shape[-1] + (context_shape[-1] if context_shape else 0)
        self.net.build((None, h_shape[1], h_shape[2], channels))

    def get_config(self):
        return {**super().get_config(), "hidden_layers": self.hidden_layers,
                "filters": self.filters, "kernel_size": self.kernel_size}


@keras.saving.register_keras_serializable(package="sg_keras")
class Conv1DSynthesizer(_NetSynthesizer):
    """Convolution over time for sequence activations `(batch, T, features)`.

    `hidden_layers` blocks of Conv1D → BatchNorm → ReLU (Conv1D → ReLU with
    `batch_norm=False`), then a zero-initialised Conv1D with `features`
    filters. With `causal=True` (default) `ĝ[b, t]` sees `h[b, t−k+1 .. t]`
    only, as a causal model's activations do; `causal=False` pads "same" and
    sees both neighbours. `hidden_layers=0` is a linear synthesizer that, next
    to the default per-position `DenseSynthesizer`, also sees `k − 1`
    neighbouring steps.

    Args:
        hidden_layers: number of hidden blocks.
        filters: filters of each hidden block.
        kernel_size: kernel size of every conv layer, including the output.
        causal: causal (left) padding instead of "same".
        batch_norm: BatchNorm in the hidden blocks.

    Example:

    >>> synth = Conv1DSynthesizer(kernel_size=3)
    >>> synth(np.ones((2, 7, 4)), context=np.eye(2)).shape
    TensorShape([2, 7, 4])
    """

    def __init__(self, hidden_layers=0, filters=128, kernel_size=3, causal=True, batch_norm=True,
                 **kwargs):
        super().__init__(**kwargs)
        self.hidden_layers = int_at_least(hidden_layers, 0, "hidden_layers")
        self.filters = int_at_least(filters, 1, "filters")
        self.kernel_size = int_at_least(kernel_size, 1, "kernel_size")
        self.causal = bool(causal)
        self.batch_norm = bool(batch_norm)

    def build(self, h_shape, context_shape=None):
        if len(h_shape) != 3:
            raise ValueError(f"Conv1DSynthesizer needs activations of shape (batch, T, features), "
                             f"got {tuple(h_shape)}.")
        padding = "causal" if self.causal else "same"

        def conv(name):
            return layers.Conv1D(self.filters, self.kernel_size, padding=padding, name=name,
                                 dtype=self.dtype_policy)

        blocks = []
        for i in range(self.hidden_layers):
            blocks += _hidden_block(conv, f"hidden{i}", self.batch_norm, self.dtype_policy)
        blocks.append(layers.Conv1D(h_shape[-1], self.kernel_size, padding=padding,
                                    kernel_initializer="zeros", bias_initializer="zeros",
                                    name="output", dtype=self.dtype_policy))
        self.net = keras.Sequential(blocks, name="convnet")
        channels = h_shape[-1] + (context_shape[-1] if context_shape else 0)
        self.net.build((None, h_shape[1], channels))

    def get_config(self):
        return {**super().get_config(), "hidden_layers": self.hidden_layers,
                "filters": self.filters, "kernel_size": self.kernel_size, "causal": self.causal,
                "batch_norm": self.batch_norm}


def default_synthesizer(rank, name=None, dtype=None):
    """The synthesizer `DecoupledLayer` uses when none is given, by activation rank.

    Rank 2 `(batch, features)` → linear `DenseSynthesizer`; rank 3
    `(batch, T, features)` and rank 5 or more → the linear `DenseSynthesizer`
    per position (on the last axis; `Conv1DSynthesizer` is the alternative for
    sequences); rank 4 `(batch, H, W, C)` → `ConvSynthesizer` with the paper's
    CIFAR setting. `name` and `dtype` (a dtype policy) are the layer's.

    >>> type(default_synthesizer(3)).__name__
    'DenseSynthesizer'
    """
    if rank == 2 or rank == 3 or rank >= 5:
        return DenseSynthesizer(name=name, dtype=dtype)
    if rank == 4:
        return ConvSynthesizer(name=name, dtype=dtype)
    raise ValueError(
        f"No default synthesizer for rank-{rank} activations (a synthesizer needs a batch "
        "axis and a feature axis); pass `synthesizer=` (a Keras layer mapping h to a tensor "
        "of h's shape).")
