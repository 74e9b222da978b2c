"""A results table: printed, and saved as `bench/results/NAME.json` and `NAME.md`.

Both files record the command that made the table, the date and the machine.

>>> print(markdown_table(["mode", "error %"], [{"mode": "dni", "error %": 2.345}]))
| mode | error % |
|---|---|
| dni | 2.35 |
"""

import datetime
import json

from benchlib import paths


def _cell(value):
    if isinstance(value, float):
        return f"{value:.3g}" if abs(value) < 0.01 and value else f"{value:.2f}"
    return "" if value is None else str(value)


def markdown_table(columns, rows):
    """A Markdown table of `rows` (dicts) in the order of `columns`; floats to 2 decimals."""
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
    results = paths.RESULTS
    results.mkdir(parents=True, exist_ok=True)
    info = paths.machine()
    command = paths.command()
    stamp = datetime.datetime.now().astimezone().isoformat(timespec="seconds")
    table = markdown_table(columns, rows)
    text = "\n\n".join([f"## {title}", f"Command: `{command}`",
                        f"Date: {stamp}  \nMachine: {paths.machine_line(info)}", table,
                        *(["\n".join(f"- {note}" for note in notes)] if notes else [])])
    (results / f"{name}.md").write_text(text + "\n", encoding="utf-8")
    record = {"title": title, "command": command, "date": stamp, "machine": info,
              "columns": list(columns), "rows": rows, "notes": list(notes), **extra}
    (results / f"{name}.json").write_text(json.dumps(record, indent=2) + "\n", encoding="utf-8")
    print(f"\n{table}\n" + "\n".join(notes) + f"\nwritten: {results / name}.json, .md", flush=True)
