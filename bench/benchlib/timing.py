"""Trainers timed step by step, their ratios, and the memory of a process.

* `batches(...)`: MNIST training batches held in memory;
* `make_trainer(...)`: the trainer that `train.py` builds for a `Config`;
* `step_times(...)`: per-step timings of several trainers measured in
  interleaved blocks; `time_trainers(...)`: both together on MNIST batches;
  `ratio(...)`: one trainer's step time over another's, round by round;
* `status_mb(...)`: a memory field of `/proc/PID/status` in MB.

>>> ratio({"a": [2.0, 3.0, 4.0], "b": [1.0, 1.0, 1.0]}, "a", "b")
(3.0, '3.00 (2.00-4.00)')
"""

import statistics
import time

from benchlib import paths
from benchlib.training import BATCH_SIZE


def batches(split, count, seed=0):
    """`count` training batches held in memory, so timings leave out the input pipeline."""
    from sg_keras.job import data

    return list(data.train_batches(split, BATCH_SIZE, seed).take(count))


def make_trainer(input_shape, **settings):
    """The trainer that `train.py` would build for `Config(**settings)`."""
    from sg_keras.job.config import Config
    from sg_keras.job.tasks import build_trainer

    config = Config(model_dir=str(paths.RUNS / "unused"), **settings).validate()
    return build_trainer(config, input_shape)


def step_times(steppers, batches, warmup=50, rounds=20, block=50, clock=time.perf_counter):
    """Seconds per step of each stepper (a `train_step(x, y)` callable), one value per round.

    Every stepper first runs `warmup` steps (tracing, XLA compilation). Then,
    in each of `rounds` rounds, every stepper runs `block` consecutive steps,
    in an order rotated from round to round, so slow phases of a shared
    machine hit all of them alike; compare steppers round by round. `clock`:
    `time.perf_counter` (wall time) or `time.process_time` (this process's
    CPU time, which time spent waiting for other users' work leaves out).
    """
    names = list(steppers)
    for name in names:
        for index in range(warmup):
            steppers[name](*batches[index % len(batches)])
    times = {name: [] for name in names}
    for round_index in range(rounds):
        shift = round_index % len(names)
        for name in names[shift:] + names[:shift]:
            start = clock()
            for index in range(block):
                steppers[name](*batches[(round_index * block + index) % len(batches)])
            times[name].append((clock() - start) / block)
    return times


def time_trainers(settings, warmup=50, rounds=20, block=50):
    """Builds a trainer per `{name: make_trainer settings}` and times it with `step_times`.

    All in this process, on 50 MNIST training batches held in memory. Each
    trainer runs one step when built; one that fails to build or step is left
    out. Returns `(times, errors)`: `step_times`' result and, by name, the
    error of each trainer left out ("ErrorType: message").
    """
    train_split, _ = paths.load_mnist()
    held = batches(train_split, 50)
    trainers, errors = {}, {}
    for name, config in settings.items():
        try:
            trainer = make_trainer(train_split.x.shape[1:], **config)
            trainer.train_step(*held[0])
            trainers[name] = trainer
        except Exception as error:  # e.g. XLA failing to compile: reported, not fatal
            errors[name] = f"{type(error).__name__}: {' '.join(str(error).split())[:300]}"
            print(f"{name}: {errors[name]}", flush=True)
    steppers = {name: trainer.train_step for name, trainer in trainers.items()}
    return step_times(steppers, held, warmup, rounds, block), errors


def ratio(times, name, baseline):
    """`name`'s step time over `baseline`'s, from the rounds of `step_times`.

    Returns `(median, text)`: the median of the per-round ratios, and a text
    with their interquartile range, e.g. "1.14 (1.11-1.21)".
    """
    per_round = [t / b for t, b in zip(times[name], times[baseline])]
    median = statistics.median(per_round)
    if len(per_round) < 2:
        return median, f"{median:.2f}"
    low, _, high = statistics.quantiles(per_round, n=4)
    return median, f"{median:.2f} ({low:.2f}-{high:.2f})"


def status_mb(field, pid="self"):
    """A memory field of `/proc/PID/status` ("VmRSS", "VmHWM", ...) in MB."""
    with open(f"/proc/{pid}/status", encoding="utf-8") as handle:
        for line in handle:
            if line.startswith(f"{field}:"):
                return int(line.split()[1]) / 1024
    raise RuntimeError(f"no {field} in /proc/{pid}/status")

