"""`DNITrainer`: a `tf.function` training loop for backprop, DNI and cDNI."""

import keras
import numpy as np
import tensorflow as tf

from sg_keras.step import (DNIOptions, clone_optimizer, context_dim_of, decoupled_layers,
                           dni_gradients, finiteness_sums, float_state, label_context,
                           layer_metrics, record_keys, sparse_accuracy, split_variables)
from sg_keras.validation import in_interval, one_of

ON_NONFINITE = ("raise", "skip")


class NonFiniteError(FloatingPointError):
    """A training step produced NaN or Inf; its update was not applied.

    Attributes:
        step: the step number (0-based) of the bad batch.
        parts: what was not finite (the loss, a layer's synthetic gradient,
            a variable's gradient, a BatchNorm statistic).
    """

    def __init__(self, step, parts):
        self.step, self.parts = step, list(parts)
        super().__init__(f"NaN/Inf at step {step} in: {'; '.join(self.parts)}. The step's update "
                         "was not applied. Lower the learning rates, clip the synthetic gradients "
                         "(sg_clip_norm) or skip such steps (on_nonfinite='skip').")


def _restore(variables, values):
    """Puts back values that a forward pass wrote (BatchNorm statistics)."""
    for variable, value in zip(variables, values):
        variable.assign(value)


