"""The networks of the paper's experiments, built for the training job."""

import keras

from sg_keras.layers import DecoupledLayer
from sg_keras.synthesizers import ConvSynthesizer, DenseSynthesizer
from sg_keras.validation import int_at_least


def hidden_block(units, name=None):
    """The paper's FCN hidden layer: Dense → BatchNorm → ReLU."""
    return keras.Sequential([keras.layers.Dense(units), keras.layers.BatchNormalization(),
                             keras.layers.ReLU()], name=name)


def fcn(input_shape=(28, 28), num_layers=3, units=256, num_classes=10, decoupled=True,
        context=False, synthesizer_layers=0, synthesizer_units=1024, synthesizer_rank=None,
        synthesizer_batch_norm=True):
    """The paper's MNIST fully connected network, with DNI between every pair of layers.

    `num_layers` counts the Dense layers: `num_layers - 1` hidden blocks (each
    wrapped in a `DecoupledLayer` when `decoupled`) and a linear head with
    `num_classes` logits. Images are flattened first.

    Args:
        input_shape: shape of one input example.
        num_layers: number of layers, at least 2.
        units: hidden width (paper: 256).
        num_classes: number of classes (and cDNI context size).
        decoupled: wrap the hidden blocks in `DecoupledLayer` (False: a plain
            backprop network with no synthesizers).
        context: cDNI, the synthesizers see the one-hot label.
        synthesizer_layers: hidden layers of each `DenseSynthesizer` (0 = linear).
        synthesizer_units: width of those hidden layers (paper: 1024).
        synthesizer_rank: rank of the synthesizers' output layer (None: full).
        synthesizer_batch_norm: BatchNorm in the synthesizers' hidden layers.

    Example:

    >>> model = fcn(num_layers=3, context=True)
    >>> [type(layer).__name__ for layer in model.layers]
    ['Flatten', 'DecoupledLayer', 'DecoupledLayer', 'Dense']
    """
    num_layers = int_at_least(num_layers, 2, "num_layers")
    blocks = [hidden_block(units, name=f"block{index}") for index in range(1, num_layers)]
    if decoupled:
        blocks = _decoupled(blocks, num_classes, context, lambda name: DenseSynthesizer(
            synthesizer_layers, synthesizer_units, synthesizer_rank,
            batch_norm=synthesizer_batch_norm, name=name))
    return keras.Sequential([keras.Input(tuple(input_shape)), keras.layers.Flatten(name="flatten"),
                             *blocks, keras.layers.Dense(num_classes, name="logits")], name="fcn")


def _decoupled(blocks, num_classes, context, synthesizer):
    """Each block in a `DecoupledLayer` ("dni1", ...) with `synthesizer(name)` as its synthesizer."""
    return [DecoupledLayer(block, synthesizer=synthesizer(f"synthesizer{index}"),
                           context_dim=num_classes if context else None, name=f"dni{index}")
            for index, block in enumerate(blocks, start=1)]


def conv_block(filters, kernel_size, pool, name=None):
    """The paper's CNN layer: Conv2D → BatchNorm → ReLU → 3×3 pooling with stride 2.

    The BatchNorm's moving statistics use momentum 0.9 (PyTorch's default), not
    Keras' 0.99: the conv activations drift fast while the weights train, and
    at 0.99 the statistics that evaluation uses lag them for the first
    thousand steps (a DNI CNN at 93 % training accuracy evaluated at chance
    after 200 steps).
    """
    pooling = keras.layers.MaxPooling2D if pool == "max" else keras.layers.AveragePooling2D
    return keras.Sequential([keras.layers.Conv2D(filters, kernel_size, padding="same"),
                             keras.layers.BatchNormalization(momentum=0.9), keras.layers.ReLU(),
                             pooling(3, strides=2, padding="same")], name=name)


def cnn(input_shape=(28, 28, 1), num_layers=3, filters=128, num_classes=10, decoupled=True,
        context=False, kernel_size=5, synthesizer_layers=2, synthesizer_filters=128):
    """The paper's CNN, with DNI between every pair of layers.

    `num_layers` counts the layers as `fcn` does: `num_layers - 1` convolutional
    layers (`conv_block`: `filters` 5×5 filters, BatchNorm, ReLU; 3×3 max-pool
    after the first, average-pool after the others, stride 2), each wrapped in
    a `DecoupledLayer` with a `ConvSynthesizer` (the paper's: two hidden
    layers of 128 5×5 filters, zero-initialised final conv), then a linear
    head on the flattened features. Grey images of rank 2 get a channel axis.

    Example:

    >>> model = cnn((8, 8), num_layers=3, filters=4, synthesizer_filters=4)
    >>> [type(layer).__name__ for layer in model.layers]
    ['Reshape', 'DecoupledLayer', 'DecoupledLayer', 'Flatten', 'Dense']
    >>> model.layers[2].output.shape
    (None, 2, 2, 4)
    """
    num_layers = int_at_least(num_layers, 2, "num_layers")
    shape = tuple(input_shape) + ((1,) if len(input_shape) == 2 else ())
    blocks = [conv_block(filters, kernel_size, "max" if index == 1 else "average",
                         name=f"conv{index}") for index in range(1, num_layers)]
    if decoupled:
        blocks = _decoupled(blocks, num_classes, context, lambda name: ConvSynthesizer(
            synthesizer_layers, synthesizer_filters, kernel_size, name=name))
    return keras.Sequential([keras.Input(tuple(input_shape)),
                             keras.layers.Reshape(shape, name="image"), *blocks,
                             keras.layers.Flatten(name="flatten"),
                             keras.layers.Dense(num_classes, name="logits")], name="cnn")
