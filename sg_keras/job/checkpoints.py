"""Run directories and checkpoints that never lose or overwrite a user's work.

`RunDirectory` prepares `--model_dir`: it must be writable, no other process
may be training in it (`run_lock.RunLock`, held until `close()`), and a
directory that already holds a run must hold one of the same architecture
(recorded in `run_config.json`), or the run stops before touching anything.

`Checkpoints` wraps `tf.train.CheckpointManager`. `restore_latest()` reads
every tensor of the newest checkpoint back (checking its checksums) before
restoring it; a corrupt one is skipped for the newest intact one, moved into
`checkpoints/corrupt/` (never deleted or written over) and listed in
`skipped` with the reason. When none is intact, or one belongs to another
architecture or mode, it raises `CheckpointError` without deleting or writing
anything. `save()` writes a new checkpoint. TensorFlow writes the data files
first and then swaps the small `checkpoint` index file, so a run killed while
saving keeps the previous checkpoint; a save that fails (a full disk) removes
what it had written and raises `WriteError`.

Example:

>>> run_dir = RunDirectory("runs/mnist", config.architecture())      # doctest: +SKIP
>>> checkpoints = Checkpoints(run_dir.checkpoint_dir, trainer.checkpoint,  # doctest: +SKIP
...                           trainer.iterations, keep=3)
>>> checkpoints.restore_latest()          # path of the restored checkpoint, or None  # doctest: +SKIP
>>> checkpoints.skipped                   # [(path, why)] of corrupt newer ones  # doctest: +SKIP
"""

import glob
import json
import os
import shutil
import tempfile

import tensorflow as tf
from google.protobuf import message as protobuf_message
from google.protobuf import text_format

from sg_keras.job.files import WriteError, reason, write_atomically
from sg_keras.job.run_lock import RunLock

RUN_CONFIG = "run_config.json"
CORRUPT = "corrupt"   # where skipped checkpoints are moved, below the checkpoint directory


def _brief(error, limit=300):
    text = " ".join(str(error).split())
    return text if len(text) <= limit else text[:limit] + "..."


def _problem(path):
    """Why the checkpoint `path` cannot be read back, or None when every tensor reads intact."""
    try:
        reader = tf.train.load_checkpoint(path)
        for name in reader.get_variable_to_shape_map():
            reader.get_tensor(name)   # checks the stored checksum
    except Exception as error:  # any failure to read it back makes it unusable
        return f"{type(error).__name__}: {_brief(error, 160)}"
    return None


class CheckpointError(RuntimeError):
    """The run directory or its checkpoint cannot be used; nothing was changed."""


class RunDirectory:
    """The layout of a run's `--model_dir`, checked before any work starts.

    Args:
        path: the directory (created if missing).
        architecture: dict of the settings a checkpoint depends on; recorded
            on the first run and compared on later ones (a setting absent
            from the record, or from `architecture`, is at its default).

    Raises:
        CheckpointError: the directory is not writable, another process
            holds it, or it holds a run of another architecture.
    """

    def __init__(self, path, architecture):
        self.path = os.path.abspath(os.fspath(path))
        self._check_writable()
        self.checkpoint_dir = os.path.join(self.path, "checkpoints")
        self.metrics_path = os.path.join(self.path, "metrics.jsonl")
        self.lock = RunLock(self.path)
        message = self.lock.acquire()
        if message:
            raise CheckpointError(message)
        try:
            self._check_architecture(dict(architecture))
        except BaseException:
            self.close()
            raise

    def close(self):
        """Releases the directory for the next run."""
        self.lock.release()

    def __enter__(self):
        return self

    def __exit__(self, *exc_info):
        self.close()

    def _check_writable(self):
        try:
            os.makedirs(self.path, exist_ok=True)
            with tempfile.NamedTemporaryFile(dir=self.path, prefix=".write_test"):
                pass
        except OSError as error:
            raise CheckpointError(f"--model_dir {self.path} is not a writable directory "
                                  f"({error.strerror or error}). Pick another --model_dir.") from error

    def _check_architecture(self, architecture):
        path = os.path.join(self.path, RUN_CONFIG)
        if not os.path.exists(path):
            if os.path.isdir(self.checkpoint_dir) and os.listdir(self.checkpoint_dir):
                raise CheckpointError(
                    f"--model_dir {self.path} holds checkpoints but no {RUN_CONFIG}: it was not "
                    "written by this program, or was damaged. Use a new --model_dir.")
            self.write_file(RUN_CONFIG, json.dumps(architecture, indent=2, sort_keys=True))
            return
        try:
            with open(path, encoding="utf-8") as handle:
                recorded = json.load(handle)
        except (OSError, ValueError) as error:
            raise CheckpointError(f"{path} is unreadable ({error}); the run directory is damaged. "
                                  "Use a new --model_dir.") from error
        def saved(key):
            return f"saved {recorded[key]!r}" if key in recorded else "not recorded (the default)"

        def now(key):
            return f"now {architecture[key]!r}" if key in architecture else "now the default"

        keys = [*architecture, *(key for key in recorded if key not in architecture)]
        differences = [f"--{key}: {saved(key)}, {now(key)}" for key in keys
                       if recorded.get(key) != architecture.get(key)]
        if differences:
            raise CheckpointError(
                f"--model_dir {self.path} holds a run of another architecture or mode ("
                + "; ".join(differences) + "). Resume it with its own flags, or use a new "
                "--model_dir. Nothing was changed.")

    def file(self, name):
        return os.path.join(self.path, name)

    def write_file(self, name, content):
        """Writes `content` (str or bytes) atomically: a reader sees the old or the new file."""
        write_atomically(self.file(name), content)


