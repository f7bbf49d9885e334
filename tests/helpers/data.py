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
