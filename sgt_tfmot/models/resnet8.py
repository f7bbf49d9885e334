"""ResNet-8, the model of MLPerf Tiny's image-classification task, from quantizable layers."""

from __future__ import annotations

from collections.abc import Callable, Sequence

from sgt_tfmot.keras import keras, tf
from sgt_tfmot.models._common import BN_MOMENTUM, _check_common, _conv_factory, _logits
from sgt_tfmot.models.base import ModelBuilder

__all__ = ["ResNet8", "resnet8"]

_STAGE_FILTERS = (16, 32, 64)


def resnet8(
    input_shape: Sequence[int] = (32, 32, 3),
    num_classes: int = 10,
    *,
    mean: float | Sequence[float] | None = None,
    std: float | Sequence[float] | None = None,
    weight_decay: float = 1e-4,
    name: str = "resnet8",
) -> keras.Model:
    """ResNet-8 as in MLPerf Tiny's image-classification benchmark (CIFAR-10).

    The layout of the benchmark's reference model (`resnet_v1_eembc` in
    mlcommons/tiny, benchmark/training/image_classification/keras_model.py, with 16 filters
    in the first stage, the v0.5-v1.x reference):

        Normalization -> conv3x3(16) - BN - ReLU
        -> stage 1: conv3x3(16) - BN - ReLU - conv3x3(16) - BN, + identity, ReLU
        -> stage 2: conv3x3(32, stride 2) - BN - ReLU - conv3x3(32) - BN,
                    + conv1x1(32, stride 2, with bias, no BN), ReLU
        -> stage 3: the same with 64 filters
        -> GlobalAveragePooling2D -> Dense(num_classes) logits

    That is 7 3x3 convs and 2 1x1 shortcut convs: 9 `Conv2D`, 7 `BatchNormalization`, 7
    `ReLU`, 3 `Add` and 1 `Dense`. For 32x32x3 and 10 classes: 77,946 trainable parameters
    (76,816 in convs and the shortcuts' biases, 480 BN scales and offsets, 650 in the dense
    layer), 78,426 with the BN moving statistics; the reference has 78,666 (its 3x3 convs
    also carry biases, which BN makes redundant). As int8 weights that is about 77 kB: the
    benchmark's "~96 kB" model is this with int32 biases and the file's overhead.

    Differences from the reference, none of which changes what the network computes: the
    first layer standardises raw 0..255 pixels (`Rescaling`, see `sgt_tfmot.models`); the
    3x3 convs have no bias (BN follows); the 8x8 average pooling and flatten are one
    `GlobalAveragePooling2D`; the logits have no softmax (the converter adds one).

    Args:
        input_shape: (height, width, channels) of the raw 0..255 images.
        num_classes: Number of classes, >= 2.
        mean: Per-channel (or scalar) pixel mean for the first layer, in 0..255 units.
            Give `mean` and `std` together or neither; default 127.5 and 127.5 (to [-1, 1]).
        std: Per-channel (or scalar) pixel standard deviation, > 0.
        weight_decay: L2 factor on kernels, >= 0 (the reference's 1e-4 by default).
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
    x = conv(_STAGE_FILTERS[0], 3, 1, "conv1")(x)
    x = keras.layers.BatchNormalization(momentum=BN_MOMENTUM, name="bn1")(x)
    x = keras.layers.ReLU(name="relu1")(x)
    for stage, filters in enumerate(_STAGE_FILTERS, start=1):
        x = _stage(x, filters, 1 if stage == 1 else 2, conv, regularizer, f"stage{stage}")
    x = keras.layers.GlobalAveragePooling2D(name="global_pool")(x)
    outputs = _logits(num_classes, regularizer)(x)
    return keras.Model(inputs, outputs, name=name)


def _stage(
    x: tf.Tensor,
    filters: int,
    stride: int,
    conv: Callable[..., keras.layers.Layer],
    regularizer: keras.regularizers.Regularizer | None,
    prefix: str,
) -> tf.Tensor:
    """One residual block; where the shape changes, the shortcut is a strided 1x1 conv with
    a bias and no BN, as in the reference."""
    y = conv(filters, 3, stride, f"{prefix}_conv1")(x)
    y = keras.layers.BatchNormalization(momentum=BN_MOMENTUM, name=f"{prefix}_bn1")(y)
    y = keras.layers.ReLU(name=f"{prefix}_relu1")(y)
    y = conv(filters, 3, 1, f"{prefix}_conv2")(y)
    y = keras.layers.BatchNormalization(momentum=BN_MOMENTUM, name=f"{prefix}_bn2")(y)
    shortcut = x
    if stride != 1 or x.shape[-1] != filters:
        shortcut = keras.layers.Conv2D(
            filters, 1, strides=stride, padding="same", kernel_initializer="he_normal",
            kernel_regularizer=regularizer, name=f"{prefix}_shortcut_conv",
        )(x)  # fmt: skip
    y = keras.layers.Add(name=f"{prefix}_add")([y, shortcut])
    return keras.layers.ReLU(name=f"{prefix}_relu2")(y)


class ResNet8(ModelBuilder):
    name, title = "resnet8", "MLPerf Tiny's CIFAR-10 ResNet-8 (78 k parameters)"
    build = staticmethod(resnet8)
