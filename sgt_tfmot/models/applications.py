"""Keras Applications for the Edge TPU: MobileNetV2 as a flat, quantizable classifier.

`mobilenet_v2` takes raw 0..255 pixels like the package's other models: a `Rescaling` to
[−1, 1] (what MobileNetV2 was trained on) comes first, then the Keras Applications network
(inlined, `sgt_tfmot._graph.flatten_model`), global average pooling and a `Dense` named
"logits". Two changes to Keras Applications' layers, both for training from a few epochs:

* BatchNormalization momentum 0.9 instead of 0.999: at 0.999 the moving statistics stay at
  their initial values for thousands of steps, and the inference-mode model (the one that
  is evaluated, quantized and exported) computes nearly nothing (measured: a pooled output
  of 2e-4 after 30 steps);
* the `weight_decay` L2 penalty on every Conv2D and Dense kernel (not depthwise kernels).

The ReLU6 activations get PACT with α ≤ 6 (`sgt_tfmot.quantizers.PACTQuantizer`).

Example:

    model = mobilenet_v2((64, 64, 3), 10, width=0.35)           # random init
    model = mobilenet_v2((96, 96, 3), 10, weights="mnv2.h5")    # ImageNet weights from a file
"""

from __future__ import annotations

from collections.abc import Sequence

from sgt_tfmot._checks import InputError, check_number
from sgt_tfmot._graph import flatten_model
from sgt_tfmot.keras import keras
from sgt_tfmot.models._common import BN_MOMENTUM, _check_common
from sgt_tfmot.models.base import ModelBuilder

__all__ = ["MobileNetV2", "mobilenet_v2"]

MIN_SIZE = 32
WIDTHS = (0.35, 0.5, 0.75, 1.0, 1.3, 1.4)


def mobilenet_v2(
    input_shape: Sequence[int] = (96, 96, 3),
    num_classes: int = 10,
    *,
    width: float = 0.35,
    weights: str | None = None,
    weight_decay: float = 1e-4,
    mean=None,
    std=None,
    name: str = "mobilenet_v2",
) -> keras.Model:
    """MobileNetV2 (Sandler et al., 2018) of Keras Applications, flat, for raw pixels.

    Args:
        input_shape: (height, width, 3) with height and width >= 32.
        num_classes: Number of classes, >= 2.
        width: The width multiplier α of MobileNetV2 (Keras's `alpha`); with ImageNet
            weights one of 0.35, 0.5, 0.75, 1.0, 1.3, 1.4.
        weights: None (random init) or the path of Keras's ImageNet weights file for this
            width without the top (`mobilenet_v2_weights_tf_dim_ordering_tf_kernels_*_no_top.h5`).
        weight_decay: L2 factor on Conv2D and Dense kernels, >= 0.
        mean, std: Ignored (MobileNetV2's own normalisation to [−1, 1] is used); accepted so
            that every builder takes the dataset's statistics.
        name: Model name.

    Returns:
        A Functional model mapping (B, H, W, 3) pixels in 0..255 to (B, num_classes) logits.

    Raises:
        InputError: on images smaller than 32x32 or without 3 channels, a bad width, or a
            weights file that does not exist.
    """
    del mean, std
    shape, regularizer, _ = _check_common(input_shape, num_classes, None, None, weight_decay)
    check_number(width, "width", 0.0, low_open=True)
    if shape[0] < MIN_SIZE or shape[1] < MIN_SIZE or shape[2] != 3:
        raise InputError(
            f"mobilenet_v2 needs RGB images of at least {MIN_SIZE}x{MIN_SIZE}; the data has "
            f"{shape[0]}x{shape[1]}x{shape[2]} (resize it, or use --model resnet20)."
        )
    if weights is not None:
        from pathlib import Path

        if not Path(weights).is_file():
            raise InputError(f"MobileNetV2 weights file {weights!r} does not exist.")
        if width not in WIDTHS:
            raise InputError(f"ImageNet weights exist for widths {WIDTHS}. Received: {width}")
    base = keras.applications.MobileNetV2(
        input_shape=shape, alpha=width, include_top=False, weights=weights, pooling="avg"
    )
    inputs = keras.Input(shape, name="image")
    x = keras.layers.Rescaling(1 / 127.5, offset=-1.0, name="normalization")(inputs)
    x = base(x)
    outputs = keras.layers.Dense(
        num_classes, kernel_initializer="he_normal", kernel_regularizer=regularizer, name="logits"
    )(x)
    flat = flatten_model(keras.Model(inputs, outputs, name=name))
    return _retune(flat, regularizer)


def _retune(model: keras.Model, regularizer) -> keras.Model:
    """`model` rebuilt with BN momentum 0.9 and the L2 penalty on Conv2D kernels."""
    config = model.get_config()
    for layer in config["layers"]:
        if layer["class_name"] == "BatchNormalization":
            layer["config"]["momentum"] = BN_MOMENTUM
        if layer["class_name"] == "Conv2D" and regularizer is not None:
            layer["config"]["kernel_regularizer"] = keras.regularizers.serialize(regularizer)
    rebuilt = keras.Model.from_config(config)
    rebuilt.set_weights(model.get_weights())
    return rebuilt


class MobileNetV2(ModelBuilder):
    name, title = "mobilenet_v2", "Keras Applications' MobileNetV2, flat, any width"
    build = staticmethod(mobilenet_v2)
