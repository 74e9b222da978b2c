"""sg_keras: synthetic gradients (Decoupled Neural Interfaces) for Keras 3.

The library is the top level of the package; `sg_keras.job` is the MNIST
training job behind `train.py`.

>>> import keras, sg_keras
>>> block = keras.Sequential([keras.layers.Dense(256), keras.layers.BatchNormalization(),
...                           keras.layers.ReLU()])
>>> layer = sg_keras.DecoupledLayer(block, context_dim=10)     # cDNI
"""

from sg_keras import dni_maths, synthesizers
from sg_keras._version import __version__
from sg_keras.decouple import decouple
from sg_keras.dni_model import DNIModel, FunctionalDNIModel
from sg_keras.engine import NonFiniteError, StepEngine
from sg_keras.interception import GradientInterception
from sg_keras.layers import DecoupledLayer
from sg_keras.options import DNIOptions, Mode, OnNonFinite, SGTarget
from sg_keras.pipeline import PipelinedTrainer
from sg_keras.placement import split_stages, stage_devices
from sg_keras.recurrent import RecurrentDNI
from sg_keras.trainer import DNITrainer
from sg_keras.unlock import CompleteUnlockTrainer

__all__ = ["CompleteUnlockTrainer", "DecoupledLayer", "DNIModel", "DNIOptions", "DNITrainer",
           "FunctionalDNIModel", "GradientInterception", "Mode", "NonFiniteError", "OnNonFinite",
           "PipelinedTrainer", "RecurrentDNI", "SGTarget", "StepEngine", "dni_maths",
           "decouple", "split_stages", "stage_devices", "synthesizers"]