class DNITrainer:
    """Trains a Keras model with synthetic gradients (or plain backprop).

    Args:
        model: a built Keras model whose decoupled modules are wrapped in
            `DecoupledLayer`. The output must be class scores (logits unless
            `loss` says otherwise) for the accuracy metric.
        mode: "backprop" (baseline: decoupled layers pass the true gradient and
            synthesizers are idle), "dni", or "cdni" (synthesizers also see the
            one-hot label; needs layers built with `context_dim`).
        loss: Keras loss returning the batch mean. Default: sparse categorical
            cross-entropy on logits.
        optimizer: optimizer of the network. Default: Adam(1e-3).
        sg_optimizer: optimizer of the synthesizers. Default: a fresh copy of
            `optimizer`'s configuration.
        sg_target: "bootstrap" (the paper's default: each synthesizer regresses
            on the gradient arriving from the module above, itself synthetic
            except at the topmost decoupled module) or "true" (regress on the
            true `∂L/∂h`; needs a full backward pass every step: a diagnostic
            upper bound, not decoupled).
        true_gradient_every: k > 0: every k-th step (step % k == 0) regress the
            synthesizers on the true `∂L/∂h` of that batch. 0 disables it.
        measure_every: N > 0: every N-th step also make a true backward pass
            and report the cosine similarity between synthetic and true
            gradients (`cosine/LAYER`). 0 disables it.
        bp_lambda: BP(λ) mix in [0, 1]: pass down `λ·δ + (1 − λ)·ĝ/B`.
        update_prob: probability p in (0, 1] that a decoupled module updates its
            weights at a step (simulated asynchrony). With p < 1 each decoupled
            module gets its own copy of `optimizer`, whose state (moments,
            step count) advances only when the module updates, while its
            learning rate is always `optimizer`'s current one (a schedule
            follows the training step, not the module's update count). Layers
            outside any `DecoupledLayer` always update with `optimizer`, and
            synthesizers train every step.
        sg_clip_norm: if set, clip each example's synthetic gradient to this L2
            norm where it is applied.
        on_nonfinite: a step whose loss, synthetic gradients, gradients or
            updated statistics (BatchNorm) hold NaN/Inf changes nothing: no
            update is applied and the statistics are put back. "raise" (default) raises
            `NonFiniteError` naming the step and the parts, "skip" goes on
            (the step still counts, and `logs["skipped"]` is 1). An update
            that itself overflows is caught by `nonfinite_variables()`, which
            a loop should call before it saves a checkpoint.
        seed: seed of the update-probability draws.
        jit_compile: compile the step with XLA.

    `train_step(x, y)` returns a dict of scalar tensors: `loss`, `accuracy`,
    `sg_loss/LAYER` per decoupled layer, `cosine/LAYER` on measured steps and
    `updated/LAYER` when `update_prob < 1`. `evaluate` returns Python floats.
    `trainer.checkpoint` is a `tf.train.Checkpoint` of all the state: model
    (synthesizers included), both optimizers, the step and the random state.

    Example:

    >>> trainer = DNITrainer(model, mode="cdni",                      # doctest: +SKIP
    ...                      optimizer=keras.optimizers.Adam(3e-5),
    ...                      sg_optimizer=keras.optimizers.Adam(3e-5))
    >>> logs = trainer.train_step(x, y)                              # doctest: +SKIP
    >>> trainer.evaluate(x_test, y_test)                             # doctest: +SKIP
    {'loss': 0.08, 'accuracy': 0.975}
    """

    def __init__(self, model, mode="dni", loss=None, optimizer=None, sg_optimizer=None, *,
                 sg_target="bootstrap", true_gradient_every=0, measure_every=0, bp_lambda=0.0,
                 update_prob=1.0, sg_clip_norm=None, on_nonfinite="raise", seed=0,
                 jit_compile=False):
        self.options = DNIOptions(mode, sg_target, true_gradient_every, measure_every, bp_lambda)
        self.mode, self.bp_lambda = self.options.mode, self.options.bp_lambda
        self.update_prob = in_interval(update_prob, 0.0, 1.0, "update_prob", low_open=True)
        self.sg_clip_norm = (None if sg_clip_norm is None else
                             in_interval(sg_clip_norm, 0.0, float("inf"), "sg_clip_norm",
                                         low_open=True))
        self.on_nonfinite = one_of(on_nonfinite, ON_NONFINITE, "on_nonfinite")
        if not isinstance(model, keras.Model):
            raise ValueError(f"`model` must be a keras.Model, got {model!r}.")
        if not model.built:
            raise ValueError("`model` must be built: give it a keras.Input or call model.build(shape).")
        self.model = model
        self._layers = decoupled_layers(model)
        self._context_dim = context_dim_of(model)
        self.options.check_layers(self._layers, self._context_dim)
        self.loss = keras.losses.get(loss) if loss is not None else (
            keras.losses.SparseCategoricalCrossentropy(from_logits=True))
        self.optimizer = optimizer if optimizer is not None else keras.optimizers.Adam(1e-3)
        self.sg_optimizer = (sg_optimizer if sg_optimizer is not None
                             else clone_optimizer(self.optimizer))
        self.jit_compile = bool(jit_compile)
        self.network_variables, self.synthesizer_variables = split_variables(model)
        self._groups = self._module_groups()
        self._build_optimizers()
        self.step = tf.Variable(0, dtype=tf.int64, trainable=False, name="step")
        self._rng = tf.random.Generator.from_seed(int(seed))
        self.checkpoint = tf.train.Checkpoint(
            model=model, optimizer=self.optimizer, sg_optimizer=self.sg_optimizer,
            module_optimizers=[optimizer for optimizer, _ in self._groups],
            step=self.step, rng=self._rng)
        self._steps = {}
        self._check_names = {}
        self._eval_step = tf.function(self._evaluate_batch, reduce_retracing=True)
        self._inspect_step = tf.function(self._inspect_batch, reduce_retracing=True)

    def _module_groups(self):
        """(optimizer, variables) per decoupled module when update_prob < 1."""
        if self.update_prob == 1.0 or self.mode == "backprop":
            return []
        groups, seen = [], set()
        for layer in self._layers:
            variables = [v for v in layer.layer.trainable_variables if id(v) not in seen]
            seen.update(id(v) for v in variables)
            groups.append((self._module_optimizer(), variables))
        return groups

    def _module_optimizer(self):
        """A copy of `optimizer` whose learning rate is always `optimizer`'s current one."""
        config = {**self.optimizer.get_config(),
                  "learning_rate": lambda: self.optimizer.learning_rate}
        return self.optimizer.__class__.from_config(config)

    def _build_optimizers(self):
        grouped = {id(v) for _, variables in self._groups for v in variables}
        self._free_variables = [v for v in self.network_variables if id(v) not in grouped]
        pairs = [(self.optimizer, self._free_variables), (self.sg_optimizer, self.synthesizer_variables)]
        for optimizer, variables in pairs + self._groups:
            if not optimizer.built:
                optimizer.build(variables)

    def _loss(self, y, predictions):
        loss = self.loss(y, predictions)
        if self.model.losses:
            loss += tf.add_n(self.model.losses)
        return loss

    def _draw_updates(self):
        """Which decoupled modules update at this step (update_prob < 1)."""
        if not self._groups:
            return None
        return self._rng.uniform([len(self._groups)]) < self.update_prob

    def _apply(self, gradients, updated):
        """Applies the network and synthesizer updates of one step."""
        by_id = {id(v): g for v, g in zip(self.network_variables + self.synthesizer_variables,
                                          gradients)}
        self.optimizer.apply([by_id[id(v)] for v in self._free_variables], self._free_variables)
        for index, (optimizer, variables) in enumerate(self._groups):
            def apply(optimizer=optimizer, variables=variables):
                optimizer.apply([by_id[id(v)] for v in variables], variables)
                return tf.constant(True)

            tf.cond(updated[index], apply, lambda: tf.constant(False))
        if self.mode != "backprop":
            self.sg_optimizer.apply([by_id[id(v)] for v in self.synthesizer_variables],
                                    self.synthesizer_variables)
        return tf.constant(True)

    def _make_step(self, kind):
        measure, regress_on_true = kind
        decoupled = self.mode != "backprop"
        variables = self.network_variables + (self.synthesizer_variables if decoupled else [])

        state = float_state(self.model)

        def step(x, y):
            saved = [tf.identity(v) for v in state]
            result = dni_gradients(self.model, self._loss, x, y, variables,
                                   context=self._context(y), enabled=decoupled,
                                   bp_lambda=self.bp_lambda, clip_norm=self.sg_clip_norm,
                                   measure=measure, regress_on_true=regress_on_true)
            sums = finiteness_sums(result, variables, state)
            self._check_names[kind] = list(sums)
            finite = tf.math.is_finite(tf.stack(list(sums.values())))
            updated = self._draw_updates()
            applied = tf.reduce_all(finite)

            def skip():
                _restore(state, saved)
                return tf.constant(False)

            tf.cond(applied, lambda: self._apply(result.gradients, updated), skip)
            self.step.assign_add(1)
            logs = {"loss": result.loss, "accuracy": sparse_accuracy(y, result.predictions),
                    **layer_metrics(result)}
            for index, layer in enumerate(self._layers if updated is not None else []):
                logs[f"updated/{layer.name}"] = tf.cast(updated[index] & applied, tf.float32)
            return logs, finite

        return tf.function(step, jit_compile=self.jit_compile, reduce_retracing=True)

    def _context(self, y):
        return label_context(y, self._context_dim) if self.mode == "cdni" else None

    def step_kind(self, step):
        """`(measure, regress_on_true)` for a step number: which traced step runs."""
        return self.options.step_kind(step)

    def train_step(self, x, y):
        """Runs one training step on a batch; returns a dict of scalar tensors.

        Raises:
            NonFiniteError: NaN/Inf in the step and `on_nonfinite="raise"`.
        """
        step = int(self.step.numpy())
        kind = self.step_kind(step)
        if kind not in self._steps:
            self._steps[kind] = self._make_step(kind)
        logs, finite = self._steps[kind](x, y)
        finite = finite.numpy()
        if not finite.all():
            bad = [name for name, ok in zip(self._check_names[kind], finite) if not ok]
            if self.on_nonfinite == "raise":
                raise NonFiniteError(step, bad)
        if self.on_nonfinite == "skip":
            logs["skipped"] = tf.constant(0.0 if finite.all() else 1.0)
        return logs

    def nonfinite_variables(self):
        """Paths of the weights and optimizer variables that hold NaN or Inf.

        The step checks everything before its update, but an update can still
        overflow (e.g. a learning rate far too large); check this before
        saving a checkpoint.
        """
        optimizers = [self.optimizer, self.sg_optimizer] + [o for o, _ in self._groups]
        variables = self.model.variables + [v for o in optimizers for v in o.variables]
        return [v.path for v in variables
                if "float" in str(v.dtype) and not np.isfinite(v.numpy()).all()]

    def _inspect_batch(self, x, y):
        state = self.model.non_trainable_variables
        saved = [tf.identity(v) for v in state]
        result = dni_gradients(self.model, self._loss, x, y, [], context=self._context(y),
                               measure=True)
        _restore(state, saved)
        batch = tf.cast(tf.shape(x)[0], tf.float32)
        return {key: {"activation": record.activation, "synthetic": record.synthetic,
                      "true": true_gradient * batch}
                for key, record, true_gradient in zip(record_keys(result.records),
                                                      result.records, result.true_gradients)}

    def inspect(self, x, y):
        """Synthetic and true gradients at every decoupled layer for one batch.

        Runs the training-mode forward pass and a true backward pass, then
        restores the non-trainable state (BatchNorm statistics): nothing
        changes. Both gradients are per example (`B·∂L/∂h` for the true one).

        Returns:
            `{layer: {"activation": h, "synthetic": ĝ, "true": B·∂L/∂h}}` as
            numpy arrays; empty in backprop mode.
        """
        if self.mode == "backprop":
            return {}
        result = self._inspect_step(x, y)
        return {key: {name: value.numpy() for name, value in parts.items()}
                for key, parts in result.items()}

    def _evaluate_batch(self, x, y):
        predictions = self.model(x, training=False)
        count = tf.cast(tf.shape(predictions)[0], tf.float32)
        return (self.loss(y, predictions) * count, sparse_accuracy(y, predictions) * count, count)

    def evaluate(self, x, y=None, batch_size=1024):
        """Mean loss and accuracy over `(x, y)` arrays or a batched `tf.data.Dataset`.

        Returns:
            `{"loss": float, "accuracy": float}`.
        """
        batches = x if y is None else tf.data.Dataset.from_tensor_slices((x, y)).batch(batch_size)
        loss = correct = count = 0.0
        for batch_x, batch_y in batches:
            batch_loss, batch_correct, batch_count = self._eval_step(batch_x, batch_y)
            loss += float(batch_loss)
            correct += float(batch_correct)
            count += float(batch_count)
        if not count:
            raise ValueError("`evaluate` got no examples.")
        return {"loss": loss / count, "accuracy": correct / count}
