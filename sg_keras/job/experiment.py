"""The training job behind `train.py`: data, model, loop, checkpoints, logs, plots.

`run(config)` trains the paper's FCN with backprop, DNI or cDNI on an image
dataset (input shape and number of classes from the data) and writes
everything into `config.model_dir`:

    checkpoints/        tf.train.CheckpointManager (model, synthesizers, both
                        optimizers, step = data position, random state)
    train/, eval/       TensorBoard event files
    metrics.jsonl       every logged metric (the plots are drawn from it)
    *.png               loss.png, cosine.png, gradients.png, predictions.png
    model.keras         the trained model (written at the end): takes images
                        as the data holds them (e.g. 28x28) scaled to [0, 1]
    run_config.json     the architecture this directory holds
    flags.json          the flags of the latest run

Re-running with the same `model_dir` resumes from the newest intact
checkpoint (a corrupt newer one is skipped with a warning). Re-running a
finished run changes nothing and says so, unless more steps are asked for.
Bad settings, data or checkpoints raise `ConfigError`, `DataError` or
`CheckpointError` before anything is written over; NaN/Inf raises `RunError`
with the last good checkpoint untouched. SIGTERM and Ctrl-C save a checkpoint
and raise `Interrupted`, whose `exit_status` is 143 or 130.

Example:

>>> summary = run(Config(model_dir="runs/quick", data_path="../shared/data/mnist.npz",
...                      epochs=1))                          # doctest: +SKIP
>>> summary["test_accuracy"]                                 # doctest: +SKIP
0.97
"""

import datetime
import os
import signal
import sys
import threading
import time

import keras
import numpy as np
import tensorflow as tf

from sg_keras import distribute
from sg_keras.engine import NonFiniteError
from sg_keras.job import data, networks, plots
from sg_keras.job.checkpoints import CheckpointError, Checkpoints, RunDirectory
from sg_keras.job.config import ConfigError
from sg_keras.job.data import DataError
from sg_keras.job.history import MetricsLog
from sg_keras.job.summaries import Summaries
from sg_keras.model_parts import decoupled_layers
from sg_keras.pipeline import PipelinedTrainer
from sg_keras.trainer import DNITrainer
from sg_keras.unlock import CompleteUnlockTrainer

FIXED_EXAMPLES = 32   # test examples shown in gradients.png; most misclassified in predictions.png


class RunError(RuntimeError):
    """Training stopped (e.g. NaN/Inf); the message says where and what is intact."""


class Interrupted(KeyboardInterrupt):
    """Stopped by a signal after saving a checkpoint; `exit_status` is 128 + the signal number."""

    def __init__(self, signum=signal.SIGINT):
        super().__init__(f"signal {signum}")
        self.exit_status = 128 + int(signum)


# What a user can cause and fix; train.py prints these as one line and exits 1.
EXPECTED_ERRORS = (ConfigError, DataError, CheckpointError, RunError)


def _learning_rate(base, config):
    boundaries = config.decay_boundaries()
    if not boundaries:
        return base
    values = [base * config.lr_decay_factor ** i for i in range(len(boundaries) + 1)]
    return keras.optimizers.schedules.PiecewiseConstantDecay(boundaries, values)


def build_trainer(config, input_shape, num_classes=10):
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


def _duration(seconds):
    return str(datetime.timedelta(seconds=int(seconds)))


class _Progress:
    """Periodic progress lines with training steps/s (evaluation time left out) and ETA."""

    def __init__(self, start, total):
        self.total = total
        self._mark_step, self._mark_time = start, time.perf_counter()
        self.rate = 0.0

    def say(self, line):
        print(line, flush=True)

    def warn(self, line):
        print(f"warning: {line}", file=sys.stderr, flush=True)

    def exclude(self, seconds):
        """Leaves `seconds` (spent evaluating, plotting) out of the rate."""
        self._mark_time += seconds

    def train(self, step, logs):
        now = time.perf_counter()
        self.rate = (step - self._mark_step) / max(now - self._mark_time, 1e-9)
        self._mark_step, self._mark_time = step, now
        eta = _duration((self.total - step) / self.rate) if self.rate else "?"
        self.say(f"step {step:>{len(str(self.total))}}/{self.total} ({100 * step // self.total}%)"
                 f" | loss {float(logs['loss']):.4f} | acc {100 * float(logs['accuracy']):5.1f}%"
                 f" | {self.rate:.1f} steps/s | ETA {eta}")


