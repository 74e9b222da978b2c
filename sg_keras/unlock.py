"""Complete unlock (DESIGN §6.3): every module trains on a synthetic input and a synthetic gradient.

A Sequential chain is cut after each `DecoupledLayer` into modules:
module 1 is everything up to the first `DecoupledLayer`, module k up to the
k-th, and the last module is what follows the last one (the head). Module
k > 1 owns an *input model* `I_k(x) ≈ h_{k−1}`: a small Keras model of the
network input. In a training step, every module runs on its own:

* module 1 reads `x`, module k > 1 reads `I_k(x)` (no gradient flows from
  the module into its input model);
* a hidden module k is updated with `(∂h_k/∂θ_k)ᵀ ĝ_k / N`, `ĝ_k = M_k(h_k[, c])`
  its synthesizer's prediction at its own output; the last module with the
  true gradient of the loss;
* each module sends back the gradient at its (synthetic) input; it is the
  regression target of the synthesizer below (bootstrapping, as in DNI);
* every input model regresses on the real activation `h_{k−1}` of the
  network (`‖I_k(x) − h_{k−1}‖²`, batch mean), computed by the real chain.

No module waits for any other: the layers train as independent networks
that still compose at inference, where the model is the plain chain. The
maths is `sg_keras.dni_maths`; `N` is the batch. BatchNorm's moving
statistics follow the real chain (what inference sees), not the synthetic
inputs.

Example:

>>> trainer = CompleteUnlockTrainer(model, mode="cdni",                 # doctest: +SKIP
...                                 optimizer=keras.optimizers.Adam(1e-3))
>>> logs = trainer.train_step(x, y)                                  # doctest: +SKIP
"""

import keras
import tensorflow as tf

from sg_keras import dni_maths
from sg_keras.engine import clone_optimizer, restore
from sg_keras.interception import GradientInterception
from sg_keras.layers import DecoupledLayer
from sg_keras.metrics import sparse_accuracy
from sg_keras.model_parts import float_state
from sg_keras.trainer import DNITrainer
from sg_keras.validation import int_at_least


def input_model(input_shape, target_shape, hidden_layers=0, hidden_units=1024, name=None):
    """The default `I_k`: flatten `x`, `hidden_layers` Dense → BatchNorm → ReLU blocks, a linear map.

    >>> input_model((28, 28), (None, 64)).output_shape
    (None, 64)
    """
    hidden_layers = int_at_least(hidden_layers, 0, "input_hidden_layers")
    layers = [keras.Input(tuple(input_shape)), keras.layers.Flatten()]
    for _ in range(hidden_layers):
        layers += [keras.layers.Dense(hidden_units), keras.layers.BatchNormalization(),
                   keras.layers.ReLU()]
    layers.append(keras.layers.Dense(target_shape[-1]))
    return keras.Sequential(layers, name=name)


def split_modules(model):
    """The modules of a Sequential chain: lists of layers, each but the last ending in a
    `DecoupledLayer`."""
    if not isinstance(model, keras.Sequential):
        raise ValueError("Complete unlock needs a keras.Sequential chain of layers, got "
                         f"{type(model).__name__}.")
    modules, current = [], []
    for layer in model.layers:
        current.append(layer)
        if isinstance(layer, DecoupledLayer):
            modules.append(current)
            current = []
    if not modules or not current:
        raise ValueError("Complete unlock needs at least one DecoupledLayer followed by more "
                         "layers (the head).")
    return modules + [current]


