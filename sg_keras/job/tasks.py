"""The job's tasks: what a run of each `--task` builds, trains on, evaluates, prints and draws.

The one run loop (`sg_keras.job.experiment`) does what every task shares:
the run directory and its lock, resume, signals, the progress lines,
evaluation, checkpoints, summaries and plots. A task is a small object that
says what differs:

* `ClassifyTask` (`--task=classify`): the paper's FCN or CNN on an image
  dataset, trained by a `sg_keras.protocols.Trainer` (backprop, DNI, cDNI,
  pipelined or complete unlock); evaluated on the test split.
* `CopyTask` (`--task=copy|repeat_copy`): an LSTM trained with truncated BPTT
  or recurrent DNI on Copy / Repeat Copy under the curriculum; its figures
  are the current length N and the largest N solved.
* `CharLMTask` (`--task=char_lm`): the same core as a character-level
  language model over a text; evaluated in bits per character on the last
  10 % of the text, held out.

What a task provides (`Task` documents each member): `build()` (the
checkpointed state and the step variable), `begin(start)`, `train_step(step)`,
`log_values()`, `columns(values)`, `evaluate()`, `eval_line(result)`,
`figures(log, step, summaries)`, `check_finite()`, `final_result(log, step)`,
`finish(result)` and `summary(result)`.

Example:

>>> task = make_task(Config(model_dir="runs/copy", task="copy", train_steps=10))  # doctest: +SKIP
>>> checkpoint, step = task.build()                                             # doctest: +SKIP
"""

import os

import keras
import numpy as np
import tensorflow as tf

from sg_keras import distribute
from sg_keras.job import data, networks, plots, sequence_plots
from sg_keras.job import sequence_tasks as sequences
from sg_keras.job.config import Config, ConfigError
from sg_keras.job.files import write_atomically
from sg_keras.model_parts import decoupled_layers
from sg_keras.pipeline import PipelinedTrainer
from sg_keras.protocols import SequenceTrainer, Trainer
from sg_keras.recurrent import RecurrentDNI, per_step_sigmoid_bits, per_step_softmax_bits
from sg_keras.synthesizers import DenseSynthesizer
from sg_keras.trainer import DNITrainer
from sg_keras.unlock import CompleteUnlockTrainer
from sg_keras.validation import ArgumentError

FIXED_EXAMPLES = 32   # test examples shown in gradients.png; most misclassified in predictions.png
HELD_OUT = 0.1        # char_lm: fraction of the text kept for evaluation


def _learning_rate(base, config):
    boundaries = config.decay_boundaries()
    if not boundaries:
        return base
    values = [base * config.lr_decay_factor ** i for i in range(len(boundaries) + 1)]
    return keras.optimizers.schedules.PiecewiseConstantDecay(boundaries, values)


def build_trainer(config, input_shape, num_classes=10) -> Trainer:
    """The model and `DNITrainer` (or `PipelinedTrainer`) that `config` describes."""
    options = config.dni_options()
    if config.model == "cnn":
        model = networks.cnn(input_shape, config.num_layers, config.filters, num_classes,
                             decoupled=options.mode.decoupled, context=options.mode.uses_context,
                             synthesizer_filters=config.filters)
    else:
        model = networks.fcn(input_shape, config.num_layers, config.units, num_classes,
                             decoupled=options.mode.decoupled,
                             context=options.mode.uses_context,
                             synthesizer_layers=config.synth_layers,
                             synthesizer_units=config.synth_units,
                             synthesizer_rank=config.synth_rank,
                             synthesizer_batch_norm=config.synth_batch_norm)
    sg_rate = config.sg_learning_rate or config.learning_rate
    optimizers = {"optimizer": keras.optimizers.Adam(_learning_rate(config.learning_rate, config)),
                  "sg_optimizer": keras.optimizers.Adam(_learning_rate(sg_rate, config))}
    if config.schedule == "pipelined":
        return PipelinedTrainer(model, options.mode, **optimizers, update_prob=options.update_prob,
                                sg_clip_norm=options.sg_clip_norm, devices=config.devices or None,
                                seed=config.seed, jit_compile=config.jit_compile)
    if config.unlock == "complete":
        return CompleteUnlockTrainer(model, options.mode, **optimizers, seed=config.seed,
                                     jit_compile=config.jit_compile)
    strategy = tf.distribute.get_strategy() if tf.distribute.has_strategy() else None
    return DNITrainer(model, **optimizers, seed=config.seed, jit_compile=config.jit_compile,
                      strategy=strategy, **options.as_dict())


