"""Grad-CAM: L = ReLU(Σ_k α_k A_k), α_k = mean_ij ∂f_y / ∂A_ijk (Selvaraju et al. 2017).

A (h, w, K) is the output of the penultimate convolution (`last_conv_layer`, or the layer
named by `penultimate_layer`), and the map is expanded (order-1 spline, `scipy.ndimage.zoom`)
to the input's height and width: one value per pixel, un-normalised, so maps of different
images and models compare. Computed with tf-keras-vis (`Gradcam`), with the layer passed
explicitly: tf-keras-vis 0.8.7 cannot find it on tf_keras models on its own (it looks for
Keras 3 layer classes). For a TFMOT QAT model the layer is found inside its
`QuantizeWrapperV2` (whose inner layer is `wrapper.layer`), and its output is the
fake-quantized activation map.

`tf_keras_vis.gradcam` is imported on first use: importing it imports all of Keras 3
(tf-keras-vis 0.8.7 takes its `BaseConv` class from there), about 1.3 s that no other part
of a run needs.
"""

from __future__ import annotations

import numpy as np
from tf_keras_vis.utils.scores import CategoricalScore

from sgt_tfmot.explain import _validation as checks
from sgt_tfmot.explain.attributions.base import Attribution, AttributionOptions
from sgt_tfmot.keras import keras, tf

__all__ = ["GradCAM", "last_conv_layer", "penultimate_layer"]

_CONV_TYPES = (keras.layers.Conv2D, keras.layers.DepthwiseConv2D, keras.layers.SeparableConv2D)


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


def penultimate_layer(model: keras.Model, name: str | None) -> str:
    """The outer name of the Grad-CAM layer `name` (a layer or a wrapped layer's name);
    None: `last_conv_layer(model)`.

    Raises:
      ValueError: When `name` is no layer of the model, or one without a 4-D output.
    """
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


class GradCAM(Attribution):
    name, title, uses_layer = "gradcam", "Grad-CAM", True

    @staticmethod
    def _explainer():
        """The tf-keras-vis class that computes the maps."""
        from tf_keras_vis.gradcam import Gradcam

        return Gradcam

    def __call__(self, model, images, targets, options: AttributionOptions | None = None):
        """(N, H, W) maps >= 0 of the classes `targets` for `images` (N, H, W, C)."""
        options = options or AttributionOptions()
        batch_size = checks.check_positive_int(options.batch_size, "batch_size")
        images, labels = checks.check_model_inputs(model, images, targets)
        if images.ndim != 4:
            raise ValueError(
                "Grad-CAM needs images of shape (N, height, width, channels). Received: "
                f"{images.shape}"
            )
        layer = penultimate_layer(model, options.penultimate_layer)
        explainer = self._explainer()(model, model_modifier=None, clone=False)
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

    def features(self, model, images, targets, options: AttributionOptions | None = None):
        return self._broadcast(self(model, images, targets, options), images)
