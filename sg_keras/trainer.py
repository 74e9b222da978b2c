"""`DNITrainer`: a `tf.function` training loop for backprop, DNI and cDNI."""

import keras
import tensorflow as tf

from sg_keras.step import (context_dim_of, decoupled_layers, dni_gradients, label_context,
                           layer_metrics, sparse_accuracy, split_variables)
from sg_keras.validation import in_interval, int_at_least, one_of

MODES = ("backprop", "dni", "cdni")
SG_TARGETS = ("bootstrap", "true")


def _due(step, every):
    return bool(every) and step % every == 0


def _clone_optimizer(optimizer):
    return optimizer.__class__.from_config(optimizer.get_config())


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
            module gets its own copy of `optimizer`, whose state advances only
            when the module updates; layers outside any `DecoupledLayer` always
            update, and synthesizers train every step.
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
                 update_prob=1.0, seed=0, jit_compile=False):
        self.mode = one_of(mode, MODES, "mode")
        self.sg_target = one_of(sg_target, SG_TARGETS, "sg_target")
        self.true_gradient_every = int_at_least(true_gradient_every, 0, "true_gradient_every")
        self.measure_every = int_at_least(measure_every, 0, "measure_every")
        self.bp_lambda = in_interval(bp_lambda, 0.0, 1.0, "bp_lambda")
        self.update_prob = in_interval(update_prob, 0.0, 1.0, "update_prob", low_open=True)
        if not isinstance(model, keras.Model):
            raise ValueError(f"`model` must be a keras.Model, got {model!r}.")
        if not model.built:
            raise ValueError("`model` must be built: give it a keras.Input or call model.build(shape).")
        self.model = model
        self._layers = decoupled_layers(model)
        self._context_dim = context_dim_of(model)
        self._check_mode()
        self.loss = keras.losses.get(loss) if loss is not None else (
            keras.losses.SparseCategoricalCrossentropy(from_logits=True))
        self.optimizer = optimizer if optimizer is not None else keras.optimizers.Adam(1e-3)
        self.sg_optimizer = (sg_optimizer if sg_optimizer is not None
                             else _clone_optimizer(self.optimizer))
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
        self._eval_step = tf.function(self._evaluate_batch, reduce_retracing=True)

    def _check_mode(self):
        if self.mode != "backprop" and not self._layers:
            raise ValueError(f"`mode`={self.mode!r} needs at least one DecoupledLayer in the model; "
                             "use mode='backprop' for a plain model.")
        if self.mode == "dni" and self._context_dim is not None:
            raise ValueError("`mode`='dni' but the model's DecoupledLayers have context_dim="
                             f"{self._context_dim}: use mode='cdni', or build them without it.")
        if self.mode == "cdni" and self._context_dim is None:
            raise ValueError("`mode`='cdni' needs DecoupledLayers built with `context_dim` "
                             "(the number of classes).")

    def _module_groups(self):
        """(optimizer, variables) per decoupled module when update_prob < 1."""
        if self.update_prob == 1.0 or self.mode == "backprop":
            return []
        groups, seen = [], set()
        for layer in self._layers:
            variables = [v for v in layer.layer.trainable_variables if id(v) not in seen]
            seen.update(id(v) for v in variables)
            groups.append((_clone_optimizer(self.optimizer), variables))
        return groups

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

    def _apply_network(self, gradients):
        """Applies the network update; returns the `updated/LAYER` metrics."""
        by_id = {id(v): g for v, g in zip(self.network_variables, gradients)}
        self.optimizer.apply([by_id[id(v)] for v in self._free_variables], self._free_variables)
        if not self._groups:
            return {}
        updated = self._rng.uniform([len(self._groups)]) < self.update_prob
        metrics = {}
        for index, (layer, (optimizer, variables)) in enumerate(zip(self._layers, self._groups)):
            grads = [by_id[id(v)] for v in variables]

            def apply(optimizer=optimizer, grads=grads, variables=variables):
                optimizer.apply(grads, variables)
                return tf.constant(True)

            tf.cond(updated[index], apply, lambda: tf.constant(False))
            metrics[f"updated/{layer.name}"] = tf.cast(updated[index], tf.float32)
        return metrics

    def _make_step(self, measure, regress_on_true):
        decoupled = self.mode != "backprop"
        variables = self.network_variables + (self.synthesizer_variables if decoupled else [])

        def step(x, y):
            context = label_context(y, self._context_dim) if self.mode == "cdni" else None
            result = dni_gradients(self.model, self._loss, x, y, variables, context=context,
                                   enabled=decoupled, bp_lambda=self.bp_lambda, measure=measure,
                                   regress_on_true=regress_on_true)
            count = len(self.network_variables)
            metrics = self._apply_network(result.gradients[:count])
            if decoupled:
                self.sg_optimizer.apply(result.gradients[count:], self.synthesizer_variables)
            self.step.assign_add(1)
            return {"loss": result.loss, "accuracy": sparse_accuracy(y, result.predictions),
                    **layer_metrics(result), **metrics}

        return tf.function(step, jit_compile=self.jit_compile, reduce_retracing=True)

    def step_kind(self, step):
        """`(measure, regress_on_true)` for a step number: which traced step runs."""
        if self.mode == "backprop":
            return False, False
        regress = self.sg_target == "true" or _due(step, self.true_gradient_every)
        return regress or _due(step, self.measure_every), regress

    def train_step(self, x, y):
        """Runs one training step on a batch; returns a dict of scalar tensors."""
        kind = self.step_kind(int(self.step.numpy()))
        if kind not in self._steps:
            self._steps[kind] = self._make_step(*kind)
        return self._steps[kind](x, y)

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
