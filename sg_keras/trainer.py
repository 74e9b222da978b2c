"""`DNITrainer`: a `tf.function` training loop for backprop, DNI and cDNI."""

import contextlib

import keras
import numpy as np
import tensorflow as tf

from sg_keras import distribute, evaluation
from sg_keras.engine import StepEngine, has_value, restore
from sg_keras.metrics import accuracy, interception_keys
from sg_keras.optimizers import clone_optimizer
from sg_keras.options import DNIOptions, OnNonFinite
from sg_keras.step_logs import LogWindow


class DNITrainer:
    """Trains a Keras model with synthetic gradients (or plain backprop).

    Args:
        model: a built Keras model whose decoupled modules are wrapped in
            `DecoupledLayer`. Labels may have any shape the loss accepts;
            the accuracy metric needs class scores (see
            `sg_keras.metrics.accuracy`). Float16 layers (`mixed_float16`)
            are refused; `mixed_bfloat16` trains.
        mode: "backprop" (baseline: decoupled layers pass the true gradient and
            synthesizers are idle), "dni", or "cdni" (synthesizers also see the
            one-hot label, per example or, for labels `(batch, T)`, per
            position; see `model_parts.label_context`; needs layers built with
            `context_dim`).
        loss: Keras loss returning the batch mean. Default: sparse categorical
            cross-entropy on logits.
        optimizer: optimizer of the network. Default: Adam(1e-3).
        sg_optimizer: optimizer of the synthesizers. Default: a fresh copy of
            `optimizer`'s configuration.
        options: a `DNIOptions` holding `mode` and every option below at once
            (e.g. one saved with a run); the keywords are a convenience for
            the same: give one or the other, not both. An option left out
            (None) takes its `DNIOptions` default: mode "dni", sg_target
            "bootstrap", no true targets, no measurements, λ = 0, p = 1, no
            clipping, on_nonfinite "raise", synthesizers trained every step.
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
            update is applied and the statistics are put back (decided on the
            device). "raise" (default) raises `NonFiniteError` naming the step
            and the parts (from `train_step`; under XLA from the next
            `check_finite()`, and every step after the bad one is refused
            until then), "skip" goes on (the step still counts, and
            `logs["skipped"]` is 1). "skip_module" decides per update group
            instead of per step: each decoupled module (its gradients, ĝ and
            statistics), the rest of the network (with the loss) and the
            synthesizers skip only their own non-finite update, and a
            module's update waits for no op above its interception (update
            unlocking on placed devices; `logs["skipped"]` is 1 when any
            group skipped, `updated/LAYER` says which modules applied).
            An update that itself overflows is
            caught by `nonfinite_variables()`, which a loop should call
            before it saves a checkpoint.
        synth_update_every: k >= 1: the synthesizers train on every k-th step
            (step % k == 0) and on every measured or true-target step; on the
            others they only predict the ĝ that their modules apply, which
            skips the regression target (the input gradient of the module
            above), the synthesizers' backward pass and their optimizer
            update: a cheaper step (see bench/speed.py). `sg_loss/LAYER`
            averages over the training steps only.
        seed: seed of the update-probability draws.
        jit_compile: compile the step with XLA (not with a `strategy`).
        strategy: a `tf.distribute.Strategy` to train data-parallel on its
            replicas (None: one device). Build the model (and any optimizer
            given) under `strategy.scope()`. `train_step(x, y)` then takes
            the global batch (each replica trains on its equal slice; it
            must divide by the number of replicas) or per-replica values
            from `trainer.distribute_dataset`; `loss` must be a Keras loss
            with a mean reduction (Keras divides it by the number of
            replicas). `R` replicas on a global batch make the update of one
            device on that whole batch, and the logs are global.

    `train_step(x, y)` returns a dict of scalar tensors without waiting for
    them (no host round trip): `loss`, `accuracy` (for class labels only),
    `sg_loss/LAYER` per
    decoupled layer, `cosine/LAYER` when `measure_every` or a true target is
    set (NaN on steps that do not measure), `updated/LAYER` when
    `update_prob < 1` or `on_nonfinite="skip_module"`, and `skipped` with
    `on_nonfinite="skip"` or `"skip_module"`. `evaluate`
    returns Python floats. `trainer.checkpoint` is a `tf.train.Checkpoint` of
    all the state: model (synthesizers included), every optimizer, the step
    counter `trainer.iterations` (the steps run, refused ones included) and
    the seed of the update draws. `trainer.options` is the `DNIOptions`.
    Every step also adds its logs to `trainer.log_window` on the device: a
    loop calls `trainer.log_window.read()` at its log points for the means
    since the previous read (cosines over the measured steps only).

    Example:

    >>> model = keras.Sequential([keras.Input((4,)),
    ...                           DecoupledLayer(keras.layers.Dense(8), context_dim=3,
    ...                                          name="dni1"),
    ...                           keras.layers.Dense(3)])
    >>> trainer = DNITrainer(model, mode="cdni",
    ...                      optimizer=keras.optimizers.Adam(1e-3),
    ...                      sg_optimizer=keras.optimizers.Adam(1e-3))
    >>> x, y = np.ones((6, 4), "float32"), np.array([0, 1, 2, 0, 1, 2])
    >>> sorted(trainer.train_step(x, y))
    ['accuracy', 'loss', 'sg_loss/dni1']
    >>> sorted(trainer.evaluate(x, y))
    ['accuracy', 'loss']
    """

    def __init__(self, model, mode=None, loss=None, optimizer=None, sg_optimizer=None, *,
                 options=None, sg_target=None, true_gradient_every=None, measure_every=None,
                 bp_lambda=None, update_prob=None, sg_clip_norm=None, on_nonfinite=None,
                 synth_update_every=None, seed=0, jit_compile=False, strategy=None):
        self.options = DNIOptions.of(
            options, mode=mode, sg_target=sg_target, true_gradient_every=true_gradient_every,
            measure_every=measure_every, bp_lambda=bp_lambda, update_prob=update_prob,
            sg_clip_norm=sg_clip_norm, on_nonfinite=on_nonfinite,
            synth_update_every=synth_update_every)
        if not isinstance(model, keras.Model):
            raise ValueError(f"`model` must be a keras.Model, got {model!r}.")
        if not model.built:
            raise ValueError("`model` must be built: give it a keras.Input or call model.build(shape).")
        self.model = model
        self.mode = self.options.mode
        self.loss = keras.losses.get(loss) if loss is not None else (
            keras.losses.SparseCategoricalCrossentropy(from_logits=True))
        self.jit_compile = bool(jit_compile)
        self.strategy = strategy
        if strategy is not None:
            self._check_strategy(jit_compile)
        with strategy.scope() if strategy is not None else contextlib.nullcontext():
            self.optimizer = optimizer if optimizer is not None else keras.optimizers.Adam(1e-3)
            self.sg_optimizer = (sg_optimizer if sg_optimizer is not None
                                 else clone_optimizer(self.optimizer))
            self.engine = StepEngine(model, self.options, self.optimizer, self.sg_optimizer, seed)
            self.iterations = tf.Variable(0, dtype=tf.int64, trainable=False, name="step")
        if strategy is not None:
            for name in ("optimizer", "sg_optimizer"):
                distribute.check_created_in_scope(strategy, getattr(self, name).variables, name)
        self.checkpoint = tf.train.Checkpoint(
            model=model, optimizer=self.optimizer, sg_optimizer=self.sg_optimizer,
            module_optimizers=self.engine.module_optimizers, step=self.iterations,
            seed=self.engine.seed)
        self.log_window = LogWindow()
        train = self._train_batch if strategy is None else self._train_replicas
        self._train = tf.function(lambda x, y: self.log_window.add(train(x, y)),
                                  jit_compile=self.jit_compile, reduce_retracing=True)
        self._eval_step = evaluation.compiled_batch_sums(model, self.loss)
        self._inspect_step = tf.function(self._inspect_batch, reduce_retracing=True)

    def _check_strategy(self, jit_compile):
        if jit_compile:
            raise ValueError("`jit_compile`: not supported with a `strategy`.")
        distribute.check_created_in_scope(self.strategy, self.model.variables, "model")
        if not (isinstance(self.loss, keras.losses.Loss)
                and self.loss.reduction in ("sum_over_batch_size", "mean")):
            raise ValueError("`loss`: with a `strategy` it must be a keras.losses.Loss with a "
                             f"mean reduction (Keras scales it per replica), got {self.loss!r}.")

    def _loss(self, y, predictions):
        loss = self.loss(y, predictions)
        if self.model.losses:
            loss += distribute.replica_share(tf.add_n(self.model.losses))
        return loss

    def _train_batch(self, x, y):
        logs = self._step_logs(x, y)
        self.iterations.assign_add(1)
        return logs

    def _train_replicas(self, x, y):
        """`_train_batch` under the strategy: `x, y` global batches or per-replica values."""
        split = not isinstance(x, tf.distribute.DistributedValues)

        def replica_step(x, y):
            if split:
                x, y = distribute.local_part(x), distribute.local_part(y)
            return self._step_logs(x, y)

        logs = self.strategy.run(replica_step, args=(x, y))
        self.iterations.assign_add(1)
        return distribute.first_replica(self.strategy, logs)

    def distribute_dataset(self, dataset):
        """`dataset` (of global batches) split over the strategy's replicas, for `train_step`."""
        if self.strategy is None:
            return dataset
        return self.strategy.experimental_distribute_dataset(dataset)

    def _step_logs(self, x, y):
        """One engine step on this replica's batch; the logs (global values on every replica)."""
        out = self.engine.step(x, y, self.iterations, self._loss, distribute.global_batch(x))
        logs = {"loss": distribute.sum_over_replicas(out.loss)}
        correct = accuracy(y, out.predictions)
        if correct is not None:
            logs["accuracy"] = distribute.mean_over_replicas(correct)
        for key, value in out.metrics.items():
            logs[key] = tf.where(has_value(key, out), value, np.nan)
        for layer, updated in zip(self.engine.layers if out.updated is not None else [],
                                  tf.unstack(out.updated) if out.updated is not None else []):
            logs[f"updated/{layer.name}"] = tf.cast(updated, tf.float32)
        if self.options.on_nonfinite is not OnNonFinite.RAISE:
            logs["skipped"] = 1.0 - tf.cast(out.applied, tf.float32)
        return logs

    def step_kind(self, step):
        """`(measure, regress_on_true, train_synthesizers)` of a step number: which kind of step
        it makes."""
        return self.options.step_kind(step)

    def train_step(self, x, y):
        """Runs one training step on a batch; returns a dict of scalar tensors.

        Raises:
            NonFiniteError: NaN/Inf in the step and `on_nonfinite="raise"`.
        """
        try:
            return self._train(x, y)
        except tf.errors.InvalidArgumentError:
            self.engine.raise_if_nonfinite()
            raise

    def check_finite(self):
        """Raises `NonFiniteError` if a step was refused for NaN/Inf (a host sync)."""
        self.engine.raise_if_nonfinite()

    def nonfinite_variables(self):
        """Paths of the weights and optimizer variables that hold NaN or Inf.

        The step checks everything before its update, but an update can still
        overflow (e.g. a learning rate far too large); check this before
        saving a checkpoint.
        """
        variables = self.model.variables + [v for o in self.engine.optimizers()
                                            for v in o.variables]
        return [v.path for v in variables
                if "float" in str(v.dtype) and not np.isfinite(v.numpy()).all()]

    def _inspect_batch(self, x, y):
        state = self.model.non_trainable_variables
        saved = [tf.identity(v) for v in state]
        result = self.engine.gradients(x, y, self._loss, [], measure=True)
        restore(state, saved)
        batch = tf.cast(tf.shape(x)[0], tf.float32)
        return {key: {"activation": i.activation, "synthetic": i.synthetic,
                      "true": tf.cast(true_gradient, tf.float32) * batch}
                for key, i, true_gradient in zip(interception_keys(result.interceptions),
                                                 result.interceptions, result.true_gradients)}

    def inspect(self, x, y):
        """Synthetic and true gradients at every decoupled layer for one batch.

        Runs the training-mode forward pass and a true backward pass, then
        restores the non-trainable state (BatchNorm statistics): nothing
        changes. Both gradients are per example (`B·∂L/∂h` for the true one).

        Returns:
            `{layer: {"activation": h, "synthetic": ĝ, "true": B·∂L/∂h}}` as
            numpy arrays; empty in backprop mode.
        """
        if not self.mode.decoupled:
            return {}
        result = self._inspect_step(x, y)
        return {key: {name: value.numpy() for name, value in parts.items()}
                for key, parts in result.items()}

    def evaluate(self, x, y=None, batch_size=1024):
        """Mean loss and accuracy over `(x, y)` arrays or a batched `tf.data.Dataset`.

        The accuracy is that of `sg_keras.metrics.accuracy` (over every
        position for labels per position); there is none for labels that are
        not classes (e.g. regression targets).

        Returns:
            `{"loss": float, "accuracy": float}`, without "accuracy" where it
            does not apply.
        """
        return evaluation.evaluate_batches(self._eval_step, x, y, batch_size)
