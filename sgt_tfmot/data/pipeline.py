"""`tf.data` pipelines over a dataset's arrays: evaluation batches and exact training batches.

Images stay in their raw range 0..255 (as float32): the models normalise their inputs in
their first layer (see `sgt_tfmot.models`), so the same pipeline feeds training, saliency
maps and the TFLite representative dataset.

Augmentation (on whole batches, with gathers, no per-example Python work), chosen by name:

* "crop": zero-pad by `AUGMENT_PADDING` pixels on each side and crop back at a random
  offset per image (a random shift);
* "flip": mirror each image with probability 1/2.

Every augmented image is therefore a shifted, possibly mirrored window of the zero-padded
original, and stays inside 0..255.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from sgt_tfmot._checks import check_int
from sgt_tfmot.data.base import AUGMENTATIONS
from sgt_tfmot.keras import tf

__all__ = ["AUGMENT_PADDING", "batches", "training_batches"]

AUGMENT_PADDING = 4  # pixels of zero padding before the random crop back to full size


def _augmentation(augment) -> tuple[bool, bool]:
    """(crop, flip) from a sequence of names, or from True ("crop", "flip") / False."""
    if augment is True:
        augment = AUGMENTATIONS
    names = tuple(augment or ())
    return "crop" in names, "flip" in names


def batches(
    x: np.ndarray,
    y: np.ndarray,
    batch_size: int = 128,
    shuffle: bool = False,
    augment: Sequence[str] | bool = (),
    seed: int | None = None,
    drop_remainder: bool = False,
) -> tf.data.Dataset:
    """Batched (float32 images, int64 labels), optionally reshuffled each epoch and augmented.

    Args:
      x: (N, H, W, C) uint8 images.
      y: (N,) integer labels.
      batch_size: Examples per batch, >= 1.
      shuffle: Reshuffle the whole split every epoch (seeded by `seed`).
      augment: Names among "crop" and "flip" (True: both).
      seed: Makes shuffling and augmentation reproducible.
      drop_remainder: Drop a last batch smaller than `batch_size`.
    """
    check_int(batch_size, "batch_size", 1)
    crop, flip = _augmentation(augment)
    ds = tf.data.Dataset.from_tensor_slices((x, np.asarray(y, np.int64)))
    if shuffle:
        ds = ds.shuffle(len(x), seed=seed, reshuffle_each_iteration=True)
    ds = ds.batch(batch_size, drop_remainder=drop_remainder)
    if crop or flip:
        # One random int64 per batch, fresh each epoch but fixed by `seed`, becomes the seed
        # of the stateless ops: parallel map stays deterministic.
        randoms = tf.data.Dataset.random(seed=seed, rerandomize_each_iteration=True)
        ds = tf.data.Dataset.zip((ds, randoms)).map(
            lambda batch, r: (_augment_batch(_to_float(batch[0]), r, flip, crop), batch[1]),
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
    augment: Sequence[str] | bool = (),
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
      augment: Names among "crop" and "flip" (see the module docstring).

    Returns:
      A dataset of (float32 images in 0..255, int64 labels) batches, prefetched.
    """
    check_int(batch_size, "batch_size", 1)
    crop, flip = _augmentation(augment)
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
        if crop or flip:
            batch_images = _augment_batch(batch_images, _step_seed(seed, step), flip, crop)
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


def _augment_batch(images: tf.Tensor, seed: tf.Tensor, hflip: bool, crop: bool = True):
    """Random shift (zero-pad then crop) and optional mirror of a batch (B, H, W, C).

    Output pixel (b, i, j) is `padded[b, oy_b + i, ox_b + j]`, or `padded[b, oy_b + i,
    ox_b + W - 1 - j]` for mirrored images, with offsets oy_b, ox_b uniform in
    [0, 2 * AUGMENT_PADDING].
    """
    height, width = images.shape[1], images.shape[2]
    pad = AUGMENT_PADDING if crop else 0
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
