"""Finished runs of a benchmark, one JSON record a line, so that a rerun skips them.

Each record carries a `key` (a string naming everything that defines the
run: its settings, seed and budget); `read` returns the records by key (a
later line wins), `append` adds one.

>>> import pathlib, tempfile
>>> path = pathlib.Path(tempfile.mkdtemp()) / "runs.jsonl"
>>> read(path)
{}
>>> append(path, {"key": "dni seed 0", "error": 2.1})
>>> read(path)["dni seed 0"]["error"]
2.1
"""

import json


def read(path):
    """`{key: record}` of the records in `path` (none if it does not exist)."""
    if not path.is_file():
        return {}
    lines = path.read_text(encoding="utf-8").splitlines()
    records = [json.loads(line) for line in lines if line.strip()]
    return {record["key"]: record for record in records}


def append(path, record):
    """Appends `record` (a dict with a `key`) as one line of `path`."""
    if "key" not in record:
        raise ValueError(f"`record` needs a 'key', got the fields {sorted(record)}.")
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("a", encoding="utf-8") as handle:
        handle.write(json.dumps(record) + "\n")