def build_core(config, outputs, loss) -> SequenceTrainer:
    """The `RecurrentDNI` of `config`: LSTM cell, linear readout, synthesizer per --mode."""
    synthesizer = None
    if config.mode == "dni":
        synthesizer = DenseSynthesizer(config.synth_layers, config.synth_units,
                                       name="state_synthesizer")
    sg_rate = config.sg_learning_rate or config.learning_rate
    return RecurrentDNI(keras.layers.LSTMCell(config.units, name="lstm"),
                        keras.layers.Dense(outputs, name="readout"),
                        truncation=config.truncation, loss=loss,
                        optimizer=keras.optimizers.Adam(config.learning_rate),
                        synthesizer=synthesizer,
                        sg_optimizer=keras.optimizers.Adam(sg_rate) if synthesizer else None,
                        aux=config.aux, aux_weight=config.aux_weight,
                        sg_clip_norm=config.sg_clip_norm)


class Task:
    """What one `--task` does inside the run loop; the members every task has.

    Args:
        config: the validated `Config`; the constructor loads the data and
            raises `ConfigError` / `DataError` before anything is written.
    """

    outputs = "checkpoints/, TensorBoard logs (train/, eval/), metrics.jsonl, *.png"

    def __init__(self, config):
        self.config = config

    def total_steps(self):
        """The step the run ends at."""
        return self.config.train_steps

    def plan(self):
        """What the steps are, for the start line (e.g. "3 epochs of batch 256")."""
        return f"batch {self.config.batch_size}"

    def strategy(self):
        """The `tf.distribute.Strategy` to build under (made before the run directory)."""
        return tf.distribute.get_strategy()

    def build(self):
        """Builds the model; returns `(tf.train.Checkpoint of all state, step variable)`."""
        raise NotImplementedError

    def restored(self):
        """Called after the checkpoint (if any) was restored."""

    def warnings(self):
        """Lines about flags this run cannot honour (printed as warnings at the start)."""
        return []

    def begin(self, start):
        """Prepares training from step `start` (data pipelines, evaluation batches)."""

    def train_step(self, step):
        """Trains on batch `step` (0-based); returns values measured at this step (or {})."""
        raise NotImplementedError

    def log_values(self):
        """The training values of the log window just ended (means, latest levels)."""
        raise NotImplementedError

    def columns(self, values):
        """The log line's columns for `values`: only those that apply to this run."""
        raise NotImplementedError

    def evaluate(self):
        """The held-out figures (recorded in the `eval` split)."""
        raise NotImplementedError

    def eval_line(self, result):
        """The figures of `evaluate()` as printed after "eval at step N: "."""
        raise NotImplementedError

    def done_line(self, result):
        """The figures of the final `evaluate()` as printed in the `done:` line."""
        return self.eval_line(result)

    def figures(self, log, step, summaries):
        """`{name: Figure}` to save as NAME.png (may also write histograms to `summaries`)."""
        raise NotImplementedError

    def check_finite(self):
        """Raises `NonFiniteError` when a step was refused for NaN/Inf."""

    def nonfinite_variables(self):
        """Paths of state variables holding NaN/Inf (checked before every checkpoint)."""
        raise NotImplementedError

    def final_result(self, log, step):
        """The evaluation of a finished run at `step` (nothing left to do), or None."""
        records = [r for r in log.records if r["split"] == "eval" and r["step"] == step]
        return records[-1] if records else None

    def finish(self, run_dir):
        """Writes what a finished run leaves besides checkpoints (e.g. `model.keras`)."""

    def summary(self, result):
        """The task's figures in `run()`'s summary dict."""
        raise NotImplementedError