class Checkpoints:
    """Saves and restores a `tf.train.Checkpoint` in a directory.

    Args:
        directory: where the checkpoints go.
        checkpoint: the `tf.train.Checkpoint` (e.g. `DNITrainer.checkpoint`).
        step: the step variable, used to number the checkpoints.
        keep: how many checkpoints to keep.
    """

    skipped = ()   # (path, why) of the corrupt checkpoints the last restore skipped

    def __init__(self, directory, checkpoint, step, keep):
        self.directory = directory
        self.checkpoint = checkpoint
        self.step = step
        self.keep = keep
        state_file = os.path.join(directory, "checkpoint")
        self.manager = self._manager()
        # TensorFlow reads an unreadable `checkpoint` index file as "no checkpoint":
        # starting over would then overwrite the run, so refuse instead.
        if self.manager.latest_checkpoint is None and os.path.exists(state_file):
            raise CheckpointError(self._damaged("its index file 'checkpoint' is unreadable"))

    def _manager(self):
        try:
            return tf.train.CheckpointManager(self.checkpoint, self.directory,
                                              max_to_keep=self.keep, step_counter=self.step)
        except (text_format.ParseError, protobuf_message.DecodeError, tf.errors.OpError) as error:
            raise CheckpointError(self._damaged(f"its index file is unreadable ({error})")) from error

    def _unrecorded(self):
        """The newest complete checkpoint that the index file does not list.

        A run killed while saving its first checkpoint leaves `ckpt-N.index`
        and data files but no `checkpoint` index file, which is written last.
        """
        numbered = []
        for index_file in glob.glob(os.path.join(self.directory, "ckpt-*.index")):
            number = os.path.basename(index_file)[len("ckpt-"):-len(".index")]
            if number.isdigit():
                numbered.append((int(number), index_file[:-len(".index")]))
        return max(numbered)[1] if numbered else None

    def _damaged(self, what):
        return (f"The checkpoint in {self.directory} cannot be restored: {what}. Nothing was "
                "changed or overwritten. Move the directory away (or restore an intact copy) "
                "and run again, or use a new --model_dir.")

    @property
    def latest(self):
        return self.manager.latest_checkpoint

    def restore_latest(self):
        """Restores the newest intact checkpoint; returns its path, or None if there is none.

        Newer corrupt checkpoints are moved into `corrupt/` and listed in
        `self.skipped` as `(path, why)`. A complete checkpoint whose save was
        interrupted before the index file recorded it is restored too, and
        then recorded.
        """
        self.skipped = []
        recorded = self.manager.checkpoints
        unrecorded = None if recorded else self._unrecorded()
        candidates = recorded[::-1] if recorded else [unrecorded] if unrecorded else []
        for path in candidates:
            problem = _problem(path)
            if problem is None:
                break
            self.skipped.append((path, problem))
        else:
            if not candidates:
                return None
            raise CheckpointError(self._damaged("; ".join(
                f"{path} is corrupt ({why})" for path, why in self.skipped) + " (none is intact)"))
        self._restore(path)
        if self.skipped or not recorded:
            self._set_aside([skipped for skipped, _ in self.skipped])
            intact = [kept for kept in recorded if kept not in dict(self.skipped)] or [path]
            self._record(intact)
            self.manager = self._manager()
        return path

    def _restore(self, path):
        try:
            status = self.checkpoint.restore(path)
            status.assert_consumed()
        except AssertionError as error:
            status.expect_partial()   # the error says it all; no warnings at exit
            raise CheckpointError(self._damaged(
                f"{path} belongs to another architecture or mode ({_brief(error)})")) from error
        except Exception as error:  # any failure to read it back means it cannot be used
            raise CheckpointError(self._damaged(
                f"{path} does not match this model ({type(error).__name__}: "
                f"{_brief(error)})")) from error

    def _record(self, paths):
        """Rewrites the `checkpoint` index file to list `paths`, the last as the latest."""
        names = [json.dumps(os.path.basename(path)) for path in paths]
        text = "".join([f"model_checkpoint_path: {names[-1]}\n",
                        *(f"all_model_checkpoint_paths: {name}\n" for name in names)])
        write_atomically(os.path.join(self.directory, "checkpoint"), text)

    def _set_aside(self, paths):
        """Moves the files of corrupt checkpoints into `corrupt/`, where no save reaches them."""
        for path in paths:
            target = os.path.join(self.directory, CORRUPT)
            os.makedirs(target, exist_ok=True)
            for file in glob.glob(glob.escape(path) + ".*"):
                destination = os.path.join(target, os.path.basename(file))
                if os.path.exists(destination):   # set aside before: keep both
                    destination += f".{len(os.listdir(target))}"
                shutil.move(file, destination)

    def save(self):
        """Writes a checkpoint numbered by the step (`ckpt-STEP`); returns its path.

        The newest checkpoint is kept as it is when it is of this step already.

        Raises:
            WriteError: it could not be written (e.g. the disk is full); its
                partial files are removed and the previous checkpoints are intact.
        """
        prefix = os.path.join(self.directory, f"ckpt-{int(self.step.numpy())}")
        if self.latest == prefix:
            return prefix
        try:
            return self.manager.save(checkpoint_number=self.step)
        except (OSError, tf.errors.OpError) as error:
            self._remove_partial(prefix)
            raise WriteError(prefix, reason(error)) from error

    def _remove_partial(self, prefix):
        """Removes what a failed save of `prefix` left: its files and temporary folders."""
        pattern = glob.escape(prefix)
        leftovers = (glob.glob(pattern + "_temp*") + glob.glob(pattern + ".*")
                     + glob.glob(os.path.join(glob.escape(self.directory), "checkpoint.tmp*")))
        for path in leftovers:
            if os.path.isdir(path):
                shutil.rmtree(path, ignore_errors=True)
            else:
                os.remove(path)
