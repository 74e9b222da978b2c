"""The training job behind `train.py`: data, model, loop, checkpoints, logs, plots.

`run(config)` trains the paper's MNIST FCN with backprop, DNI or cDNI and
writes everything into `config.model_dir`:

    checkpoints/        tf.train.CheckpointManager (model, synthesizers, both
                        optimizers, step = data position, random state)
    train/, eval/       TensorBoard event files
    metrics.jsonl       every logged metric (the plots are drawn from it)
    *.png               loss.png, cosine.png, gradients.png, predictions.png
    model.keras         the trained model (written at the end)
    run_config.json     the architecture this directory holds
    flags.json          the flags of the latest run

Re-running with the same `model_dir` resumes from the latest checkpoint. Bad
settings, data or checkpoints raise `ConfigError`, `DataError` or
`CheckpointError` before anything is written over; NaN/Inf raises `RunError`
with the last good checkpoint untouched.

Example:

>>> summary = run(Config(model_dir="runs/quick", data_path="../shared/data/mnist.npz",
...                      epochs=1))                          # doctest: +SKIP
>>> summary["test_accuracy"]                                 # doctest: +SKIP
0.97
"""

import datetime
import os
import signal
import threading
import time

import keras
import numpy as np
import tensorflow as tf

from sg_keras.engine import NonFiniteError
from sg_keras.job import data, networks, plots
from sg_keras.job.checkpoints import CheckpointError, Checkpoints, RunDirectory
from sg_keras.job.config import ConfigError
from sg_keras.job.data import DataError
from sg_keras.job.history import MetricsLog
from sg_keras.job.summaries import Summaries
from sg_keras.pipeline import PipelinedTrainer
from sg_keras.trainer import DNITrainer

FIXED_EXAMPLES = 32   # test digits shown in predictions.png and gradients.png


