"""`RunLock`: one training process per model directory, by an OS lock on `MODEL_DIR/run.lock`.

The lock is `fcntl.flock` on the lock file, so the operating system
releases it when the holder ends in any way (SIGKILL and crashes included):
a dead run never blocks the next one. While it holds the lock, the holder
keeps its process id, host and start time in the file, and a second process
refuses in one line that names them. `release()` empties the file again, so
a finished directory's contents do not depend on which process last ran.
(`flock` on a network file system may only lock within one host.)

Example:

>>> import tempfile
>>> directory = tempfile.mkdtemp()
>>> first, second = RunLock(directory), RunLock(directory)
>>> first.acquire() is None
True
>>> print(second.acquire())                                    # doctest: +ELLIPSIS
--model_dir ... is in use by process ... on ... (started ...); ...
>>> first.release()
>>> second.acquire() is None
True
>>> second.release()
"""

import datetime
import fcntl
import json
import os
import socket

from sg_keras.job.files import WriteError, reason

LOCK_FILE = "run.lock"


class RunLock:
    """The lock of the model directory `directory` (which must exist)."""

    def __init__(self, directory):
        self.directory = os.path.abspath(os.fspath(directory))
        self.path = os.path.join(self.directory, LOCK_FILE)
        self._handle = None

    def acquire(self):
        """Takes the lock; returns None, or the one-line reason when another process holds it."""
        handle = open(self.path, "a+", encoding="utf-8")
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            handle.seek(0)
            holder = handle.read()
            handle.close()
            return self._refusal(holder)
        except BaseException:
            handle.close()
            raise
        started = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M:%S UTC")
        self._handle = handle
        try:
            handle.truncate(0)
            handle.write(json.dumps({"pid": os.getpid(), "host": socket.gethostname(),
                                     "started": started}))
            handle.flush()
        except OSError as error:   # e.g. a full disk
            self.release()
            raise WriteError(self.path, reason(error)) from error
        return None

    def _refusal(self, holder):
        try:
            who = json.loads(holder)
            named = f"process {who['pid']} on {who['host']} (started {who['started']})"
        except (ValueError, KeyError, TypeError):
            named = "another process (starting up)"
        return (f"--model_dir {self.directory} is in use by {named}; one run trains in a "
                "directory at a time: wait for it to end (or stop it), or use another "
                "--model_dir.")

    def release(self):
        """Empties the lock file and releases the lock (nothing when not held)."""
        if self._handle is None:
            return
        handle, self._handle = self._handle, None
        try:
            handle.truncate(0)
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)
            handle.close()
