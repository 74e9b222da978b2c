"""Image-classification data: a checked local `.npz` or TFDS, and `tf.data` pipelines.

Two sources give the same in-memory `Split`s (uint8 images, int64 labels,
and the dataset's number of classes):

* `load_npz(path)`: a file in Keras' `mnist.npz` layout (`x_train, y_train,
  x_test, y_test`; uint8 images `(N, H, W)` or `(N, H, W, C)`, integer labels
  `(N,)` or `(N, 1)` as Keras' `cifar10` gives them). Image shape and the
  number of classes (largest training label + 1) are read from the file and
  checked; every defect gets a `DataError`. The offline route, for any
  dataset saved in that layout (MNIST, Fashion-MNIST, KMNIST, CIFAR-10, ...).
* `load_tfds(name, data_dir)`: any TensorFlow Datasets image-classification
  dataset (`mnist`, `fashion_mnist`, `kmnist`, `cifar10`, ...); image shape
  and number of classes come from the dataset's info. Single-channel images
  are given as `(N, H, W)`, as in `mnist.npz`. If the dataset is not prepared
  in `data_dir` and the download host cannot be reached within a few
  seconds, it fails at once with a message naming `--data_path`, instead of
  letting TFDS retry for minutes.

`train_batches` is the training pipeline: a seeded shuffle per epoch (epoch
`e` uses the permutation drawn from `(seed, e)`), fixed-size batches, images
scaled to [0, 1], prefetch. It can start at any global step, so a resumed run
sees exactly the batches an uninterrupted one would.

Example:

>>> train, test = load("mnist", data_path="../shared/data/mnist.npz")   # doctest: +SKIP
>>> train.x.shape, train.num_classes                                     # doctest: +SKIP
((60000, 28, 28), 10)
>>> for x, y in train_batches(train, batch_size=256, seed=0).take(1):    # doctest: +SKIP
...     print(x.shape, x.dtype, y.dtype)
(256, 28, 28) <dtype: 'float32'> <dtype: 'int64'>
"""

import dataclasses
import os
import socket
import zipfile
from typing import Optional

import numpy as np
import tensorflow as tf

NPZ_KEYS = ("x_train", "y_train", "x_test", "y_test")
# Where TFDS downloads MNIST (and its prepared copies) from; overridable as
# "host:port" so that tests can point it at a closed local port.
DOWNLOAD_PROBE_ENV = "SG_KERAS_DOWNLOAD_PROBE"
DEFAULT_DOWNLOAD_PROBE = "storage.googleapis.com:443"
PROBE_TIMEOUT_S = 3.0


class DataError(ValueError):
    """The data cannot be loaded; the message says why and what to do."""


@dataclasses.dataclass
class Split:
    """Images (uint8, `(N, H, W[, C])`), integer labels (int64, `(N,)`) and the class count."""

    x: np.ndarray
    y: np.ndarray
    num_classes: Optional[int] = None   # labels are 0..num_classes-1

    def __len__(self):
        return len(self.y)


def _check_images(x, where):
    if x.dtype != np.uint8:
        raise DataError(f"{where} images have dtype {x.dtype}; expected uint8 pixels 0-255 "
                        "(Keras mnist.npz layout).")
    if x.ndim not in (3, 4) or x.shape[0] == 0 or 0 in x.shape:
        raise DataError(f"{where} images have shape {x.shape}; expected (N, H, W) or (N, H, W, C) "
                        "with N > 0.")


def _check_labels(y, count, where):
    if not np.issubdtype(y.dtype, np.integer):
        raise DataError(f"{where} labels have dtype {y.dtype}; expected integers.")
    if y.shape == (count, 1):   # Keras' cifar10 layout
        y = y[:, 0]
    if y.shape != (count,):
        raise DataError(f"{where} labels have shape {y.shape}; expected ({count},), one label "
                        "per image.")
    return y.astype(np.int64)


def _check_split(x, y, name, source, num_classes):
    where = f"{source}: {name}"
    _check_images(x, where)
    y = _check_labels(y, x.shape[0], where)
    low, high = int(y.min()), int(y.max())
    if low < 0 or high >= num_classes:
        raise DataError(f"{where} labels span {low}..{high}; expected 0..{num_classes - 1}.")
    return Split(x, y, num_classes)


def _inferred_classes(y, source):
    """The class count of a file's training labels: every class 0..max must occur."""
    y = _check_labels(y, len(y), f"{source}: train")
    low, classes = (int(y.min()), int(y.max()) + 1) if len(y) else (0, 0)
    missing = sorted(set(range(classes)) - set(np.unique(y).tolist()))
    if low < 0 or missing or classes < 2:
        shown = ", ".join(map(str, missing[:10])) + (", ..." if len(missing) > 10 else "")
        raise DataError(f"{source}: train labels span {low}..{classes - 1}"
                        + (f" but classes {shown} never occur" if missing else "")
                        + "; expected every class 0..K-1 (K >= 2) in the training labels.")
    return classes


def _check_pair(train, test, source):
    if train.x.shape[1:] != test.x.shape[1:]:
        raise DataError(f"{source}: train images {train.x.shape[1:]} and test images "
                        f"{test.x.shape[1:]} differ in shape.")
    return train, test


