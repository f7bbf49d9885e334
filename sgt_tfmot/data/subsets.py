"""Which images a check, a figure or a calibration uses: a stratified order of a split.

Images from a folder arrive sorted by class, so "the first N test images" can be one or two
classes (`explain --curve_images 40` on a digits folder once measured 20 % accuracy: all
"eight"). Every tool therefore takes its N images as the first N of `stratified_order`: a
seeded permutation of the split in which *every* prefix holds each class in proportion to
its share of the split (within one image or two). A check on 300 images and the figure on
the first 8 of those draw from the same order, so each is stratified on its own.

Rule: class c with n_c images has them shuffled (seeded) and its j-th image placed at
key (j + φ_c) / n_c, with φ_c uniform in [0, 1) (seeded); the order sorts the keys (ties in
a seeded random order). A prefix ending at key t then holds about t·n_c images of class c.

Example:

    order = stratified_order(y_test, seed=0)
    x_check, y_check = x_test[order[:300]], y_test[order[:300]]
    print(describe_choice(300, len(y_test), "test", seed=0))
    # 300 of the 10000 test images, stratified by class (seed 0)
"""

from __future__ import annotations

import numpy as np

__all__ = ["describe_choice", "stratified_order"]


def stratified_order(labels, seed: int = 0) -> np.ndarray:
    """A permutation of `range(len(labels))` whose every prefix is stratified by class.

    Args:
      labels: (N,) or (N, 1) integer class ids.
      seed: Seed of the shuffle within each class and of the class phases.

    Returns:
      (N,) int64 indices; `order[:k]` are the k images a tool uses.
    """
    labels = np.asarray(labels).reshape(-1)
    rng = np.random.default_rng(seed)
    keys = np.empty(len(labels), np.float64)
    for label in np.unique(labels):
        members = rng.permutation(np.flatnonzero(labels == label))
        keys[members] = (np.arange(len(members)) + rng.uniform()) / len(members)
    ties = rng.permutation(len(labels))
    return np.lexsort((ties, keys)).astype(np.int64)


def describe_choice(count: int, total: int, split: str, seed: int | None) -> str:
    """How a tool chose `count` of the `total` images of a split, for its report: by
    `stratified_order(labels, seed)`, or (seed None) as the split's first images."""
    if count >= total:
        return f"all {total} {split} images"
    if seed is None:
        return f"the first {count} of the {total} {split} images (not stratified)"
    return f"{count} of the {total} {split} images, stratified by class (seed {seed})"