class CompleteUnlockTrainer(DNITrainer):
    """Trains every module of a Sequential chain on synthetic inputs and synthetic gradients.

    Args:
        model, mode, loss, optimizer, sg_optimizer, sg_target, measure_every,
        seed, jit_compile: as for `DNITrainer` (mode "dni" or "cdni"; `sg_target`
            "bootstrap" only; the other DNI options are not supported here).
        input_optimizer: optimizer of the input models. Default: a fresh copy
            of `optimizer`'s configuration.
        input_hidden_layers, input_hidden_units: shape of the default input
            models (see `input_model`).

    `train_step` returns, as tensors, `loss` and `accuracy` (of the last
    module on its synthetic input), `sg_loss/LAYER` per decoupled layer and
    `input_loss/LAYER` per module k > 1, named after its last layer. `evaluate` measures the plain chain.
    `trainer.input_models[k]` is the input model of module k + 1; they and
    their optimizer are part of `trainer.checkpoint`. There is no NaN/Inf guard
    in this mode.
    """

    def __init__(self, model, mode="dni", loss=None, optimizer=None, sg_optimizer=None, *,
                 input_optimizer=None, input_hidden_layers=0, input_hidden_units=1024,
                 seed=0, jit_compile=False):
        super().__init__(model, mode, loss, optimizer, sg_optimizer, seed=seed,
                         jit_compile=jit_compile)
        if not self.mode.decoupled:
            raise ValueError("`mode` must be 'dni' or 'cdni' for complete unlock.")
        self.modules = split_modules(model)
        self.input_models = [
            input_model(model.inputs[0].shape[1:], module[-1].output.shape, input_hidden_layers,
                        input_hidden_units, name=f"input_model{index + 2}")
            for index, module in enumerate(self.modules[:-1])]
        self.input_optimizer = (input_optimizer if input_optimizer is not None
                                else clone_optimizer(self.optimizer))
        self.input_variables = [v for m in self.input_models for v in m.trainable_variables]
        self.input_optimizer.build(self.input_variables)
        self.checkpoint.input_models = self.input_models
        self.checkpoint.input_optimizer = self.input_optimizer

    def _forward(self, module, inputs):
        """A module on its input; its DecoupledLayer acts as the layer it wraps."""
        with GradientInterception(enabled=False):
            for layer in module:
                inputs = layer(inputs, training=True)
        return inputs

    def _train_batch(self, x, y):
        context = self.engine.context(y)
        normaliser = tf.cast(tf.shape(x)[0], tf.float32)
        real, h = [], x   # the real chain: the input models' targets, BatchNorm's statistics
        for module in self.modules[:-1]:
            h = tf.stop_gradient(self._forward(module, h))
            real.append(h)
        state = float_state(self.model)
        saved = [tf.identity(v) for v in state]

        logs, grads, input_grads = {}, {}, {}
        synthetic_inputs = [x]
        for k, model in enumerate(self.input_models):   # each regresses on the real activation
            with tf.GradientTape() as tape:
                prediction = model(x, training=True)
                loss = tf.reduce_sum(tf.square(prediction - real[k])) / normaliser
            input_grads.update(zip(map(id, model.trainable_variables),
                                   tape.gradient(loss, model.trainable_variables)))
            logs[f"input_loss/{self.modules[k + 1][-1].name}"] = loss
            synthetic_inputs.append(tf.stop_gradient(prediction))

        arriving, outputs = [], []
        for k, (module, inputs) in enumerate(zip(self.modules, synthetic_inputs)):
            variables = [v for layer in module for v in _module_variables(layer)]
            sources = variables if k == 0 else [inputs] + variables   # x needs no gradient
            with tf.GradientTape() as tape:
                tape.watch(inputs)
                out = self._forward(module, inputs)
                if k == len(self.modules) - 1:
                    loss = self._loss(y, out)
                    logs["loss"], logs["accuracy"] = loss, sparse_accuracy(y, out)
            if k == len(self.modules) - 1:
                gradients = tape.gradient(loss, sources)
            else:
                with tf.GradientTape() as sg_tape:   # ĝ once: for the update and its regression
                    synthetic = module[-1].synthetic_gradient(tf.stop_gradient(out), context,
                                                              training=True)
                gradients = tape.gradient(
                    out, sources,
                    output_gradients=dni_maths.applied_gradient(synthetic, None, normaliser))
                outputs.append((sg_tape, synthetic))
            arriving.append(None if k == 0 else gradients[0])
            grads.update(zip(map(id, variables), gradients[len(sources) - len(variables):]))
        sg_grads = {}
        for k, (sg_tape, synthetic) in enumerate(outputs):   # synthesizer k: module k+1's gradient
            layer = self.modules[k][-1]
            target = dni_maths.regression_target(arriving[k + 1], normaliser)
            sg_variables = layer.synthesizer.trainable_variables
            sg_grads.update(zip(map(id, sg_variables), sg_tape.gradient(
                synthetic, sg_variables, output_gradients=dni_maths.synthesizer_output_gradient(
                    synthetic, target, normaliser))))
            logs[f"sg_loss/{layer.name}"] = dni_maths.synthesizer_loss(synthetic, target,
                                                                      normaliser)
        restore(state, saved)   # statistics: the real chain's
        network, synthesizers = self.engine.network_variables, self.engine.synthesizer_variables
        self.optimizer.apply([grads[id(v)] for v in network], network)
        self.sg_optimizer.apply([sg_grads[id(v)] for v in synthesizers], synthesizers)
        self.input_optimizer.apply([input_grads[id(v)] for v in self.input_variables],
                                   self.input_variables)
        self.step.assign_add(1)
        return logs


def _module_variables(layer):
    """A layer's trainable variables, those of a DecoupledLayer's synthesizer left out."""
    return (layer.layer if isinstance(layer, DecoupledLayer) else layer).trainable_variables
