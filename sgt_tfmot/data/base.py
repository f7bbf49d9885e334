"""What every data source is and gives: checked arrays, the facts read from them, the options.

A source (a `DataSource` subclass, one module each, registered in `sgt_tfmot.data`) turns a
dataset reference into `Arrays`: uint8 images (N, H, W, C) and integer labels (N,) for the
"train" and "test" splits, plus class names when it knows them. `check_arrays` is the one
place that validates them, and `DatasetInfo` is read from them (shape, classes, sizes, pixel
statistics), never from a table of names.
"""

from __future__ import annotations

import dataclasses

import numpy as np

from sgt_tfmot._checks import InputError

__all__ = [
    "AUGMENTATIONS",
    "Arrays",
    "DataError",
    "DataOptions",
    "DataSource",
    "DatasetInfo",
    "check_arrays",
]

SPLITS = ("train", "test")
KEYS = ("x_train", "y_train", "x_test", "y_test")
AUGMENTATIONS = ("crop", "flip")  # random shift (pad + crop) and horizontal mirror
COLOR_MODES = ("grayscale", "rgb")


class DataError(InputError):
    """A dataset could not be found, or its files are not what a dataset must be."""


@dataclasses.dataclass(frozen=True)
class DataOptions:
    """How a source reads images it has to decode (image folders).

    Attributes:
      image_size: (height, width) to resize every image to; None keeps the images' own size
        (which must then be the same for all).
      color_mode: "grayscale" (1 channel) or "rgb" (3); None keeps the images' own (which
        must then be the same for all).
      validation_split: Share of a folder without train/ and test/ held out as the test
        split (stratified per class, fixed seed); None: the folder must have both.
    """

    image_size: tuple[int, int] | None = None
    color_mode: str | None = None
    validation_split: float | None = None

    def key(self) -> tuple:
        return (self.image_size, self.color_mode, self.validation_split)


@dataclasses.dataclass(frozen=True)
class Arrays:
    """The two splits of a dataset, checked (`check_arrays`)."""

    x_train: np.ndarray
    y_train: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray
    class_names: tuple[str, ...] | None
    source: str

    def split(self, name: str) -> tuple[np.ndarray, np.ndarray]:
        return (self.x_train, self.y_train) if name == "train" else (self.x_test, self.y_test)


class DataSource:
    """Base class of the data sources: a dataset reference -> checked `Arrays`.

    The sources are asked in registry order; the first that `claims` a reference loads it.

    Class attributes:
      name: The registry name ("npz").
      reference: The references it claims, as help texts and docs say it ("a path ending in
        .npz").
      fallback: It claims every reference (TFDS), so it stays behind the sources registered
        later.
    """

    name: str = ""
    reference: str = ""
    fallback: bool = False

    def claims(self, reference: str, data_dir) -> bool:
        """Whether this source loads `reference` (with `data_dir`, which may be None)."""
        raise NotImplementedError

    def load(self, reference: str, data_dir, options: DataOptions) -> Arrays:
        """The checked arrays (`check_arrays`); a `DataError` saying what is wrong."""
        raise NotImplementedError

    def __repr__(self) -> str:
        return f"{type(self).__name__}()"


@dataclasses.dataclass(frozen=True)
class DatasetInfo:
    """What is known about a dataset, read from its arrays.

    Attributes:
      name: The reference it was opened with (a name, an .npz path or a folder).
      image_shape: (height, width, channels) of one image.
      num_classes: Labels are the class ids 0 .. num_classes − 1.
      train_size, test_size: Examples per split.
      class_names: One name per class, or None when the source has none.
      mean, std: Per-channel pixel mean and standard deviation of the training split, in
        0..255 units (the models' input normalisation).
      augment: The default augmentation of the training split: ("crop", "flip") for colour
        images, () for one channel (digits and other grey images, whose mirror images are
        often other things); `--augment` chooses otherwise.
      source: Where the arrays came from, for messages and reports.
    """

    name: str
    image_shape: tuple[int, int, int]
    num_classes: int
    train_size: int
    test_size: int
    class_names: tuple[str, ...] | None
    mean: tuple[float, ...]
    std: tuple[float, ...]
    augment: tuple[str, ...]
    source: str

    def size(self, split: str) -> int:
        return self.train_size if split == "train" else self.test_size

    def labels(self) -> tuple[str, ...]:
        """Class names, or the class ids as text when the data has no names."""
        return self.class_names or tuple(str(i) for i in range(self.num_classes))


