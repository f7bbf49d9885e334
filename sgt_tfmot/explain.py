"""Saliency maps of a classifier and the accuracy-drop test of how much a model relies on them.

Two pieces, both free of side effects on the model:

* `saliency_maps(model, images, labels)`: the input gradient of the true-class output,
  computed with tf-keras-vis (`Saliency`), vanilla or SmoothGrad, un-normalised, one value
  per input feature:

      vanilla:     S = |∂ f_y(x) / ∂x|
      smoothgrad:  S = 1/N Σ_i |∂ f_y(x + ε_i) / ∂x|,  ε_i ~ N(0, (noise · (max x − min x))²)

  (Simonyan et al. 2013; Smilkov et al. 2017). f_y is the model's output for the true class
  y, logit or probability, whichever the model ends in.

* `accuracy_drop_curve(predict_fn, images, labels, saliency)`: the accuracy of a model as a
  growing share x of each image's features is replaced, ranked by saliency: the most salient
  first (`order="top"`), the least salient first (`"bottom"`), or in random order. This is
  the interpretability evaluation of SGT (Ismail et al. 2021; Fig. 3 of Maleki et al., arXiv
  2412.03915): a model that relies on its salient features loses accuracy fast when they go
  and slowly when the others go. The ranking and the fill are the trainer's own masking code
  (`sgt_tfmot.saliency`), so "the lowest x %" means the same features here as in training.
  `curve_area` summarises a curve by its trapezoid area.

`predict_fn` is any function from float images to class scores, so the same curve can be
measured on a Keras model (`model.predict`) and on its integer TFLite version
(`sgt_tfmot.tflite.runtime.TFLiteModel.predict`) with the same masked images.

Example:

    saliency = saliency_maps(model, x_test[:500], y_test[:500])
    top = accuracy_drop_curve(model.predict, x_test[:500], y_test[:500], saliency, order="top")
    print(curve_area(DEFAULT_FRACTIONS, top))
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np
from tf_keras_vis.saliency import Saliency
from tf_keras_vis.utils.scores import CategoricalScore

from sgt_tfmot import saliency as saliency_ops
from sgt_tfmot._keras import keras, tf

__all__ = [
    "DEFAULT_FRACTIONS",
    "METHODS",
    "ORDERS",
    "accuracy_drop_curve",
    "curve_area",
    "saliency_maps",
]

METHODS = ("vanilla", "smoothgrad")
ORDERS = ("top", "bottom", "random")
DEFAULT_FRACTIONS = (0.0, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9)

PredictFn = Callable[[np.ndarray], np.ndarray]


def _check_positive_int(value, name: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int | np.integer) or value < 1:
        raise ValueError(f"`{name}` must be an integer >= 1. Received: {name}={value!r}")
    return int(value)


def _check_labels(images: np.ndarray, labels, num_classes: int | None = None) -> np.ndarray:
    labels = np.asarray(labels)
    if labels.ndim != 1 or not np.issubdtype(labels.dtype, np.integer):
        raise ValueError(
            "`labels` must be integer class ids of shape (N,). Received: shape "
            f"{labels.shape}, dtype {labels.dtype}"
        )
    if len(labels) != len(images):
        raise ValueError(
            f"`images` and `labels` must have the same length. Received: {len(images)} images "
            f"and {len(labels)} labels"
        )
    if (
        num_classes is not None
        and len(labels)
        and not 0 <= labels.min() <= labels.max() < num_classes
    ):
        raise ValueError(
            f"`labels` must be class ids in [0, {num_classes}) for a model with {num_classes} "
            f"outputs. Received labels in [{labels.min()}, {labels.max()}]"
        )
    return labels.astype(np.int64)


def saliency_maps(
    model: keras.Model,
    images: np.ndarray,
    labels: np.ndarray,
    method: str = "vanilla",
    smooth_samples: int = 20,
    noise: float = 0.2,
    batch_size: int = 64,
    seed: int = 0,
) -> np.ndarray:
    """Absolute input gradients of the true-class output, per feature, with tf-keras-vis.

    Runs `tf_keras_vis.saliency.Saliency` on `model` as it is (no model modifier, so the
    final activation is kept; eval mode) with `keepdims=True` and `normalize_map=False`: the
    result is |∂ f_y / ∂x| with the channel axis, on the scale of the model's output, so that
    the masking code reduces the channels itself and maps of different images compare. For
    SmoothGrad the noise is drawn from numpy's global generator seeded with `seed`; the
    generator's state is restored afterwards.

    Args:
      model: A tf_keras classifier with one input and an output (batch, num_classes); a QAT
        model works as is (its fake-quant ops pass gradients inside their ranges).
      images: (N, ...) input images in the model's input range (raw pixels for this
        package's models).
      labels: (N,) integer class ids; the saliency is taken for these classes.
      method: "vanilla" (plain gradient) or "smoothgrad".
      smooth_samples: Noisy copies averaged per image for SmoothGrad, >= 1.
      noise: SmoothGrad's noise level σ / (max x − min x) per image, > 0 (paper: 0.1-0.2).
      batch_size: Images per gradient computation, >= 1.
      seed: Seed of the SmoothGrad noise.

    Returns:
      float32 array shaped like `images`, >= 0.

    Raises:
      ValueError: On an unknown `method`, bad sizes, a model that is not a one-input
        classifier, or labels that do not match the images or the model's classes.
    """
    saliency_ops._check_choice(method, METHODS, "method")
    smooth_samples = _check_positive_int(smooth_samples, "smooth_samples")
    batch_size = _check_positive_int(batch_size, "batch_size")
    if isinstance(noise, bool) or not isinstance(noise, int | float) or not noise > 0:
        raise ValueError(f"`noise` must be a number > 0. Received: noise={noise!r}")
    if len(model.inputs) != 1 or len(model.outputs) != 1 or model.outputs[0].shape.rank != 2:
        raise ValueError(
            "`model` must be a classifier with one input and one output of shape (batch, "
            f"num_classes). Received: {len(model.inputs)} input(s), output shape(s) "
            f"{[tuple(output.shape) for output in model.outputs]}"
        )
    images = np.asarray(images, dtype=np.float32)
    labels = _check_labels(images, labels, int(model.outputs[0].shape[-1]))
    if images.shape[1:] != tuple(model.inputs[0].shape[1:]):
        raise ValueError(
            f"`images` of shape {images.shape[1:]} do not fit the model input "
            f"{tuple(model.inputs[0].shape[1:])}"
        )

    explainer = Saliency(model, model_modifier=None, clone=False)
    samples = smooth_samples if method == "smoothgrad" else 0
    state = np.random.get_state()
    np.random.seed(seed)
    try:
        maps = []
        for start in range(0, len(images), batch_size):
            batch = images[start : start + batch_size]
            maps.append(
                explainer(
                    CategoricalScore(labels[start : start + batch_size].tolist()),
                    tf.constant(batch),
                    smooth_samples=samples,
                    smooth_noise=float(noise),
                    keepdims=True,
                    normalize_map=False,
                )
            )
    finally:
        np.random.set_state(state)
    if not maps:
        return np.zeros_like(images)
    return np.concatenate([np.asarray(m, dtype=np.float32) for m in maps])


def _ranking_mask(
    saliency: tf.Tensor,
    fraction: float,
    order: str,
    reduce_channels: str | None,
    seed: int,
) -> tf.Tensor:
    """The mask of the ⌊fraction · n⌋ most ("top"), least ("bottom") or random features.

    All three go through `saliency_mask`, which marks the *lowest* scores: "bottom" ranks |S|,
    "top" ranks −|S| (the highest |S| are the lowest −|S|), "random" ranks uniform noise. A
    channel reduction is applied to |S| before the negation (max of |S|, not of −|S|).
    """
    score = tf.abs(tf.convert_to_tensor(saliency, tf.float32))
    if order == "bottom":
        return saliency_ops.saliency_mask(score, fraction, reduce_channels, rank_by="signed")
    has_channels = score.shape.rank >= 3
    if order == "random":
        # One uniform score per position (per feature without a reduction).
        shape = tf.shape(score)
        if reduce_channels is not None and has_channels:
            shape = tf.concat([shape[:-1], [1]], axis=0)
        score = tf.random.stateless_uniform(shape, seed=[seed, 0])
        score = tf.broadcast_to(score, tf.shape(saliency))
        return saliency_ops.saliency_mask(score, fraction, reduce_channels, rank_by="signed")
    if reduce_channels == "max" and has_channels:
        # mean over channels of a per-position constant = that constant.
        score = tf.broadcast_to(tf.reduce_max(score, axis=-1, keepdims=True), tf.shape(score))
        reduce_channels = "mean"
    return saliency_ops.saliency_mask(-score, fraction, reduce_channels, rank_by="signed")


def accuracy_drop_curve(
    predict_fn: PredictFn,
    images: np.ndarray,
    labels: np.ndarray,
    saliency: np.ndarray,
    fractions: Sequence[float] = DEFAULT_FRACTIONS,
    order: str = "top",
    fill: str = "mean",
    seed: int = 0,
    reduce_channels: str | None = "mean",
) -> np.ndarray:
    """Top-1 accuracy as a growing share of each image's features is replaced.

    For each fraction x: with n ranked positions per image (pixels, or features when
    `reduce_channels` is None), the k = ⌊x · n⌋ positions of highest saliency (`order="top"`),
    lowest saliency (`"bottom"`) or random ones (`"random"`, seeded) are marked by
    `sgt_tfmot.saliency.saliency_mask` on |S| and replaced by `mask_input(x, mask, fill)`;
    the curve holds mean(argmax predict_fn(x̃) == label). x = 0 is the plain accuracy, x = 1
    replaces every feature (with a constant fill: the accuracy of the constant image).
    Ties in saliency go to the lower flat index first, for every order.

    Args:
      predict_fn: Float images (N, ...) -> class scores (N, num_classes); logits,
        probabilities or dequantized integer outputs all work, only the argmax is used.
      images: (N, ...) images in the model's input range.
      labels: (N,) integer class ids.
      saliency: Saliency shaped like `images` (from `saliency_maps`); only |S| is ranked.
      fractions: Shares to remove, each in [0, 1].
      order: "top" (most salient first), "bottom" (least salient first) or "random".
      fill: The replacement, as in training: "mean" (per image and channel), "zero" or
        "random" (uniform in the image's own per-channel range, seeded by `seed`).
      seed: Seed of the random order and of the random fill.
      reduce_channels: "mean" (one rank per pixel, as in SGT), "max", or None (every feature
        on its own).

    Returns:
      float64 array of accuracies in [0, 1], one per fraction.

    Raises:
      ValueError: On an unknown `order`, `fill` or `reduce_channels`, a fraction outside
        [0, 1], a saliency that is not shaped like the images, or labels that do not match.
    """
    saliency_ops._check_choice(order, ORDERS, "order")
    saliency_ops._check_choice(fill, saliency_ops.FILLS, "fill")
    saliency_ops._check_choice(reduce_channels, saliency_ops.CHANNEL_REDUCTIONS, "reduce_channels")
    fractions = _check_fractions(fractions)
    images = np.asarray(images, dtype=np.float32)
    labels = _check_labels(images, labels)
    saliency = np.asarray(saliency, dtype=np.float32)
    if saliency.shape != images.shape:
        raise ValueError(
            f"`saliency` must be shaped like `images` {images.shape}. Received: {saliency.shape}"
        )
    if images.ndim < 2:
        raise ValueError(f"`images` must have shape (N, features...). Received: {images.shape}")

    x = tf.constant(images)
    fill_seed = tf.constant([seed, 1], tf.int64)
    accuracies = []
    for fraction in fractions:
        if fraction == 0.0:
            masked = images
        else:
            if fraction == 1.0:
                mask = tf.ones_like(x, dtype=tf.bool)
            else:
                mask = _ranking_mask(saliency, fraction, order, reduce_channels, seed)
            masked = saliency_ops.mask_input(x, mask, fill, seed=fill_seed).numpy()
        scores = np.asarray(predict_fn(masked))
        if scores.ndim != 2 or len(scores) != len(images):
            raise ValueError(
                f"`predict_fn` must return class scores of shape ({len(images)}, num_classes). "
                f"Received: {scores.shape}"
            )
        accuracies.append(float(np.mean(scores.argmax(axis=-1) == labels)) if len(labels) else 0.0)
    return np.asarray(accuracies, dtype=np.float64)


def _check_fractions(fractions: Sequence[float]) -> list[float]:
    try:
        values = [float(f) for f in fractions]
    except (TypeError, ValueError):
        values = None
    if not values or any(isinstance(f, bool) for f in fractions):
        raise ValueError(
            "`fractions` must be a non-empty sequence of numbers in [0, 1]. "
            f"Received: {fractions!r}"
        )
    bad = [f for f in values if not 0.0 <= f <= 1.0]
    if bad:
        raise ValueError(f"`fractions` must lie in [0, 1]. Received: {fractions!r} ({bad[0]!r})")
    return values


def curve_area(fractions: Sequence[float], accuracies: Sequence[float]) -> float:
    """Trapezoid area under an accuracy-drop curve: Σ (x_{i+1} − x_i)(a_i + a_{i+1}) / 2.

    Over the default fractions 0 .. 0.9 a curve that stays at 1 has area 0.9; the smaller the
    area of the "top" curve, the faster the model fails without its salient features.

    Args:
      fractions: Increasing shares removed, as passed to `accuracy_drop_curve`.
      accuracies: The curve, one accuracy per fraction.

    Returns:
      The area, a float.

    Raises:
      ValueError: When the lengths differ, fewer than 2 points are given, or the fractions
        do not increase.
    """
    x = np.asarray(fractions, dtype=np.float64)
    y = np.asarray(accuracies, dtype=np.float64)
    if x.ndim != 1 or x.shape != y.shape or len(x) < 2:
        raise ValueError(
            "`fractions` and `accuracies` must be 1-D of the same length >= 2. Received: "
            f"{x.shape} and {y.shape}"
        )
    if np.any(np.diff(x) <= 0):
        raise ValueError(f"`fractions` must be strictly increasing. Received: {x.tolist()}")
    return float(np.sum(np.diff(x) * (y[1:] + y[:-1]) / 2.0))
