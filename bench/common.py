"""Helpers shared by the benchmark scripts.

* where things are: the repository, `bench/results/`, the training runs'
  model directories (`bench/results/runs/`), real MNIST (`../shared/data/mnist.npz`
  next to the checkout; `require_mnist()` exits 0 with "skipped: ..." without it);
* `machine()`: CPU model, core count, load average at start and end,
  Python/TensorFlow/Keras versions;
* `write_results(...)`: prints a table and saves it as JSON and Markdown, both
  recording the command that made it, the date and the machine;
* `save_figure(...)`: a matplotlib figure as `bench/results/NAME.png`;
* `schedule(...)`: the step budget and learning-rate decay of an epoch count;
* `train(...)`: one in-process training run through `sg_keras.job.experiment.run`,
  returning its summary and its `MetricsLog`; `train_seeds(...)`: one per
  seed, returning test errors, wall times and logs; `final_cosines(...)`: the
  synthetic/true gradient cosine per layer at the end of such runs;
* `make_trainer(...)`, `step_times(...)`, `time_trainers(...)`: a bare
  `DNITrainer` of the MNIST FCN, per-step timings of several trainers
  measured in interleaved blocks, and both together on MNIST batches;
* `status_mb(...)`: a memory field of `/proc/PID/status` in MB.
"""

import datetime
import functools
import json
import os
import platform
import shlex
import shutil
import statistics
import sys
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

REPO = Path(__file__).resolve().parents[1]
RESULTS = REPO / "bench" / "results"
RUNS = RESULTS / "runs"
MNIST = Path(__file__).resolve().parents[2] / "shared" / "data" / "mnist.npz"
BATCH_SIZE = 256
TAIL = 0.2   # final cosine: mean over the last 20 % of a run's measurements
LOAD_AT_START = os.getloadavg()[0]   # other users' work shows in the load average


def require_mnist():
    """The path of real MNIST; exits 0 with a "skipped" message when it is absent."""
    if not MNIST.is_file():
        print(f"skipped: {MNIST} not found (real MNIST in Keras' mnist.npz layout)")
        sys.exit(0)
    return str(MNIST)


def command():
    """The command line that is running, as typed from the repository root."""
    script = os.path.relpath(os.path.abspath(sys.argv[0]), REPO)
    return shlex.join(["python", script, *sys.argv[1:]])


def _cpu_model():
    with open("/proc/cpuinfo", encoding="utf-8") as handle:
        for line in handle:
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    return platform.processor() or "unknown"


def machine():
    """What the numbers were measured on."""
    import keras
    import tensorflow as tf

    return {"cpu": _cpu_model(), "cores": os.cpu_count(),
            "load_1min_at_start": LOAD_AT_START, "load_1min_at_end": os.getloadavg()[0],
            "python": platform.python_version(), "tensorflow": tf.__version__,
            "keras": keras.__version__, "platform": platform.platform()}


def machine_line(info):
    load = f"{info['load_1min_at_start']:.2f} at start, {info['load_1min_at_end']:.2f} at end"
    return (f"{info['cpu']}, {info['cores']} cores (1-min load average {load}), "
            f"Python {info['python']}, TensorFlow {info['tensorflow']}, Keras {info['keras']}")


def _cell(value):
    if isinstance(value, float):
        return f"{value:.3g}" if abs(value) < 0.01 and value else f"{value:.2f}"
    return "" if value is None else str(value)


def markdown_table(columns, rows):
    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    lines += ["| " + " | ".join(_cell(row.get(c)) for c in columns) + " |" for row in rows]
    return "\n".join(lines)


def write_results(name, title, columns, rows, notes=(), **extra):
    """Prints a table and writes `bench/results/NAME.json` and `NAME.md`.

    Args:
        name: file stem.
        title: one-line description (the Markdown heading).
        columns: column names, in order; each row is a dict keyed by them
            (rows may hold more keys: they go to the JSON only).
        rows: the table.
        notes: lines printed under the table (budget, targets, verdicts).
        **extra: more JSON fields (raw measurements).
    """
    RESULTS.mkdir(parents=True, exist_ok=True)
    info = machine()
    stamp = datetime.datetime.now().astimezone().isoformat(timespec="seconds")
    table = markdown_table(columns, rows)
    text = "\n\n".join([f"## {title}", f"Command: `{command()}`",
                        f"Date: {stamp}  \nMachine: {machine_line(info)}", table,
                        *(["\n".join(f"- {note}" for note in notes)] if notes else [])])
    (RESULTS / f"{name}.md").write_text(text + "\n", encoding="utf-8")
    record = {"title": title, "command": command(), "date": stamp, "machine": info,
              "columns": list(columns), "rows": rows, "notes": list(notes), **extra}
    (RESULTS / f"{name}.json").write_text(json.dumps(record, indent=2) + "\n", encoding="utf-8")
    print(f"\n{table}\n" + "\n".join(notes) + f"\nwritten: {RESULTS / name}.json, .md", flush=True)


def save_figure(figure, name):
    """Saves a matplotlib `Figure` as `bench/results/NAME.png` (atomically)."""
    from sg_keras.job import plots

    path = RESULTS / f"{name}.png"
    plots.save_png(plots.to_png(figure), path)
    print(f"written: {path}", flush=True)


@functools.cache
def steps_per_epoch(batch_size=BATCH_SIZE):
    import numpy as np

    with np.load(require_mnist()) as archive:
        return len(archive["y_train"]) // batch_size