class ClassifyTask(Task):
    """The image classifier: the paper's FCN (or CNN) with backprop, DNI or cDNI."""

    outputs = Task.outputs + ", model.keras"

    def __init__(self, config):
        super().__init__(config)
        self.train_split, self.test_split = data.load(config.dataset, config.data_dir,
                                                      config.data_path)
        self.steps_per_epoch = len(self.train_split) // config.batch_size

    def total_steps(self):
        return self.config.total_steps(self.steps_per_epoch)

    def plan(self):
        return (f"{self.total_steps() / self.steps_per_epoch:.3g} epochs of batch "
                f"{self.config.batch_size}")

    def strategy(self):
        return distribute.make_strategy(self.config.strategy)   # before any collective op

    def warnings(self):
        config = self.config
        if config.schedule == "pipelined" and config.measure_every != Config.measure_every:
            return [f"--measure_every={config.measure_every} is ignored with "
                    "--schedule=pipelined: its step makes no true backward pass to measure "
                    "the synthetic gradients against"]
        return []

    def build(self):
        self.trainer = build_trainer(self.config, self.train_split.x.shape[1:],
                                     self.train_split.num_classes)
        return self.trainer.checkpoint, self.trainer.iterations

    def begin(self, start):
        config = self.config
        self.test_batches = data.eval_batches(self.test_split)
        fixed = data.eval_batches(self.test_split, FIXED_EXAMPLES).take(1)
        self.fixed_x, self.fixed_y = next(iter(fixed))
        self.batches = iter(data.train_batches(self.train_split, config.batch_size, config.seed,
                                               start))

    def train_step(self, step):
        x, y = next(self.batches)
        self.trainer.train_step(x, y)   # the logs stay on the device, summed in log_window
        return {}

    def learning_rates(self):
        # through a tensor: float() cannot read a variable mirrored by a strategy
        return {"learning_rate/network": float(tf.convert_to_tensor(
                    self.trainer.optimizer.learning_rate)),
                "learning_rate/synthesizer": float(tf.convert_to_tensor(
                    self.trainer.sg_optimizer.learning_rate))}

    def log_values(self):
        return {**self.trainer.log_window.read(), **self.learning_rates()}   # cosines: measured

    def columns(self, values):
        """Loss and accuracy (a pipeline has none until its first batch reaches the head)."""
        return ([f"loss {float(values['loss']):.4f}"] if "loss" in values else []) + (
            [f"acc {100 * float(values['accuracy']):5.1f}%"] if "accuracy" in values else [])

    def evaluate(self):
        return self.trainer.evaluate(self.test_batches)

    def eval_line(self, result):
        return f"test loss {result['loss']:.4f} | test accuracy {100 * result['accuracy']:.2f}%"

    def done_line(self, result):
        return f"test accuracy {100 * result['accuracy']:.2f}% | test loss {result['loss']:.4f}"

    def figures(self, log, step, summaries):
        """Gradient histograms always; loss, predictions and (DNI) cosine and gradient plots."""
        report = self.trainer.inspect(self.fixed_x, self.fixed_y)
        summaries.gradient_histograms(step, report)
        if not self.config.plots:
            return {}
        predictions = np.concatenate([np.argmax(self.trainer.model(x), axis=-1)
                                      for x, _ in self.test_batches])
        layers = [layer.name for layer in decoupled_layers(self.trainer.model)]
        shown_decays = [s for s in self.config.decay_boundaries() if s <= self.total_steps()]
        figures = {"loss": plots.loss_curves(log, shown_decays),
                   "predictions": plots.prediction_grid(
                       self.test_split.x, self.test_split.y, predictions, FIXED_EXAMPLES)}
        if report:
            figures["cosine"] = plots.cosine_curves(log, layers)
            figures["gradients"] = plots.gradient_heatmaps(report, step, layers)
        return figures

    def check_finite(self):
        self.trainer.check_finite()

    def nonfinite_variables(self):
        return self.trainer.nonfinite_variables()

    def final_result(self, log, step):
        if not os.path.exists(os.path.join(self.config.model_dir, "model.keras")):
            return None
        return super().final_result(log, step)

    def finish(self, run_dir):
        write_atomically(run_dir.file("model.keras"), self.trainer.model.save)

    def summary(self, result):
        return {"test_accuracy": result["accuracy"], "test_loss": result["loss"]}


