"""Tests for sgt_tfmot.data: sources, validation, pipeline, augmentation, shipped subset."""

import os
import sys
import types
from pathlib import Path

import numpy as np
import pytest

from sgt_tfmot import data
from sgt_tfmot.data import embedded, npz

REPO = Path(__file__).resolve().parents[1]


def _full_data_dir() -> Path | None:
    """The folder with the full datasets, if this machine has it."""
    for candidate in (os.environ.get(npz.DATA_DIR_ENV), REPO.parent / "shared" / "data"):
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


# ----------------------------------------------------------------------------- npz sources
def test_any_name_in_a_data_dir_and_any_npz_path(tmp_path):
    arrays = _write_npz(
        tmp_path, "my_photos", (12, 10, 3), labels=np.array([f"c{i}" for i in range(10)])
    )
    info = data.info("my_photos", data_dir=tmp_path)
    assert info.image_shape == (12, 10, 3) and info.num_classes == 10
    assert (info.train_size, info.test_size) == (10, 6)
    assert info.class_names == tuple(f"c{i}" for i in range(10))
    assert info.augment == ("crop", "flip")  # colour images
    x, y = data.load_arrays(str(tmp_path / "my_photos.npz"), "test")
    np.testing.assert_array_equal(x, arrays["x_test"])
    np.testing.assert_array_equal(y, arrays["y_test"])
    np.testing.assert_allclose(info.mean, arrays["x_train"].mean(axis=(0, 1, 2)), rtol=1e-6)


def test_labels_txt_beside_the_npz_names_the_classes(tmp_path):
    _write_npz(tmp_path, "digits", (8, 8), n_train=10)
    (tmp_path / "digits.labels.txt").write_text("\n".join(f"d{i}" for i in range(10)) + "\n")
    info = data.info(str(tmp_path / "digits.npz"))
    assert info.class_names[:2] == ("d0", "d1") and info.image_shape == (8, 8, 1)
    assert info.augment == ()  # one channel: no flip, no crop by default


def test_env_var_is_used_when_data_dir_is_none(tmp_path, monkeypatch):
    _write_npz(tmp_path, "mnist", (28, 28))
    monkeypatch.setenv(npz.DATA_DIR_ENV, str(tmp_path))
    x, _ = data.load_arrays("mnist", "test")
    assert x.shape == (6, 28, 28, 1)


def test_data_dir_without_the_file(tmp_path):
    with pytest.raises(data.DataError, match=r"has no file 'cifar10.npz' for dataset 'cifar10'"):
        data.load_arrays("cifar10", "train", data_dir=tmp_path)


@pytest.mark.parametrize(
    "overrides, message",
    [
        ({"x_test": None}, r"has no key 'x_test'"),
        ({"y_train": np.zeros(9, np.uint8)}, r"\(train\): 10 images but 9 labels"),
        ({"y_train": np.arange(10) * 0.5}, r"y_train: labels have shape \(10,\) and dtype float64"),
        ({"y_train": np.eye(10, dtype=np.uint8)}, r"one-hot it seems; .*store y.argmax\(1\)"),
        ({"y_test": np.full(6, -1)}, r"\(test\): label -1 is outside 0..9"),
        ({"x_test": np.zeros((6, 4, 4, 3), np.uint8)}, r"train images are \(12, 10, 3\) but test"),
        ({"x_train": np.zeros((10, 12, 10, 3), np.float32)}, r"dtype float32, expected uint8"),
        ({"labels": np.array(["a", "b"])}, r"label 9 is outside 0..1 \(2 class names\)"),
    ],
)
def test_bad_npz_contents(tmp_path, overrides, message):
    _write_npz(tmp_path, "bad", (12, 10, 3), **overrides)
    with pytest.raises(data.DataError, match=message):
        data.info("bad", data_dir=tmp_path)


def test_unknown_split_and_bad_options():
    with pytest.raises(ValueError, match=r"`split` must be one of 'train', 'test'"):
        data.load_arrays("mnist_subset", "validation")
    with pytest.raises(ValueError, match=r"`image_size` must be H,W with positive integers"):
        data.options(image_size="big")
    with pytest.raises(ValueError, match=r"`augment` must be none or a comma-separated"):
        data.parse_augment("crop,rotate")
    assert data.parse_augment("none") == () and data.parse_augment("flip,crop") == ("flip", "crop")


# ----------------------------------------------------------------------------- TFDS
def test_unknown_tfds_name_fails_at_once():
    import time

    start = time.monotonic()
    with pytest.raises(data.DataError, match=r"Unknown dataset 'no_such_set_xyz'"):
        data.info("no_such_set_xyz")
    assert time.monotonic() - start < 30


def test_a_tfds_set_that_is_not_image_classification_is_refused():
    with pytest.raises(data.DataError, match=r"'imdb_reviews' is not an image-classification"):
        data.info("imdb_reviews")


def test_tfds_arrays_go_through_the_same_checks(monkeypatch):
    from sgt_tfmot.data import tfds_source

    x, y = _arrays((8, 8, 1), 6)

    class Builder:
        info = types.SimpleNamespace(
            features={
                "image": None,
                "label": types.SimpleNamespace(names=[str(i) for i in range(10)]),
            }
        )

        def is_prepared(self):
            return True

    stub = types.SimpleNamespace(
        builder=lambda name: Builder(),
        as_numpy=lambda tree: tree,
        load=lambda name, split, batch_size, as_supervised: (x, y),
    )
    monkeypatch.setitem(sys.modules, "tensorflow_datasets", stub)
    info = data.info("fake_tfds_set")
    assert info.image_shape == (8, 8, 1) and info.class_names[3] == "3"
    assert "tensorflow_datasets 'fake_tfds_set'" in info.source
    del tfds_source


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
    # Colour images are cropped and flipped by default; one channel only when asked.
    ds = data.load(
        name,
        "train",
        data_dir=tmp_path,
        batch_size=8,
        shuffle=False,
        seed=0,
        augment=None if name == "cifar10" else ["crop"],
    )
    images, labels = _batches(ds)
    assert images.shape == (24, *shape) and images.dtype == np.float32
    assert images.min() >= 0 and images.max() <= 255
    np.testing.assert_array_equal(labels, arrays["y_train"])
    placements = []
    for aug, orig in zip(images, arrays["x_train"], strict=True):
        found = _window_matches(aug, orig.astype(np.float32), hflip=hflip)
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
    path = embedded.EMBEDDED["mnist_subset"]
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
    np.testing.assert_array_equal(embedded._first_per_class(labels, 2, 3), [0, 1, 2, 3, 4, 6])
    with pytest.raises(ValueError, match=r"Class 1 has 1 examples, fewer than 2\."):
        embedded._first_per_class(np.array([2, 0, 0, 1, 2, 0, 2]), 2, 3)


@pytest.mark.skipif(FULL_DATA_DIR is None, reason="full MNIST (mnist.npz) not available")
def test_shipped_subset_matches_its_selection_rule(tmp_path):
    rebuilt = embedded._make_mnist_subset(FULL_DATA_DIR / "mnist.npz", tmp_path / "subset.npz")
    shipped = embedded.EMBEDDED["mnist_subset"]
    with np.load(rebuilt) as new, np.load(shipped) as old:
        assert sorted(new.files) == sorted(old.files) == sorted(npz.KEYS)
        for key in new.files:
            np.testing.assert_array_equal(new[key], old[key])
