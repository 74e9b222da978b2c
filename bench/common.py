"""Helpers shared by the benchmark scripts.

* where things are: the repository, `bench/results/`, the training runs'
  model directories (`bench/results/runs/`), real MNIST (`../shared/data/mnist.npz`
  next to the checkout; `require_mnist()` exits 0 with "skipped: ..." without it);
* `machine()`: CPU model, core count, load average at start and end,
  Python/TensorFlow/Keras versions;
* `write_results(...)`: prints a table and saves it as JSON and Markdown, both
  recording the command that made it, the date and the machine;
* `train(...)`: one in-process training run through `sg_keras.experiment.run`,
  returning its summary and its `MetricsLog`;
* `make_trainer(...)`, `step_times(...)`: a bare `DNITrainer` of the MNIST FCN
  and per-step timings of several trainers, measured in interleaved blocks.
"""

import datetime
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
    """Saves a matplotlib `Figure` as `bench/results/NAME.png`."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    FigureCanvasAgg(figure)
    path = RESULTS / f"{name}.png"
    figure.savefig(path, dpi=100, bbox_inches="tight")
    print(f"written: {path}", flush=True)


def steps_per_epoch(batch_size=BATCH_SIZE):
    import numpy as np

    with np.load(require_mnist()) as archive:
        return len(archive["y_train"]) // batch_size


def schedule(epochs, decay_at=(0.6, 0.8)):
    """`train_steps` and `lr_decay_steps` of an `epochs` budget decayed at those fractions."""
    total = round(epochs * steps_per_epoch())
    return {"train_steps": total, "lr_decay_steps": [str(round(f * total)) for f in decay_at]}


def train(name, **settings):
    """Trains `Config(**settings)` from scratch in `bench/results/runs/NAME`.

    Returns `(summary, log)`: `experiment.run`'s summary and the run's `MetricsLog`.
    """
    import keras

    from sg_keras.config import Config
    from sg_keras.experiment import run
    from sg_keras.history import MetricsLog

    model_dir = RUNS / name
    shutil.rmtree(model_dir, ignore_errors=True)
    keras.backend.clear_session()
    config = Config(model_dir=str(model_dir), data_path=require_mnist(), plots=False, **settings)
    print(f"--- {name}: {settings}", flush=True)
    summary = run(config)
    return summary, MetricsLog(model_dir / "metrics.jsonl", resume_step=sys.maxsize)


def load_mnist():
    from sg_keras import data

    return data.load(data_path=require_mnist())


def batches(split, count, seed=0):
    """`count` training batches held in memory, so timings leave out the input pipeline."""
    from sg_keras import data

    return list(data.train_batches(split, BATCH_SIZE, seed).take(count))


def make_trainer(input_shape, **settings):
    """The `DNITrainer` that `train.py` would build for `Config(**settings)`."""
    from sg_keras.config import Config
    from sg_keras.experiment import build_trainer

    config = Config(model_dir=str(RUNS / "unused"), **settings).validate()
    return build_trainer(config, input_shape)


def step_times(trainers, batches, warmup=50, rounds=20, block=50):
    """Seconds per `train_step` of each trainer, one value per round.

    Every trainer first runs `warmup` steps (tracing, XLA compilation). Then,
    in each of `rounds` rounds, every trainer runs `block` consecutive steps,
    in an order rotated from round to round, so slow phases of a shared
    machine hit all trainers alike; compare trainers round by round.
    """
    names = list(trainers)
    for name in names:
        for index in range(warmup):
            trainers[name].train_step(*batches[index % len(batches)])
    times = {name: [] for name in names}
    for round_index in range(rounds):
        shift = round_index % len(names)
        for name in names[shift:] + names[:shift]:
            start = time.perf_counter()
            for index in range(block):
                trainers[name].train_step(*batches[(round_index * block + index) % len(batches)])
            times[name].append((time.perf_counter() - start) / block)
    return times


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