class _SequenceTask(Task):
    """What Copy, Repeat Copy and the char LM share: the recurrent core and its logs."""

    def _build_core(self, inputs, outputs, loss):
        """The core and the parts of its checkpoint: cell, readout, optimizers, step and the
        curriculum (level, recent errors; the char LM keeps them unused, so that every
        sequence checkpoint has the same keys)."""
        config = self.config
        self.core = build_core(config, outputs, loss)
        self.core.build(inputs)
        self.step = tf.Variable(0, dtype=tf.int64, trainable=False, name="step")
        self.level = tf.Variable(1, dtype=tf.int64, trainable=False, name="level")
        self.recent = tf.Variable(np.zeros(config.curriculum_window, "float32"),
                                  trainable=False, name="recent")
        self.recent_count = tf.Variable(0, dtype=tf.int64, trainable=False, name="recent_count")
        parts = {"cell": self.core.cell, "readout": self.core.readout,
                 "optimizer": self.core.optimizer, "step": self.step, "level": self.level,
                 "recent": self.recent, "recent_count": self.recent_count}
        if self.core.synthesizer is not None:
            parts.update(synthesizer=self.core.synthesizer, sg_optimizer=self.core.sg_optimizer)
        if self.core.aux_head is not None:
            parts["aux_head"] = self.core.aux_head
        self.sums, self.count = {}, 0
        return parts

    def _train(self, step, x, y, w, state, ends):
        logs = self.core.train_sequence(x, y, w, state=state, ends=ends)
        self.step.assign(step + 1)
        measured = {}
        if self.config.measure_every and (step + 1) % self.config.measure_every == 0 \
                and self.core.synthesizer is not None:
            measured = self.cosines(x, y, w, state)
        return logs, measured

    def _add(self, logs):
        for key, value in logs.items():
            self.sums[key] = self.sums.get(key, 0.0) + float(value)
        self.count += 1

    def cosines(self, x, y, w, state):
        """Cosine of the synthetic and the true (full-BPTT) future gradient at each boundary."""
        values = {f"cosine/boundary{k + 1}": c
                  for k, c in enumerate(self.core.boundary_cosines(x, y, w, state=state))}
        if values:
            values["cosine/mean"] = float(np.mean(list(values.values())))
        return values

    def _applies(self, key):
        """False for the logs of parts this run has not: sg_* under BPTT, aux_loss without Aux."""
        if key.startswith("sg_"):
            return self.core.synthesizer is not None
        if key == "aux_loss":
            return self.core.aux_head is not None
        return True

    def nonfinite_variables(self):
        variables = list(self.core.core_variables)
        if self.core.synthesizer is not None:
            variables += self.core.synthesizer.trainable_variables
        return [v.path for v in variables if not np.isfinite(v.numpy()).all()]

    def log_values(self):
        values = {k: v / self.count for k, v in self.sums.items() if self._applies(k)}
        self.sums, self.count = {}, 0
        return values

    def columns(self, values):
        return [f"{key} {value:.4g}" for key, value in values.items() if "/" not in key]

    def figures(self, log, step, summaries):
        if not self.config.plots:
            return {}
        figures = self._figures(log)
        if log.keys("cosine/"):
            figures["cosine"] = sequence_plots.boundary_cosine_curves(log)
        return figures


