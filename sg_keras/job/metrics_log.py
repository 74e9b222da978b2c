"""`MetricsLog`: a run's logged metrics as JSON lines (`metrics.jsonl` in the model directory).

Plots are drawn from this file, so they cover the whole run across restarts.
A line cut short by a crash is ignored; on resume the records after the
restored step (written after the last checkpoint) are dropped, so the log
never holds two histories of the same steps.

Example:

>>> import os, tempfile
>>> log = MetricsLog(os.path.join(tempfile.mkdtemp(), "metrics.jsonl"), resume_step=0)
>>> log.append({"step": 100, "split": "train", "loss": 0.31})
>>> log.series("loss", split="train")
([100], [0.31])
"""

import json
import os

from sg_keras.job.files import WriteError, reason, write_atomically


def _parse(line):
    try:
        record = json.loads(line)
    except ValueError:
        return None
    return record if isinstance(record, dict) and "step" in record else None


class MetricsLog:
    """Append-only JSON-lines log of `{"step": int, "split": str, metric: float}`."""

    def __init__(self, path, resume_step):
        self.path = os.fspath(path)
        self.records = []
        if os.path.exists(self.path):
            with open(self.path, encoding="utf-8") as handle:
                lines = handle.read().splitlines()
            parsed = [_parse(line) for line in lines]
            self.records = [r for r in parsed if r is not None and r["step"] <= resume_step]
            if len(self.records) != len(lines):
                self._rewrite()

    def _rewrite(self):
        write_atomically(self.path, "".join(json.dumps(record) + "\n" for record in self.records))

    def append(self, record):
        record = {key: (value if isinstance(value, str) else float(value)) if key != "step"
                  else int(value) for key, value in record.items()}
        self.records.append(record)
        try:   # a line cut short (full disk) is ignored when the log is read back
            with open(self.path, "a", encoding="utf-8") as handle:
                handle.write(json.dumps(record) + "\n")
        except OSError as error:
            raise WriteError(self.path, reason(error)) from error

    def series(self, key, split="train"):
        """`(steps, values)` of one metric in one split."""
        pairs = [(r["step"], r[key]) for r in self.records if r.get("split") == split and key in r]
        return [s for s, _ in pairs], [v for _, v in pairs]

    def keys(self, prefix, split="train"):
        """Sorted metric names starting with `prefix` (e.g. "cosine/")."""
        return sorted({k for r in self.records if r.get("split") == split for k in r
                       if k.startswith(prefix)})
