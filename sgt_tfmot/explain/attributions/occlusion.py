"""Occlusion: the drop of the target score when a patch is hidden (Zeiler & Fergus 2014).

A square patch of `patch` × `patch` pixels slides over each image x (H, W, C) with `stride`
(the last patch of a row or column flush with the border, so every pixel is covered). For
each position P the patch is filled with m, the image's per-channel mean (inside the image's
own value range, so inside the model's input range), and

    d_P    = f_y(x) − f_y(x with P filled by m)
    S(i,j) = 1 / |{P ∋ (i,j)}| · Σ_{P ∋ (i,j)} max(d_P, 0)

where f_y is the model's output (logit or probability) for the target class y. Only the
positive drop is kept, per patch: for ranking pixels (accuracy-drop curves) what matters is
what the model needs, and the package's other maps are >= 0 too. `features` repeats S over
the channels.

The model is only run forward, so any classifier works: a tf_keras model, an object with
`predict(images)` (e.g. `sgt_tfmot.tflite.TFLiteModel`, float or integer), or a function
images -> scores. The occluded copies of all images form one stream, run in chunks of
`options.batch_size`: 8 images of 32 × 32 with patch 4, stride 2 (225 positions each) take
1 + 29 calls at the default batch of 64.

Example:

    maps = Occlusion()(TFLiteModel(flatbuffer), x_test[:8], y_test[:8])    # (8, H, W)
"""

from __future__ import annotations

import numpy as np

from sgt_tfmot._checks import InputError, check_int
from sgt_tfmot.explain.attributions.base import Attribution, AttributionOptions
from sgt_tfmot.keras import keras

_MODEL_KINDS = "a tf_keras model, an object with .predict(images) or a function images -> scores"


def _starts(size: int, patch: int, stride: int) -> list[int]:
    """Patch offsets along one axis: 0, stride, ..., and size − patch (flush with the end)."""
    starts = list(range(0, size - patch + 1, stride))
    return starts if starts[-1] == size - patch else [*starts, size - patch]


def positions(height: int, width: int, patch: int, stride: int) -> list[tuple[int, int]]:
    """The (top, left) corners of the patches over an image of `height` × `width`."""
    return [(t, s) for t in _starts(height, patch, stride) for s in _starts(width, patch, stride)]


def _scorer(model):
    """A function float32 images -> (N, K) scores for the supported kinds of model."""
    if isinstance(model, keras.Model):
        return lambda x: np.asarray(model.predict_on_batch(x))
    if callable(getattr(model, "predict", None)):
        return lambda x: np.asarray(model.predict(x))
    if callable(model):
        return lambda x: np.asarray(model(x))
    raise InputError(f"must be {_MODEL_KINDS}", "model", type(model).__name__)


def _input_shape(model) -> tuple | None:
    """The input shape (without the batch) the model declares, if any."""
    if isinstance(model, keras.Model):
        return tuple(model.inputs[0].shape[1:]) if len(model.inputs) == 1 else None
    shape = getattr(model, "input_shape", None)  # TFLiteModel: (H, W, C)
    return tuple(shape) if isinstance(shape, tuple) else None


def _fits(declared: tuple, shape: tuple) -> bool:
    """Whether images of `shape` fit the declared input shape (None: any size)."""
    same_rank = len(declared) == len(shape)
    return same_rank and all(d in (None, s) for d, s in zip(declared, shape, strict=True))


def _check_inputs(model, images, targets, options: AttributionOptions):
    images = np.asarray(images, np.float32)
    if images.ndim != 4:
        raise InputError(
            f"must have shape (N, height, width, channels). Received: shape {images.shape}",
            "images",
        )
    declared = _input_shape(model)
    if declared is not None and not _fits(declared, images.shape[1:]):
        raise InputError(
            f"of shape {images.shape[1:]} do not fit the model input {declared}",
            "images",
        )
    targets = np.asarray(targets)
    if targets.shape != (len(images),) or not np.issubdtype(targets.dtype, np.integer):
        raise InputError(
            f"must be integer class ids of shape ({len(images)},), one per image. Received: "
            f"shape {targets.shape}, dtype {targets.dtype}",
            "targets",
        )
    patch = check_int(options.patch, "patch", 1)
    if patch > min(images.shape[1:3]):
        raise InputError(
            f"must be at most the image size {images.shape[1]}x{images.shape[2]}", "patch", patch
        )
    stride = check_int(options.stride, "stride", 1)
    if stride > patch:
        raise InputError(
            f"must be <= patch={patch}, so that the patches cover every pixel", "stride", stride
        )
    batch_size = check_int(options.batch_size, "batch_size", 1)
    return images, targets.astype(np.int64), patch, stride, batch_size


def _target_scores(scores: np.ndarray, targets: np.ndarray) -> np.ndarray:
    """f_y of each row, after checking the model returned (n, num_classes) scores."""
    if scores.ndim != 2 or len(scores) != len(targets):
        raise InputError(
            f"must be a classifier returning scores of shape (N, num_classes); for {len(targets)}"
            f" images it returned shape {scores.shape}",
            "model",
        )
    if targets.min() < 0 or targets.max() >= scores.shape[1]:
        raise InputError(
            f"must be class ids in [0, {scores.shape[1]}) for a model with {scores.shape[1]} "
            f"outputs. Received: targets in [{targets.min()}, {targets.max()}]",
            "targets",
        )
    return scores[np.arange(len(targets)), targets].astype(np.float64)


class Occlusion(Attribution):
    name, title, per_pixel, needs_gradients = "occlusion", "occlusion", True, False

    def __call__(self, model, images, targets, options: AttributionOptions | None = None):
        """(N, H, W) maps S >= 0 (see the module docstring); the model is not changed."""
        options = options or AttributionOptions()
        score = _scorer(model)
        images, targets, patch, stride, batch_size = _check_inputs(model, images, targets, options)
        n, height, width, _ = images.shape
        if not n:
            return np.zeros((0, height, width), np.float32)
        base = np.concatenate(
            [
                _target_scores(score(images[i : i + batch_size]), targets[i : i + batch_size])
                for i in range(0, n, batch_size)
            ]
        )
        corners = positions(height, width, patch, stride)
        fills = images.mean(axis=(1, 2))  # (N, C): per-channel mean of each image
        drops = np.empty(n * len(corners))  # item k: image k // P, patch k % P
        for start in range(0, len(drops), batch_size):
            items = np.arange(start, min(start + batch_size, len(drops)))
            owners = items // len(corners)
            batch = images[owners]  # a copy
            for row, item in enumerate(items):
                top, left = corners[item % len(corners)]
                batch[row, top : top + patch, left : left + patch] = fills[owners[row]]
            drops[items] = base[owners] - _target_scores(score(batch), targets[owners])
        drops = np.maximum(drops.reshape(n, len(corners)), 0.0)
        sums, counts = np.zeros((n, height, width)), np.zeros((height, width))
        for p, (top, left) in enumerate(corners):
            sums[:, top : top + patch, left : left + patch] += drops[:, p, None, None]
            counts[top : top + patch, left : left + patch] += 1
        return (sums / counts).astype(np.float32)

    def features(self, model, images, targets, options: AttributionOptions | None = None):
        """The map repeated over the channels, shaped like `images`."""
        return self._broadcast(self(model, images, targets, options), images)