def total_steps(epochs, batch_size=BATCH_SIZE):
    """Training steps of an `epochs` budget on MNIST, counted as `train.py` counts them."""
    from sg_keras.job.config import Config

    return Config(epochs=epochs, batch_size=batch_size).total_steps(steps_per_epoch(batch_size))


def schedule(epochs, decay_at=(0.6, 0.8)):
    """`train_steps` and `lr_decay_steps` of an `epochs` budget decayed at those fractions."""
    total = total_steps(epochs)
    return {"train_steps": total, "lr_decay_steps": [str(round(f * total)) for f in decay_at]}


def parse_budget(parser, epochs, seeds=(0,)):
    """Adds --seeds and --epochs to `parser`, parses the command line and checks for MNIST.

    Returns `(args, budget)`, `budget` being `schedule(args.epochs)`.
    """
    parser.add_argument("--seeds", type=int, nargs="+", default=list(seeds))
    parser.add_argument("--epochs", type=float, default=epochs)
    args = parser.parse_args()
    require_mnist()
    return args, schedule(args.epochs)


def train(name, **settings):
    """Trains `Config(**settings)` from scratch in `bench/results/runs/NAME`.

    Returns `(summary, log)`: `experiment.run`'s summary and the run's `MetricsLog`.
    """
    import keras

    from sg_keras.job.config import Config
    from sg_keras.job.experiment import run
    from sg_keras.job.history import MetricsLog

    model_dir = RUNS / name
    shutil.rmtree(model_dir, ignore_errors=True)
    keras.backend.clear_session()
    config = Config(model_dir=str(model_dir), data_path=require_mnist(), plots=False, **settings)
    print(f"--- {name}: {settings}", flush=True)
    summary = run(config)
    return summary, MetricsLog(model_dir / "metrics.jsonl", resume_step=sys.maxsize)


def train_seeds(name, seeds, **settings):
    """`train`s `Config(seed=SEED, **settings)` in `bench/results/runs/NAME_seedSEED` per seed.

    Returns `(errors, walls, logs)`, one entry per seed: the test error in %,
    the run's wall time in seconds and its `MetricsLog`.
    """
    errors, walls, logs = [], [], []
    for seed in seeds:
        summary, log = train(f"{name}_seed{seed}", seed=seed, **settings)
        errors.append(100 * (1 - summary["test_accuracy"]))
        walls.append(summary["wall_time_s"])
        logs.append(log)
    return errors, walls, logs


def final_cosines(logs):
    """Per layer, the mean over runs of each run's mean cosine over its last `TAIL` of measurements.

    Runs may hold different numbers of measurements.
    """
    cosines = {}
    for key in logs[0].keys("cosine/"):
        per_run = []
        for log in logs:
            values = log.series(key)[1]
            per_run.append(statistics.mean(values[-max(1, int(TAIL * len(values))):]))
        cosines[key.split("/", 1)[1]] = statistics.mean(per_run)
    return cosines


def load_mnist():
    from sg_keras.job import data

    return data.load(data_path=require_mnist())


def batches(split, count, seed=0):
    """`count` training batches held in memory, so timings leave out the input pipeline."""
    from sg_keras.job import data

    return list(data.train_batches(split, BATCH_SIZE, seed).take(count))


def make_trainer(input_shape, **settings):
    """The `DNITrainer` that `train.py` would build for `Config(**settings)`."""
    from sg_keras.job.config import Config
    from sg_keras.job.experiment import build_trainer

    config = Config(model_dir=str(RUNS / "unused"), **settings).validate()
    return build_trainer(config, input_shape)


def step_times(steppers, batches, warmup=50, rounds=20, block=50):
    """Seconds per step of each stepper (a `train_step(x, y)` callable), one value per round.

    Every stepper first runs `warmup` steps (tracing, XLA compilation). Then,
    in each of `rounds` rounds, every stepper runs `block` consecutive steps,
    in an order rotated from round to round, so slow phases of a shared
    machine hit all of them alike; compare steppers round by round.
    """
    names = list(steppers)
    for name in names:
        for index in range(warmup):
            steppers[name](*batches[index % len(batches)])
    times = {name: [] for name in names}
    for round_index in range(rounds):
        shift = round_index % len(names)
        for name in names[shift:] + names[:shift]:
            start = time.perf_counter()
            for index in range(block):
                steppers[name](*batches[(round_index * block + index) % len(batches)])
            times[name].append((time.perf_counter() - start) / block)
    return times


def time_trainers(settings, warmup=50, rounds=20, block=50):
    """Builds a trainer per `{name: make_trainer settings}` and times it with `step_times`.

    All in this process, on 50 MNIST training batches held in memory. Each
    trainer runs one step when built; one that fails to build or step is left
    out. Returns `(times, errors)`: `step_times`' result and, by name, the
    error of each trainer left out ("ErrorType: message").
    """
    train_split, _ = load_mnist()
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


def status_mb(field, pid="self"):
    """A memory field of `/proc/PID/status` ("VmRSS", "VmHWM", ...) in MB."""
    with open(f"/proc/{pid}/status", encoding="utf-8") as handle:
        for line in handle:
            if line.startswith(f"{field}:"):
                return int(line.split()[1]) / 1024
    raise RuntimeError(f"no {field} in /proc/{pid}/status")


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
