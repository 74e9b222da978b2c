"""Atomic file writes for the job, and `WriteError`, the one error a failed write becomes.

Every file the job rewrites (the checkpoint index, `metrics.jsonl` after a
resume, the plots, `run_config.json`, `flags.json`, `model.keras`) goes
through `write_atomically`: the content goes to a temporary file beside the
target, which then replaces it in one `os.replace`, so a reader (or a run
killed mid-write) sees the old file or the new one, never half of one. When
the write fails (a full disk, no permission) the temporary file is removed
and `WriteError` names the path.

Example:

>>> import os, tempfile
>>> path = os.path.join(tempfile.mkdtemp(), "notes.txt")
>>> write_atomically(path, "first")
>>> write_atomically(path, b"second")
>>> open(path).read(), os.listdir(os.path.dirname(path))
('second', ['notes.txt'])
"""

import os
import re


class WriteError(OSError):
    """Writing `path` failed (e.g. the disk is full); no partial file was left behind."""

    def __init__(self, path, reason):
        super().__init__(f"cannot write {path} ({reason})")
        self.path, self.reason = path, reason


def reason(error):
    """A short reason for an `OSError` or a TensorFlow I/O error: 'No space left on device'.

    >>> reason(OSError(28, "No space left on device"))
    'No space left on device'
    >>> reason(RuntimeError("{{function_node __wrapped__SaveV2}} /run/ckpt-3_temp/part-0; "
    ...                     "No space left on device [Op:SaveV2]"))
    'No space left on device'
    """
    text = getattr(error, "strerror", None) or getattr(error, "message", None) or str(error)
    text = re.sub(r"\{\{.*?\}\}|\[Op:\w+\]", "", " ".join(str(text).split()))
    return text.rsplit("; ", 1)[-1].strip()[:200]   # TensorFlow: "PATH; WHY"


def write_atomically(path, content):
    """Writes `content` to `path` so that `path` holds either its old or its new content.

    Args:
        path: the file to write.
        content: `str` (written as UTF-8), `bytes`, or a function that writes
            the file at the path it is given (e.g. `model.save`); the temporary
            path keeps the extension, so `model.keras` goes through
            `model.tmp.keras`.

    Raises:
        WriteError: the write failed; the temporary file is removed and
            `path` is unchanged.
    """
    path = os.fspath(path)
    root, extension = os.path.splitext(path)
    temporary = f"{root}.tmp{extension}"
    try:
        if callable(content):
            content(temporary)
        else:
            mode, encoding = ("wb", None) if isinstance(content, bytes) else ("w", "utf-8")
            with open(temporary, mode, encoding=encoding) as handle:
                handle.write(content)
        os.replace(temporary, path)
    except OSError as error:
        if os.path.exists(temporary):
            os.remove(temporary)
        raise WriteError(path, reason(error)) from error
