"""The networks of the paper's experiments, built for the training job."""

import keras

from sg_keras.layers import DecoupledLayer
from sg_keras.synthesizers import DenseSynthesizer
from sg_keras.validation import int_at_least


def hidden_block(units, name=None):
    """The paper's FCN hidden layer: Dense → BatchNorm → ReLU."""
    return keras.Sequential([keras.layers.Dense(units), keras.layers.BatchNormalization(),
                             keras.layers.ReLU()], name=name)


def fcn(input_shape=(28, 28), num_layers=3, units=256, num_classes=10, decoupled=True,
        context=False, synthesizer_layers=0, synthesizer_units=1024, synthesizer_rank=None):
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

    Example:

    >>> model = fcn(num_layers=3, context=True)
    >>> [type(layer).__name__ for layer in model.layers]
    ['Flatten', 'DecoupledLayer', 'DecoupledLayer', 'Dense']
    """
    num_layers = int_at_least(num_layers, 2, "num_layers")
    layers = [keras.Input(tuple(input_shape)), keras.layers.Flatten(name="flatten")]
    for index in range(1, num_layers):
        block = hidden_block(units, name=f"block{index}")
        if decoupled:
            block = DecoupledLayer(
                block, synthesizer=DenseSynthesizer(synthesizer_layers, synthesizer_units,
                                                    synthesizer_rank, name=f"synthesizer{index}"),
                context_dim=num_classes if context else None, name=f"dni{index}")
        layers.append(block)
    layers.append(keras.layers.Dense(num_classes, name="logits"))
    return keras.Sequential(layers, name="fcn")