def load_npz(path, num_classes=None):
    """Loads and checks a Keras-layout `.npz`; returns `(train, test)` Splits.

    Args:
        path: the file.
        num_classes: the number of classes; None reads it from the training
            labels (largest + 1, every class present).
    """
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise DataError(f"--data_path {path!r} does not exist (or is not a file). Give the path of "
                        "a Keras-layout .npz, e.g. ../shared/data/mnist.npz.")
    try:
        with np.load(path, allow_pickle=False) as archive:
            missing = [key for key in NPZ_KEYS if key not in archive.files]
            if missing:
                raise DataError(f"{path}: missing arrays {missing}; found {sorted(archive.files)}. "
                                f"Expected the Keras mnist.npz layout {list(NPZ_KEYS)}.")
            arrays = {key: archive[key] for key in NPZ_KEYS}
    except DataError:
        raise
    except (OSError, ValueError, EOFError, zipfile.BadZipFile) as error:
        raise DataError(f"{path} is not a readable .npz file ({type(error).__name__}: {error}). "
                        "Is it truncated or of another format?") from error
    _check_images(arrays["x_train"], f"{path}: train")
    num_classes = num_classes or _inferred_classes(arrays["y_train"], path)
    train = _check_split(arrays["x_train"], arrays["y_train"], "train", path, num_classes)
    test = _check_split(arrays["x_test"], arrays["y_test"], "test", path, num_classes)
    return _check_pair(train, test, path)


def _download_reachable():
    host, _, port = os.environ.get(DOWNLOAD_PROBE_ENV, DEFAULT_DOWNLOAD_PROBE).rpartition(":")
    try:
        socket.create_connection((host, int(port)), timeout=PROBE_TIMEOUT_S).close()
    except OSError:
        return False
    return True


def _image_and_label(builder, name):
    """The supervised keys of an image-classification dataset, and its class count."""
    keys = builder.info.supervised_keys
    features = builder.info.features
    image, label = keys if keys and len(keys) == 2 else (None, None)
    image_shape = getattr(features[image], "shape", None) if image else None
    num_classes = getattr(features[label], "num_classes", None) if label else None
    if not image_shape or len(image_shape) != 3 or not num_classes:
        raise DataError(f"--dataset {name!r} is not an image-classification dataset (supervised "
                        f"keys {keys}); expected (image, class label) pairs.")
    if None in image_shape:
        raise DataError(f"--dataset {name!r} has images of varying size {image_shape}; this job "
                        "needs one fixed shape.")
    return num_classes


def _as_arrays(builder, split):
    """One TFDS split as `(images, labels)` arrays, read in large batches."""
    import tensorflow_datasets as tfds

    parts = list(tfds.as_numpy(builder.as_dataset(split=split, as_supervised=True).batch(8192)))
    x = np.concatenate([images for images, _ in parts])
    y = np.concatenate([labels for _, labels in parts])
    return (x[..., 0] if x.shape[-1] == 1 else x), y


def load_tfds(name="mnist", data_dir=None):
    """Loads a TFDS image-classification dataset as `(train, test)` Splits.

    Image shape and number of classes come from the dataset's info.

    Raises:
        DataError: the dataset is not prepared and cannot be downloaded, or is
            not an image-classification dataset.
    """
    import tensorflow_datasets as tfds  # slow import; only this route needs it

    try:
        builder = tfds.builder(name, data_dir=data_dir)
    except Exception as error:  # TFDS raises several types for unknown names
        raise DataError(f"--dataset {name!r} is not a TFDS dataset ({error}).") from error
    if not builder.is_prepared():
        if not _download_reachable():
            raise DataError(
                f"TFDS dataset {name!r} is not prepared in {builder.data_dir} and the download "
                "server cannot be reached (no internet?). To train offline pass "
                "--data_path=PATH/TO/FILE.npz (Keras mnist.npz layout: x_train, y_train, x_test, "
                "y_test; e.g. ../shared/data/mnist.npz), or prepare the dataset into --data_dir "
                "on a machine with internet.")
        builder.download_and_prepare()
    num_classes = _image_and_label(builder, name)
    source = f"TFDS {name}"
    train, test = (_check_split(*_as_arrays(builder, split), split, source, num_classes)
                   for split in ("train", "test"))
    return _check_pair(train, test, source)


def load(dataset="mnist", data_dir=None, data_path=None):
    """`load_npz(data_path)` if a path is given, else `load_tfds(dataset, data_dir)`."""
    if data_path:
        return load_npz(data_path)
    return load_tfds(dataset, data_dir)


def _scale(x, y):
    return tf.cast(x, tf.float32) / 255.0, y


def epoch_permutation(size, seed, epoch):
    """The example order of one epoch: a permutation drawn from `(seed, epoch)`."""
    return np.random.default_rng([seed, epoch]).permutation(size)


def train_batches(split, batch_size, seed, start_step=0):
    """Endless shuffled training batches, starting at global step `start_step`.

    Each epoch has `len(split) // batch_size` full batches (the remainder of
    the permutation is left out), so the input shape never changes.
    """
    steps_per_epoch = len(split) // batch_size
    if steps_per_epoch == 0:
        raise DataError(f"--batch_size {batch_size} is larger than the {len(split)} training "
                        "examples.")

    def index_batches():
        epoch, offset = divmod(start_step, steps_per_epoch)
        while True:
            order = epoch_permutation(len(split), seed, epoch)
            for step in range(offset, steps_per_epoch):
                yield order[step * batch_size:(step + 1) * batch_size]
            epoch, offset = epoch + 1, 0

    images, labels = tf.constant(split.x), tf.constant(split.y)
    indices = tf.data.Dataset.from_generator(
        index_batches, output_signature=tf.TensorSpec([batch_size], tf.int64))
    return (indices.map(lambda i: (tf.gather(images, i), tf.gather(labels, i)))
            .map(_scale).prefetch(tf.data.AUTOTUNE))


def eval_batches(split, batch_size=1000):
    """The whole split in order, scaled to [0, 1] (the last batch may be smaller)."""
    return (tf.data.Dataset.from_tensor_slices((split.x, split.y)).batch(batch_size)
            .map(_scale).prefetch(tf.data.AUTOTUNE))
