"""Image classification data: any TFDS set, any .npz, an image folder; arrays and pipelines.

A dataset is named by a *reference*, resolved by the first source of the registry that
claims it (a `DataSource` subclass; a new source is one module and one line in `REGISTRY`, or
`register(source)` at run time, which puts it in front of the TFDS fallback):

| source     | reference                                   | arrays from                           |
|------------|---------------------------------------------|---------------------------------------|
| `embedded` | `mnist_subset`                              | the file shipped in `data_files/`     |
| `npz`      | a path ending in `.npz`                     | that file                             |
| `folder`   | a directory of class sub-folders            | the images, decoded (`data.folder`)   |
| `data_dir` | NAME, with `data_dir` (or $SGT_TFMOT_DATA_DIR holding NAME.npz) | `DIR/NAME.npz` |
| `tfds`     | any other NAME                              | `tensorflow_datasets` (network once)  |

Image shape, number of classes, class names and pixel statistics are read from the data
(`DatasetInfo`); nothing is looked up in a table of names. Arrays are cached in the process.
The registry is read at call time (`supports`, `get`, `names`; `references()` is the text the
CLIs' --dataset help shows).

Example:

    info = data.info("cifar10", data_dir="../shared/data")     # (32, 32, 3), 10 classes
    x, y = data.load_arrays("photos/", "test", validation_split=0.2)
    ds = data.load("mnist_subset", "train", batch_size=64, seed=0)  # float32 0..255, int64
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from sgt_tfmot._checks import InputError, check_choice, check_int, check_open_fraction
from sgt_tfmot._registry import Registry
from sgt_tfmot.data.base import (
    AUGMENTATIONS,
    COLOR_MODES,
    SPLITS,
    Arrays,
    DataError,
    DataOptions,
    DatasetInfo,
    DataSource,
    check_arrays,
    info_of,
)
from sgt_tfmot.data.embedded import EmbeddedSource
from sgt_tfmot.data.folder import FolderSource
from sgt_tfmot.data.npz import DATA_DIR_ENV, DataDirSource, NpzFileSource, read_labels_file
from sgt_tfmot.data.pipeline import AUGMENT_PADDING, batches, training_batches
from sgt_tfmot.data.subsets import describe_choice, stratified_order
from sgt_tfmot.data.tfds_source import TfdsSource

__all__ = [
    "AUGMENTATIONS",
    "AUGMENT_PADDING",
    "COLOR_MODES",
    "DATA_DIR_ENV",
    "REGISTRY",
    "DataError",
    "DataOptions",
    "DataSource",
    "DatasetInfo",
    "check_arrays",
    "describe_choice",
    "get",
    "info",
    "load",
    "load_arrays",
    "names",
    "open_dataset",
    "options",
    "parse_augment",
    "parse_image_size",
    "read_labels_file",
    "stratified_order",
    "references",
    "register",
    "supports",
    "training_batches",
    "unregister",
]

# The source registry, in order of precedence: a new source is one module and one line here.
REGISTRY: Registry[DataSource] = Registry(
    "data source",
    DataSource,
    "source",
    [EmbeddedSource(), NpzFileSource(), FolderSource(), DataDirSource(), TfdsSource()],
)
supports, names, get, unregister = (
    REGISTRY.supports, REGISTRY.names, REGISTRY.get, REGISTRY.unregister
)  # fmt: skip


def register(source: DataSource, before: str | None = None) -> DataSource:
    """Adds a source, asked before the source `before`; by default before the fallback
    sources (TFDS, which claims every name), so that it can claim references first."""
    if before is None and not getattr(source, "fallback", False):
        before = next((entry.name for entry in REGISTRY if entry.fallback), None)
    return REGISTRY.register(source, before=before)


def references() -> str:
    """What a dataset reference may be, one clause per registered source, in order."""
    return "; ".join(source.reference for source in REGISTRY)


_CACHE: dict[tuple, tuple[DatasetInfo, Arrays]] = {}


def options(image_size=None, color_mode=None, validation_split=None) -> DataOptions:
    """Checked `DataOptions` (see there)."""
    if image_size is not None:
        image_size = parse_image_size(image_size)
    if color_mode is not None:
        check_choice(color_mode, COLOR_MODES, "color_mode")
    if validation_split is not None:
        validation_split = check_open_fraction(validation_split, "validation_split")
    return DataOptions(image_size, color_mode, validation_split)


def parse_image_size(value) -> tuple[int, int]:
    """(height, width) from "H,W", "HxW", an int, or a pair of positive ints."""
    text = value
    if isinstance(value, str):
        parts = value.replace("x", ",").split(",")
        try:
            value = tuple(int(p) for p in parts)
        except ValueError:
            value = None
    elif isinstance(value, int):
        value = (value, value)
    if (
        not isinstance(value, tuple | list)
        or len(value) not in (1, 2)
        or any(isinstance(v, bool) or not isinstance(v, int) or v < 1 for v in value)
    ):
        raise InputError("must be H,W with positive integers, e.g. 64,64", "image_size", text)
    return (int(value[0]), int(value[-1]))


def parse_augment(value) -> tuple[str, ...] | None:
    """Augmentation names from "crop,flip" / "none" / a sequence; None keeps the default."""
    if value is None:
        return None
    names = value.split(",") if isinstance(value, str) else list(value)
    names = [n.strip() for n in names if n.strip()]
    if names == ["none"]:
        return ()
    for name in names:
        if name not in AUGMENTATIONS:
            raise InputError(
                f"must be none or a comma-separated list of {', '.join(AUGMENTATIONS)}",
                "augment", value,
            )  # fmt: skip
    return tuple(dict.fromkeys(names))


def _key(reference, data_dir, opts: DataOptions) -> tuple:
    path = Path(str(reference))
    stamp = path.stat().st_mtime_ns if path.exists() else None
    env = os.environ.get(DATA_DIR_ENV) if data_dir is None else None
    return (str(reference), None if data_dir is None else str(data_dir), env, opts.key(), stamp)


def open_dataset(
    reference: str, data_dir: str | os.PathLike | None = None, **option_values
) -> tuple[DatasetInfo, Arrays]:
    """(info, arrays) of a dataset reference (see the module docstring).

    Raises:
      DataError (a ValueError): when no source can provide it, naming what was tried.
    """
    if not isinstance(reference, str | os.PathLike) or not str(reference):
        raise InputError("must name a dataset, an .npz file or an image folder", "dataset",
                         reference)  # fmt: skip
    reference = os.fspath(reference)
    opts = options(**option_values)
    key = _key(reference, data_dir, opts)
    if key not in _CACHE:
        source = next((s for s in REGISTRY if s.claims(reference, data_dir)), None)
        if source is None:
            raise DataError(f"No data source claims {reference!r}; known: {references()}.")
        arrays = source.load(reference, data_dir, opts)
        _CACHE.clear()  # one dataset at a time stays in memory
        _CACHE[key] = (info_of(reference, arrays), arrays)
    return _CACHE[key]


def info(reference: str, data_dir=None, **option_values) -> DatasetInfo:
    """The `DatasetInfo` of a dataset (reads its data)."""
    return open_dataset(reference, data_dir, **option_values)[0]


def load_arrays(
    reference: str, split: str, data_dir=None, **option_values
) -> tuple[np.ndarray, np.ndarray]:
    """One split as numpy arrays: uint8 images (N, H, W, C) and int64 labels (N,)."""
    check_choice(split, SPLITS, "split")
    return open_dataset(reference, data_dir, **option_values)[1].split(split)


def load(
    reference: str,
    split: str,
    data_dir=None,
    batch_size: int = 128,
    shuffle: bool | None = None,
    augment=None,
    seed: int | None = None,
    limit: int | None = None,
    drop_remainder: bool = False,
    **option_values,
):
    """A batched `tf.data.Dataset` of (float32 images in 0..255, int64 labels).

    Args:
      reference, data_dir, option_values: The dataset (see `open_dataset`).
      split: "train" or "test".
      batch_size: Examples per batch, >= 1.
      shuffle: Reshuffle every epoch; default True for "train", False for "test".
      augment: Names among "crop", "flip" (True: both; False/(): none); default: the
        dataset's default augmentation for "train" (`DatasetInfo.augment`), none for "test".
      seed: Makes shuffling and augmentation reproducible.
      limit: Keep only the first `limit` examples (before shuffling).
      drop_remainder: Drop a last batch smaller than `batch_size`.
    """
    check_choice(split, SPLITS, "split")
    check_int(batch_size, "batch_size", 1)
    check_int(limit, "limit", 1, allow_none=True)
    dataset_info, arrays = open_dataset(reference, data_dir, **option_values)
    x, y = arrays.split(split)
    if limit is not None:
        x, y = x[:limit], y[:limit]
    training = split == "train"
    shuffle = training if shuffle is None else bool(shuffle)
    if augment is None:
        augment = dataset_info.augment if training else ()
    return batches(x, y, batch_size, shuffle, augment, seed, drop_remainder)
