"""What the benchmark scripts share, one module per kind of thing.

* `paths`: where things are (the repository, `bench/results/`, the training
  runs' directories, real MNIST), the command line that is running and the
  machine it runs on;
* `tables`: a results table printed and saved as JSON and Markdown;
* `figures`: a matplotlib figure saved under `bench/results/`;
* `training`: step budgets and learning-rate schedules of an epoch count,
  in-process training runs through the job, their final cosines;
* `timing`: trainers timed step by step in interleaved blocks, their ratios,
  and the memory of a process;
* `pipeline_sim`: a discrete-event simulation of decoupled stages on several
  devices.

The scripts run as `python bench/NAME.py` from the repository root, so that
`bench/` is on `sys.path` and `import benchlib` finds this package.
"""

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
