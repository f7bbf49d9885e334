"""Attribution maps of a classifier: input gradients, SmoothGrad, Grad-CAM and Grad-CAM++.

Every map explains the model's output for the *true* class y, f_y (logit or probability,
whichever the model ends in; no model modifier), in eval mode, without side effects on the
model:

    vanilla:     S = |∂ f_y(x) / ∂x|                                     (Simonyan et al. 2013)
    smoothgrad:  S = 1/N Σ_i |∂ f_y(x + ε_i) / ∂x|,  ε_i ~ N(0, (noise · (max x − min x))²)
                                                                         (Smilkov et al. 2017)
    gradcam:     L = ReLU(Σ_k α_k A_k),  α_k = mean_ij ∂f_y / ∂A_ijk    (Selvaraju et al. 2017)
    gradcampp:   Grad-CAM++ weights (Chattopadhay et al. 2018) on the same A

where A (h, w, K) is the output of the penultimate convolution, upsampled (bilinear) to the
input's height and width. Maps are un-normalised, so maps of different images and models
compare.

* `saliency_maps` and `attribution_maps` compute the maps with tf-keras-vis (batched per
  call): per input feature for the gradient methods, per pixel for all four.
* `input_gradients` is the fast path of the vanilla gradient: one `tf.function` per call
  holding the tape over a whole batch, used for the accuracy-drop curves over hundreds of
  images.
* `last_conv_layer` finds the Grad-CAM layer of a float or TFMOT QAT model (looking inside
  `QuantizeWrapperV2`, whose inner layer is `wrapper.layer`); tf-keras-vis 0.8.7 cannot find
  it on tf_keras models on its own (tf-keras-vis 0.8.7 looks for Keras 3 layer classes).

QAT models work as they are: fake-quant ops pass gradients inside their ranges and none
outside, so an image whose true-class output lies beyond the output quantizer's range has an
all-zero gradient map.

Example:

    maps = attribution_maps(model, x_test[:8], y_test[:8], method="gradcam")  # (8, H, W)
    grads = input_gradients(model, x_test[:500], y_test[:500])                # like x_test
"""

from __future__ import annotations

import numpy as np
from tf_keras_vis.gradcam import Gradcam
from tf_keras_vis.gradcam_plus_plus import GradcamPlusPlus
from tf_keras_vis.saliency import Saliency
from tf_keras_vis.utils.scores import CategoricalScore

from sgt_tfmot.explain import _validation as checks
from sgt_tfmot.keras import keras, tf

__all__ = [
    "attribution_maps",
    "gradcam_maps",
    "input_gradients",
    "last_conv_layer",
    "saliency_maps",
]

_GRADIENT_METHODS = ("vanilla", "smoothgrad")  # one value per input feature
_CAM_METHODS = ("gradcam", "gradcampp")

_CONV_TYPES = (keras.layers.Conv2D, keras.layers.DepthwiseConv2D, keras.layers.SeparableConv2D)


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
    checks.check_choice(method, _GRADIENT_METHODS, "method")
    smooth_samples = checks.check_positive_int(smooth_samples, "smooth_samples")
    batch_size = checks.check_positive_int(batch_size, "batch_size")
    if isinstance(noise, bool) or not isinstance(noise, int | float) or not noise > 0:
        raise ValueError(f"`noise` must be a number > 0. Received: noise={noise!r}")
    images, labels = checks.check_model_inputs(model, images, labels)

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


def input_gradients(
    model: keras.Model,
    images: np.ndarray,
    labels: np.ndarray,
    batch_size: int = 256,
    absolute: bool = True,
) -> np.ndarray:
    """The vanilla gradient ∂ f_y(x) / ∂x of whole batches in one graph function.

    The fast path of `saliency_maps(method="vanilla")` (same values): one `tf.function`,
    traced once per call with a (None, ...) signature, runs the model in eval mode on a batch
    of `batch_size` images under one `GradientTape` and returns the gradient of the
    true-class scores Σ_b f_{y_b}(x_b) with respect to the batch, which is each image's own
    gradient since images do not interact in eval mode. Inputs that do not reach the output
    get a zero gradient.

    Args:
      model: A tf_keras classifier (float or QAT) with one input and output
        (batch, num_classes).
      images: (N, ...) images in the model's input range.
      labels: (N,) integer class ids.
      batch_size: Images per graph call, >= 1.
      absolute: Return |∂ f_y / ∂x| (as `saliency_maps`) rather than the signed gradient.

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


def _inner(layer: keras.layers.Layer) -> keras.layers.Layer:
    """The layer a TFMOT `QuantizeWrapperV2` wraps, or the layer itself."""
    return getattr(layer, "layer", layer)


def _output_rank(layer: keras.layers.Layer) -> int | None:
    """Rank of the layer's output, or None for a layer without a single output."""
    try:
        return layer.output.shape.rank
    except (AttributeError, ValueError):
        return None


def _is_conv(layer: keras.layers.Layer) -> bool:
    return isinstance(_inner(layer), _CONV_TYPES) and _output_rank(layer) == 4


def last_conv_layer(model: keras.Model) -> str:
    """The name of the model's last 2-D convolution, the default Grad-CAM layer.

    Looks through `model.layers` from the output back for a Conv2D, DepthwiseConv2D or
    SeparableConv2D, inside TFMOT wrappers too; for a QAT model the name returned is the
    wrapper's (e.g. "quant_conv"), whose output is the fake-quantized activation map.

    Args:
      model: A tf_keras model.

    Returns:
      The layer name, to pass as `penultimate_layer`.

    Raises:
      ValueError: When the model has no convolution (Grad-CAM needs one); the message names
        the model.
    """
    for layer in reversed(model.layers):
        if _is_conv(layer):
            return layer.name
    raise ValueError(
        f"Grad-CAM needs a convolution, but model {model.name!r} has no Conv2D, "
        "DepthwiseConv2D or SeparableConv2D layer; use method 'vanilla' or 'smoothgrad'."
    )


