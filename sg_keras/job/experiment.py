"""The run loop behind `train.py`, one for every task: resume, signals, progress, checkpoints.

`run(config)` trains `config.task` (the image classifier, Copy, Repeat Copy or
the char LM: `sg_keras.job.tasks` says what differs) and writes everything
into `config.model_dir`:

    checkpoints/        tf.train.CheckpointManager (model, synthesizers, both
                        optimizers, step = data position, random state; the
                        sequence tasks add the curriculum and the carried state)
    train/, eval/       TensorBoard event files
    metrics.jsonl       every logged metric (the plots are drawn from it)
    *.png               classify: loss, cosine, gradients, predictions;
                        copy: curriculum, cosine; char_lm: bpc, cosine
    model.keras         classify: the trained model (written at the end): takes
                        images as the data holds them (e.g. 28x28) scaled to [0, 1]
    run_config.json     the architecture this directory holds
    flags.json          the flags of the latest run
    run.lock            held (`fcntl.flock`) by the one process training here

One process at a time trains in a directory: a second one stops at once,
naming the process that holds it. Re-running with the same `model_dir`
resumes from the newest intact checkpoint (a corrupt newer one is skipped
with a warning). Re-running a finished run changes nothing and says so,
unless more steps are asked for. Bad settings, data or checkpoints raise
`ConfigError`, `DataError` or `CheckpointError` before anything is written
over; NaN/Inf, or a file that cannot be written (a full disk), raises
`RunError` naming what happened and the last intact checkpoint. SIGTERM and
Ctrl-C finish the step in flight, save a checkpoint and raise `Interrupted`,
whose `exit_status` is 143 or 130; a second signal stops at once, saving
nothing (the last checkpoint stays intact).

The progress lines give steps/s per log window and the time left, measured
from the end of the first window (which includes tracing the step), so the
first line's ETA is "?". Evaluation (and the plots) come every
`--eval_every` steps and at the end; evaluation time is left out of the rate.

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
import tensorflow as tf

from sg_keras.engine import NonFiniteError
from sg_keras.job import plots
from sg_keras.job.checkpoints import CheckpointError, Checkpoints, RunDirectory
from sg_keras.job.config import ConfigError
from sg_keras.job.data import DataError
from sg_keras.job.files import WriteError
from sg_keras.job.metrics_log import MetricsLog
from sg_keras.job.summaries import Summaries
from sg_keras.job.tasks import make_task


class RunError(RuntimeError):
    """Training stopped (NaN/Inf, a failed write); the message says where and what is intact."""


class Interrupted(KeyboardInterrupt):
    """Stopped by a signal; `exit_status` is 128 + the signal number, `saved` the checkpoint
    written on the way out (None after a second signal, which stops at once)."""

    def __init__(self, signum=signal.SIGINT, saved=None):
        super().__init__(f"signal {signum}")
        self.exit_status = 128 + int(signum)
        self.saved = saved


# What a user can cause and fix; train.py prints these as one line and exits 1.
EXPECTED_ERRORS = (ConfigError, DataError, CheckpointError, RunError)


def _duration(seconds):
    return str(datetime.timedelta(seconds=int(seconds)))


class _Progress:
    """Progress lines: steps/s per log window (evaluation left out) and the time left.

    The time left is measured from the end of the first log window on, so
    that the tracing of the first steps does not inflate it.
    """

    def __init__(self, start, total):
        self.total = total
        self._mark_step, self._mark_time = start, time.perf_counter()
        self._clock = None   # (step, time) at the end of the first window
        self.rate = 0.0

    def say(self, line):
        print(line, flush=True)

    def warn(self, line):
        print(f"warning: {line}", file=sys.stderr, flush=True)

    def exclude(self, seconds):
        """Leaves `seconds` (spent evaluating, plotting) out of the rates."""
        self._mark_time += seconds
        if self._clock:
            self._clock = (self._clock[0], self._clock[1] + seconds)

    def train(self, step, columns):
        now = time.perf_counter()
        self.rate = (step - self._mark_step) / max(now - self._mark_time, 1e-9)
        self._mark_step, self._mark_time = step, now
        eta = "?"
        if self._clock is None:
            self._clock = (step, now)
        elif step > self._clock[0]:
            rate = (step - self._clock[0]) / max(now - self._clock[1], 1e-9)
            eta = _duration((self.total - step) / rate)
        self.say(" | ".join([f"step {step:>{len(str(self.total))}}/{self.total} "
                             f"({100 * step // self.total}%)", *columns,
                             f"{self.rate:.1f} steps/s", f"ETA {eta}"]))


class _Run:
    """One training run's state; `run()` is the public entry point.

    Holds the model directory's lock from construction to `close()`.
    """

    def __init__(self, config):
        self.config = config.validate()
        self.task = make_task(config)                  # loads the data: errors before writing
        strategy = self.task.strategy()
        self.run_dir = RunDirectory(config.model_dir, config.architecture())   # and its lock
        self.summaries = None
        try:
            if config.deterministic:
                tf.config.experimental.enable_op_determinism()
            keras.utils.set_random_seed(config.seed)
            with strategy.scope():   # the model and optimizers on the strategy's devices
                checkpoint, self.step = self.task.build()
            self.replicas = strategy.num_replicas_in_sync
            self.checkpoints = Checkpoints(self.run_dir.checkpoint_dir, checkpoint, self.step,
                                           config.keep_checkpoints)
            self.restored = self.checkpoints.restore_latest()
            self.task.restored()
            self.start = int(self.step.numpy())
            self.total = self.task.total_steps()
            self.log = MetricsLog(self.run_dir.metrics_path, self.start)
        except BaseException:
            self.run_dir.close()
            raise
        self.progress = _Progress(self.start, self.total)
        self.stop = None   # the signal number once SIGTERM / SIGINT arrived

    def close(self):
        """Closes the TensorBoard writers and releases the model directory."""
        try:
            if self.summaries:
                self.summaries.close()
        finally:
            self.run_dir.close()

    def open(self):
        """Starts writing: flags, the start lines, TensorBoard writers, the task's pipelines."""
        config = self.config
        self.run_dir.write_file("flags.json", config.to_json())
        for path, why in self.checkpoints.skipped:
            self.progress.warn(f"skipped checkpoint {os.path.basename(path)}, it is corrupt "
                               f"({why}); moved it to checkpoints/corrupt/ and resumed from "
                               f"{os.path.basename(self.restored)}")
        for line in self.task.warnings():
            self.progress.warn(line)
        if self.restored:
            self.progress.say(f"resuming from {self.restored} (step {self.start})")
        else:
            self.progress.say(f"starting a new run in {self.run_dir.path}")
        if config.strategy != "default":
            replicas = f"{self.replicas} replica{'s' if self.replicas > 1 else ''}"
            self.progress.say(f"--strategy={config.strategy}: {replicas}, "
                              f"{config.batch_size / self.replicas:g} examples each of the "
                              f"global batch of {config.batch_size}")
        self.progress.say(
            f"{self.total - self.start} steps to go of {self.total} ({self.task.plan()}); "
            f"speed and time left are printed every {config.log_every} steps")
        self.summaries = Summaries(self.run_dir.path)
        self.task.begin(self.start)

    def record(self, split, step, values):
        self.log.append({"step": step, "split": split, **values})
        self.summaries.scalars(split, step, values)

    def evaluate(self, step):
        """Evaluates, records, prints and draws; the time it takes is left out of the rate."""
        started = time.perf_counter()
        result = self.task.evaluate()
        self.record("eval", step, result)
        self.progress.say(f"eval at step {step}: {self.task.eval_line(result)}")
        self.draw(step)
        self.progress.exclude(time.perf_counter() - started)
        return result

    def draw(self, step):
        """The task's figures as PNGs and TensorBoard images."""
        for name, figure in self.task.figures(self.log, step, self.summaries).items():
            png = plots.to_png(figure)
            plots.save_png(png, self.run_dir.file(f"{name}.png"))
            self.summaries.image(step, name, png)
        self.summaries.flush()

    def save_checkpoint(self, step):
        """Saves a checkpoint, unless a step was refused for NaN/Inf (under XLA no step raises)
        or an update overflowed: then stops, saving nothing."""
        try:
            self.task.check_finite()
        except NonFiniteError as error:
            raise self.stopped(error) from error
        bad = self.task.nonfinite_variables()
        if bad:
            raise RunError(f"NaN/Inf in the weights after step {step - 1}: {'; '.join(bad)}. An "
                           "update overflowed: lower the learning rates. Not saved; the last "
                           f"checkpoint ({self.checkpoints.latest or 'none yet'}) is intact.")
        return self.checkpoints.save()

    def stopped(self, error):
        """The `RunError` of a NaN/Inf step: the last checkpoint is intact."""
        return RunError(f"{error} Stopped; the last checkpoint "
                        f"({self.checkpoints.latest or 'none yet'}) is intact.")

    def interrupt(self, step):
        """Saves a checkpoint at `step` after a signal; raises `Interrupted`."""
        path = self.save_checkpoint(step)
        self.progress.say(f"interrupted: saved {path}; run the same command to resume")
        raise Interrupted(self.stop, saved=path)

    def train(self):
        config, task = self.config, self.task
        step = self.start
        while step < self.total:
            if self.stop:
                self.interrupt(step)
            try:
                values = task.train_step(step)   # values measured at this step, if any
            except NonFiniteError as error:
                raise self.stopped(error) from error
            step += 1
            if step % config.log_every == 0 or step == self.total:
                means = task.log_values()
                self.progress.train(step, task.columns(means))
                values = {**values, **means, "steps_per_sec": self.progress.rate}
            if values:
                self.record("train", step, values)
            if step % config.eval_every == 0 and step != self.total:
                self.evaluate(step)
            if step % config.checkpoint_every == 0 or step == self.total:
                self.save_checkpoint(step)
        if self.stop:   # arrived during the last step: its checkpoint is saved
            self.interrupt(step)
        return step

    def finish(self, step, wall):
        result = self.evaluate(step)
        self.task.finish(self.run_dir)
        self.progress.say(
            f"done: step {step}/{self.total} in {_duration(wall)} | "
            f"{self.task.done_line(result)}\n"
            f"outputs in {self.run_dir.path}: {self.task.outputs}")
        return self.summary(step, result, wall, complete=False)

    def summary(self, step, result, wall, complete):
        return {"step": step, "task": self.config.task, **self.task.summary(result),
                "wall_time_s": wall, "model_dir": self.run_dir.path,
                "resumed_from": self.restored, "complete": complete}

    def report_complete(self, result):
        """A finished run asked again: says so and returns its summary, writing nothing."""
        self.progress.say(
            f"run complete at step {self.start} in {self.run_dir.path} "
            f"({self.task.done_line(result)}); nothing to do. Pass a larger --train_steps "
            "(or --epochs) to train on.")
        return self.summary(self.start, result, 0.0, complete=True)

    def on_signal(self, signum, frame):
        """The first SIGTERM / SIGINT stops at the next step boundary; a second at once."""
        if self.stop:
            raise Interrupted(signum)
        self.stop = signum

    def run(self, started):
        final = self.task.final_result(self.log, self.start) if self.start >= self.total else None
        if final:
            return self.report_complete(final)
        self.open()
        handlers = {}
        if threading.current_thread() is threading.main_thread():
            handlers = {signum: signal.signal(signum, self.on_signal)
                        for signum in (signal.SIGINT, signal.SIGTERM)}
        try:
            step = self.train()
        except Interrupted as error:
            if error.saved is None:
                self.progress.say("interrupted again: stopped at once, saving nothing; the last "
                                  f"checkpoint ({self.checkpoints.latest or 'none yet'}) is intact")
            raise
        finally:
            for signum, handler in handlers.items():
                signal.signal(signum, handler)
        return self.finish(step, time.perf_counter() - started)

    def write_failed(self, error):
        """The `RunError` of a file that could not be written: what, and what is intact."""
        return RunError(f"{error}: stopped. The last intact checkpoint is "
                        f"{self.checkpoints.latest or 'none yet'}; free space (or fix the "
                        "permissions) and run the same command to resume.")


def run(config):
    """Trains as `config` says; returns a summary dict (step, task, its figures, ...).

    A finished run (final evaluation logged, model saved) is left exactly as
    it is: the summary then has `complete=True`. Ctrl-C or SIGTERM saves a
    checkpoint at the current step, then raises `Interrupted`.
    """
    started = time.perf_counter()
    try:
        job = _Run(config)
    except WriteError as error:   # run_config.json
        raise RunError(f"{error}: stopped before training; free space (or fix the "
                       "permissions) and run the same command again.") from error
    try:
        return job.run(started)
    except WriteError as error:
        raise job.write_failed(error) from error
    finally:
        job.close()
