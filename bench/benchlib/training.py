"""Training runs on MNIST through the job, and what the benchmarks read from them.

* `BATCH_SIZE` (256) and `TAIL` (a run's final cosine: the mean over its
  last 20 % of measurements);
* `steps_per_epoch(...)`, `total_steps(...)`, `schedule(...)`: the step
  budget and learning-rate decay of an epoch count, counted as `train.py`
  counts them; `parse_budget(...)`: `--seeds` and `--epochs` on a parser;
* `train(...)`: one in-process run of `sg_keras.job.experiment.run`,
  returning its summary and its `MetricsLog`; `train_seeds(...)`: one per
  seed; `final_cosines(...)`: the synthetic/true gradient cosine per layer at
  the end of such runs.
"""

import functools
import shutil
import statistics
import sys

from benchlib import paths

BATCH_SIZE = 256
TAIL = 0.2   # final cosine: mean over the last 20 % of a run's measurements


@functools.cache
def steps_per_epoch(batch_size=BATCH_SIZE):
    """Full batches in an epoch of MNIST's training split."""
    import numpy as np

    with np.load(paths.require_mnist()) as archive:
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
    paths.require_mnist()
    return args, schedule(args.epochs)


def train(name, **settings):
    """Trains `Config(**settings)` from scratch in `bench/results/runs/NAME`.

    Returns `(summary, log)`: `experiment.run`'s summary and the run's `MetricsLog`.
    """
    import keras

    from sg_keras.job.config import Config
    from sg_keras.job.experiment import run
    from sg_keras.job.metrics_log import MetricsLog

    model_dir = paths.RUNS / name
    shutil.rmtree(model_dir, ignore_errors=True)
    keras.backend.clear_session()
    config = Config(model_dir=str(model_dir), data_path=paths.require_mnist(), plots=False,
                    **settings)
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
