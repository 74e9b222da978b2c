"""The sequence job behind `train.py --task=copy|repeat_copy|char_lm`: recurrent DNI runs.

`run(config)` trains an LSTM of `--units` with truncated BPTT of `--truncation`
steps (`--mode=backprop`) or recurrent DNI (`--mode=dni`, `--aux` for DNI +
Aux) and writes into `--model_dir`:

    checkpoints/      cell, readout, synthesizer, aux head, both optimizers, the
                      step (= data position), the curriculum (level and recent
                      errors) and, for char_lm, the carried LSTM state
    train/, eval/     TensorBoard: loss, per-symbol error or bits per character,
                      N (curriculum level), largest N solved, sg_loss, aux_loss,
                      sg_norm, cosine/boundaryK (synthetic vs true future gradient
                      at each chunk boundary, true = full BPTT over the batch)
    metrics.jsonl     every logged metric; curriculum.png, bpc.png, cosine.png
    run_config.json, flags.json

Copy and Repeat Copy batches are drawn from a generator seeded by
`(--seed, step)`, so a resumed run sees the batches it would have seen.
char_lm reads `--batch_size` parallel streams of the text (the last 10 % held
out for evaluation); the LSTM state carries over from batch to batch and is
checkpointed, so a run resumes mid-sequence with the state it had.

Example:

>>> summary = run(Config(model_dir="runs/copy", task="copy", mode="dni", units=32,
...                      truncation=3, train_steps=2000))     # doctest: +SKIP
>>> summary["solved"]                                        # doctest: +SKIP
6
"""

import signal
import threading
import time

import keras
import numpy as np
import tensorflow as tf

from sg_keras.job import plots, sequence_plots
from sg_keras.job import sequence_tasks as tasks
from sg_keras.job.checkpoints import Checkpoints, RunDirectory
from sg_keras.job.config import ConfigError
from sg_keras.job.history import MetricsLog
from sg_keras.job.summaries import Summaries
from sg_keras.recurrent import RecurrentDNI, per_step_sigmoid_bits, per_step_softmax_bits
from sg_keras.synthesizers import DenseSynthesizer
from sg_keras.validation import ArgumentError

HELD_OUT = 0.1   # char_lm: fraction of the text kept for evaluation


def build_core(config, outputs, loss):
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


class _Curriculum:
    """The task's `Curriculum`, with its state in variables a checkpoint holds."""

    def __init__(self, config):
        self.curriculum = tasks.Curriculum(threshold=config.curriculum_threshold,
                                           window=config.curriculum_window)
        self.level = tf.Variable(1, dtype=tf.int64, trainable=False, name="level")
        self.recent = tf.Variable(np.zeros(config.curriculum_window, "float32"),
                                  trainable=False, name="recent")
        self.count = tf.Variable(0, dtype=tf.int64, trainable=False, name="recent_count")

    def load(self):
        count = int(self.count.numpy())
        self.curriculum.restore({"level": int(self.level.numpy()),
                                 "recent": self.recent.numpy()[:count].tolist()})

    def store(self):
        state = self.curriculum.state()
        recent = np.zeros(self.curriculum.window, "float32")
        recent[:len(state["recent"])] = state["recent"]
        self.level.assign(state["level"])
        self.recent.assign(recent)
        self.count.assign(len(state["recent"]))


