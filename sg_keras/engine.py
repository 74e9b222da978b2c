"""The DNI step engine: one training step for every front end.

`DNITrainer` (custom loop) and `DNIModel` (`compile`/`fit`) both build a
`StepEngine` and call `engine.step(x, y, step, loss_fn)` inside their traced
step. The engine

* runs the forward pass in a `GradientInterception` scope and takes the
  gradients (`dni_gradients`): for the network the DNI updates, for the
  synthesizers their regression gradients; on measured steps a true backward
  pass first (cosine similarity, true-gradient targets);
* chooses the kind of step (plain, measured, true-target, synthesizers
  frozen) from the step number inside the graph (`tf.switch_case`), so no
  step needs the host;
* guards the step on the device: a step holding NaN/Inf applies nothing and
  puts back the statistics its forward pass wrote (BatchNorm). With
  `on_nonfinite="raise"` the first such step is recorded (`nonfinite_step`,
  and its parts), every later step is refused too (the state stays that of
  the bad step), and the step raises through a graph assertion where the
  runtime supports one (not under XLA); `raise_if_nonfinite()` raises
  `NonFiniteError` from the record at any host sync. With
  `on_nonfinite="skip_module"` each decoupled module (its gradients, ĝ and
  statistics), the rest of the network (with the loss) and the synthesizers
  are checked and applied on their own: a module's update then waits for no
  op above its interception (update unlocking, checked op by op in tests/test_placement.py);
* applies the updates: the network with `optimizer` (with `update_prob < 1`
  or `skip_module` each decoupled module with its own copy, drawn per step;
  the lower modules first), the synthesizers with `sg_optimizer`.

Where the other executors plug in: a distributed step calls `engine.step`
per replica (inside `strategy.run`) with `normaliser` = the global batch
(`sg_keras.distribute`): the replicas then sum their metrics and
finiteness checks, draw the same updates and apply (or skip) together; the recurrent
and pipelined executors use `sg_keras.dni_maths` directly on the activations
they carry between steps.
"""

import collections

import tensorflow as tf

from sg_keras import distribute
from sg_keras.interception import (FROZEN_PASS, SYNTHETIC_PASS, TRUE_PASS, BackwardPass,
                                   GradientInterception)
from sg_keras.guard import finiteness_parts, part_sum
from sg_keras.metrics import cosine_from_parts, cosine_parts, interception_keys
from sg_keras.model_parts import (check_precision, context_dim_of, decoupled_layers, float_state,
                                  label_context, module_state, module_variables, split_variables)
from sg_keras.optimizers import module_optimizer
from sg_keras.options import STEP_KINDS, OnNonFinite

StepResult = collections.namedtuple(
    "StepResult", ["loss", "predictions", "gradients", "interceptions", "true_gradients"])

_Computed = collections.namedtuple(
    "_Computed", ["loss", "predictions", "gradients", "sums", "group_sums", "metrics",
                  "measured", "trained_synthesizers"])

StepOutput = collections.namedtuple(
    "StepOutput", ["loss", "predictions", "metrics", "measured", "applied", "updated",
                   "trained_synthesizers"])
StepOutput.__doc__ = """What `StepEngine.step` returns (tensors).

loss, predictions: of the forward pass.
metrics: `{"sg_loss/LAYER": ..., "cosine/LAYER": ...}`; the cosine keys exist
    when the options measure at all, and read 0 on steps that do not.
measured: whether this step measured the cosines.
applied: whether the step's update was applied (False for a non-finite step).
updated: per decoupled module, whether it updated (None unless update_prob < 1
    or on_nonfinite="skip_module").
trained_synthesizers: whether the synthesizers trained (False on the steps
    `synth_update_every` skips; `sg_loss/LAYER` then reads 0).
"""


def has_value(key, out):
    """Whether `StepOutput` `out` holds a value of metric `key` (a bool tensor): a cosine
    only on measured steps, a synthesizer loss only where the synthesizers trained."""
    if key.startswith("cosine/"):
        return out.measured
    if key.startswith("sg_loss/"):
        return out.trained_synthesizers
    return tf.constant(True)


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