class _Run:
    """One training run's state; `run()` is the public entry point."""

    def __init__(self, config):
        self.config = config.validate()
        self.train_split, self.test_split = data.load(config.dataset, config.data_dir,
                                                      config.data_path)
        strategy = distribute.make_strategy(config.strategy)   # before any collective op
        self.run_dir = RunDirectory(config.model_dir, config.architecture())
        if config.deterministic:
            tf.config.experimental.enable_op_determinism()
        keras.utils.set_random_seed(config.seed)
        with strategy.scope():   # the model and optimizers on the strategy's devices
            self.trainer = build_trainer(config, self.train_split.x.shape[1:],
                                         self.train_split.num_classes)
        self.checkpoints = Checkpoints(self.run_dir.checkpoint_dir, self.trainer.checkpoint,
                                       self.trainer.step, config.keep_checkpoints)
        self.restored = self.checkpoints.restore_latest()
        self.start = int(self.trainer.step.numpy())
        self.steps_per_epoch = len(self.train_split) // config.batch_size
        self.total = config.total_steps(self.steps_per_epoch)
        self.log = MetricsLog(self.run_dir.metrics_path, self.start)
        self.progress = _Progress(self.start, self.total)

    def final_eval(self):
        """The evaluation record of a finished run (at its last step, model saved), or None."""
        if self.start < self.total or not os.path.exists(self.run_dir.file("model.keras")):
            return None
        records = [r for r in self.log.records if r["split"] == "eval" and r["step"] == self.start]
        return records[-1] if records else None

    def open(self):
        """Starts writing: flags, TensorBoard writers, the test pipelines."""
        config = self.config
        self.run_dir.write_file("flags.json", config.to_json())
        for path, why in self.checkpoints.skipped:
            self.progress.warn(f"skipped checkpoint {os.path.basename(path)}, it is corrupt "
                               f"({why}); moved it to checkpoints/corrupt/ and resumed from "
                               f"{os.path.basename(self.restored)}")
        if self.restored:
            self.progress.say(f"resuming from {self.restored} (step {self.start})")
        else:
            self.progress.say(f"starting a new run in {self.run_dir.path}")
        self.progress.say(
            f"{self.total - self.start} steps to go of {self.total} "
            f"({self.total / self.steps_per_epoch:.3g} epochs of batch {config.batch_size}); "
            f"speed and time left are printed every {config.log_every} steps")
        self.summaries = Summaries(self.run_dir.path)
        self.test_batches = data.eval_batches(self.test_split)
        fixed = data.eval_batches(self.test_split, FIXED_EXAMPLES).take(1)
        self.fixed_x, self.fixed_y = next(iter(fixed))

    def learning_rates(self):
        # through a tensor: float() cannot read a variable mirrored by a strategy
        return {"learning_rate/network": float(tf.convert_to_tensor(
                    self.trainer.optimizer.learning_rate)),
                "learning_rate/synthesizer": float(tf.convert_to_tensor(
                    self.trainer.sg_optimizer.learning_rate))}

    def record_train(self, step, values):
        self.log.append({"step": step, "split": "train", **values})
        self.summaries.scalars("train", step, values)

    def evaluate(self, step):
        started = time.perf_counter()
        result = self._evaluate(step)
        self.progress.exclude(time.perf_counter() - started)
        return result

    def _evaluate(self, step):
        result = self.trainer.evaluate(self.test_batches)
        self.log.append({"step": step, "split": "eval", **result})
        self.summaries.scalars("eval", step, result)
        self.progress.say(f"eval at step {step}: test loss {result['loss']:.4f} | "
                          f"test accuracy {100 * result['accuracy']:.2f}%")
        self.draw(step)
        return result

    def draw(self, step):
        """Gradient histograms, and the plots as PNGs and TensorBoard images."""
        report = self.trainer.inspect(self.fixed_x, self.fixed_y)
        self.summaries.gradient_histograms(step, report)
        if not self.config.plots:
            return
        predictions = np.concatenate([np.argmax(self.trainer.model(x), axis=-1)
                                      for x, _ in self.test_batches])
        layers = [layer.name for layer in decoupled_layers(self.trainer.model)]
        figures = {"loss": plots.loss_curves(self.log, self.config.decay_boundaries()),
                   "predictions": plots.prediction_grid(
                       self.test_split.x, self.test_split.y, predictions, FIXED_EXAMPLES)}
        if report:
            figures["cosine"] = plots.cosine_curves(self.log, layers)
            figures["gradients"] = plots.gradient_heatmaps(report, step, layers)
        for name, figure in figures.items():
            png = plots.to_png(figure)
            plots.save_png(png, self.run_dir.file(f"{name}.png"))
            self.summaries.image(step, name, png)
        self.summaries.flush()

    def save_checkpoint(self, step):
        """Saves a checkpoint, unless a step was refused for NaN/Inf (under XLA no step raises)
        or an update overflowed: then stops, saving nothing."""
        if isinstance(self.trainer, DNITrainer):
            try:
                self.trainer.check_finite()
            except NonFiniteError as error:
                raise self.stopped(error) from error
        bad = self.trainer.nonfinite_variables()
        if bad:
            raise RunError(f"NaN/Inf in the weights after step {step - 1}: {'; '.join(bad)}. An "
                           "update overflowed: lower the learning rates. Not saved; the last "
                           f"checkpoint ({self.checkpoints.latest or 'none yet'}) is intact.")
        return self.checkpoints.save()

    def stopped(self, error):
        """The `RunError` of a NaN/Inf step: the last checkpoint is intact."""
        return RunError(f"{error} Stopped; the last checkpoint "
                        f"({self.checkpoints.latest or 'none yet'}) is intact.")

    def train(self):
        config, trainer = self.config, self.trainer
        step = self.start
        batches = iter(data.train_batches(self.train_split, config.batch_size, config.seed,
                                          self.start))
        while step < self.total:
            x, y = next(batches)
            try:   # the logs stay on the device, summed in trainer.log_window
                trainer.train_step(x, y)
            except NonFiniteError as error:
                raise self.stopped(error) from error
            step += 1
            if step % config.log_every == 0 or step == self.total:
                means = trainer.log_window.read()   # cosines: over the measured steps
                self.progress.train(step, means)
                self.record_train(step, {**means, **self.learning_rates(),
                                         "steps_per_sec": self.progress.rate})
            if step % config.eval_every == 0 and step != self.total:
                self.evaluate(step)
            if step % config.checkpoint_every == 0 or step == self.total:
                self.save_checkpoint(step)
        return step

    def finish(self, step, wall):
        result = self.evaluate(step)
        temporary = self.run_dir.file("model.tmp.keras")
        self.trainer.model.save(temporary)
        os.replace(temporary, self.run_dir.file("model.keras"))
        self.summaries.close()
        self.progress.say(
            f"done: step {step}/{self.total} in {_duration(wall)} | test accuracy "
            f"{100 * result['accuracy']:.2f}% | test loss {result['loss']:.4f}\n"
            f"outputs in {self.run_dir.path}: checkpoints/, TensorBoard logs (train/, eval/), "
            "metrics.jsonl, *.png, model.keras")
        return self.summary(step, result, wall, complete=False)

    def summary(self, step, result, wall, complete):
        return {"step": step, "test_accuracy": result["accuracy"], "test_loss": result["loss"],
                "wall_time_s": wall, "model_dir": self.run_dir.path, "resumed_from": self.restored,
                "complete": complete}

    def report_complete(self, result):
        """A finished run asked again: says so and returns its summary, writing nothing."""
        self.progress.say(
            f"run complete at step {self.start} in {self.run_dir.path} (test accuracy "
            f"{100 * result['accuracy']:.2f}%, test loss {result['loss']:.4f}); nothing to do. "
            "Pass a larger --train_steps (or --epochs) to train on.")
        return self.summary(self.start, result, 0.0, complete=True)


