"""Tests for sgt_tfmot.data: sources, validation, pipeline, augmentation, shipped subset."""

import os
import sys
import types
from pathlib import Path

import numpy as np
import pytest

from sgt_tfmot import data

REPO = Path(__file__).resolve().parents[1]


def _full_data_dir() -> Path | None:
    """The folder with the full datasets, if this machine has it."""
    for candidate in (os.environ.get(data.DATA_DIR_ENV), REPO.parent / "shared" / "data"):
        if candidate and (Path(candidate) / "mnist.npz").is_file():
            return Path(candidate)
    return None


FULL_DATA_DIR = _full_data_dir()  # read before the autouse fixture clears the variable


@pytest.fixture(autouse=True)
def _no_env_data_dir(monkeypatch):
    monkeypatch.delenv(data.DATA_DIR_ENV, raising=False)


@pytest.fixture
def fake_tfds(monkeypatch):
    """Replaces `tensorflow_datasets` by a stub; `fake_tfds.result` is returned or raised."""
    stub = types.SimpleNamespace(result=ConnectionError("no network\nsecond line"), calls=[])

    def load(name, split, batch_size, as_supervised):
        stub.calls.append((name, split, batch_size, as_supervised))
        if isinstance(stub.result, Exception):
            raise stub.result
        return stub.result

    stub.load = load
    stub.as_numpy = lambda tree: tree
    monkeypatch.setitem(sys.modules, "tensorflow_datasets", stub)
    return stub