def dni_gradients(model, loss_fn, x, y, variables, *, context=None, enabled=True,
                  bp_lambda=0.0, clip_norm=None, normaliser=None, measure=False,
                  regress_on_true=False, train_synthesizers=True):
    """Forward and backward pass of one training step.

    Args:
        model: a Keras model, possibly containing `DecoupledLayer`s.
        loss_fn: `(y, predictions) -> scalar` mean loss.
        x, y: one batch.
        variables: the variables to differentiate (network and synthesizers).
        context: cDNI context (see `label_context`).
        enabled: False for plain backprop.
        bp_lambda, clip_norm, normaliser: see `GradientInterception`.
        measure: also compute the true `∂L/∂h` at each decoupled layer.
        regress_on_true: train the synthesizers on those true gradients
            instead of the bootstrapped ones (implies `measure`).
        train_synthesizers: False: the synthesizers only predict (`ĝ` is
            applied as usual); their gradients are None and `sg_loss` is not
            computed (`variables` should then leave them out).

    Returns:
        A `StepResult`; `true_gradients` (of the mean loss) is None unless measured.
    """
    measure = measure or regress_on_true
    with tf.GradientTape(persistent=measure) as tape:
        with GradientInterception(context=context, enabled=enabled, bp_lambda=bp_lambda,
                                  clip_norm=clip_norm, normaliser=normaliser) as scope:
            predictions = model(x, training=True)
        loss = loss_fn(y, predictions)
    interceptions = scope.interceptions
    true_gradients = None
    backward_pass = SYNTHETIC_PASS if train_synthesizers else FROZEN_PASS
    if measure and interceptions:
        with scope.backward(TRUE_PASS):
            true_gradients = tape.gradient(loss, [i.output for i in interceptions])
        if regress_on_true:
            backward_pass = BackwardPass(targets={
                index: gradient for index, gradient in enumerate(true_gradients)
                if gradient is not None})
    with scope.backward(backward_pass):
        gradients = tape.gradient(loss, variables)
    del tape
    return StepResult(loss, predictions, gradients, interceptions, true_gradients)


def restore(variables, values):
    """Puts back values that a forward pass wrote (BatchNorm statistics)."""
    for variable, value in zip(variables, values):
        variable.assign(value)