def _labels(y: np.ndarray, where: str) -> np.ndarray:
    y = np.asarray(y)
    if y.ndim == 2 and y.shape[1] == 1:
        y = y[:, 0]
    if y.ndim == 2 and y.shape[1] > 1:
        raise DataError(
            f"{where}: labels have shape {y.shape}, one-hot it seems; expected integer class "
            "ids of shape (N,): store y.argmax(1)."
        )
    if y.ndim != 1 or not np.issubdtype(y.dtype, np.integer):
        raise DataError(
            f"{where}: labels have shape {y.shape} and dtype {y.dtype}, expected integer class "
            "ids of shape (N,) (cast float class ids to an integer dtype)."
        )
    return y.astype(np.int64)


def _images(x: np.ndarray, where: str) -> np.ndarray:
    x = np.asarray(x)
    if x.ndim == 3:
        x = x[..., np.newaxis]
    if x.ndim != 4 or x.shape[-1] not in (1, 3):
        raise DataError(
            f"{where}: images have shape {x.shape}, expected (N, height, width) or (N, height, "
            "width, 1 or 3)."
        )
    if x.dtype != np.uint8:
        raise DataError(f"{where}: images have dtype {x.dtype}, expected uint8 (0..255).")
    return x


def check_arrays(
    x_train, y_train, x_test, y_test, class_names=None, source: str = "the data"
) -> Arrays:
    """Validates both splits; adds the channel axis of (N, H, W) images; labels to int64.

    Raises:
      DataError: naming `source` and the array: images not uint8 (N, H, W[, 1|3]), train
        and test images of different shapes, labels not integer ids (N,) (one-hot is named),
        images and labels of different lengths, an empty split, labels outside 0..C − 1
        (C: the number of class names, or the largest label + 1), fewer than two classes.
    """
    x_train, x_test = _images(x_train, f"{source} x_train"), _images(x_test, f"{source} x_test")
    y_train, y_test = _labels(y_train, f"{source} y_train"), _labels(y_test, f"{source} y_test")
    if x_train.shape[1:] != x_test.shape[1:]:
        raise DataError(
            f"{source}: train images are {x_train.shape[1:]} but test images are "
            f"{x_test.shape[1:]}; both splits must have one image shape."
        )
    for split, x, y in (("train", x_train, y_train), ("test", x_test, y_test)):
        if len(x) != len(y):
            raise DataError(f"{source} ({split}): {len(x)} images but {len(y)} labels.")
        if len(y) == 0:
            raise DataError(f"{source}: the {split} split is empty.")
    if class_names is not None:
        class_names = tuple(str(name) for name in class_names)
    classes = len(class_names) if class_names else int(max(y_train.max(), y_test.max())) + 1
    for split, y in (("train", y_train), ("test", y_test)):
        low, high = int(y.min()), int(y.max())
        if low < 0 or high >= classes:
            bad = low if low < 0 else high
            raise DataError(
                f"{source} ({split}): label {bad} is outside 0..{classes - 1}"
                + (f" ({classes} class names)." if class_names else ".")
            )
    if classes < 2:
        raise DataError(f"{source}: a classifier needs at least two classes; found {classes}.")
    return Arrays(x_train, y_train, x_test, y_test, class_names, source)


def info_of(name: str, arrays: Arrays, augment: tuple[str, ...] | None = None) -> DatasetInfo:
    """The `DatasetInfo` read from checked arrays."""
    x = arrays.x_train
    channels = x.shape[-1]
    axes = (0, 1, 2)
    mean = x.mean(axis=axes, dtype=np.float64)
    std = np.sqrt(((x.astype(np.float32) - mean.astype(np.float32)) ** 2).mean(axis=axes))
    default = AUGMENTATIONS if channels == 3 else ()
    classes = len(arrays.class_names) if arrays.class_names else None
    if classes is None:
        classes = int(max(arrays.y_train.max(), arrays.y_test.max())) + 1
    return DatasetInfo(
        name=name, image_shape=tuple(int(d) for d in x.shape[1:]), num_classes=classes,
        train_size=len(x), test_size=len(arrays.x_test), class_names=arrays.class_names,
        mean=tuple(float(v) for v in mean), std=tuple(max(float(v), 1e-3) for v in std),
        augment=default if augment is None else tuple(augment), source=arrays.source,
    )  # fmt: skip