def _penultimate(model: keras.Model, name: str | None) -> str:
    """The outer name of the Grad-CAM layer `name` (a layer or a wrapped layer's name)."""
    if name is None:
        return last_conv_layer(model)
    for layer in model.layers:
        if name in (layer.name, _inner(layer).name):
            if _output_rank(layer) != 4:
                raise ValueError(
                    f"`penultimate_layer` must be a layer with a 4-D output (batch, height, "
                    f"width, channels). Received: penultimate_layer={name!r} with output "
                    f"rank {_output_rank(layer)}"
                )
            return layer.name
    convs = [layer.name for layer in model.layers if _is_conv(layer)]
    raise ValueError(
        f"`penultimate_layer` must name a layer of model {model.name!r}. Received: "
        f"penultimate_layer={name!r}; its convolutions are: {', '.join(convs) or 'none'}"
    )


def gradcam_maps(
    model: keras.Model,
    images: np.ndarray,
    labels: np.ndarray,
    method: str = "gradcam",
    penultimate_layer: str | None = None,
    batch_size: int = 64,
) -> np.ndarray:
    """Grad-CAM or Grad-CAM++ maps of the true class with tf-keras-vis, one value per pixel.

    Runs `tf_keras_vis.gradcam.Gradcam` or `GradcamPlusPlus` on the model as it is, with the
    layer passed explicitly (`seek_penultimate_conv_layer=False`), `normalize_cam=False` and
    the map expanded (order-1 spline, `scipy.ndimage.zoom`) to the input's height and width.

    Args:
      model: A tf_keras image classifier (float or QAT) with input (batch, H, W, C).
      images: (N, H, W, C) images in the model's input range.
      labels: (N,) integer class ids.
      method: "gradcam" or "gradcampp".
      penultimate_layer: Name of the convolution whose activations are weighted (the layer
        or, for QAT models, the wrapped layer); None finds the last one (`last_conv_layer`).
      batch_size: Images per tf-keras-vis call, >= 1.

    Returns:
      float32 array (N, H, W), >= 0.

    Raises:
      ValueError: On an unknown `method`, a model without a convolution, an unknown or
        non-4-D `penultimate_layer`, images that are not (N, H, W, C), or the errors of
        `saliency_maps`.
    """
    checks.check_choice(method, _CAM_METHODS, "method")
    batch_size = checks.check_positive_int(batch_size, "batch_size")
    images, labels = checks.check_model_inputs(model, images, labels)
    if images.ndim != 4:
        raise ValueError(
            f"Grad-CAM needs images of shape (N, height, width, channels). Received: {images.shape}"
        )
    layer = _penultimate(model, penultimate_layer)
    explainer = (Gradcam if method == "gradcam" else GradcamPlusPlus)(
        model, model_modifier=None, clone=False
    )
    maps = []
    for start in range(0, len(images), batch_size):
        batch = images[start : start + batch_size]
        cam = explainer(
            CategoricalScore(labels[start : start + batch_size].tolist()),
            tf.constant(batch),
            penultimate_layer=layer,
            seek_penultimate_conv_layer=False,
            normalize_cam=False,
        )
        maps.append(np.asarray(cam, dtype=np.float32).reshape(batch.shape[:3]))
    if not maps:
        return np.zeros(images.shape[:3], np.float32)
    return np.maximum(np.concatenate(maps), 0.0)


def attribution_maps(
    model: keras.Model,
    images: np.ndarray,
    labels: np.ndarray,
    method: str = "vanilla",
    *,
    smooth_samples: int = 20,
    noise: float = 0.2,
    penultimate_layer: str | None = None,
    batch_size: int = 64,
    seed: int = 0,
) -> np.ndarray:
    """One map per image with one value per pixel, for any registered method.

    Gradient methods (`saliency_maps`) are reduced over the channels by the mean of |S|, the
    per-pixel score of SGT's masking rule (`sgt_tfmot.masking.saliency_mask`); Grad-CAM and
    Grad-CAM++ (`gradcam_maps`) are per pixel already. These are the maps of the figures, the
    agreement and concentration measures and the sanity check.

    Args:
      model: A tf_keras image classifier (float or QAT).
      images: (N, H, W, C) images in the model's input range.
      labels: (N,) integer class ids.
      method: A name of `sgt_tfmot.explain.attributions.REGISTRY`.
      smooth_samples: SmoothGrad's noisy copies per image, >= 1.
      noise: SmoothGrad's noise level, > 0.
      penultimate_layer: Grad-CAM layer (see `gradcam_maps`).
      batch_size: Images per call, >= 1.
      seed: Seed of SmoothGrad's noise.

    Returns:
      float32 array (N, H, W), >= 0 (for images without a channel axis: shaped like them).

    Raises:
      ValueError: On an unknown `method` (naming the accepted ones), or the errors of
        `saliency_maps` and `gradcam_maps`.
    """
    from sgt_tfmot.explain.attributions import AttributionOptions, get

    options = AttributionOptions(
        batch_size=batch_size, seed=seed, smooth_samples=smooth_samples, noise=noise,
        penultimate_layer=penultimate_layer,
    )  # fmt: skip
    return get(method)(model, images, labels, options)