class StepEngine:
    """One DNI training step for `model`, as `options` say.

    Args:
        model: a built Keras model with `DecoupledLayer`s (or none, for backprop).
        options: a `DNIOptions`.
        optimizer: the network's optimizer.
        sg_optimizer: the synthesizers' optimizer.
        seed: seed of the `update_prob` draws.

    Attributes:
        module_optimizers: with `update_prob < 1`, one optimizer per decoupled
            module (part of the training state: checkpoint them).
        seed: a variable (part of the state): the `update_prob` draws of step
            `t` are `stateless_uniform(seed=[seed, t])`, the same on every
            replica, and a resumed run draws what the uninterrupted one would.
        nonfinite_step: the first refused step under `on_nonfinite="raise"`, or -1.
    """

    def __init__(self, model, options, optimizer, sg_optimizer, seed=0):
        check_precision(model)
        self.model, self.options = model, options
        self.layers = decoupled_layers(model)
        self.context_dim = context_dim_of(model)
        options.check_layers(self.layers, self.context_dim)
        self.optimizer, self.sg_optimizer = optimizer, sg_optimizer
        self.network_variables, self.synthesizer_variables = split_variables(model)
        self.variables = self.network_variables + (
            self.synthesizer_variables if options.mode.decoupled else [])
        self.per_module = options.on_nonfinite.per_module
        grouped = (module_variables(model) if options.mode.decoupled and (
            options.update_prob < 1.0 or self.per_module) else [])
        self.module_optimizers = [module_optimizer(optimizer) for _ in grouped]
        self._groups = list(zip(self.module_optimizers, grouped))
        grouped_ids = {id(v) for variables in grouped for v in variables}
        self._free_variables = [v for v in self.network_variables if id(v) not in grouped_ids]
        self._group_state = module_state(model) if self.per_module else []
        self._group_of = self._update_groups(grouped)
        pairs = [(optimizer, self._free_variables), (sg_optimizer, self.synthesizer_variables)]
        for each, variables in pairs + self._groups:
            if not each.built:
                each.build(variables)
        self.seed = tf.Variable(int(seed), dtype=tf.int64, trainable=False, name="update_seed")
        self.nonfinite_step = tf.Variable(-1, dtype=tf.int64, trainable=False,
                                          name="nonfinite_step")
        self._nonfinite_parts = None   # made when the step is traced and its parts are known
        self.part_names = []

    def context(self, y):
        """The synthesizers' context for labels `y` (None unless cDNI)."""
        return label_context(y, self.context_dim) if self.options.mode.uses_context else None

    def gradients(self, x, y, loss_fn, variables, *, measure=False, regress_on_true=False,
                  train_synthesizers=True, normaliser=None):
        """`dni_gradients` with this engine's model, context and options."""
        options = self.options
        return dni_gradients(self.model, loss_fn, x, y, variables, context=self.context(y),
                             enabled=options.mode.decoupled, bp_lambda=options.bp_lambda,
                             clip_norm=options.sg_clip_norm, normaliser=normaliser,
                             measure=measure, regress_on_true=regress_on_true,
                             train_synthesizers=train_synthesizers)

    def step(self, x, y, step, loss_fn, normaliser=None):
        """One training step (call it inside a `tf.function`); returns a `StepOutput`.

        Args:
            x, y: the batch.
            step: the step number (an integer tensor or variable) that
                schedules measured, true-target and frozen-synthesizer steps.
            loss_fn: `(y, predictions) -> scalar` mean loss.
            normaliser: the number of examples the loss averages over (the
                global batch); None: the local batch.
        """
        state = float_state(self.model)
        saved = [tf.identity(v) for v in state]
        kinds = self.options.step_kind_indices()
        if len(kinds) == 1:
            computed = self._compute(kinds[0], x, y, loss_fn, normaliser, state)
        else:
            branch_of_kind = [kinds.index(k) if k in kinds else 0
                              for k in range(len(STEP_KINDS))]
            kind = self.options.step_kind_index(tf.convert_to_tensor(step))
            computed = tf.switch_case(
                tf.gather(branch_of_kind, kind),
                [lambda k=k: self._compute(k, x, y, loss_fn, normaliser, state) for k in kinds])
        return self._conclude(computed, tf.convert_to_tensor(step), state, saved)

    def _compute(self, kind, x, y, loss_fn, normaliser, state):
        """The gradients and per-replica metrics of one kind of step (no synchronisation)."""
        measure, regress_on_true, trains = STEP_KINDS[kind]
        result = self.gradients(x, y, loss_fn,
                                self.variables if trains else self.network_variables,
                                measure=measure, regress_on_true=regress_on_true,
                                train_synthesizers=trains, normaliser=normaliser)
        gradients = list(result.gradients)
        if not trains:   # every kind of step returns the same structure
            gradients += [tf.zeros_like(v) for v in self.synthesizer_variables]
        parts = finiteness_parts(result.loss, result.interceptions, self.variables, gradients,
                                 state)
        self.part_names = [name for name, _, _ in parts]
        sums = [part_sum(value) for _, _, value in parts]
        return _Computed(result.loss, result.predictions, gradients, tf.stack(sums),
                         self._group_sums(parts, sums), self._metric_parts(result),
                         tf.constant(measure), tf.constant(trains))

    def _update_groups(self, grouped):
        """With `on_nonfinite="skip_module"`, the update group of each part's owner (see
        `finiteness_parts`): module k is k, the rest of the network (and the loss) one
        group after the modules, the synthesizers the last; None otherwise."""
        if not self.per_module:
            return None
        rest, synthesizers = len(grouped), len(grouped) + 1
        group_of = {id(v): synthesizers for v in self.synthesizer_variables}
        for index, (layer, variables, statistics) in enumerate(
                zip(self.layers, grouped, self._group_state)):
            group_of.update({id(owner): index for owner in [layer, *variables, *statistics]})
        return lambda owner: group_of.get(id(owner), rest)

    def _group_sums(self, parts, sums):
        """Per update group, its parts' sums stacked on their own (so that deciding a
        module's update reads nothing of the others); () unless `skip_module`."""
        if self._group_of is None:
            return ()
        groups = [[] for _ in range(len(self._groups) + 2)]
        for (_, owner, _), value in zip(parts, sums):
            groups[self._group_of(owner)].append(value)
        return [tf.stack(group) if group else tf.zeros([0]) for group in groups]

    def _conclude(self, computed, step, state, saved):
        """Decides, applies (or skips) and reports a step: the same on every replica."""
        updated = self._draw_updates(step)
        if self.per_module:
            return self._conclude_per_module(computed, state, saved, updated)
        finite = distribute.all_finite(computed.sums)
        ok = tf.reduce_all(finite)
        applied = ok
        raising = self.options.on_nonfinite is OnNonFinite.RAISE
        if raising:
            applied = ok & (self.nonfinite_step < 0)

        def finish(run, agreed, own):
            applied, ok, finite, step, updated, trains = agreed
            gradients, saved = own
            if raising:
                self._record_failure(ok, finite, step)

            def skip():
                return tf.logical_not(self._put_back(run, state, saved))

            def apply():
                self._apply(run, gradients, updated, trains)
                return tf.constant(True)

            tf.cond(applied, apply, skip)

        distribute.in_cross_replica(
            finish, [applied, ok, finite, step, updated, computed.trained_synthesizers],
            (computed.gradients, saved))
        if raising:
            tf.debugging.Assert(applied, ["sg_keras: a training step held NaN/Inf"])
        return StepOutput(computed.loss, computed.predictions, self._metrics(computed),
                          computed.measured, applied,
                          None if updated is None else updated & applied,
                          computed.trained_synthesizers)

    def _conclude_per_module(self, computed, state, saved, updated):
        """`_conclude` for `on_nonfinite="skip_module"`: each update group (module, rest of
        the network, synthesizers) applies its update when its own parts are finite (and,
        for a module, when drawn), else puts back its statistics."""
        oks = [tf.reduce_all(distribute.all_finite(sums)) for sums in computed.group_sums]
        modules = len(self._groups)
        gates = [ok & updated[index] if updated is not None else ok
                 for index, ok in enumerate(oks[:modules])]
        rest_and_synthesizers = [oks[modules], oks[modules + 1] & computed.trained_synthesizers]
        optimizers = [optimizer for optimizer, _ in self._groups] + [self.optimizer,
                                                                     self.sg_optimizer]
        groups = [variables for _, variables in self._groups] + [self._free_variables,
                                                                 self.synthesizer_variables]
        grouped = {id(v) for statistics in self._group_state for v in statistics}
        statistics = self._group_state + [[v for v in state if id(v) not in grouped], []]

        def finish(run, agreed, own):
            oks, gates, rest_and_synthesizers = agreed
            gradients, saved = own
            by_id = {id(v): g for v, g in zip(self.variables, gradients)}
            saved_of = {id(v): value for v, value in zip(state, saved)}
            # lower modules first: none of them then waits for an update above it
            for optimizer, variables, gate in zip(optimizers, groups,
                                                  gates + rest_and_synthesizers):
                tf.cond(gate, lambda o=optimizer, v=variables: self._apply_group(run, o, v, by_id),
                        lambda: tf.constant(False))
            for ok, own_state in zip(oks, statistics):
                if own_state:
                    tf.cond(ok, lambda: tf.constant(False), lambda s=own_state: self._put_back(
                        run, s, [saved_of[id(v)] for v in s]))

        distribute.in_cross_replica(finish, [oks, gates, rest_and_synthesizers],
                                    (computed.gradients, saved))
        return StepOutput(computed.loss, computed.predictions, self._metrics(computed),
                          computed.measured, tf.reduce_all(tf.stack(oks)), tf.stack(gates),
                          computed.trained_synthesizers)

    def _metrics(self, computed):
        """The step's metrics, summed over the replicas (the cosine from its summed parts)."""
        return {key: cosine_from_parts(value) if key.startswith("cosine/") else value
                for key, value in distribute.sum_over_replicas(computed.metrics).items()}

    @staticmethod
    def _put_back(run, statistics, values):
        run(lambda values: restore(statistics, values), values)
        return tf.constant(True)

    def _record_failure(self, ok, finite, step):
        if self._nonfinite_parts is None:
            with tf.init_scope():
                self._nonfinite_parts = tf.Variable(tf.zeros(finite.shape, tf.bool),
                                                    trainable=False, name="nonfinite_parts")

        def record():
            self.nonfinite_step.assign(tf.cast(step, tf.int64))
            self._nonfinite_parts.assign(tf.logical_not(finite))
            return tf.constant(True)

        tf.cond(tf.logical_not(ok) & (self.nonfinite_step < 0), record,
                lambda: tf.constant(False))

    def _metric_parts(self, result):
        """This replica's part of the metrics: `sg_loss/LAYER` per interception and, when
        the options measure, `cosine/LAYER` as `metrics.cosine_parts` (zero if unmeasured)."""
        metrics = {}
        true_gradients = result.true_gradients or [None] * len(result.interceptions)
        for key, interception, true_gradient in zip(
                interception_keys(result.interceptions), result.interceptions, true_gradients):
            metrics[f"sg_loss/{key}"] = (tf.zeros([]) if interception.sg_loss is None
                                         else interception.sg_loss)   # None: not trained
            if self.options.measures:
                metrics[f"cosine/{key}"] = (
                    tf.zeros([3]) if true_gradient is None
                    else cosine_parts(interception.synthetic, true_gradient))
        return metrics

    def _draw_updates(self, step):
        """Which decoupled modules update at step `step` (update_prob < 1), from (seed, step)."""
        if not self._groups:
            return None
        seed = tf.stack([tf.identity(self.seed), tf.cast(step, tf.int64)])
        draws = tf.random.stateless_uniform([len(self._groups)], seed=seed)
        return draws < self.options.update_prob

    def _apply(self, run, gradients, updated, trains):
        """Applies the network and synthesizer updates of one step (the synthesizers' if
        `trains`).

        `run(f, *args)` runs an optimizer on every replica (see
        `distribute.in_cross_replica`).
        """
        by_id = {id(v): g for v, g in zip(self.variables, gradients)}
        for index, (optimizer, variables) in enumerate(self._groups):
            tf.cond(updated[index],
                    lambda o=optimizer, v=variables: self._apply_group(run, o, v, by_id),
                    lambda: tf.constant(False))
        self._apply_group(run, self.optimizer, self._free_variables, by_id)
        if not self.options.mode.decoupled:
            return
        if self.options.synth_update_every == 1:   # they train on every step
            self._apply_group(run, self.sg_optimizer, self.synthesizer_variables, by_id)
        else:
            tf.cond(trains, lambda: self._apply_group(run, self.sg_optimizer,
                                                      self.synthesizer_variables, by_id),
                    lambda: tf.constant(False))

    @staticmethod
    def _apply_group(run, optimizer, variables, gradient_of):
        """`optimizer.apply` to `variables` on every replica (`gradient_of`: id → gradient)."""
        run(lambda grads: optimizer.apply(grads, variables), [gradient_of[id(v)] for v in variables])
        return tf.constant(True)

    def raise_if_nonfinite(self):
        """Raises `NonFiniteError` if a step was refused under `on_nonfinite="raise"`."""
        step = int(self.nonfinite_step.numpy())
        if step >= 0:
            bad = self._nonfinite_parts.numpy()
            raise NonFiniteError(step, [name for name, flag in zip(self.part_names, bad) if flag])

    def optimizers(self):
        """Every optimizer the engine applies."""
        return [self.optimizer, self.sg_optimizer] + self.module_optimizers
