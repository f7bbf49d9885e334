"""Input gradients of a classifier's true-class output, the code the gradient methods share.

    S = |∂ f_y(x) / ∂x|

f_y is the model's output (logit or probability, whichever the model ends in; no model
modifier) for the true class y, in eval mode, without side effects on the model. Two ways:

* `saliency` runs tf-keras-vis's `Saliency` per batch (the vanilla gradient, or SmoothGrad's
  average over noisy copies when `smooth_samples` > 0), with the channel axis kept and no
  normalisation, so that maps of different images and models compare;
* `input_gradients` is the fast path of the vanilla gradient: one `tf.function` per call
  holding the tape over a whole batch, used for the accuracy-drop curves over hundreds of
  images.

QAT models work as they are: fake-quant ops pass gradients inside their ranges and none
outside, so an image whose true-class output lies beyond the output quantizer's range has an
all-zero gradient map.
"""

from __future__ import annotations

import numpy as np
from tf_keras_vis.saliency import Saliency
from tf_keras_vis.utils.scores import CategoricalScore

from sgt_tfmot.explain import _validation as checks
from sgt_tfmot.keras import keras, tf

__all__ = ["check_noise", "input_gradients", "saliency"]


def check_noise(noise) -> float:
    """SmoothGrad's noise level as a float, if it is a number > 0."""
    if isinstance(noise, bool) or not isinstance(noise, int | float) or not noise > 0:
        raise ValueError(f"`noise` must be a number > 0. Received: noise={noise!r}")
    return float(noise)


def saliency(
    model: keras.Model,
    images: np.ndarray,
    labels: np.ndarray,
    smooth_samples: int = 0,
    noise: float = 0.2,
    batch_size: int = 64,
    seed: int = 0,
) -> np.ndarray:
    """Absolute input gradients of the true-class output, per feature, with tf-keras-vis.

    Runs `tf_keras_vis.saliency.Saliency` on `model` as it is (no model modifier, so the
    final activation is kept; eval mode) with `keepdims=True` and `normalize_map=False`: the
    result is |∂ f_y / ∂x| with the channel axis, on the scale of the model's output. With
    `smooth_samples` > 0 it is SmoothGrad's mean over that many noisy copies, the noise drawn
    from numpy's global generator seeded with `seed` (its state restored afterwards).

    Args:
      model: A tf_keras classifier with one input and an output (batch, num_classes).
      images: (N, ...) input images in the model's input range.
      labels: (N,) integer class ids; the saliency is taken for these classes.
      smooth_samples: Noisy copies averaged per image (0: the plain gradient), >= 0.
      noise: The noise level σ / (max x − min x) per image, > 0 (read when smoothing).
      batch_size: Images per gradient computation, >= 1.
      seed: Seed of the noise.

    Returns:
      float32 array shaped like `images`, >= 0.
    """
    smooth_samples = checks.check_int(smooth_samples, "smooth_samples", 0)
    batch_size = checks.check_positive_int(batch_size, "batch_size")
    noise = check_noise(noise) if smooth_samples else noise
    images, labels = checks.check_model_inputs(model, images, labels)

    explainer = Saliency(model, model_modifier=None, clone=False)
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
                    smooth_samples=smooth_samples,
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


def input_gradients(
    model: keras.Model,
    images: np.ndarray,
    labels: np.ndarray,
    batch_size: int = 256,
    absolute: bool = True,
) -> np.ndarray:
    """The vanilla gradient ∂ f_y(x) / ∂x of whole batches in one graph function.

    The fast path of the vanilla gradient (`saliency` with the same values): one
    `tf.function`, traced once per call with a (None, ...) signature, runs the model in eval
    mode on a batch of `batch_size` images under one `GradientTape` and returns the gradient
    of the true-class scores Σ_b f_{y_b}(x_b) with respect to the batch, which is each
    image's own gradient since images do not interact in eval mode. Inputs that do not reach
    the output get a zero gradient.

    Args:
      model: A tf_keras classifier (float or QAT) with one input and output
        (batch, num_classes).
      images: (N, ...) images in the model's input range.
      labels: (N,) integer class ids.
      batch_size: Images per graph call, >= 1.
      absolute: Return |∂ f_y / ∂x| (as `saliency`) rather than the signed gradient.

    Returns:
      float32 array shaped like `images`.

    Raises:
      ValueError: On bad sizes, a model that is not a one-input classifier, or labels that do
        not match the images or the model's classes.
    """
    batch_size = checks.check_positive_int(batch_size, "batch_size")
    images, labels = checks.check_model_inputs(model, images, labels)
    if not len(images):
        return np.zeros_like(images)

    @tf.function(
        input_signature=[
            tf.TensorSpec((None, *images.shape[1:]), tf.float32),
            tf.TensorSpec((None,), tf.int64),
        ]
    )
    def gradient(x, y):
        with tf.GradientTape() as tape:
            tape.watch(x)
            scores = tf.cast(model(x, training=False), tf.float32)
            true_class = tf.gather(scores, y, axis=1, batch_dims=1)
        grad = tape.gradient(true_class, x, unconnected_gradients=tf.UnconnectedGradients.ZERO)
        return tf.abs(grad) if absolute else grad

    grads = [
        gradient(images[start : start + batch_size], labels[start : start + batch_size]).numpy()
        for start in range(0, len(images), batch_size)
    ]
    return np.concatenate(grads).astype(np.float32, copy=False)
