"""`PipelinedTrainer`: decoupled stages that run concurrently on different batches.

The model is cut into stages at its `DecoupledLayer`s (`placement.split_stages`).
At step `t`, stage `k`

* consumes the activation (and the labels) that stage `k−1` produced at step
  `t−1` (stage 0 consumes the new batch), so stage `k` works on batch `t−k`;
* computes its output `h_k` and, unless it is the last stage, `ĝ_k = M_k(h_k)`;
  the last stage computes the true loss instead;
* updates its weights with the VJP of `applied_gradient(ĝ_k, N)` (= `ĝ_k/N`,
  `N` the batch), or of the loss for the last stage;
* sends back `δ`, the gradient at its input, which is stage `k−1`'s
  regression target one step late: stage `k−1` kept the activation it
  predicted from (its in-flight output of step `t−1`), and regresses
  `M_{k−1}` (at its current weights) on `regression_target(δ, N)` with the
  gradient `synthesizer_output_gradient` through a VJP.

Every stage reads only the state at the start of the step (the in-flight
activations and labels, its own weights), so the stage computations of one
step are independent and run concurrently when the stages sit on different
devices (`devices=`). The first `K−1` steps fill the pipe: stage `k` starts at
step `k`, and its synthesizer's first target arrives at step `k+1`. The maths
is `sg_keras.dni_maths`; the pipeline does not use the gradient interception.

The in-flight activations and labels are variables in `trainer.checkpoint`,
with the weights, every optimizer, the step counter
(`trainer.iterations`) and the random state: a run
restored mid-pipe continues bit-for-bit.

Example:

>>> model = keras.Sequential([keras.Input((4,)),
...                           DecoupledLayer(keras.layers.Dense(8), name="stage1"),
...                           keras.layers.Dense(3)])
>>> trainer = PipelinedTrainer(model, mode="dni",       # devices=["/gpu:0", "/gpu:1"]
...                            optimizer=keras.optimizers.Adam(1e-3))
>>> x, y = np.ones((6, 4), "float32"), np.array([0, 1, 2, 0, 1, 2])
>>> bool(np.isnan(trainer.train_step(x, y)["loss"]))   # the pipe fills: no batch at the head
True
>>> bool(np.isfinite(trainer.train_step(x, y)["loss"]))
True
"""

import keras
import numpy as np
import tensorflow as tf

from sg_keras import dni_maths, evaluation
from sg_keras.metrics import accuracy
from sg_keras.model_parts import check_precision, context_dim_of, label_context
from sg_keras.optimizers import clone_optimizer, module_optimizer
from sg_keras.options import DNIOptions, Mode
from sg_keras.placement import split_stages, stage_devices
from sg_keras.step_logs import LogWindow
from sg_keras.validation import ArgumentError


class _Pipe(tf.Module):
    """The in-flight state: per boundary, the activation and the labels travelling with it.

    Labels of any dtype and shape (class indices, one-hot rows, regression
    targets) are held as float64, which represents int32 and float32 values
    exactly, so the variables exist before the first batch and a checkpoint
    restores them at once.
    """

    def __init__(self, shapes):
        super().__init__(name="pipe")
        self.activations = [tf.Variable(tf.zeros([0, *shape]), shape=tf.TensorShape([None, *shape]),
                                        trainable=False, name=f"activation{k}")
                            for k, shape in enumerate(shapes)]
        self.labels = [tf.Variable(tf.zeros([0], tf.float64), shape=tf.TensorShape(None),
                                   trainable=False, name=f"labels{k}")
                       for k in range(len(shapes))]

    def read_labels(self, like):
        """The in-flight labels, with the dtype and shape of the batch's labels `like`."""
        return [tf.reshape(tf.cast(v, like.dtype), [-1, *like.shape[1:]]) for v in self.labels]

    def write(self, activations, labels):
        for variable, value in zip(self.activations, activations):
            variable.assign(value)
        for variable, value in zip(self.labels, labels):
            variable.assign(tf.cast(value, tf.float64))


UNSUPPORTED = ("sg_target", "true_gradient_every", "measure_every", "bp_lambda", "on_nonfinite",
               "synth_update_every")
"""The `DNIOptions` a pipeline cannot do: they need a true backward pass through every stage,
a guard, or a step that skips the synthesizers."""


