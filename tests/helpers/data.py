"""Tiny datasets a test writes for the training command (instead of the 5,000 mnist_subset
images, whose test split alone costs a run more than its training steps)."""

from pathlib import Path

import numpy as np


def write_bars_npz(
    path: Path, train: int = 128, test: int = 32, size: int = 12, classes: int = 3, seed: int = 0
) -> Path:
    """Writes an .npz of `size`x`size` grey images (uint8) whose class is the row of a bright
    bar over dark noise (every image distinct); returns `path`."""
    rng = np.random.default_rng(seed)

    def split(count):
        labels = rng.integers(0, classes, count)
        images = rng.integers(0, 60, (count, size, size, 1))
        rows = (size - 3) // classes
        for image, label in zip(images, labels, strict=True):
            image[1 + rows * label : 4 + rows * label, 2 : size - 2] += 150
        return images.astype(np.uint8), labels

    (x_train, y_train), (x_test, y_test) = split(train), split(test)
    np.savez(path, x_train=x_train, y_train=y_train, x_test=x_test, y_test=y_test)
    return path


def write_digits_npz(path: Path, train: int = 256, test: int = 64) -> Path:
    """Writes the first `train` training and `test` test images of mnist_subset (28x28 grey
    digits, 10 classes) as an .npz; returns `path`. For runs that check files, steps and
    refusals, which the whole split only makes slower (its 1,000 test images are evaluated
    at each epoch's end and the run's, and 1,024 of its training images judge the
    BatchNormalization statistics at the end)."""
    from sgt_tfmot import data

    x_train, y_train = data.load_arrays("mnist_subset", "train")
    x_test, y_test = data.load_arrays("mnist_subset", "test")
    np.savez(path, x_train=x_train[:train], y_train=y_train[:train], x_test=x_test[:test],
             y_test=y_test[:test])  # fmt: skip
    return path
