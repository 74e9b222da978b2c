"""Complete unlock: every module trains on a synthetic input and a synthetic gradient.

A Sequential chain is cut into the stages of `sg_keras.placement.split_stages`
(one cut after each top-level `DecoupledLayer`); here each stage is a
*module*. Module k > 1 owns an *input model* `I_k ≈ h_{k−1}`: a small Keras
model of the network input (and, with `input_context=True`, of the one-hot
label). In a training step, every module runs on its own:

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

>>> model = keras.Sequential([keras.Input((4,)),
...                           DecoupledLayer(keras.layers.Dense(3), name="dni1"),
...                           keras.layers.Dense(2, name="logits")])
>>> trainer = CompleteUnlockTrainer(model, mode="dni")
>>> sorted(trainer.train_step(np.zeros((2, 4), "float32"), np.array([0, 1])))
['accuracy', 'input_loss/logits', 'loss', 'sg_loss/dni1']
"""

import keras
import numpy as np
import tensorflow as tf

from sg_keras import dni_maths, evaluation
from sg_keras.engine import restore
from sg_keras.metrics import accuracy
from sg_keras.model_parts import context_dim_of, float_state, label_context
from sg_keras.optimizers import clone_optimizer
from sg_keras.options import DNIOptions
from sg_keras.placement import split_stages
from sg_keras.step_logs import LogWindow
from sg_keras.validation import ArgumentError, int_at_least


def input_model(input_shape, target_shape, hidden_layers=0, hidden_units=1024, context_dim=None,
                seed=None, name=None):
    """The default `I_k`: flatten `x`, `hidden_layers` Dense → BatchNorm → ReLU blocks, a linear map.

    With `context_dim`, the model reads the flattened `x` and the one-hot
    label concatenated: one input of `prod(input_shape) + context_dim`
    features (the label is known while training, and input models are not
    used at inference). `seed` seeds the initial weights (None: Keras' global
    random state).

    >>> input_model((28, 28), (None, 64)).output_shape
    (None, 64)
    >>> input_model((28, 28), (None, 64), context_dim=10).input_shape
    (None, 794)
    """
    hidden_layers = int_at_least(hidden_layers, 0, "input_hidden_layers")
    features = int(np.prod(input_shape)) + (context_dim or 0)
    seeds = [None] * (hidden_layers + 1) if seed is None else range(seed, seed + hidden_layers + 1)
    dense = [keras.layers.Dense(units, kernel_initializer=keras.initializers.GlorotUniform(s))
             for units, s in zip([hidden_units] * hidden_layers + [target_shape[-1]], seeds)]
    layers = [keras.Input((features,))]
    for layer in dense[:-1]:
        layers += [layer, keras.layers.BatchNormalization(), keras.layers.ReLU()]
    layers.append(dense[-1])
    return keras.Sequential(layers, name=name)