class PipelinedTrainer:
    """Trains a decoupled Sequential chain with the pipelined schedule.

    Args:
        model: a built `keras.Sequential` whose top-level `DecoupledLayer`s cut
            it into stages (see `placement.split_stages` for what is not
            supported).
        mode: "dni" or "cdni" (the labels travel down the pipe with the
            activations and are the context of every synthesizer).
        loss: Keras loss returning the batch mean. Default: sparse categorical
            cross-entropy on logits.
        optimizer: the network's optimizer; each stage gets its own copy whose
            learning rate is always this one's current value (a schedule
            follows the training step). Default: Adam(1e-3).
        sg_optimizer: the synthesizers' optimizer; each stage gets its own
            copy. Default: a copy of `optimizer`'s configuration.
        update_prob: probability in (0, 1] that a decoupled stage updates its
            weights at a step (drawn per stage per step from `seed`; the last
            stage and the synthesizers always update).
        sg_clip_norm: per-example L2 bound of the applied `ĝ`, or None.
        options: a `DNIOptions` holding `mode`, `update_prob` and
            `sg_clip_norm` at once (give it or those keywords, not both); its
            other options must keep their defaults (`UNSUPPORTED`).
        devices: device names; the stages are spread evenly over them
            (`placement.stage_devices`). None: every visible device.
        seed: seed of the `update_prob` draws.
        jit_compile: compile the step with XLA.

    `train_step(x, y)` returns scalar tensors: `loss` and `accuracy` of the
    last stage (on the batch of `K−1` steps ago; NaN while the pipe fills;
    accuracy as `sg_keras.metrics.accuracy`, NaN where it does not apply),
    `sg_loss/LAYER` (NaN until that synthesizer's first target arrives) and
    `updated/LAYER` when `update_prob < 1`. `evaluate` measures the whole
    model as `DNITrainer.evaluate` does (`sg_keras.evaluation`).
    Not supported (they need a true backward pass through every stage):
    `sg_target="true"`, `true_gradient_every`, `measure_every`, `bp_lambda`;
    nor are `on_nonfinite` (there is no NaN/Inf guard) and
    `synth_update_every`; model regularisation losses are not added.
    """

    def __init__(self, model, mode=None, loss=None, optimizer=None, sg_optimizer=None, *,
                 options=None, update_prob=None, sg_clip_norm=None, devices=None, seed=0,
                 jit_compile=False):
        self.options = DNIOptions.of(options, mode=mode, update_prob=update_prob,
                                     sg_clip_norm=sg_clip_norm)
        self.options.unsupported(UNSUPPORTED, "the pipelined schedule")
        if self.options.mode is Mode.BACKPROP:
            raise ArgumentError("mode", "must be 'dni' or 'cdni' for a pipeline: backprop "
                                        "stages would wait for the whole backward pass.")
        if not isinstance(model, keras.Model) or not model.built:
            raise ArgumentError("model", "must be a built keras.Model.")
        check_precision(model)
        self.model, self.mode = model, self.options.mode
        self.stages = split_stages(model)
        boundaries = [stage.boundary for stage in self.stages[:-1]]
        self.options.check_layers(boundaries, context_dim_of(model))
        self.context_dim = context_dim_of(model)
        self.devices = stage_devices(len(self.stages), devices)
        for stage, device in zip(self.stages, self.devices):
            stage.device = device
        self.loss = keras.losses.get(loss) if loss is not None else (
            keras.losses.SparseCategoricalCrossentropy(from_logits=True))
        self.optimizer = optimizer if optimizer is not None else keras.optimizers.Adam(1e-3)
        self.sg_optimizer = (sg_optimizer if sg_optimizer is not None
                             else clone_optimizer(self.optimizer))
        self.stage_optimizers, self.synthesizer_optimizers = [], []
        for stage in self.stages:
            with tf.device(stage.device):
                optimizer = module_optimizer(self.optimizer)
                optimizer.build(stage.network_variables)
                self.stage_optimizers.append(optimizer)
                if stage.boundary is not None:
                    sg_optimizer = module_optimizer(self.sg_optimizer)
                    sg_optimizer.build(stage.synthesizer_variables)
                    self.synthesizer_optimizers.append(sg_optimizer)
        self._shapes = [tuple(b.output.shape[1:]) for b in boundaries]
        self.pipe = _Pipe(self._shapes)
        self.iterations = tf.Variable(0, dtype=tf.int64, trainable=False, name="step")
        self.rng = tf.random.Generator.from_seed(int(seed))
        self.checkpoint = tf.train.Checkpoint(
            model=model, optimizer=self.optimizer, sg_optimizer=self.sg_optimizer,
            stage_optimizers=self.stage_optimizers,
            synthesizer_optimizers=self.synthesizer_optimizers, pipe=self.pipe, step=self.iterations,
            rng=self.rng)
        self.log_window = LogWindow()   # the step's logs, summed on the device (see DNITrainer)
        self._train = tf.function(lambda x, y: self.log_window.add(self._train_batch(x, y)),
                                  jit_compile=bool(jit_compile), reduce_retracing=True)
        self._eval_step = evaluation.compiled_batch_sums(model, self.loss)

    @property
    def num_stages(self):
        return len(self.stages)

    def _context(self, labels):
        return label_context(labels, self.context_dim) if self.mode.uses_context else None

    def _run_stage(self, k, inputs, labels, update):
        """Stage k on one batch: forward, ĝ (or the loss), update.

        Returns `(h, δ at the stage's input or None for stage 0, (loss, accuracy))`.
        """
        stage = self.stages[k]
        variables = stage.network_variables
        with tf.GradientTape() as tape:
            if k > 0:
                tape.watch(inputs)
            h = stage.forward(inputs)
            if stage.boundary is None:
                loss = self.loss(labels, h)
        normaliser = dni_maths.local_batch(inputs)
        if stage.boundary is None:
            correct = accuracy(labels, h)
            seed, target = None, loss
            metrics = (loss, tf.constant(np.nan, tf.float32) if correct is None else correct)
        else:
            synthetic = tf.stop_gradient(stage.boundary.synthetic_gradient(
                h, self._context(labels), training=True))
            seed = dni_maths.applied_gradient(synthetic, None, normaliser,
                                              clip_norm=self.options.sg_clip_norm)
            target, metrics = h, (np.nan, np.nan)
        sources = variables + ([inputs] if k > 0 else [])
        gradients = tape.gradient(target, sources, output_gradients=seed)

        def apply():
            self.stage_optimizers[k].apply(gradients[:len(variables)], variables)
            return tf.constant(True)

        tf.cond(update, apply, lambda: tf.constant(False))
        return h, (gradients[-1] if k > 0 else None), metrics

    def _regress_synthesizer(self, k, kept, labels, arriving):
        """Trains stage k's synthesizer on its kept activation and the target that arrived."""
        stage = self.stages[k]
        variables = stage.synthesizer_variables
        normaliser = dni_maths.local_batch(kept)
        with tf.GradientTape() as tape:
            synthetic = stage.boundary.synthetic_gradient(kept, self._context(labels),
                                                          training=True)
        target = dni_maths.regression_target(arriving, normaliser)
        gradients = tape.gradient(synthetic, variables, output_gradients=(
            dni_maths.synthesizer_output_gradient(synthetic, target, normaliser)))
        self.synthesizer_optimizers[k].apply(gradients, variables)
        return dni_maths.synthesizer_loss(synthetic, target, normaliser)

    def _train_batch(self, x, y):
        count = self.num_stages
        kept = [tf.identity(v) for v in self.pipe.activations]
        kept_labels = self.pipe.read_labels(y)
        inputs, labels = [x] + kept, [y] + kept_labels
        active = [self.iterations >= k for k in range(count)]
        updates = list(active)
        if self.options.update_prob < 1.0:
            draws = self.rng.uniform([count - 1]) < self.options.update_prob
            updates[:-1] = [active[k] & draws[k] for k in range(count - 1)]
        outputs, sent_back = [None] * count, [None] * count
        logs = {}
        for k in reversed(range(count)):
            with tf.device(self.stages[k].device):
                def run(k=k):
                    h, arriving, metrics = self._run_stage(k, inputs[k], labels[k], updates[k])
                    return (h if k < count - 1 else tf.zeros([0]),
                            tf.zeros([0]) if arriving is None else arriving, *metrics)

                def idle(k=k):
                    return (tf.zeros([0, *self._shapes[k]]) if k < count - 1 else tf.zeros([0]),
                            tf.zeros([0]), np.nan, np.nan)

                outputs[k], sent_back[k], loss, correct = tf.cond(active[k], run, idle)
                if k == count - 1:
                    logs["loss"], logs["accuracy"] = loss, correct
        for k in range(count - 1):
            with tf.device(self.stages[k].device):
                name = self.stages[k].boundary.name
                logs[f"sg_loss/{name}"] = tf.cond(
                    active[k + 1],
                    lambda k=k: self._regress_synthesizer(k, kept[k], kept_labels[k],
                                                          sent_back[k + 1]),
                    lambda: tf.constant(np.nan, tf.float32))
                if self.options.update_prob < 1.0:
                    logs[f"updated/{name}"] = tf.cast(updates[k], tf.float32)
        self.pipe.write(outputs[:-1], labels[:-1])
        self.optimizer.iterations.assign_add(1)
        self.sg_optimizer.iterations.assign_add(1)
        self.iterations.assign_add(1)
        return logs

    def train_step(self, x, y):
        """Runs one pipelined step on a new batch; returns a dict of scalar tensors."""
        return self._train(x, y)

    def inspect(self, x, y):
        """`{}`: the pipeline makes no true backward pass to compare `ĝ` with."""
        del x, y
        return {}

    def check_finite(self):
        """Does nothing: the pipeline has no NaN/Inf guard, so no step is ever refused (check
        `nonfinite_variables()` before a checkpoint)."""

    def nonfinite_variables(self):
        """Paths of the weights, in-flight activations and optimizer variables holding NaN/Inf."""
        optimizers = [self.optimizer, self.sg_optimizer, *self.stage_optimizers,
                      *self.synthesizer_optimizers]
        variables = self.model.variables + [v for o in optimizers for v in o.variables]
        paths = [v.path for v in variables
                 if "float" in str(v.dtype) and not np.isfinite(v.numpy()).all()]
        return paths + [v.name for v in self.pipe.activations if not np.isfinite(v.numpy()).all()]

    def evaluate(self, x, y=None, batch_size=1024):
        """Mean loss (and accuracy) of the model over `(x, y)` arrays or a batched dataset, as
        `DNITrainer.evaluate`."""
        return evaluation.evaluate_batches(self._eval_step, x, y, batch_size)