class RunError(RuntimeError):
    """Training stopped (e.g. NaN/Inf); the message says where and what is intact."""


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
    model = networks.fcn(input_shape, config.num_layers, config.units, num_classes,
                         decoupled=options.mode.decoupled, context=options.mode.uses_context,
                         synthesizer_layers=config.synth_layers,
                         synthesizer_units=config.synth_units,
                         synthesizer_rank=config.synth_rank)
    sg_rate = config.sg_learning_rate or config.learning_rate
    optimizers = {"optimizer": keras.optimizers.Adam(_learning_rate(config.learning_rate, config)),
                  "sg_optimizer": keras.optimizers.Adam(_learning_rate(sg_rate, config))}
    if config.schedule == "pipelined":
        return PipelinedTrainer(model, options.mode, **optimizers, update_prob=options.update_prob,
                                sg_clip_norm=options.sg_clip_norm, devices=config.devices or None,
                                seed=config.seed, jit_compile=config.jit_compile)
    return DNITrainer(model, **optimizers, seed=config.seed, jit_compile=config.jit_compile,
                      **options.as_dict())


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
        self.run_dir = RunDirectory(config.model_dir, config.architecture())
        if config.deterministic:
            tf.config.experimental.enable_op_determinism()
        keras.utils.set_random_seed(config.seed)
        self.trainer = build_trainer(config, self.train_split.x.shape[1:])
        self.checkpoints = Checkpoints(self.run_dir.checkpoint_dir, self.trainer.checkpoint,
                                       self.trainer.step, config.keep_checkpoints)
        self.restored = self.checkpoints.restore_latest()
        self.start = int(self.trainer.step.numpy())
        self.total = config.total_steps(len(self.train_split) // config.batch_size)
        self.log = MetricsLog(self.run_dir.metrics_path, self.start)
        self.summaries = Summaries(self.run_dir.path)
        self.progress = _Progress(self.start, self.total)
        self.test_batches = data.eval_batches(self.test_split)
        fixed = data.eval_batches(self.test_split, FIXED_EXAMPLES).take(1)
        self.fixed_x, self.fixed_y = next(iter(fixed))

    def learning_rates(self):
        return {"learning_rate/network": float(self.trainer.optimizer.learning_rate),
                "learning_rate/synthesizer": float(self.trainer.sg_optimizer.learning_rate)}

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
        predictions = np.argmax(self.trainer.model(self.fixed_x), axis=-1)
        figures = {"loss": plots.loss_curves(self.log),
                   "predictions": plots.prediction_grid(
                       self.fixed_x.numpy(), self.fixed_y.numpy(), predictions)}
        if report:
            figures["cosine"] = plots.cosine_curves(self.log)
            figures["gradients"] = plots.gradient_heatmaps(report)
        for name, png in figures.items():
            plots.save_png(png, self.run_dir.file(f"{name}.png"))
            self.summaries.image(step, name, png)
        self.summaries.flush()

    def save_checkpoint(self, step):
        """Saves a checkpoint, unless an update overflowed: then stops, saving nothing."""
        bad = self.trainer.nonfinite_variables()
        if bad:
            raise RunError(f"NaN/Inf in the weights after step {step - 1}: {'; '.join(bad)}. An "
                           "update overflowed: lower the learning rates. Not saved; the last "
                           f"checkpoint ({self.checkpoints.latest or 'none yet'}) is intact.")
        return self.checkpoints.save()

    def train(self):
        config, trainer = self.config, self.trainer
        step = self.start
        batches = iter(data.train_batches(self.train_split, config.batch_size, config.seed,
                                          self.start))
        sums, count = {}, 0
        while step < self.total:
            x, y = next(batches)
            try:
                logs = trainer.train_step(x, y)
            except NonFiniteError as error:
                raise RunError(f"{error} Stopped; the last checkpoint "
                               f"({self.checkpoints.latest or 'none yet'}) is intact.") from error
            step += 1
            cosines = {k: float(v) for k, v in logs.items() if k.startswith("cosine/")}
            cosines = {k: v for k, v in cosines.items() if not np.isnan(v)}
            if cosines:   # measured on this step's batch only (NaN on other steps)
                self.record_train(step, cosines)
            for key, value in logs.items():
                if not key.startswith("cosine/"):
                    sums[key] = sums.get(key, 0.0) + float(value)
            count += 1
            if step % config.log_every == 0 or step == self.total:
                means = {key: total / count for key, total in sums.items()}
                self.progress.train(step, means)
                self.record_train(step, {**means, **self.learning_rates(),
                                         "steps_per_sec": self.progress.rate})
                sums, count = {}, 0
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
        return {"step": step, "test_accuracy": result["accuracy"], "test_loss": result["loss"],
                "wall_time_s": wall, "model_dir": self.run_dir.path, "resumed_from": self.restored}


def _raise_keyboard_interrupt(signum, frame):
    raise KeyboardInterrupt(f"signal {signum}")


def run(config):
    """Trains as `config` says; returns a summary dict (step, test accuracy, ...).

    Ctrl-C or SIGTERM saves a checkpoint at the current step before stopping.
    """
    if config.task != "classify":   # Copy, Repeat Copy, char LM: recurrent DNI
        from sg_keras.job import sequence_experiment
        return sequence_experiment.run(config)
    started = time.perf_counter()
    job = _Run(config)
    job.run_dir.write_file("flags.json", config.to_json())
    if job.restored:
        job.progress.say(f"resuming from {job.restored} (step {job.start})")
    else:
        job.progress.say(f"starting a new run in {job.run_dir.path}")
    main_thread = threading.current_thread() is threading.main_thread()
    previous = signal.signal(signal.SIGTERM, _raise_keyboard_interrupt) if main_thread else None
    try:
        step = job.train()
    except KeyboardInterrupt:
        path = job.save_checkpoint(int(job.trainer.step.numpy()))
        job.summaries.close()
        job.progress.say(f"interrupted: saved {path}; run the same command to resume")
        raise
    finally:
        if main_thread:
            signal.signal(signal.SIGTERM, previous)
    return job.finish(step, time.perf_counter() - started)