def _interrupt(signum, frame):
    raise Interrupted(signum)


def run(config):
    """Trains as `config` says; returns a summary dict (step, test accuracy, ...).

    A finished run (final evaluation logged, model saved) is left exactly as
    it is: the summary then has `complete=True`. Ctrl-C or SIGTERM saves a
    checkpoint at the current step, then raises `Interrupted`.
    """
    if config.task != "classify":   # Copy, Repeat Copy, char LM: recurrent DNI
        from sg_keras.job import sequence_experiment
        return sequence_experiment.run(config)
    started = time.perf_counter()
    job = _Run(config)
    final = job.final_eval()
    if final:
        return job.report_complete(final)
    job.open()
    main_thread = threading.current_thread() is threading.main_thread()
    previous = {}
    if main_thread:
        previous = {signum: signal.signal(signum, _interrupt)
                    for signum in (signal.SIGINT, signal.SIGTERM)}
    try:
        step = job.train()
    except KeyboardInterrupt as error:
        path = job.save_checkpoint(int(job.trainer.step.numpy()))
        job.summaries.close()
        job.progress.say(f"interrupted: saved {path}; run the same command to resume")
        if isinstance(error, Interrupted):
            raise
        raise Interrupted() from error
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)
    return job.finish(step, time.perf_counter() - started)
