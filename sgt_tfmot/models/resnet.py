"""ResNet-20 for CIFAR (He et al., 2016), built from layers TFMOT can quantize."""

from __future__ import annotations

from collections.abc import Callable, Sequence

from sgt_tfmot.keras import keras, tf
from sgt_tfmot.models._common import BN_MOMENTUM, _check_common, _conv_factory, _logits
from sgt_tfmot.models.base import ModelBuilder

__all__ = ["ResNet20", "resnet20"]


def resnet20(
    input_shape: Sequence[int] = (32, 32, 3),
    num_classes: int = 10,
    *,
    mean: float | Sequence[float] | None = None,
    std: float | Sequence[float] | None = None,
    weight_decay: float = 1e-4,
    name: str = "resnet20",
) -> keras.Model:
    """ResNet-20 for CIFAR (He et al., 2016, "Deep Residual Learning", section 4.2).

    Layout (n = 3 blocks per stage, 6n + 2 = 20 weighted layers):

        Normalization -> conv3x3(16) - BN - ReLU
        -> stage 1: 3 basic blocks, 16 filters, stride 1
        -> stage 2: 3 basic blocks, 32 filters, the first with stride 2
        -> stage 3: 3 basic blocks, 64 filters, the first with stride 2
        -> GlobalAveragePooling2D -> Dense(num_classes) logits

    A basic block is conv3x3-BN-ReLU-conv3x3-BN, plus the shortcut, then ReLU. Where the
    shape changes (first block of stages 2 and 3) the shortcut is a 1x1 conv with stride 2
    and BN (the paper's option B; option A's zero padding would need a `Lambda` layer).
    That gives 19 3x3 convs + 2 1x1 convs = 21 `Conv2D`, 21 `BatchNormalization`, 19 `ReLU`,
    9 `Add` and 1 `Dense`. For 32x32x3 and 10 classes: 272,474 trainable parameters
    (270,256 in convs, 1,568 BN scales and offsets, 650 in the dense layer), 274,042 with
    the BN moving statistics; the paper's option A has 0.27 M.

    Convs have no bias (BN follows), "he_normal" initialisation, and an L2 regulariser
    `weight_decay * sum(w**2)` on every conv/dense kernel (its gradient is `2 * weight_decay
    * w`, i.e. SGD weight decay of `2 * weight_decay`).

    Args:
        input_shape: (height, width, channels) of the raw 0..255 images.
        num_classes: Number of classes, >= 2.
        mean: Per-channel (or scalar) pixel mean for the first layer, in 0..255 units.
            Give `mean` and `std` together or neither; default 127.5 and 127.5 (to [-1, 1]).
        std: Per-channel (or scalar) pixel standard deviation, > 0.
        weight_decay: L2 factor on kernels, >= 0; 0 disables it.
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
    x = conv(16, 3, 1, "conv1")(x)
    x = keras.layers.BatchNormalization(momentum=BN_MOMENTUM, name="bn1")(x)
    x = keras.layers.ReLU(name="relu1")(x)
    for stage, filters in enumerate((16, 32, 64), start=1):
        for block in range(1, 4):
            stride = 2 if stage > 1 and block == 1 else 1
            x = _basic_block(x, filters, stride, conv, f"stage{stage}_block{block}")
    x = keras.layers.GlobalAveragePooling2D(name="global_pool")(x)
    outputs = _logits(num_classes, regularizer)(x)
    return keras.Model(inputs, outputs, name=name)


def _basic_block(
    x: tf.Tensor,
    filters: int,
    stride: int,
    conv: Callable[..., keras.layers.Layer],
    prefix: str,
) -> tf.Tensor:
    shortcut = x
    y = conv(filters, 3, stride, f"{prefix}_conv1")(x)
    y = keras.layers.BatchNormalization(momentum=BN_MOMENTUM, name=f"{prefix}_bn1")(y)
    y = keras.layers.ReLU(name=f"{prefix}_relu1")(y)
    y = conv(filters, 3, 1, f"{prefix}_conv2")(y)
    y = keras.layers.BatchNormalization(momentum=BN_MOMENTUM, name=f"{prefix}_bn2")(y)
    if stride != 1 or x.shape[-1] != filters:
        shortcut = conv(filters, 1, stride, f"{prefix}_shortcut_conv")(x)
        shortcut = keras.layers.BatchNormalization(
            momentum=BN_MOMENTUM, name=f"{prefix}_shortcut_bn"
        )(shortcut)
    y = keras.layers.Add(name=f"{prefix}_add")([y, shortcut])
    return keras.layers.ReLU(name=f"{prefix}_relu2")(y)


class ResNet20(ModelBuilder):
    name, title = "resnet20", "CIFAR ResNet-20 (He et al. 2016)"
    build = staticmethod(resnet20)
