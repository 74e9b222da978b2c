"""sg_keras: synthetic gradients (Decoupled Neural Interfaces) for Keras 3.

>>> import keras, sg_keras
>>> block = keras.Sequential([keras.layers.Dense(256), keras.layers.BatchNormalization(),
...                           keras.layers.ReLU()])
>>> layer = sg_keras.DecoupledLayer(block, context_dim=10)     # cDNI
"""

from sg_keras import synthesizers
from sg_keras.interception import GradientInterception
from sg_keras.keras_model import DNIModel, FunctionalDNIModel
from sg_keras.layers import DecoupledLayer
from sg_keras.trainer import DNITrainer, NonFiniteError

__all__ = ["DecoupledLayer", "DNIModel", "DNITrainer", "FunctionalDNIModel",
           "GradientInterception", "NonFiniteError", "synthesizers"]
__version__ = "0.1.0"
