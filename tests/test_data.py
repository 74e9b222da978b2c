"""Data loading: the checked .npz route, the offline TFDS failure and the pipelines."""

import socket
import time

import numpy as np
import pytest

from conftest import write_npz
from sg_keras.job import data


def good_arrays(n=20):
    rng = np.random.default_rng(0)
    return {"x_train": rng.integers(0, 256, (n, 28, 28)).astype(np.uint8),
            "y_train": (np.arange(n) % 10).astype(np.uint8),
            "x_test": rng.integers(0, 256, (8, 28, 28)).astype(np.uint8),
            "y_test": (np.arange(8) % 10).astype(np.uint8)}


def test_load_npz_reads_the_keras_layout(tmp_path):
    arrays = good_arrays()
    train, test = data.load_npz(write_npz(tmp_path / "d.npz", **arrays))
    np.testing.assert_array_equal(train.x, arrays["x_train"])
    assert train.y.dtype == np.int64 and len(train) == 20 and len(test) == 8


@pytest.mark.parametrize("change, message", [
    (lambda a: a.pop("y_test"), "missing arrays \\['y_test'\\]"),
    (lambda a: a.update(x_train=a["x_train"].astype(np.float32)), "dtype float32; expected uint8"),
    (lambda a: a.update(x_train=a["x_train"][:, 0]), "shape \\(20, 28\\)"),
    (lambda a: a.update(y_train=a["y_train"][:5]), "labels have shape \\(5,\\)"),
    (lambda a: a.update(y_train=a["y_train"] + 5),
     "train labels span 5..14 but classes 0, 1, 2, 3, 4 never occur"),
    (lambda a: a.update(y_test=a["y_test"] + 5), "test labels span 5..12; expected 0..9"),
    (lambda a: a.update(y_train=np.zeros(20, np.uint8)), "expected every class 0..K-1 \\(K >= 2\\)"),
    (lambda a: a.update(y_test=a["y_test"].astype(np.float32)), "labels have dtype float32"),
    (lambda a: a.update(x_test=np.zeros((8, 14, 14), np.uint8), y_test=np.zeros(8, np.uint8)),
     "differ in shape"),
])
def test_malformed_npz_is_rejected_with_the_reason(tmp_path, change, message):
    arrays = good_arrays()
    change(arrays)
    with pytest.raises(data.DataError, match=message):
        data.load_npz(write_npz(tmp_path / "bad.npz", **arrays))


def test_npz_of_colour_images_and_keras_cifar_labels(tmp_path):
    """Shapes and the class count come from the file; (N, 1) labels as Keras' cifar10 gives them."""
    rng = np.random.default_rng(1)
    arrays = {"x_train": rng.integers(0, 256, (12, 32, 32, 3)).astype(np.uint8),
              "y_train": (np.arange(12) % 3).reshape(12, 1).astype(np.uint8),
              "x_test": rng.integers(0, 256, (5, 32, 32, 3)).astype(np.uint8),
              "y_test": np.array([[0], [2], [1], [1], [0]], np.uint8)}
    train, test = data.load_npz(write_npz(tmp_path / "rgb.npz", **arrays))
    assert train.x.shape == (12, 32, 32, 3) and (train.num_classes, test.num_classes) == (3, 3)
    np.testing.assert_array_equal(test.y, [0, 2, 1, 1, 0])
    assert test.y.dtype == np.int64


@pytest.mark.parametrize("content", [b"", b"not a zip file at all", None])
def test_unreadable_npz_is_rejected(tmp_path, content):
    path = tmp_path / "broken.npz"
    if content is None:   # a real archive, truncated
        write_npz(path, **good_arrays())
        content = path.read_bytes()[:300]
    path.write_bytes(content)
    with pytest.raises(data.DataError, match="not a readable .npz"):
        data.load_npz(path)


def test_missing_npz_names_the_flag(tmp_path):
    with pytest.raises(data.DataError, match="--data_path .* does not exist"):
        data.load_npz(tmp_path / "nope.npz")


