"""Image classification datasets as numpy arrays and as batched `tf.data` pipelines.

Three datasets are known (see `info`):

| name           | images   | classes | train / test  | source                                   |
|----------------|----------|---------|---------------|------------------------------------------|
| `mnist`        | 28x28x1  | 10      | 60000 / 10000 | `DATA_DIR/mnist.npz`, else tfds          |
| `cifar10`      | 32x32x3  | 10      | 50000 / 10000 | `DATA_DIR/cifar10.npz`, else tfds        |
| `mnist_subset` | 28x28x1  | 10      | 5000 / 1000   | shipped in `sgt_tfmot/data_files/`       |

Where the arrays come from, in order:

1. `mnist_subset` always comes from the file shipped with the package.
2. `data_dir/NAME.npz` when `data_dir` is given. The file must exist: a `data_dir` without it
   is an error, since the caller said where the data is.
3. `$SGT_TFMOT_DATA_DIR/NAME.npz` when `data_dir` is None and the variable is set. This is a
   default location rather than a request, so a missing file there falls through to step 4.
4. `tensorflow_datasets.load(NAME, split=SPLIT, batch_size=-1, as_supervised=True)`, which
   needs the network the first time. Offline, tfds can retry for minutes before it fails:
   pass `data_dir` where the network is missing.

An `.npz` file holds `x_train`, `y_train`, `x_test`, `y_test` in the official order: images
uint8 of shape (N, H, W, C), or (N, H, W) for one channel; labels integer of shape (N,) or
(N, 1).

The pipeline keeps pixels in their raw range 0..255 (as float32): the models normalise their
inputs in their first layer (see `sgt_tfmot.models`), so the same float pipeline feeds
training, saliency maps and the TFLite representative dataset.

Example:

    ds = load("mnist_subset", "train", batch_size=64, seed=0)
    images, labels = next(iter(ds))   # (64, 28, 28, 1) float32 in 0..255, (64,) int64
"""

from __future__ import annotations

import dataclasses
import os
import zipfile
from pathlib import Path

import numpy as np

from sgt_tfmot._checks import check_choice, check_int
from sgt_tfmot.keras import tf

__all__ = ["DataError", "DatasetInfo", "info", "load", "load_arrays", "training_batches"]

DATA_DIR_ENV = "SGT_TFMOT_DATA_DIR"
SPLITS = ("train", "test")
AUGMENT_PADDING = 4  # pixels of zero padding before the random crop back to full size

_DATA_FILES = Path(__file__).resolve().parent / "data_files"
_SUBSET_FILE = _DATA_FILES / "mnist_subset.npz"
_NPZ_KEYS = ("x_train", "y_train", "x_test", "y_test")


class DataError(ValueError):
    """A dataset could not be found, or its arrays are not what the dataset promises."""


@dataclasses.dataclass(frozen=True)
class DatasetInfo:
    """What is known about a dataset before loading it.

    Attributes:
        name: Registry name, as passed to `load` and `load_arrays`.
        image_shape: (height, width, channels) of one image.
        num_classes: Labels are the class ids 0 .. num_classes - 1.
        train_size: Number of training examples, or None if unknown.
        test_size: Number of test examples, or None if unknown.
        augment_train: Whether `load` augments the training split by default.
        hflip: Whether a random horizontal flip is part of the augmentation (it is not for
            digits, whose mirror images are not digits).
        tfds_name: Name in `tensorflow_datasets`, or None if the dataset is only shipped.
    """

    name: str
    image_shape: tuple[int, int, int]
    num_classes: int
    train_size: int | None
    test_size: int | None
    augment_train: bool
    hflip: bool
    tfds_name: str | None

    def size(self, split: str) -> int | None:
        """Number of examples in `split` ("train" or "test"), or None if unknown."""
        return self.train_size if _check_split(split) == "train" else self.test_size


_REGISTRY = {
    "mnist": DatasetInfo("mnist", (28, 28, 1), 10, 60000, 10000, False, False, "mnist"),
    "cifar10": DatasetInfo("cifar10", (32, 32, 3), 10, 50000, 10000, True, True, "cifar10"),
    "mnist_subset": DatasetInfo("mnist_subset", (28, 28, 1), 10, 5000, 1000, False, False, None),
}