class CopyTask(_SequenceTask):
    """Copy or Repeat Copy under the curriculum; batches drawn from `(--seed, step)`."""


    def build(self):
        config = self.config
        inputs, outputs = config.bits + 2, sequences.output_features(config.task, config.bits)
        parts = self._build_core(inputs, outputs, per_step_sigmoid_bits)
        self.curriculum = sequences.Curriculum(threshold=config.curriculum_threshold,
                                               window=config.curriculum_window)
        return tf.train.Checkpoint(**parts), self.step

    def restored(self):
        count = int(self.recent_count.numpy())
        self.curriculum.restore({"level": int(self.level.numpy()),
                                 "recent": self.recent.numpy()[:count].tolist()})

    def _store(self):
        state = self.curriculum.state()
        recent = np.zeros(self.curriculum.window, "float32")
        recent[:len(state["recent"])] = state["recent"]
        self.level.assign(state["level"])
        self.recent.assign(recent)
        self.recent_count.assign(len(state["recent"]))

    def train_step(self, step):
        config = self.config
        rng = np.random.default_rng([config.seed, step])
        x, y, w = sequences.task_batch(config.task, rng, config.batch_size,
                                       self.curriculum.level, config.bits, config.max_repeats)
        logs, measured = self._train(step, x, y, w, None, True)
        logs["per_symbol_error"] = sequences.per_symbol_error(logs["loss"], w)
        self._add(logs)
        self.curriculum.update(logs["per_symbol_error"])
        self._store()
        return measured

    def log_values(self):
        return {**super().log_values(), **self.evaluate()}

    def evaluate(self):
        """The curriculum's standing: Copy has no held-out set, its figure is the N it solves."""
        return {"N": self.curriculum.level, "solved": self.curriculum.solved}

    def eval_line(self, result):
        return f"N {int(result['N'])} | largest N solved {int(result['solved'])}"

    def _figures(self, log):
        return {"curriculum": sequence_plots.curriculum_curve(log)}

    def summary(self, result):
        return {"solved": int(result["solved"]), "level": int(result["N"])}


class CharLMTask(_SequenceTask):
    """A character-level LM over `--batch_size` streams; the LSTM state carries over."""


    def __init__(self, config):
        super().__init__(config)
        try:
            text = sequences.load_text(config.text_path, config.data_dir)
            split = int((1 - HELD_OUT) * len(text.ids))
            self.train_ids, self.eval_ids = text.ids[:split], text.ids[split:]
            next(sequences.stream_batches(self.train_ids, config.batch_size,
                                          config.sequence_length))   # long enough?
        except ArgumentError as error:
            value = getattr(config, error.argument, config.text_path)
            raise ConfigError(f"--{error.argument}={value!r}: {error.problem}") from error
        self.depth = len(text.vocabulary)

    def build(self):
        parts = self._build_core(self.depth, self.depth, per_step_softmax_bits)
        self.state = [tf.Variable(s, trainable=False, name=f"state{i}") for i, s in
                      enumerate(self.core.initial_state(self.config.batch_size))]
        parts["state"] = self.state
        return tf.train.Checkpoint(**parts), self.step

    def train_step(self, step):
        config = self.config
        ids, targets = next(sequences.stream_batches(self.train_ids, config.batch_size,
                                                     config.sequence_length, start=step))
        w = np.ones(ids.shape, "float32")
        logs, measured = self._train(step, sequences.one_hot(ids, self.depth), targets, w,
                                     [s.value() for s in self.state], False)
        for variable, value in zip(self.state, self.core.last_state):
            variable.assign(value)
        logs["bpc"] = sequences.per_symbol_error(logs["loss"], w)
        self._add(logs)
        return measured

    def evaluate(self):
        """Bits per character on the held-out text, one stream from the zero state."""
        n = (len(self.eval_ids) - 1) // self.config.sequence_length * self.config.sequence_length
        x = sequences.one_hot(self.eval_ids[:n].reshape(1, -1), self.depth)
        predictions, _ = self.core.predict_sequence(x)
        bits = per_step_softmax_bits(self.eval_ids[1:n + 1], tf.reshape(predictions,
                                                                        (-1, self.depth)))
        return {"bpc": float(tf.reduce_mean(bits))}

    def eval_line(self, result):
        return f"held-out bits per character {result['bpc']:.4f}"

    def _figures(self, log):
        return {"bpc": sequence_plots.bpc_curves(log)}

    def summary(self, result):
        return {"eval_bpc": result["bpc"]}


def make_task(config):
    """The `Task` of `config.task` (loads its data; raises `ConfigError` / `DataError`)."""
    if config.task == "classify":
        return ClassifyTask(config)
    if config.task == "char_lm":
        return CharLMTask(config)
    return CopyTask(config)