def _arrays(shape, n, num_classes=10, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.integers(0, 256, size=(n, *shape), dtype=np.uint8)
    y = (np.arange(n) * 3 % num_classes).astype(np.uint8)
    return x, y


def _write_npz(folder, name, shape, n_train=10, n_test=6, **overrides):
    x_train, y_train = _arrays(shape, n_train, seed=1)
    x_test, y_test = _arrays(shape, n_test, seed=2)
    arrays = dict(x_train=x_train, y_train=y_train, x_test=x_test, y_test=y_test)
    arrays.update(overrides)
    arrays = {k: v for k, v in arrays.items() if v is not None}
    np.savez(Path(folder) / f"{name}.npz", **arrays)
    return arrays


def _batches(ds):
    images, labels = zip(*[(x.numpy(), y.numpy()) for x, y in ds], strict=True)
    return np.concatenate(images), np.concatenate(labels)


def _window_matches(aug, orig, pad=data.AUGMENT_PADDING, hflip=True):
    """All (row offset, col offset, mirrored) whose window of the zero-padded `orig` is `aug`."""
    padded = np.pad(orig, ((pad, pad), (pad, pad), (0, 0)))
    h, w = orig.shape[:2]
    found = []
    for oy in range(2 * pad + 1):
        for ox in range(2 * pad + 1):
            window = padded[oy : oy + h, ox : ox + w]
            if np.array_equal(aug, window):
                found.append((oy, ox, False))
            if hflip and np.array_equal(aug, window[:, ::-1]):
                found.append((oy, ox, True))
    return found


# ----------------------------------------------------------------------------- registry


def test_info_of_known_datasets():
    assert data.info("mnist").image_shape == (28, 28, 1)
    assert data.info("cifar10").image_shape == (32, 32, 3)
    subset = data.info("mnist_subset")
    assert (subset.image_shape, subset.num_classes) == ((28, 28, 1), 10)
    assert (subset.size("train"), subset.size("test")) == (5000, 1000)
    assert (data.info("cifar10").train_size, data.info("cifar10").test_size) == (50000, 10000)
    assert data.info("cifar10").augment_train and data.info("cifar10").hflip
    assert not data.info("mnist").augment_train and not data.info("mnist").hflip


def test_unknown_dataset_lists_known_ones():
    match = r"Unknown dataset 'svhn'\. Known datasets: 'cifar10', 'mnist', 'mnist_subset'\."
    with pytest.raises(ValueError, match=match):
        data.info("svhn")
    with pytest.raises(ValueError, match=match):
        data.load_arrays("svhn", "train")
    with pytest.raises(ValueError, match=match):
        data.load("svhn", "train")


def test_unknown_split():
    match = r"`split` must be one of 'train', 'test'\. Received: split='validation'"
    with pytest.raises(ValueError, match=match):
        data.load_arrays("mnist_subset", "validation")
    with pytest.raises(ValueError, match=match):
        data.load("mnist_subset", "validation")


# ----------------------------------------------------------------------------- npz source


def test_load_arrays_from_npz(tmp_path):
    arrays = _write_npz(tmp_path, "cifar10", (32, 32, 3))
    for split in ("train", "test"):
        x, y = data.load_arrays("cifar10", split, data_dir=tmp_path)
        assert x.dtype == np.uint8 and y.dtype == np.int64
        np.testing.assert_array_equal(x, arrays[f"x_{split}"])
        np.testing.assert_array_equal(y, arrays[f"y_{split}"])


def test_load_arrays_adds_channel_axis_and_flattens_labels(tmp_path):
    x_train, y_train = _arrays((28, 28), 5)
    _write_npz(tmp_path, "mnist", (28, 28), x_train=x_train, y_train=y_train[:, None])
    x, y = data.load_arrays("mnist", "train", data_dir=str(tmp_path))
    assert x.shape == (5, 28, 28, 1) and y.shape == (5,)
    np.testing.assert_array_equal(x[..., 0], x_train)
    np.testing.assert_array_equal(y, y_train)


def test_env_var_is_used_when_data_dir_is_none(tmp_path, monkeypatch, fake_tfds):
    arrays = _write_npz(tmp_path, "mnist", (28, 28, 1))
    monkeypatch.setenv(data.DATA_DIR_ENV, str(tmp_path))
    x, _ = data.load_arrays("mnist", "test")
    np.testing.assert_array_equal(x, arrays["x_test"])
    assert fake_tfds.calls == []


def test_data_dir_without_the_file(tmp_path, fake_tfds):
    _write_npz(tmp_path, "mnist", (28, 28, 1))
    with pytest.raises(data.DataError, match=r"has no file 'cifar10\.npz' for dataset 'cifar10'"):
        data.load_arrays("cifar10", "train", data_dir=tmp_path)
    assert fake_tfds.calls == []  # an explicit data_dir does not fall back to tfds


def test_npz_missing_a_key(tmp_path):
    _write_npz(tmp_path, "cifar10", (32, 32, 3), y_test=None)
    data.load_arrays("cifar10", "train", data_dir=tmp_path)  # the train keys are there
    with pytest.raises(data.DataError, match=r"has no key 'y_test'.*Keys found: \['x_test', "):
        data.load_arrays("cifar10", "test", data_dir=tmp_path)


def test_length_mismatch(tmp_path):
    _write_npz(tmp_path, "mnist", (28, 28, 1), y_train=np.zeros(9, np.uint8))
    with pytest.raises(data.DataError, match=r"10 images but 9 labels"):
        data.load_arrays("mnist", "train", data_dir=tmp_path)


@pytest.mark.parametrize("bad", [10, -1])
def test_labels_outside_range(tmp_path, bad):
    labels = np.zeros(10, np.int64)
    labels[3] = bad
    _write_npz(tmp_path, "mnist", (28, 28, 1), y_train=labels)
    with pytest.raises(data.DataError, match=rf"label {bad} is outside \[0, 10\)"):
        data.load_arrays("mnist", "train", data_dir=tmp_path)


def test_images_of_another_shape(tmp_path):
    x, _ = _arrays((28, 28, 3), 10)
    _write_npz(tmp_path, "mnist", (28, 28, 1), x_train=x)
    with pytest.raises(data.DataError, match=r"shape \(10, 28, 28, 3\), expected \(N, 28, 28, 1\)"):
        data.load_arrays("mnist", "train", data_dir=tmp_path)
    x, _ = _arrays((32, 32), 10)  # no channel axis is only accepted for 1-channel datasets
    _write_npz(tmp_path, "cifar10", (32, 32, 3), x_train=x)
    with pytest.raises(data.DataError, match=r"shape \(10, 32, 32\), expected \(N, 32, 32, 3\)"):
        data.load_arrays("cifar10", "train", data_dir=tmp_path)


def test_images_not_uint8(tmp_path):
    x, _ = _arrays((28, 28, 1), 10)
    _write_npz(tmp_path, "mnist", (28, 28, 1), x_train=x.astype(np.float32))
    with pytest.raises(data.DataError, match=r"dtype float32, expected uint8"):
        data.load_arrays("mnist", "train", data_dir=tmp_path)


# ----------------------------------------------------------------------------- tfds source


def test_tfds_failure_says_where_it_looked(fake_tfds):
    with pytest.raises(data.DataError) as raised:
        data.load_arrays("cifar10", "train")
    message = str(raised.value)
    assert "no data_dir given and $SGT_TFMOT_DATA_DIR is not set" in message
    assert "tensorflow_datasets failed: ConnectionError: no network." in message
    assert "second line" not in message  # the reason is one line
    assert fake_tfds.calls == [("cifar10", "train", -1, True)]
    assert isinstance(raised.value, ValueError)


def test_env_var_without_the_file_falls_back_to_tfds(tmp_path, monkeypatch, fake_tfds):
    monkeypatch.setenv(data.DATA_DIR_ENV, str(tmp_path))
    fake_tfds.result = RuntimeError("Failed to resolve 'storage.googleapis.com'")
    with pytest.raises(data.DataError) as raised:
        data.load_arrays("mnist", "test")
    message = str(raised.value)
    assert f"{str(tmp_path / 'mnist.npz')!r} does not exist" in message
    assert "RuntimeError: Failed to resolve 'storage.googleapis.com'" in message


def test_tfds_arrays_are_checked_and_converted(fake_tfds):
    x, y = _arrays((28, 28, 1), 4)
    fake_tfds.result = (x, y.astype(np.int64))
    got_x, got_y = data.load_arrays("mnist", "test")
    np.testing.assert_array_equal(got_x, x)
    np.testing.assert_array_equal(got_y, y)
    fake_tfds.result = (x[:, :27], y)
    with pytest.raises(data.DataError, match=r"tensorflow_datasets 'mnist'/test: images have"):
        data.load_arrays("mnist", "test")


# ----------------------------------------------------------------------------- pipeline


def test_test_split_is_the_raw_arrays_in_order(tmp_path):
    arrays = _write_npz(tmp_path, "cifar10", (32, 32, 3), n_test=7)
    ds = data.load("cifar10", "test", data_dir=tmp_path, batch_size=3)
    batches = list(ds)
    assert [b[0].shape[0] for b in batches] == [3, 3, 1]
    images, labels = _batches(ds)
    assert images.dtype == np.float32 and labels.dtype == np.int64
    # Raw pixel range, not standardised: exactly the uint8 values as floats.
    np.testing.assert_array_equal(images, arrays["x_test"].astype(np.float32))
    np.testing.assert_array_equal(labels, arrays["y_test"])


def test_drop_remainder_and_limit(tmp_path):
    arrays = _write_npz(tmp_path, "cifar10", (32, 32, 3), n_test=7)
    ds = data.load("cifar10", "test", data_dir=tmp_path, batch_size=3, drop_remainder=True)
    assert [b[0].shape[0] for b in ds] == [3, 3]
    images, _ = _batches(data.load("cifar10", "test", data_dir=tmp_path, limit=4))
    np.testing.assert_array_equal(images, arrays["x_test"][:4])
    images, _ = _batches(data.load("cifar10", "test", data_dir=tmp_path, limit=100))
    assert len(images) == 7  # a limit above the split size keeps the split


@pytest.mark.parametrize("arg", ["batch_size", "limit"])
@pytest.mark.parametrize("value", [0, -2, 2.5, True])
def test_bad_batch_size_and_limit(arg, value):
    with pytest.raises(ValueError, match=rf"`{arg}` must be an integer >= 1\. Received: "):
        data.load("mnist_subset", "test", **{arg: value})


def test_mnist_training_split_is_shuffled_not_augmented(tmp_path):
    arrays = _write_npz(tmp_path, "mnist", (28, 28, 1), n_train=12)
    images, labels = _batches(data.load("mnist", "train", data_dir=tmp_path, batch_size=5, seed=3))
    original = arrays["x_train"].reshape(12, -1)
    order = [int(np.flatnonzero((original == im.reshape(-1)).all(axis=1))[0]) for im in images]
    assert sorted(order) == list(range(12)) and order != list(range(12))
    np.testing.assert_array_equal(labels, arrays["y_train"][order])


@pytest.mark.parametrize(
    "name, shape, hflip", [("cifar10", (32, 32, 3), True), ("mnist", (28, 28, 1), False)]
)
def test_augmentation_is_a_shifted_window_of_the_padded_image(tmp_path, name, shape, hflip):
    arrays = _write_npz(tmp_path, name, shape, n_train=24)
    # cifar10 augments its training split by default; MNIST only when asked.
    ds = data.load(
        name,
        "train",
        data_dir=tmp_path,
        batch_size=8,
        shuffle=False,
        seed=0,
        augment=None if name == "cifar10" else True,
    )
    images, labels = _batches(ds)
    assert images.shape == (24, *shape) and images.dtype == np.float32
    assert images.min() >= 0 and images.max() <= 255
    np.testing.assert_array_equal(labels, arrays["y_train"])
    placements = []
    for aug, orig in zip(images, arrays["x_train"], strict=True):
        found = _window_matches(aug, orig.astype(np.float32), hflip=True)
        assert len(found) == 1, found  # random images: exactly one window matches
        placements.append(found[0])
    # Offsets are drawn per image: several distinct ones, not all the identity (4, 4).
    assert len({p[:2] for p in placements}) > 5
    assert any(p[2] for p in placements) == hflip  # mirrored only where the dataset allows


def test_augment_on_test_split_only_when_asked(tmp_path):
    arrays = _write_npz(tmp_path, "cifar10", (32, 32, 3), n_test=6)
    plain, _ = _batches(data.load("cifar10", "test", data_dir=tmp_path))
    np.testing.assert_array_equal(plain, arrays["x_test"])
    augmented, _ = _batches(data.load("cifar10", "test", data_dir=tmp_path, augment=True, seed=1))
    assert not np.array_equal(augmented, plain)
    for aug, orig in zip(augmented, arrays["x_test"], strict=True):
        assert _window_matches(aug, orig.astype(np.float32))


def test_same_seed_same_batches(tmp_path):
    _write_npz(tmp_path, "cifar10", (32, 32, 3), n_train=20)

    def epochs(seed, n=2):
        ds = data.load("cifar10", "train", data_dir=tmp_path, batch_size=8, seed=seed)
        return [_batches(ds) for _ in range(n)]

    first, again, other = epochs(7), epochs(7), epochs(8)
    for (x1, y1), (x2, y2) in zip(first, again, strict=True):
        np.testing.assert_array_equal(x1, x2)
        np.testing.assert_array_equal(y1, y2)
    assert not np.array_equal(first[0][0], other[0][0])
    assert not np.array_equal(first[0][0], first[1][0])  # each epoch is a new draw


# ----------------------------------------------------------------------------- shipped subset


def test_shipped_subset_file():
    path = data._SUBSET_FILE
    assert path.stat().st_size < 2 * 1024 * 1024
    assert (path.parent / "README.md").is_file()
    # The first ten labels of the official MNIST splits (no class reaches its quota within
    # ten examples, so they all open the subset, in the same order).
    first_labels = {"train": [5, 0, 4, 1, 9, 2, 1, 3, 1, 4], "test": [7, 2, 1, 0, 4, 1, 4, 9, 5, 9]}
    for split, per_class in (("train", 500), ("test", 100)):
        x, y = data.load_arrays("mnist_subset", split)
        assert x.shape == (10 * per_class, 28, 28, 1) and x.dtype == np.uint8
        assert (x.min(), x.max()) == (0, 255)
        np.testing.assert_array_equal(np.bincount(y, minlength=10), [per_class] * 10)
        np.testing.assert_array_equal(y[:10], first_labels[split])


def test_shipped_subset_ignores_data_dir_and_feeds_the_pipeline(tmp_path):
    x, y = data.load_arrays("mnist_subset", "test", data_dir=tmp_path)  # empty folder
    images, labels = next(iter(data.load("mnist_subset", "test", batch_size=16)))
    assert images.shape == (16, 28, 28, 1) and images.dtype.name == "float32"
    np.testing.assert_array_equal(images.numpy(), x[:16])
    np.testing.assert_array_equal(labels.numpy(), y[:16])


def test_first_per_class_keeps_the_official_order():
    labels = np.array([2, 0, 0, 1, 2, 0, 1, 2, 1])
    # Hand-derived: first two 0s at 1, 2; first two 1s at 3, 6; first two 2s at 0, 4.
    np.testing.assert_array_equal(data._first_per_class(labels, 2, 3), [0, 1, 2, 3, 4, 6])
    with pytest.raises(ValueError, match=r"Class 1 has 1 examples, fewer than 2\."):
        data._first_per_class(np.array([2, 0, 0, 1, 2, 0, 2]), 2, 3)


@pytest.mark.skipif(FULL_DATA_DIR is None, reason="full MNIST (mnist.npz) not available")
def test_shipped_subset_matches_its_selection_rule(tmp_path):
    rebuilt = data._make_mnist_subset(FULL_DATA_DIR / "mnist.npz", tmp_path / "subset.npz")
    shipped = data._SUBSET_FILE
    with np.load(rebuilt) as new, np.load(shipped) as old:
        assert sorted(new.files) == sorted(old.files) == sorted(data._NPZ_KEYS)
        for key in new.files:
            np.testing.assert_array_equal(new[key], old[key])