def test_unreachable_tfds_download_fails_fast_naming_data_path(tmp_path, monkeypatch):
    monkeypatch.setenv(data.DOWNLOAD_PROBE_ENV, "127.0.0.1:9")   # closed local port
    started = time.monotonic()
    with pytest.raises(data.DataError, match="--data_path"):
        data.load_tfds("mnist", data_dir=str(tmp_path))
    assert time.monotonic() - started < 30


@pytest.fixture
def reachable_download(monkeypatch):
    """Points the download probe at a listening local port: TFDS may 'download'."""
    with socket.socket() as server:
        server.bind(("127.0.0.1", 0))
        server.listen()
        monkeypatch.setenv(data.DOWNLOAD_PROBE_ENV, f"127.0.0.1:{server.getsockname()[1]}")
        yield


@pytest.mark.parametrize("name, shape, classes", [
    ("mnist", (28, 28), 10), ("fashion_mnist", (28, 28), 10), ("kmnist", (28, 28), 10),
    ("cifar10", (32, 32, 3), 10)])
def test_tfds_datasets_give_their_shape_and_classes(tmp_path, reachable_download, name, shape,
                                                    classes):
    tfds = pytest.importorskip("tensorflow_datasets")
    with tfds.testing.mock_data(num_examples=7, policy=tfds.testing.MockPolicy.USE_CODE):
        train, test = data.load_tfds(name, data_dir=str(tmp_path))
    assert train.x.shape == (7, *shape) and test.x.shape == (7, *shape)
    assert train.x.dtype == np.uint8 and train.y.dtype == np.int64
    assert train.num_classes == test.num_classes == classes
    assert 0 <= train.y.min() and train.y.max() < classes


def test_tfds_dataset_that_is_not_image_classification_is_refused(tmp_path, reachable_download):
    tfds = pytest.importorskip("tensorflow_datasets")
    with tfds.testing.mock_data(num_examples=2, policy=tfds.testing.MockPolicy.USE_CODE):
        with pytest.raises(data.DataError, match="'imdb_reviews' is not an image-classification"):
            data.load_tfds("imdb_reviews", data_dir=str(tmp_path))


def test_train_batches_are_seeded_scaled_and_resumable():
    split = data.Split(np.arange(10 * 4, dtype=np.uint8).reshape(10, 2, 2) * 6,
                       np.arange(10, dtype=np.int64))
    stream = list(data.train_batches(split, batch_size=3, seed=5).take(7))
    labels = [y.numpy().tolist() for _, y in stream]
    first_epoch = sum(labels[:3], [])
    assert sorted(first_epoch) == sorted(set(first_epoch)), "no repeats within an epoch"
    assert first_epoch == data.epoch_permutation(10, 5, 0)[:9].tolist()
    assert labels[3:6] != labels[:3], "each epoch is reshuffled"
    x, y = stream[0]
    np.testing.assert_allclose(x.numpy(), split.x[y.numpy()] / 255.0, rtol=1e-6)
    assert x.dtype.name == "float32"
    resumed = [y.numpy().tolist() for _, y in data.train_batches(split, 3, 5, start_step=4).take(3)]
    assert resumed == labels[4:7]
    other_seed = [y.numpy().tolist() for _, y in data.train_batches(split, 3, 6).take(3)]
    assert other_seed != labels[:3]


def test_batch_larger_than_the_data_is_rejected():
    split = data.Split(np.zeros((4, 2, 2), np.uint8), np.zeros(4, np.int64))
    with pytest.raises(data.DataError, match="--batch_size 8"):
        data.train_batches(split, 8, 0)


def test_eval_batches_cover_the_split_in_order():
    split = data.Split(np.zeros((7, 2, 2), np.uint8), np.arange(7, dtype=np.int64))
    labels = np.concatenate([y.numpy() for _, y in data.eval_batches(split, 3)])
    np.testing.assert_array_equal(labels, np.arange(7))


def test_real_mnist_file_loads(mnist_path):
    train, test = data.load_npz(mnist_path)
    assert (len(train), len(test)) == (60000, 10000)
    assert train.x.shape[1:] == (28, 28) and train.num_classes == 10
    assert np.bincount(test.y).tolist()[:3] == [980, 1135, 1032]
