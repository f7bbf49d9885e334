"""Attribution methods, one module each, in one registry (see `base.Attribution`).

| name         | module        | per pixel | needs gradients |
|--------------|---------------|-----------|-----------------|
| `vanilla`    | `vanilla`     | no        | yes             |
| `smoothgrad` | `smoothgrad`  | no        | yes             |
| `gradcam`    | `gradcam`     | yes       | yes             |
| `gradcampp`  | `gradcampp`   | yes       | yes             |
| `occlusion`  | `occlusion`   | yes       | no              |

The gradient methods share `_gradients` (tf-keras-vis's `Saliency`, and `input_gradients`,
the batched graph-function fast path of the vanilla gradient). The registry is read at call
time: `supports(name)`, `get(name)`, `names()`; `register(method)` adds an `Attribution`
instance, and the CLIs' accepted values, help texts, reports and checks see it.
`attribution_maps`, `saliency_maps` and `gradcam_maps` call a registered method by name.

Example:

    from sgt_tfmot.explain import attributions
    maps = attributions.get("gradcam")(model, images, labels)          # (N, H, W)
    maps = attributions.attribution_maps(model, images, labels, "smoothgrad")
"""

from __future__ import annotations

import numpy as np

from sgt_tfmot._registry import Registry
from sgt_tfmot.explain import _validation as checks
from sgt_tfmot.explain.attributions._gradients import check_noise, input_gradients
from sgt_tfmot.explain.attributions.base import Attribution, AttributionOptions
from sgt_tfmot.explain.attributions.gradcam import GradCAM, last_conv_layer, penultimate_layer
from sgt_tfmot.explain.attributions.gradcampp import GradCAMPlusPlus
from sgt_tfmot.explain.attributions.occlusion import Occlusion
from sgt_tfmot.explain.attributions.smoothgrad import SmoothGrad
from sgt_tfmot.explain.attributions.vanilla import Vanilla

__all__ = [
    "REGISTRY",
    "Attribution",
    "AttributionOptions",
    "attribution_maps",
    "feature_methods",
    "get",
    "gradcam_maps",
    "input_gradients",
    "last_conv_layer",
    "layer_methods",
    "names",
    "penultimate_layer",
    "register",
    "saliency_maps",
    "supports",
    "unregister",
]

# The registry: a new method is one module and one line here.
REGISTRY: Registry[Attribution] = Registry(
    "attribution method",
    Attribution,
    "method",
    [Vanilla(), SmoothGrad(), GradCAM(), GradCAMPlusPlus(), Occlusion()],
)
supports, get, register, unregister = (
    REGISTRY.supports, REGISTRY.get, REGISTRY.register, REGISTRY.unregister
)  # fmt: skip


def names(gradient_free: bool | None = None) -> tuple[str, ...]:
    """Registered method names (only the gradient-free ones, or only the others)."""
    if gradient_free is None:
        return REGISTRY.names()
    return REGISTRY.names(lambda method: (not method.needs_gradients) == gradient_free)


def feature_methods() -> tuple[str, ...]:
    """Gradient methods with one score per input feature (the converter's fidelity check)."""
    return REGISTRY.names(lambda method: not method.per_pixel and method.needs_gradients)


def layer_methods() -> tuple[str, ...]:
    """Methods that read an inner convolution (Grad-CAM's `penultimate_layer`)."""
    return REGISTRY.names(lambda method: method.uses_layer)


def attribution_maps(
    model,
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

    Per-feature methods are reduced over the channels by the mean of |S|, the per-pixel
    score of SGT's masking rule (`sgt_tfmot.masking.saliency_mask`); Grad-CAM, Grad-CAM++
    and occlusion are per pixel already. These are the maps of the figures, the agreement
    and concentration measures and the sanity check.

    Args:
      model: A tf_keras image classifier (float or QAT).
      images: (N, H, W, C) images in the model's input range.
      labels: (N,) integer class ids.
      method: A registered name (`names()`).
      smooth_samples: SmoothGrad's noisy copies per image, >= 1.
      noise: SmoothGrad's noise level, > 0.
      penultimate_layer: Grad-CAM layer (see `gradcam_maps`).
      batch_size: Images per call, >= 1.
      seed: Seed of SmoothGrad's noise.

    Returns:
      float32 array (N, H, W), >= 0 (for images without a channel axis: shaped like them).

    Raises:
      ValueError: On an unknown `method` (naming the accepted ones), or the method's errors.
    """
    options = AttributionOptions(
        batch_size=batch_size, seed=seed, smooth_samples=smooth_samples, noise=noise,
        penultimate_layer=penultimate_layer,
    )  # fmt: skip
    return get(method)(model, images, labels, options)


def saliency_maps(
    model,
    images: np.ndarray,
    labels: np.ndarray,
    method: str = "vanilla",
    smooth_samples: int = 20,
    noise: float = 0.2,
    batch_size: int = 64,
    seed: int = 0,
) -> np.ndarray:
    """The per-feature scores |S| of a gradient method (`feature_methods()`), shaped like
    `images` (see `vanilla`, `smoothgrad`).

    Args:
      model: A tf_keras classifier with one input and an output (batch, num_classes); a QAT
        model works as is (its fake-quant ops pass gradients inside their ranges).
      images: (N, ...) input images in the model's input range (raw pixels for this
        package's models).
      labels: (N,) integer class ids; the saliency is taken for these classes.
      method: "vanilla" (plain gradient), "smoothgrad", or another of `feature_methods()`.
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
    checks.check_choice(method, feature_methods(), "method")
    smooth_samples = checks.check_positive_int(smooth_samples, "smooth_samples")
    batch_size = checks.check_positive_int(batch_size, "batch_size")
    options = AttributionOptions(batch_size, seed, smooth_samples, check_noise(noise))
    return get(method).features(model, images, labels, options)


def gradcam_maps(
    model,
    images: np.ndarray,
    labels: np.ndarray,
    method: str = "gradcam",
    penultimate_layer: str | None = None,
    batch_size: int = 64,
) -> np.ndarray:
    """Grad-CAM or Grad-CAM++ maps of the true class, one value per pixel (see `gradcam`).

    Args:
      model: A tf_keras image classifier (float or QAT) with input (batch, H, W, C).
      images: (N, H, W, C) images in the model's input range.
      labels: (N,) integer class ids.
      method: "gradcam", "gradcampp", or another of `layer_methods()`.
      penultimate_layer: Name of the convolution whose activations are weighted (the layer
        or, for QAT models, the wrapped layer); None finds the last one (`last_conv_layer`).
      batch_size: Images per tf-keras-vis call, >= 1.

    Returns:
      float32 array (N, H, W), >= 0.

    Raises:
      ValueError: On an unknown `method`, a model without a convolution, an unknown or
        non-4-D `penultimate_layer`, images that are not (N, H, W, C), or bad labels.
    """
    checks.check_choice(method, layer_methods(), "method")
    options = AttributionOptions(batch_size=batch_size, penultimate_layer=penultimate_layer)
    return get(method)(model, images, labels, options)
