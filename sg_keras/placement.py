"""Decoupled stages and their devices.

A *stage* is the part of a model between two decoupled boundaries: the layers
after one `DecoupledLayer` up to and including the next one (its wrapped
layer and its synthesizer), or, for the last stage, the layers after the last
`DecoupledLayer` (the head, trained by the true loss). `split_stages` cuts a
`keras.Sequential` chain into stages; `stage_devices` gives each stage a
device, spreading the stages evenly over the devices it is given (by default
every visible GPU, else every logical CPU device).

What placement buys: update unlocking. Inside one synchronous DNI step a decoupled
module's gradients depend only on its own forward pass and its `ĝ` (see
`tests/test_placement.py`, which checks it on the traced graph), so on
separate devices a lower module can compute its update while the modules
above still run. The forward pass stays locked (module `k` needs module
`k−1`'s output of the same batch); `sg_keras.PipelinedTrainer` removes that
lock too.

Example:

>>> model = keras.Sequential([keras.Input((4,)), DecoupledLayer(keras.layers.Dense(3)),
...                           DecoupledLayer(keras.layers.Dense(3)), keras.layers.Dense(2)])
>>> [len(stage.layers) for stage in split_stages(model)]
[1, 1, 1]
>>> stage_devices(3, ["/cpu:0", "/cpu:0"])
['/device:CPU:0', '/device:CPU:0', '/device:CPU:0']
"""

import dataclasses
from typing import List, Optional

import keras
import tensorflow as tf

from sg_keras.keras_compat import flatten_layers
from sg_keras.layers import DecoupledLayer
from sg_keras.validation import ArgumentError


@dataclasses.dataclass(eq=False)
class Stage:
    """One stage of a decoupled chain.

    Attributes:
        layers: the model's layers that the stage runs, in order; for every
            stage but the last, the final one is `boundary`.
        boundary: the `DecoupledLayer` that ends the stage (its wrapped layer
            runs in the stage and its synthesizer predicts the stage's output
            gradient), or None for the last stage.
        device: the device the stage runs on (None: wherever TensorFlow puts it).
    """

    layers: List[keras.layers.Layer]
    boundary: Optional[DecoupledLayer]
    device: Optional[str] = None

    def forward(self, inputs, training=True):
        """The stage's output; a boundary runs its wrapped layer (no interception)."""
        h = inputs
        for layer in self.layers:
            h = (layer.layer(h, training=training) if layer is self.boundary
                 else layer(h, training=training))
        return h

    @property
    def network_variables(self):
        """The trainable weights of the stage's layers (its synthesizer excluded)."""
        variables = []
        for layer in self.layers:
            variables += (layer.layer if layer is self.boundary else layer).trainable_variables
        return variables

    @property
    def synthesizer_variables(self):
        return [] if self.boundary is None else list(self.boundary.synthesizer.trainable_variables)


def split_stages(model):
    """Cuts a `keras.Sequential` model into stages at its top-level `DecoupledLayer`s.

    Raises:
        ValueError: `model` is not a Sequential chain, has no DecoupledLayer,
            ends with one, or holds a DecoupledLayer inside a nested layer
            (only top-level boundaries can be cut).
    """
    if not isinstance(model, keras.Sequential):
        raise ArgumentError("model", f"must be a keras.Sequential chain to be split into stages, "
                                     f"got {type(model).__name__}. Functional graphs (branches, "
                                     "skips) and nested decoupled layers are not supported: "
                                     "rebuild the chain as a Sequential whose DecoupledLayers are "
                                     "top-level layers.")
    stages, current = [], []
    for layer in model.layers:
        if isinstance(layer, DecoupledLayer):
            stages.append(Stage(current + [layer], layer))
            current = []
            continue
        if any(isinstance(inner, DecoupledLayer) for inner in flatten_layers(layer)):
            raise ArgumentError("model", f"layer {layer.name!r} holds a DecoupledLayer inside "
                                         "it; only top-level DecoupledLayers of a Sequential "
                                         "can be stage boundaries.")
        current.append(layer)
    if not stages:
        raise ArgumentError("model", "has no DecoupledLayer: there is nothing to split into "
                                     "stages.")
    if not current:
        raise ArgumentError("model", "ends with a DecoupledLayer: the last stage needs the "
                                     "layers that compute the loss (e.g. the classifier head).")
    return stages + [Stage(current, None)]


def visible_devices():
    """Every visible GPU (or TPU), else every logical CPU device, as device names."""
    for kind in ("GPU", "TPU", "CPU"):
        devices = tf.config.list_logical_devices(kind)
        if devices:
            return [device.name for device in devices]
    return []


def _canonical(device):
    try:
        spec = tf.DeviceSpec.from_string(device)
    except (TypeError, ValueError) as error:
        raise ArgumentError("devices", f"holds {device!r}, which is not a device name "
                                       "(e.g. '/gpu:0').") from error
    if spec.device_type is None:
        raise ArgumentError("devices", f"holds {device!r}, which names no device type "
                                       "(e.g. '/gpu:0').")
    return tf.DeviceSpec(device_type=spec.device_type,
                         device_index=spec.device_index or 0).to_string()


def stage_devices(num_stages, devices=None):
    """The device of each of `num_stages` stages.

    Args:
        num_stages: how many stages there are.
        devices: device names (e.g. `["/gpu:0", "/gpu:1"]`); None: every
            visible device. The stages are spread evenly in contiguous
            blocks: stage `k` goes to `devices[k·D // K]`. They must be
            devices TensorFlow sees (logical CPU devices count).

    Raises:
        ArgumentError: naming `devices`, for an empty list, a bad name or an
            unknown device.
    """
    if devices is None:
        devices = visible_devices()
    if isinstance(devices, str) or not list(devices):
        raise ArgumentError("devices", f"must be a non-empty list of device names, got "
                                       f"{devices!r}.")
    names = [_canonical(device) for device in devices]
    known = {_canonical(device.name) for device in tf.config.list_logical_devices()}
    unknown = [device for device, name in zip(devices, names) if name not in known]
    if unknown:
        raise ArgumentError("devices", f"holds {unknown[0]!r}, which TensorFlow does not see; "
                                       f"visible: {sorted(known)}.")
    return [names[k * len(names) // num_stages] for k in range(num_stages)]
