"""The MNIST subset that ships with the package (`mnist_subset`; see data_files/README.md)."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from sgt_tfmot.data.base import Arrays, DataOptions, DataSource
from sgt_tfmot.data.npz import read_npz

__all__ = ["EMBEDDED", "EmbeddedSource"]

_FILES = Path(__file__).resolve().parents[1] / "data_files"
EMBEDDED = {"mnist_subset": _FILES / "mnist_subset.npz"}


class EmbeddedSource(DataSource):
    """The datasets that ship with the package, by name."""

    name = "embedded"
    reference = ", ".join(EMBEDDED) + " (shipped with the package)"

    def claims(self, reference: str, data_dir) -> bool:
        return reference in EMBEDDED

    def load(self, reference: str, data_dir, options: DataOptions) -> Arrays:
        return read_npz(EMBEDDED[reference], source=f"the embedded {reference}")


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
    destination: str | os.PathLike = EMBEDDED["mnist_subset"],
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
