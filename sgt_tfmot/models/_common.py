"""What the model builders share: argument checks, input normalisation, conv and logits."""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np

from sgt_tfmot.keras import keras

BN_MOMENTUM = 0.9

_DEFAULT_MEAN, _DEFAULT_STD = 127.5, 127.5  # to [-1, 1] when the data's statistics are not given


def _conv_factory(
    regularizer: keras.regularizers.Regularizer | None,
) -> Callable[[int, int, int, str], keras.layers.Conv2D]:
    def conv(filters: int, kernel_size: int, stride: int, name: str) -> keras.layers.Conv2D:
        return keras.layers.Conv2D(
            filters,
            kernel_size,
            strides=stride,
            padding="same",
            use_bias=False,
            kernel_initializer="he_normal",
            kernel_regularizer=regularizer,
            name=name,
        )

    return conv


def _logits(num_classes: int, regularizer: keras.regularizers.Regularizer | None):
    return keras.layers.Dense(
        num_classes, kernel_initializer="he_normal", kernel_regularizer=regularizer, name="logits"
    )


def _check_common(
    input_shape: Sequence[int],
    num_classes: int,
    mean: float | Sequence[float] | None,
    std: float | Sequence[float] | None,
    weight_decay: float,
) -> tuple[tuple[int, int, int], keras.regularizers.Regularizer | None, keras.layers.Layer]:
    """Validates the shared arguments; returns the shape, the regularizer, the first layer."""
    shape = _check_input_shape(input_shape)
    if isinstance(num_classes, bool) or not isinstance(num_classes, int | np.integer):
        raise ValueError(f"`num_classes` must be an integer >= 2. Received: {num_classes!r}")
    if num_classes < 2:
        raise ValueError(f"`num_classes` must be an integer >= 2. Received: {num_classes!r}")
    if (
        isinstance(weight_decay, bool)
        or not isinstance(weight_decay, int | float | np.number)
        or not np.isfinite(weight_decay)
        or weight_decay < 0
    ):
        raise ValueError(f"`weight_decay` must be a finite number >= 0. Received: {weight_decay!r}")
    regularizer = keras.regularizers.L2(float(weight_decay)) if weight_decay > 0 else None
    return shape, regularizer, _normalization(shape, mean, std)


def _check_input_shape(input_shape: Sequence[int]) -> tuple[int, int, int]:
    try:
        shape = tuple(input_shape)
    except TypeError:
        shape = None
    if (
        shape is None
        or len(shape) != 3
        or any(isinstance(d, bool) or not isinstance(d, int | np.integer) or d < 1 for d in shape)
    ):
        raise ValueError(
            "`input_shape` must be (height, width, channels) with positive integers. "
            f"Received: {input_shape!r}"
        )
    return tuple(int(d) for d in shape)


def _normalization(
    shape: tuple[int, int, int],
    mean: float | Sequence[float] | None,
    std: float | Sequence[float] | None,
) -> keras.layers.Rescaling:
    """The first layer: `(x - mean) / std` per channel, with fixed statistics."""
    if (mean is None) != (std is None):
        raise ValueError(
            f"Give `mean` and `std` together, or neither. Received: mean={mean!r}, std={std!r}"
        )
    channels = shape[2]
    if mean is None:
        mean, std = _DEFAULT_MEAN, _DEFAULT_STD
    mean_vec = _per_channel("mean", mean, channels)
    std_vec = _per_channel("std", std, channels)
    if np.any(std_vec <= 0):
        raise ValueError(f"`std` must be > 0 for every channel. Received: {std!r}")
    return keras.layers.Rescaling(
        scale=(1.0 / std_vec).tolist(), offset=(-mean_vec / std_vec).tolist(), name="normalization"
    )


def _per_channel(arg: str, value: float | Sequence[float], channels: int) -> np.ndarray:
    try:
        vec = np.asarray(value, dtype=np.float64).reshape(-1)
    except (TypeError, ValueError):
        vec = np.asarray([np.nan])
    if vec.size == 1:
        vec = np.repeat(vec, channels)
    if vec.size != channels or not np.all(np.isfinite(vec)):
        raise ValueError(
            f"`{arg}` must be one finite number or one per channel ({channels}). "
            f"Received: {value!r}"
        )
    return vec