def info(name: str) -> DatasetInfo:
    """Returns the `DatasetInfo` of a known dataset.

    Args:
        name: One of "cifar10", "mnist", "mnist_subset".

    Raises:
        ValueError: If `name` is not a known dataset.
    """
    if name not in _REGISTRY:
        known = ", ".join(repr(n) for n in sorted(_REGISTRY))
        raise ValueError(f"Unknown dataset {name!r}. Known datasets: {known}.")
    return _REGISTRY[name]


def load_arrays(
    name: str, split: str, data_dir: str | os.PathLike | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """Loads one split of a dataset as numpy arrays, in the official order.

    Args:
        name: A known dataset name (see `info`).
        split: "train" or "test".
        data_dir: Folder holding `NAME.npz`. If None, `$SGT_TFMOT_DATA_DIR` is tried, then
            `tensorflow_datasets`. Ignored for "mnist_subset", which ships with the package.

    Returns:
        `(x, y)`: images uint8 of shape (N, H, W, C) and labels int64 of shape (N,), each in
        [0, num_classes).

    Raises:
        ValueError: For an unknown dataset name or split.
        DataError: (a ValueError) If `data_dir` has no `NAME.npz`, if the file lacks a key, if
            the arrays do not match the dataset (image shape, dtype, label range, lengths),
            or if no source could provide the dataset.
    """
    dataset = info(name)
    split = _check_split(split)
    if dataset.tfds_name is None:
        return _read_npz(_SUBSET_FILE, dataset, split)
    if data_dir is not None:
        path = Path(data_dir) / f"{name}.npz"
        if not path.is_file():
            raise DataError(
                f"data_dir {str(data_dir)!r} has no file {path.name!r} for dataset {name!r} "
                f"(looked for {str(path)!r}). Expected an .npz with keys {', '.join(_NPZ_KEYS)}."
            )
        return _read_npz(path, dataset, split)
    tried = f"no data_dir given and ${DATA_DIR_ENV} is not set"
    env_dir = os.environ.get(DATA_DIR_ENV)
    if env_dir:
        path = Path(env_dir) / f"{name}.npz"
        if path.is_file():
            return _read_npz(path, dataset, split)
        tried = f"${DATA_DIR_ENV} file {str(path)!r} does not exist"
    try:
        x, y = _load_tfds(dataset.tfds_name, split)
    except Exception as error:  # any failure: import, network, disk, parsing
        raise DataError(
            f"Could not load dataset {name!r} split {split!r}: {tried}, and "
            f"tensorflow_datasets failed: {_one_line(error)}. Pass data_dir=<folder with "
            f"{name}.npz> (keys {', '.join(_NPZ_KEYS)})."
        ) from error
    return _check_arrays(x, y, dataset, f"tensorflow_datasets {dataset.tfds_name!r}/{split}")


def load(
    name: str,
    split: str,
    data_dir: str | os.PathLike | None = None,
    batch_size: int = 128,
    shuffle: bool | None = None,
    augment: bool | None = None,
    seed: int | None = None,
    limit: int | None = None,
    drop_remainder: bool = False,
) -> tf.data.Dataset:
    """Builds a batched `tf.data.Dataset` of `(images, labels)`.

    Images are float32 in the raw pixel range 0..255, shape (B, H, W, C); labels are int64 of
    shape (B,). Nothing is standardised here: the models do it in their first layer.

    Augmentation (on whole batches, with a gather, no per-example Python work): zero-pad by
    `AUGMENT_PADDING` pixels on each side, crop back to H x W at a random offset per image,
    and, where the dataset allows it (`DatasetInfo.hflip`), mirror each image with
    probability 1/2. Every augmented image is therefore a shifted, possibly mirrored window
    of the zero-padded original, and stays inside 0..255.

    Args:
        name: A known dataset name (see `info`).
        split: "train" or "test".
        data_dir: Folder holding `NAME.npz` (see `load_arrays`).
        batch_size: Examples per batch, >= 1.
        shuffle: Reshuffle the whole split every epoch. Default: True for "train", False for
            "test".
        augment: Apply the augmentation above. Default: `DatasetInfo.augment_train` for
            "train" (True for cifar10, False for the MNIST datasets), False for "test".
            True on "test" is allowed when asked for.
        seed: Makes shuffling and augmentation reproducible: the same seed gives the same
            sequence of epochs. None draws fresh randomness.
        limit: Keep only the first `limit` examples of the split (before shuffling); a
            `limit` above the split size keeps the whole split.
        drop_remainder: Drop a last batch smaller than `batch_size`.

    Returns:
        The dataset, batched then prefetched.

    Raises:
        ValueError: For an unknown dataset or split, `batch_size` < 1 or `limit` < 1, and the
            errors of `load_arrays`.
    """
    dataset = info(name)
    split = _check_split(split)
    _check_positive_int("batch_size", batch_size)
    if limit is not None:
        _check_positive_int("limit", limit)
    x, y = load_arrays(name, split, data_dir)
    if limit is not None:
        x, y = x[:limit], y[:limit]
    training = split == "train"
    shuffle = training if shuffle is None else bool(shuffle)
    augment = (training and dataset.augment_train) if augment is None else bool(augment)

    ds = tf.data.Dataset.from_tensor_slices((x, y))
    if shuffle:
        ds = ds.shuffle(len(x), seed=seed, reshuffle_each_iteration=True)
    ds = ds.batch(batch_size, drop_remainder=drop_remainder)
    if augment:
        hflip = dataset.hflip
        # One random int64 per batch, fresh each epoch but fixed by `seed`, becomes the seed
        # of the stateless ops: parallel map stays deterministic.
        randoms = tf.data.Dataset.random(seed=seed, rerandomize_each_iteration=True)
        ds = tf.data.Dataset.zip((ds, randoms)).map(
            lambda batch, r: (_augment_batch(_to_float(batch[0]), r, hflip), batch[1]),
            num_parallel_calls=tf.data.AUTOTUNE,
        )
    else:
        ds = ds.map(lambda x, y: (_to_float(x), y), num_parallel_calls=tf.data.AUTOTUNE)
    return ds.prefetch(tf.data.AUTOTUNE)


def training_batches(
    x: np.ndarray,
    y: np.ndarray,
    batch_size: int,
    *,
    seed: int,
    total_steps: int,
    start_step: int = 0,
    augment: bool = False,
    hflip: bool = False,
) -> tf.data.Dataset:
    """The training batches of global steps `start_step` .. `total_steps` − 1, exactly.

    Every batch is a function of (seed, step) alone, so a run that resumes at step g sees
    the very batches an uninterrupted run sees from step g on:

        epoch  e = g // S,  position s = g mod S,  S = ceil(N / batch_size)
        order  π_e = argsort(u),  u ~ U[0, 1)^N drawn with the stateless seed (seed, e)
        batch  x[π_e[s·B : (s + 1)·B]]   (the last batch of an epoch holds the remainder)

    and the augmentation (see `load`) of batch g uses the stateless seed (seed, g).

    Args:
      x: (N, H, W, C) uint8 images, held in memory.
      y: (N,) integer labels.
      batch_size: B, the global batch size, >= 1.
      seed: Seed of the order and the augmentation.
      total_steps: Steps of the whole run.
      start_step: First step to produce (a resumed run's position).
      augment: Random shift (zero padding + crop) of every image.
      hflip: With `augment`, a random horizontal mirror too.

    Returns:
      A dataset of (float32 images in 0..255, int64 labels) batches, prefetched.
    """
    _check_positive_int("batch_size", batch_size)
    count = len(x)
    steps_per_epoch = -(-count // batch_size)
    images, labels = tf.constant(x), tf.constant(np.asarray(y, np.int64))
    seed = int(seed)

    def batch(step):
        epoch, position = step // steps_per_epoch, step % steps_per_epoch
        order = tf.argsort(tf.random.stateless_uniform([count], seed=tf.stack([seed, epoch])))
        begin = position * batch_size
        indices = order[begin : tf.minimum(begin + batch_size, count)]
        batch_images = _to_float(tf.gather(images, indices))
        if augment:
            batch_images = _augment_batch(batch_images, _step_seed(seed, step), hflip)
        return batch_images, tf.gather(labels, indices)

    steps = tf.data.Dataset.range(int(start_step), int(total_steps))
    return steps.map(batch, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True).prefetch(
        tf.data.AUTOTUNE
    )


def _step_seed(seed: int, step: tf.Tensor) -> tf.Tensor:
    """One int64 per (seed, step), the seed of that step's stateless augmentation ops."""
    pair = tf.stack([tf.constant(seed, tf.int64), tf.cast(step, tf.int64)])
    return tf.random.stateless_uniform([], seed=pair, minval=None, maxval=None, dtype=tf.int64)


def _to_float(images: tf.Tensor) -> tf.Tensor:
    return tf.cast(images, tf.float32)


def _augment_batch(images: tf.Tensor, seed: tf.Tensor, hflip: bool) -> tf.Tensor:
    """Random shift (zero-pad then crop) and optional mirror of a batch (B, H, W, C).

    Output pixel (b, i, j) is `padded[b, oy_b + i, ox_b + j]`, or `padded[b, oy_b + i,
    ox_b + W - 1 - j]` for mirrored images, with offsets oy_b, ox_b uniform in
    [0, 2 * AUGMENT_PADDING].
    """
    height, width = images.shape[1], images.shape[2]
    pad = AUGMENT_PADDING
    seed = tf.cast(seed, tf.int64)
    crop_seed, flip_seed = tf.stack([seed, 0]), tf.stack([seed, 1])
    batch = tf.shape(images)[0]
    padded = tf.pad(images, [[0, 0], [pad, pad], [pad, pad], [0, 0]])
    offsets = tf.random.stateless_uniform(
        [batch, 2], seed=crop_seed, minval=0, maxval=2 * pad + 1, dtype=tf.int32
    )
    rows = offsets[:, :1] + tf.range(height)[tf.newaxis, :]  # (B, H)
    cols = offsets[:, 1:] + tf.range(width)[tf.newaxis, :]  # (B, W)
    if hflip:
        mirror = tf.random.stateless_uniform([batch], seed=flip_seed) < 0.5
        cols = tf.where(mirror[:, tf.newaxis], tf.reverse(cols, axis=[1]), cols)
    out = tf.gather(padded, rows, axis=1, batch_dims=1)  # (B, H, W + 2 pad, C)
    return tf.gather(out, cols, axis=2, batch_dims=1)  # (B, H, W, C)


def _check_split(split: str) -> str:
    return check_choice(split, SPLITS, "split")


def _check_positive_int(arg: str, value: object) -> None:
    check_int(value, arg, 1)


def _one_line(error: BaseException) -> str:
    lines = str(error).strip().splitlines()
    text = f"{type(error).__name__}: {lines[0] if lines else ''}".rstrip(": ")
    return text if len(text) <= 300 else text[:297] + "..."


def _load_tfds(tfds_name: str, split: str) -> tuple[np.ndarray, np.ndarray]:
    import tensorflow_datasets as tfds  # slow import, needed only without a local file

    images, labels = tfds.as_numpy(
        tfds.load(tfds_name, split=split, batch_size=-1, as_supervised=True)
    )
    return images, labels


def _read_npz(path: Path, dataset: DatasetInfo, split: str) -> tuple[np.ndarray, np.ndarray]:
    x_key, y_key = f"x_{split}", f"y_{split}"
    try:
        with np.load(path, allow_pickle=False) as archive:
            if not hasattr(archive, "files"):
                raise ValueError("it holds a single array, not an .npz archive of arrays")
            for key in (x_key, y_key):
                if key not in archive.files:
                    raise DataError(
                        f"{str(path)!r} has no key {key!r} (dataset {dataset.name!r}, split "
                        f"{split!r}). Keys found: {sorted(archive.files)}; expected "
                        f"{', '.join(_NPZ_KEYS)}."
                    )
            x, y = archive[x_key], archive[y_key]
    except DataError:
        raise
    except (OSError, EOFError, ValueError, zipfile.BadZipFile) as error:
        raise DataError(_unreadable_npz(path, error)) from None
    return _check_arrays(x, y, dataset, f"{str(path)!r} ({x_key}, {y_key})")


def _unreadable_npz(path: Path, error: BaseException) -> str:
    """One line saying why `path` is not a readable .npz (never numpy's pickle advice)."""
    if isinstance(error, EOFError) or (path.is_file() and path.stat().st_size == 0):
        reason = "the file is empty"
    elif isinstance(error, zipfile.BadZipFile):
        reason = f"the zip archive is damaged or truncated ({error})"
    elif "pickle" in str(error):
        reason = "it is not a numpy archive (it would need pickle, which is never used)"
    else:
        reason = _one_line(error)
    return (
        f"{str(path)!r} is not a readable .npz archive: {reason}. Expected numpy's .npz "
        f"(np.savez) with keys {', '.join(_NPZ_KEYS)}."
    )


def _check_arrays(
    x: np.ndarray, y: np.ndarray, dataset: DatasetInfo, source: str
) -> tuple[np.ndarray, np.ndarray]:
    """Checks images and labels against `dataset`; adds the channel axis, labels to int64."""
    x, y = np.asarray(x), np.asarray(y)
    if x.ndim == 3 and dataset.image_shape[2] == 1:
        x = x[..., np.newaxis]
    if x.ndim != 4 or x.shape[1:] != dataset.image_shape:
        height, width, channels = dataset.image_shape
        raise DataError(
            f"{source}: images have shape {x.shape}, expected (N, {height}, {width}, "
            f"{channels}) for dataset {dataset.name!r}."
        )
    if x.dtype != np.uint8:
        raise DataError(f"{source}: images have dtype {x.dtype}, expected uint8 (0..255).")
    if y.ndim == 2 and y.shape[1] == 1:
        y = y[:, 0]
    if y.ndim != 1 or not np.issubdtype(y.dtype, np.integer):
        raise DataError(
            f"{source}: labels have shape {y.shape} and dtype {y.dtype}, expected integer "
            "class ids of shape (N,)."
        )
    if len(x) != len(y):
        raise DataError(f"{source}: {len(x)} images but {len(y)} labels; they must match.")
    if len(y) == 0:
        raise DataError(f"{source}: the split is empty.")
    low, high = int(y.min()), int(y.max())
    if low < 0 or high >= dataset.num_classes:
        bad = low if low < 0 else high
        raise DataError(
            f"{source}: label {bad} is outside [0, {dataset.num_classes}) for dataset "
            f"{dataset.name!r}."
        )
    return x, y.astype(np.int64)


def _first_per_class(labels: np.ndarray, per_class: int, num_classes: int) -> np.ndarray:
    """Indices of the first `per_class` examples of each class, in their original order."""
    keep = np.zeros(len(labels), dtype=bool)
    for c in range(num_classes):
        where = np.flatnonzero(labels == c)
        if len(where) < per_class:
            raise ValueError(f"Class {c} has {len(where)} examples, fewer than {per_class}.")
        keep[where[:per_class]] = True
    return np.flatnonzero(keep)


def _make_mnist_subset(
    mnist_npz: str | os.PathLike,
    destination: str | os.PathLike = _SUBSET_FILE,
    train_per_class: int = 500,
    test_per_class: int = 100,
) -> Path:
    """Writes the shipped `mnist_subset.npz` from the full MNIST archive.

    The rule: for each digit 0..9, the first `train_per_class` training images and the first
    `test_per_class` test images in the official order; the selected images keep the official
    order (classes stay interleaved, so any prefix is roughly balanced). See
    `data_files/README.md`.

    Args:
        mnist_npz: The full MNIST `.npz` (keys x_train, y_train, x_test, y_test).
        destination: Where to write the subset.
        train_per_class: Training images per class.
        test_per_class: Test images per class.

    Returns:
        The path written.
    """
    arrays = {}
    with np.load(mnist_npz, allow_pickle=False) as full:
        for split, per_class in (("train", train_per_class), ("test", test_per_class)):
            x, y = full[f"x_{split}"], full[f"y_{split}"]
            keep = _first_per_class(y, per_class, num_classes=10)
            arrays[f"x_{split}"] = x[keep].astype(np.uint8)
            arrays[f"y_{split}"] = y[keep].astype(np.uint8)
    destination = Path(destination)
    destination.parent.mkdir(parents=True, exist_ok=True)
    np.savez_compressed(destination, **arrays)
    return destination