class SequenceRun:
    """One sequence-task run; `run()` is the public entry point."""

    def __init__(self, config):
        self.config = config.validate()
        self.lm = config.task == "char_lm"
        if self.lm:
            try:
                text = tasks.load_text(config.text_path, config.data_dir)
                split = int((1 - HELD_OUT) * len(text.ids))
                self.train_ids, self.eval_ids = text.ids[:split], text.ids[split:]
                next(tasks.stream_batches(self.train_ids, config.batch_size,
                                          config.sequence_length))   # long enough?
            except ArgumentError as error:
                value = getattr(config, error.argument, config.text_path)
                raise ConfigError(f"--{error.argument}={value!r}: {error.problem}") from error
            self.depth = len(text.vocabulary)
            inputs, outputs, loss = self.depth, self.depth, per_step_softmax_bits
        else:
            inputs = config.bits + 2
            outputs, loss = tasks.output_features(config.task, config.bits), per_step_sigmoid_bits
        self.run_dir = RunDirectory(config.model_dir, config.architecture())
        keras.utils.set_random_seed(config.seed)
        self.core = build_core(config, outputs, loss)
        self.core.build(inputs)
        self.step = tf.Variable(0, dtype=tf.int64, trainable=False, name="step")
        self.curriculum = _Curriculum(config)
        parts = {"cell": self.core.cell, "readout": self.core.readout,
                 "optimizer": self.core.optimizer, "step": self.step,
                 "level": self.curriculum.level, "recent": self.curriculum.recent,
                 "recent_count": self.curriculum.count}
        if self.core.synthesizer is not None:
            parts.update(synthesizer=self.core.synthesizer, sg_optimizer=self.core.sg_optimizer)
        if self.core.aux_head is not None:
            parts["aux_head"] = self.core.aux_head
        if self.lm:
            self.state = [tf.Variable(s, trainable=False, name=f"state{i}") for i, s in
                          enumerate(self.core.initial_state(config.batch_size))]
            parts["state"] = self.state
        self.checkpoints = Checkpoints(self.run_dir.checkpoint_dir, tf.train.Checkpoint(**parts),
                                       self.step, config.keep_checkpoints)
        self.restored = self.checkpoints.restore_latest()
        self.curriculum.load()
        self.start = int(self.step.numpy())
        self.log = MetricsLog(self.run_dir.metrics_path, self.start)

    # ---------------------------------------------------------------- one batch

    def batch(self, step):
        """`(x, y, weights, state, ends)` of training batch `step`."""
        config = self.config
        if self.lm:
            ids, targets = next(tasks.stream_batches(self.train_ids, config.batch_size,
                                                     config.sequence_length, start=step))
            return (tasks.one_hot(ids, self.depth), targets, np.ones(ids.shape, "float32"),
                    [s.value() for s in self.state], False)
        rng = np.random.default_rng([config.seed, step])
        x, y, w = tasks.task_batch(config.task, rng, config.batch_size,
                                   self.curriculum.curriculum.level, config.bits,
                                   config.max_repeats)
        return x, y, w, None, True

    def train_step(self, step):
        x, y, w, state, ends = self.batch(step)
        logs = self.core.train_sequence(x, y, w, state=state, ends=ends)
        error = tasks.per_symbol_error(logs["loss"], w)
        if self.lm:
            for variable, value in zip(self.state, self.core.last_state):
                variable.assign(value)
            logs["bpc"] = error
        else:
            logs["per_symbol_error"] = error
            logs["N"] = self.curriculum.curriculum.level
            self.curriculum.curriculum.update(error)
            self.curriculum.store()
            logs["solved"] = self.curriculum.curriculum.solved
        return logs, (x, y, w, state)

    def cosines(self, x, y, w, state):
        """Cosine of the synthetic and the true (full-BPTT) future gradient at each boundary."""
        values = {f"cosine/boundary{k + 1}": c
                  for k, c in enumerate(self.core.boundary_cosines(x, y, w, state=state))}
        if values:
            values["cosine/mean"] = float(np.mean(list(values.values())))
        return values

    def evaluate(self):
        """char_lm: bits per character on the held-out text, one stream from the zero state."""
        n = (len(self.eval_ids) - 1) // self.config.sequence_length * self.config.sequence_length
        x = tasks.one_hot(self.eval_ids[:n].reshape(1, -1), self.depth)
        predictions, _ = self.core.predict_sequence(x)
        bits = per_step_softmax_bits(self.eval_ids[1:n + 1], tf.reshape(predictions,
                                                                        (-1, self.depth)))
        return {"bpc": float(tf.reduce_mean(bits))}

    # ---------------------------------------------------------------- the loop

    def draw(self, summaries, step):
        figures = {"curriculum": sequence_plots.curriculum_curve(self.log)} if not self.lm else {
            "bpc": sequence_plots.bpc_curves(self.log)}
        if self.log.keys("cosine/"):
            figures["cosine"] = plots.cosine_curves(self.log)
        for name, figure in figures.items():
            png = plots.to_png(figure)
            plots.save_png(png, self.run_dir.file(f"{name}.png"))
            summaries.image(step, name, png)

    def record(self, summaries, split, step, values):
        summaries.scalars(split, step, values)
        self.log.append({"step": step, "split": split, **values})

    def train(self):
        config = self.config
        summaries = Summaries(self.run_dir.path)
        step, sums, count, began = self.start, {}, 0, time.perf_counter()
        try:
            while step < config.train_steps:
                logs, batch = self.train_step(step)
                step += 1
                self.step.assign(step)
                for key, value in logs.items():
                    sums[key] = sums.get(key, 0.0) + float(value)
                count += 1
                values = {}
                if config.measure_every and step % config.measure_every == 0 \
                        and self.core.synthesizer is not None:
                    values.update(self.cosines(*batch))
                if step % config.log_every == 0 or step == config.train_steps:
                    values.update({k: v / count for k, v in sums.items()},
                                  steps_per_sec=count / (time.perf_counter() - began))
                    if not self.lm:
                        values.update(N=logs["N"], solved=logs["solved"])
                    print(f"step {step}/{config.train_steps} | " + " | ".join(
                        f"{k} {v:.4g}" for k, v in values.items() if "/" not in k), flush=True)
                    sums, count, began = {}, 0, time.perf_counter()
                if values:
                    self.record(summaries, "train", step, values)
                if self.lm and (step % config.eval_every == 0 or step == config.train_steps):
                    self.record(summaries, "eval", step, self.evaluate())
                if step % config.checkpoint_every == 0 or step == config.train_steps:
                    self.checkpoints.save()
                    if config.plots:
                        self.draw(summaries, step)
        except KeyboardInterrupt:
            path = self.checkpoints.save()
            print(f"interrupted: saved {path}; run the same command to resume", flush=True)
            raise
        finally:
            summaries.close()
        return step

    def summary(self, step, wall):
        result = {"step": step, "wall_time_s": wall, "model_dir": self.run_dir.path,
                  "resumed_from": self.restored, "task": self.config.task}
        if self.lm:
            result["eval_bpc"] = self.evaluate()["bpc"]
        else:
            result.update(solved=self.curriculum.curriculum.solved,
                          level=self.curriculum.curriculum.level)
        return result


def run(config):
    """Trains a sequence task as `config` says (resuming from `--model_dir`); returns a summary."""
    started = time.perf_counter()
    job = SequenceRun(config)
    job.run_dir.write_file("flags.json", config.to_json())
    print(f"resuming from {job.restored} (step {job.start})" if job.restored
          else f"starting a new run in {job.run_dir.path}", flush=True)
    main_thread = threading.current_thread() is threading.main_thread()
    previous = signal.signal(signal.SIGTERM, _terminate) if main_thread else None
    try:
        step = job.train()           # SIGTERM and Ctrl-C save a checkpoint first
    finally:
        if main_thread:
            signal.signal(signal.SIGTERM, previous)
    return job.summary(step, time.perf_counter() - started)


def _terminate(signum, frame):
    raise KeyboardInterrupt(f"signal {signum}")
