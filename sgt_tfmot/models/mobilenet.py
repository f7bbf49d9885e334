"""A tiny MobileNet-v1-style classifier (Howard et al., 2017) for tests and edge demos."""

from __future__ import annotations

from collections.abc import Sequence

from sgt_tfmot.keras import keras
from sgt_tfmot.models._common import BN_MOMENTUM, _check_common, _conv_factory, _logits
from sgt_tfmot.models.base import ModelBuilder

__all__ = ["MobileNetTiny", "mobilenet_tiny"]

# (filters, stride) of the depthwise-separable blocks of `mobilenet_tiny`, after the stem.
_MOBILENET_TINY_BLOCKS = ((32, 1), (64, 2), (64, 1), (128, 2))
_MOBILENET_TINY_STEM = 16


def mobilenet_tiny(
    input_shape: Sequence[int] = (32, 32, 3),
    num_classes: int = 10,
    *,
    mean: float | Sequence[float] | None = None,
    std: float | Sequence[float] | None = None,
    weight_decay: float = 1e-4,
    name: str = "mobilenet_tiny",
) -> keras.Model:
    """A small MobileNet-v1-style classifier (Howard et al., 2017) for tests and edge demos.

    Layout:

        Normalization -> conv3x3(16, stride 2) - BN - ReLU6
        -> depthwise-separable blocks (filters, stride): (32, 1), (64, 2), (64, 1), (128, 2)
        -> GlobalAveragePooling2D -> Dense(num_classes) logits

    A depthwise-separable block is DepthwiseConv2D 3x3 - BN - ReLU6 - Conv2D 1x1 - BN - ReLU6.
    About 19 k trainable parameters for 32x32x3 and 10 classes. As in MobileNet v1,
    depthwise kernels get no weight decay; conv and dense kernels get
    `weight_decay * sum(w**2)`.

    Args:
        input_shape: (height, width, channels) of the raw 0..255 images.
        num_classes: Number of classes, >= 2.
        mean: Per-channel (or scalar) pixel mean, in 0..255 units; see `resnet20`.
        std: Per-channel (or scalar) pixel standard deviation, > 0.
        weight_decay: L2 factor on conv/dense kernels, >= 0; 0 disables it.
        name: Model name.

    Returns:
        An uncompiled Functional `keras.Model` mapping (B, H, W, C) pixels to (B,
        num_classes) logits.

    Raises:
        ValueError: For a bad `input_shape`, `num_classes`, `mean`/`std` or `weight_decay`.
    """
    input_shape, regularizer, normalization = _check_common(
        input_shape, num_classes, mean, std, weight_decay
    )
    conv = _conv_factory(regularizer)

    inputs = keras.Input(shape=input_shape, name="image")
    x = normalization(inputs)
    x = conv(_MOBILENET_TINY_STEM, 3, 2, "conv1")(x)
    x = keras.layers.BatchNormalization(momentum=BN_MOMENTUM, name="bn1")(x)
    x = keras.layers.ReLU(max_value=6.0, name="relu1")(x)
    for i, (filters, stride) in enumerate(_MOBILENET_TINY_BLOCKS, start=1):
        prefix = f"block{i}"
        x = keras.layers.DepthwiseConv2D(
            3,
            strides=stride,
            padding="same",
            use_bias=False,
            depthwise_initializer="he_normal",
            name=f"{prefix}_dwconv",
        )(x)
        x = keras.layers.BatchNormalization(momentum=BN_MOMENTUM, name=f"{prefix}_dwbn")(x)
        x = keras.layers.ReLU(max_value=6.0, name=f"{prefix}_dwrelu")(x)
        x = conv(filters, 1, 1, f"{prefix}_pwconv")(x)
        x = keras.layers.BatchNormalization(momentum=BN_MOMENTUM, name=f"{prefix}_pwbn")(x)
        x = keras.layers.ReLU(max_value=6.0, name=f"{prefix}_pwrelu")(x)
    x = keras.layers.GlobalAveragePooling2D(name="global_pool")(x)
    outputs = _logits(num_classes, regularizer)(x)
    return keras.Model(inputs, outputs, name=name)


class MobileNetTiny(ModelBuilder):
    name, title = "mobilenet_tiny", "a small MobileNet-v1-style network"
    build = staticmethod(mobilenet_tiny)