class CompleteUnlockTrainer:
    """Trains every module of a Sequential chain on synthetic inputs and synthetic gradients.

    Args:
        model: a built `keras.Sequential` whose top-level `DecoupledLayer`s
            cut it into modules (`split_stages`); the last module's output
            is the class scores.
        mode: "dni" (the default) or "cdni" (the synthesizers see the one-hot
            label).
        options: a `DNIOptions` instead of `mode` (not both); its other
            options must keep their defaults.
        loss: a Keras loss. Default: sparse categorical cross-entropy on logits.
        optimizer: optimizer of the network. Default: Adam(1e-3).
        sg_optimizer: optimizer of the synthesizers. Default: a fresh copy of
            `optimizer`'s configuration.
        input_optimizer: optimizer of the input models. Default: a fresh copy
            of `optimizer`'s configuration.
        input_hidden_layers, input_hidden_units: shape of the input models
            (see `input_model`). Default: one hidden layer of 256 units. On
            MNIST, linear input models (`input_hidden_layers=0`) miss 20-34 %
            of the held-out variance of the real inputs, and the modules
            trained on them compose into a 4-layer cDNI FCN at 6.7 % test
            error after 5 epochs, against 4.0 % with the default
            (`bench/unlock_inputs.py`).
        input_context: the input models also read the one-hot label.
        seed: seeds the input models' initial weights (None: Keras' global
            random state); complete unlock draws no other random numbers.
        jit_compile: compile the step with XLA.

    The synthesizers always regress on the bootstrapped gradient arriving from
    the module above; the other DNI options do not apply here.

    `train_step` returns, as tensors, `loss` and `accuracy` (of the last
    module on its synthetic input), `sg_loss/LAYER` per decoupled layer and
    `input_loss/LAYER` per module k > 1, named after its last layer.
    `evaluate` measures the plain chain. `trainer.stages` are the modules,
    `trainer.input_models[k]` is the input model of module k + 2 (the first
    module reads `x`); they and their optimizer are part of
    `trainer.checkpoint`. There is no NaN/Inf guard in this mode:
    `check_finite` does nothing, `nonfinite_variables` lists the bad weights.

    Example:

    >>> model = keras.Sequential([keras.Input((4,)),
    ...                           DecoupledLayer(keras.layers.Dense(8), context_dim=3,
    ...                                          name="dni1"),
    ...                           keras.layers.Dense(3, name="head")])
    >>> trainer = CompleteUnlockTrainer(model, mode="cdni",
    ...                                 optimizer=keras.optimizers.Adam(1e-3))
    >>> x, y = np.ones((6, 4), "float32"), np.array([0, 1, 2, 0, 1, 2])
    >>> sorted(trainer.train_step(x, y))   # the head trains on I(x), not on dni1's output
    ['accuracy', 'input_loss/head', 'loss', 'sg_loss/dni1']

    Raises:
        ValueError: `mode` is not "dni" or "cdni", or `model` cannot be cut
            into modules (see `split_stages`).
    """

    def __init__(self, model, mode=None, loss=None, optimizer=None, sg_optimizer=None, *,
                 options=None, input_optimizer=None, input_hidden_layers=1,
                 input_hidden_units=256, input_context=False, seed=0, jit_compile=False):
        self.options = DNIOptions.of(options, mode=mode)
        self.options.unsupported([name for name in self.options.as_dict() if name != "mode"],
                                 "complete unlock")
        self.mode = self.options.mode
        if not self.mode.decoupled:
            raise ArgumentError("mode", "must be 'dni' or 'cdni' for complete unlock.")
        if not isinstance(model, keras.Model) or not model.built:
            raise ArgumentError("model", f"must be a built keras.Model, got {model!r}.")
        self.model = model
        self.stages = split_stages(model)
        self.loss = keras.losses.get(loss) if loss is not None else (
            keras.losses.SparseCategoricalCrossentropy(from_logits=True))
        self.optimizer = optimizer if optimizer is not None else keras.optimizers.Adam(1e-3)
        self.sg_optimizer = (sg_optimizer if sg_optimizer is not None
                             else clone_optimizer(self.optimizer))
        self.input_optimizer = (input_optimizer if input_optimizer is not None
                                else clone_optimizer(self.optimizer))
        self.context_dim = context_dim_of(model) if self.mode.uses_context else None
        self.input_context = bool(input_context)
        if self.input_context and self.context_dim is None:
            raise ArgumentError("input_context", "needs the label's size: use mode='cdni' with "
                                                 "DecoupledLayers built with `context_dim`.")
        self.input_models = [
            input_model(model.inputs[0].shape[1:], stage.layers[-1].output.shape,
                        input_hidden_layers, input_hidden_units,
                        self.context_dim if self.input_context else None,
                        seed=None if seed is None else seed + 100 * index,
                        name=f"input_model{index + 2}")
            for index, stage in enumerate(self.stages[:-1])]
        self.network_variables = [v for stage in self.stages for v in stage.network_variables]
        self.synthesizer_variables = [v for s in self.stages for v in s.synthesizer_variables]
        self.input_variables = [v for m in self.input_models for v in m.trainable_variables]
        for optimizer_, variables in ((self.optimizer, self.network_variables),
                                      (self.sg_optimizer, self.synthesizer_variables),
                                      (self.input_optimizer, self.input_variables)):
            optimizer_.build(variables)
        self.iterations = tf.Variable(0, dtype=tf.int64, trainable=False, name="step")
        self.checkpoint = tf.train.Checkpoint(
            model=model, optimizer=self.optimizer, sg_optimizer=self.sg_optimizer,
            input_models=self.input_models, input_optimizer=self.input_optimizer, step=self.iterations)
        self.log_window = LogWindow()
        self._train = tf.function(lambda x, y: self.log_window.add(self._train_batch(x, y)),
                                  jit_compile=bool(jit_compile), reduce_retracing=True)
        self._eval_step = evaluation.compiled_batch_sums(model, self.loss)
        self._inspect_step = tf.function(self._inspect_batch, reduce_retracing=True)

    def _context(self, y):
        return None if self.context_dim is None else label_context(y, self.context_dim)

    def _input_model_input(self, x, context):
        flat = tf.reshape(x, [tf.shape(x)[0], -1])
        return tf.concat([flat, context], axis=-1) if self.input_context else flat

    def _train_batch(self, x, y):
        context = self._context(y)
        normaliser = tf.cast(tf.shape(x)[0], tf.float32)
        real, h = [], x   # the real chain: the input models' targets, BatchNorm's statistics
        for stage in self.stages[:-1]:
            h = tf.stop_gradient(stage.forward(h))
            real.append(h)
        state = float_state(self.model)
        saved = [tf.identity(v) for v in state]

        logs, grads = {}, {}
        synthetic_inputs = [x]
        features = self._input_model_input(x, context)
        for k, model in enumerate(self.input_models):   # each regresses on the real activation
            with tf.GradientTape() as tape:
                prediction = model(features, training=True)
                loss = tf.reduce_sum(tf.square(prediction - real[k])) / normaliser
            grads.update(zip(map(id, model.trainable_variables),
                             tape.gradient(loss, model.trainable_variables)))
            logs[f"input_loss/{self.stages[k + 1].layers[-1].name}"] = loss
            synthetic_inputs.append(tf.stop_gradient(prediction))

        arriving, synthesized = [], []
        for k, (stage, inputs) in enumerate(zip(self.stages, synthetic_inputs)):
            variables = stage.network_variables
            sources = variables if k == 0 else [inputs] + variables   # x needs no gradient
            with tf.GradientTape() as tape:
                tape.watch(inputs)
                out = stage.forward(inputs)
                if stage.boundary is None:
                    loss = self._loss(y, out)
                    logs["loss"], logs["accuracy"] = loss, accuracy(y, out)
            if stage.boundary is None:
                gradients = tape.gradient(loss, sources)
            else:
                with tf.GradientTape() as sg_tape:   # ĝ once: for the update and its regression
                    synthetic = stage.boundary.synthetic_gradient(tf.stop_gradient(out), context,
                                                                  training=True)
                gradients = tape.gradient(
                    out, sources,
                    output_gradients=dni_maths.applied_gradient(synthetic, None, normaliser))
                synthesized.append((sg_tape, synthetic))
            arriving.append(None if k == 0 else gradients[0])
            grads.update(zip(map(id, variables), gradients[len(sources) - len(variables):]))
        for k, (sg_tape, synthetic) in enumerate(synthesized):   # k: module k+1's gradient
            boundary = self.stages[k].boundary
            target = dni_maths.regression_target(arriving[k + 1], normaliser)
            sg_variables = self.stages[k].synthesizer_variables
            grads.update(zip(map(id, sg_variables), sg_tape.gradient(
                synthetic, sg_variables, output_gradients=dni_maths.synthesizer_output_gradient(
                    synthetic, target, normaliser))))
            logs[f"sg_loss/{boundary.name}"] = dni_maths.synthesizer_loss(synthetic, target,
                                                                         normaliser)
        restore(state, saved)   # statistics: the real chain's
        for optimizer, variables in ((self.optimizer, self.network_variables),
                                     (self.sg_optimizer, self.synthesizer_variables),
                                     (self.input_optimizer, self.input_variables)):
            optimizer.apply([grads[id(v)] for v in variables], variables)
        self.iterations.assign_add(1)
        return logs

    def _loss(self, y, predictions):
        loss = self.loss(y, predictions)
        return loss + tf.add_n(self.model.losses) if self.model.losses else loss

    def train_step(self, x, y):
        """Runs one training step on a batch; returns a dict of scalar tensors."""
        return self._train(x, y)

    def check_finite(self):
        """Does nothing: complete unlock has no NaN/Inf guard (check `nonfinite_variables()`
        before a checkpoint)."""

    def nonfinite_variables(self):
        """Paths of the weights (input models included) and optimizer variables holding NaN/Inf."""
        variables = (self.model.variables + [v for m in self.input_models for v in m.variables]
                     + [v for o in (self.optimizer, self.sg_optimizer, self.input_optimizer)
                        for v in o.variables])
        return [v.path for v in variables
                if "float" in str(v.dtype) and not np.isfinite(v.numpy()).all()]

    def _inspect_batch(self, x, y):
        state = float_state(self.model)
        saved = [tf.identity(v) for v in state]
        context = self._context(y)
        activations, h = [], x
        with tf.GradientTape() as tape:
            for stage in self.stages:
                h = stage.forward(h)
                activations.append(h)
            loss = self._loss(y, h)
        true = tape.gradient(loss, activations[:-1])
        restore(state, saved)
        batch = tf.cast(tf.shape(x)[0], tf.float32)
        return {stage.boundary.name: {
                    "activation": h, "true": g * batch,
                    "synthetic": stage.boundary.synthetic_gradient(h, context)}
                for stage, h, g in zip(self.stages, activations, true)}

    def inspect(self, x, y):
        """Synthetic and true gradients at every decoupled layer for one batch of the real chain.

        Runs the real chain in training mode and a true backward pass, then
        restores the BatchNorm statistics: nothing changes. Both gradients are
        per example (`B·∂L/∂h` for the true one).

        Returns:
            `{layer: {"activation": h, "synthetic": ĝ, "true": B·∂L/∂h}}` as
            numpy arrays.
        """
        return {key: {name: value.numpy() for name, value in parts.items()}
                for key, parts in self._inspect_step(x, y).items()}

    def evaluate(self, x, y=None, batch_size=1024):
        """Mean loss and accuracy of the plain chain over `(x, y)` arrays or a batched dataset
        (as `DNITrainer.evaluate`).

        Returns:
            `{"loss": float, "accuracy": float}`.
        """
        return evaluation.evaluate_batches(self._eval_step, x, y, batch_size)
