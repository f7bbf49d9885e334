"""Small image classifiers that TFMOT can quantize: CIFAR ResNet-20 and a tiny MobileNet.

Both are Functional `tf_keras` models made only of built-in layers (no `Lambda`, no raw tf
ops on Keras tensors, which would become `TFOpLambda` layers that TFMOT cannot quantize).
Each activation is its own `ReLU` layer and each residual sum an `Add` layer, so that the
quantizer can put PACT on every activation and quantize every kernel.

The models take RAW pixels in 0..255 (what `sgt_tfmot.data` yields) and standardise them in
their first layer, a `Rescaling` with fixed per-channel statistics:

    y = x * (1 / std) + (-mean / std)  =  (x - mean) / std

`Rescaling` rather than `Normalization`: the integer converter turns it into one int8 MUL
and ADD, where `Normalization` leaves a DEQUANTIZE/QUANTIZE pair at the input.

BatchNormalization uses momentum 0.9 (PyTorch's 0.1), the value of the reference ResNet-20
trainings; Keras's default 0.99 leaves the moving statistics far behind in short runs.

Defaults by input shape: 28x28x1 uses the MNIST training statistics (mean 0.1307 * 255, std
0.3081 * 255), 32x32x3 the CIFAR-10 ones (means (0.4914, 0.4822, 0.4465) * 255, stds
(0.2470, 0.2435, 0.2616) * 255); any other shape mean 127.5, std 127.5 (to [-1, 1]).

Both end in a `Dense` layer named "logits" with no softmax: train with
`SparseCategoricalCrossentropy(from_logits=True)`.

Example:

    model = build("resnet20", (32, 32, 3), 10)
    logits = model(images)  # images: (B, 32, 32, 3) float32 in 0..255
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np

from sgt_tfmot._checks import InputError
from sgt_tfmot.keras import keras, tf

__all__ = ["MODELS", "build", "mobilenet_tiny", "resnet20"]

BN_MOMENTUM = 0.9

_MNIST_STATS = ((0.1307 * 255,), (0.3081 * 255,))
_CIFAR10_STATS = (
    (0.4914 * 255, 0.4822 * 255, 0.4465 * 255),
    (0.2470 * 255, 0.2435 * 255, 0.2616 * 255),
)
_DEFAULT_STATS = {(28, 28, 1): _MNIST_STATS, (32, 32, 3): _CIFAR10_STATS}
_FALLBACK_MEAN, _FALLBACK_STD = 127.5, 127.5

# (filters, stride) of the depthwise-separable blocks of `mobilenet_tiny`, after the stem.
_MOBILENET_TINY_BLOCKS = ((32, 1), (64, 2), (64, 1), (128, 2))
_MOBILENET_TINY_STEM = 16


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
            Give `mean` and `std` together or neither; default: by input shape (see module).
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


_BUILDERS: dict[str, Callable[..., keras.Model]] = {
    "resnet20": resnet20,
    "mobilenet_tiny": mobilenet_tiny,
}
MODELS = tuple(_BUILDERS)


MODEL_FILE_SUFFIXES = (".h5", ".keras")


def is_model_file(name: str) -> bool:
    """True when `name` names a saved model file (.h5 / .keras) rather than a builder."""
    return isinstance(name, str) and name.endswith(MODEL_FILE_SUFFIXES)


def build(
    name: str,
    input_shape: Sequence[int],
    num_classes: int,
    trust_code: bool = False,
    **kwargs: object,
) -> keras.Model:
    """Builds a model by name, or loads a user's float classifier from a file.

    Args:
        name: A builder ("resnet20", "mobilenet_tiny", ...; see `MODELS`) or the path of a
            saved float classifier (.h5 / .keras) taking raw 0..255 pixels; its
            architecture and weights are used.
        input_shape: (height, width, channels).
        num_classes: Number of classes, >= 2.
        trust_code: Let a model file hold layers with Python code (see `sgt_tfmot.saving`).
        **kwargs: Keyword arguments of the builder (`mean`, `std`, `weight_decay`, `name`);
            ignored for a model file.

    Returns:
        The model (see `resnet20`, `mobilenet_tiny`, ...).

    Raises:
        ValueError: For an unknown `name`, a model file that is not a float classifier of
            these images, and the builder's own errors.
    """
    if is_model_file(name):
        return _model_from_file(name, input_shape, num_classes, trust_code)
    if name not in _BUILDERS:
        known = ", ".join(repr(n) for n in sorted(_BUILDERS))
        raise InputError(f"Unknown model {name!r}. Known models: {known}, or a .h5/.keras file.")
    return _BUILDERS[name](input_shape, num_classes, **kwargs)


def _model_from_file(path, input_shape, num_classes, trust_code) -> keras.Model:
    from sgt_tfmot import saving
    from sgt_tfmot.export import is_quantized

    model = saving.load_model(path, trust_code=trust_code)
    if is_quantized(model):
        raise InputError(
            f"--model {path} is already a QAT model; pass its float model (or train it "
            "further with the Keras API: sgt_tfmot.load_model and fit)."
        )
    check_classifier(model, f"--model {path}", input_shape, num_classes)
    return model


def check_classifier(
    model: keras.Model, what: str, input_shape=None, num_classes: int | None = None
) -> tuple[tuple[int, ...], int]:
    """(image shape, classes) of a one-input image classifier, checked against the data.

    Raises:
        InputError: naming `what` when the model is not a (batch, H, W, C) -> (batch, C)
            classifier, or does not fit `input_shape` / `num_classes`.
    """
    if len(model.inputs) != 1 or len(model.outputs) != 1:
        raise InputError(
            f"{what}: expected a classifier with one input and one output; the model has "
            f"{len(model.inputs)} inputs and {len(model.outputs)} outputs."
        )
    image_shape = tuple(model.inputs[0].shape[1:])
    output_shape = tuple(model.outputs[0].shape)
    if len(image_shape) != 3 or None in image_shape:
        raise InputError(
            f"{what}: expected an image classifier with input (batch, height, width, "
            f"channels); the model's input is {tuple(model.inputs[0].shape)}."
        )
    if len(output_shape) != 2 or output_shape[-1] is None or output_shape[-1] < 2:
        raise InputError(
            f"{what}: the model is not a classifier: its output has shape {output_shape}, "
            "expected (batch, num_classes) with num_classes >= 2."
        )
    if input_shape is not None and image_shape != tuple(input_shape):
        raise InputError(
            f"{what}: the model's input shape {image_shape} does not fit the images "
            f"{tuple(input_shape)} of the data."
        )
    if num_classes is not None and output_shape[-1] != num_classes:
        raise InputError(
            f"{what}: the model has {output_shape[-1]} outputs but the data has "
            f"{num_classes} classes."
        )
    return image_shape, int(output_shape[-1])


def copy_weights(source: keras.Model, target: keras.Model, what: str) -> None:
    """Copies a trained float model's weights into `target`, the same architecture.

    Raises:
        InputError: naming `what` when `source` is a QAT model or its layers and weight
            shapes differ from `target`'s (the first difference is named).
    """
    from sgt_tfmot.export import is_quantized

    if is_quantized(source):
        raise InputError(f"{what} is a QAT model; pass the trained float model.")

    def signature(model):
        return [
            (type(layer).__name__, tuple(tuple(w.shape) for w in layer.weights))
            for layer in model.layers
            if layer.weights
        ]

    mine, theirs = signature(target), signature(source)
    if mine != theirs:
        index = next(
            (i for i, (a, b) in enumerate(zip(mine, theirs, strict=False)) if a != b),
            min(len(mine), len(theirs)),
        )
        got = theirs[index] if index < len(theirs) else "nothing"
        wanted = mine[index] if index < len(mine) else "nothing"
        raise InputError(
            f"{what} has another architecture than the model being trained: its weighted "
            f"layer #{index} is {got}, expected {wanted}."
        )
    target.set_weights(source.get_weights())


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
        mean, std = _DEFAULT_STATS.get(shape, (_FALLBACK_MEAN, _FALLBACK_STD))
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
