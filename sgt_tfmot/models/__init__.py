"""Image classifiers TFMOT can quantize, in one registry (`REGISTRY`, `build`, `register`).

| name             | module         | what                                              |
|------------------|----------------|---------------------------------------------------|
| `resnet20`       | `resnet`       | CIFAR ResNet-20 (He et al. 2016)                  |
| `resnet8`        | `resnet8`      | MLPerf Tiny's CIFAR-10 ResNet-8 (78 k parameters) |
| `mobilenet_tiny` | `mobilenet`    | a small MobileNet-v1-style network                 |
| `mobilenet_v2`   | `applications` | Keras Applications' MobileNetV2, flat, any width  |
| a .h5/.keras path| `files`        | the user's own float classifier                   |

Each builder is a `base.ModelBuilder` subclass in its module; the registry is read at call
time (`supports`, `get`, `names`; `register(builder)` adds one), and `--model`, its help and
the training's checks see it.

They are Functional `tf_keras` models made only of built-in layers (no `Lambda`, no raw tf
ops on Keras tensors, which would become `TFOpLambda` layers that TFMOT cannot quantize).
Each activation is its own `ReLU` layer and each residual sum an `Add` layer, so that the
quantizer can put PACT on every activation and quantize every kernel.

The models take RAW pixels in 0..255 (what `sgt_tfmot.data` yields) and standardise them in
their first layer, a `Rescaling` with fixed per-channel statistics:

    y = x * (1 / std) + (-mean / std)  =  (x - mean) / std

`Rescaling` rather than `Normalization`: the export model turns it into a 1x1 convolution
with exact per-channel int8 scales (`sgt_tfmot.export`), where `Normalization` leaves a
DEQUANTIZE/QUANTIZE pair at the input.

BatchNormalization uses momentum 0.9 (PyTorch's 0.1), the value of the reference ResNet-20
trainings; Keras's default 0.99 leaves the moving statistics far behind in short runs.

`mean` and `std` are the data's own per-channel statistics (`python -m sgt_tfmot.train`
passes `sgt_tfmot.data.DatasetInfo.mean/std`); without them, 127.5 and 127.5 (to [-1, 1]).
Nothing is looked up by image shape.

All end in a `Dense` layer named "logits" with no softmax: train with
`SparseCategoricalCrossentropy(from_logits=True)`.

Example:

    model = build("resnet20", (32, 32, 3), 10)
    logits = model(images)  # images: (B, 32, 32, 3) float32 in 0..255
"""

from __future__ import annotations

from collections.abc import Sequence

from sgt_tfmot._checks import InputError
from sgt_tfmot._registry import Registry
from sgt_tfmot.keras import keras
from sgt_tfmot.models import files
from sgt_tfmot.models.applications import MobileNetV2, mobilenet_v2
from sgt_tfmot.models.base import ModelBuilder
from sgt_tfmot.models.files import (
    check_classifier,
    copy_weights,
    is_model_file,
    with_channel_axis,
    without_augmentation,
)
from sgt_tfmot.models.mobilenet import MobileNetTiny, mobilenet_tiny
from sgt_tfmot.models.resnet import ResNet20, resnet20
from sgt_tfmot.models.resnet8 import ResNet8, resnet8

__all__ = [
    "REGISTRY",
    "ModelBuilder",
    "build",
    "describe",
    "check_classifier",
    "copy_weights",
    "get",
    "is_model_file",
    "mobilenet_tiny",
    "mobilenet_v2",
    "names",
    "register",
    "resnet20",
    "resnet8",
    "supports",
    "takes",
    "unregister",
    "with_channel_axis",
    "without_augmentation",
]

# The model registry: a new architecture is one module and one line here.
REGISTRY: Registry[ModelBuilder] = Registry(
    "model builder", ModelBuilder, "model", [ResNet20(), ResNet8(), MobileNetTiny(), MobileNetV2()]
)
supports, names, get, register, unregister = (
    REGISTRY.supports, REGISTRY.names, REGISTRY.get, REGISTRY.register, REGISTRY.unregister
)  # fmt: skip


def takes(name: str, argument: str) -> bool:
    """True when the builder `name` has the keyword `argument` (e.g. "width")."""
    return supports(name) and get(name).takes(argument)


def describe() -> str:
    """The registered builders as the --model help lists them: "name = title; ..."."""
    return "; ".join(f"{builder.name} = {builder.title}" for builder in REGISTRY)


def build(
    name: str,
    input_shape: Sequence[int],
    num_classes: int,
    trust_code: bool = False,
    **kwargs: object,
) -> keras.Model:
    """Builds a model by name, or loads a user's float classifier from a file.

    Args:
        name: A builder ("resnet20", "mobilenet_tiny", ...; see `names()`) or the path of a
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
        return files.model_from_file(name, input_shape, num_classes, trust_code)
    if not supports(name):
        known = ", ".join(repr(n) for n in sorted(names()))
        raise InputError(f"Unknown model {name!r}. Known models: {known}, or a .h5/.keras file.")
    return get(name).build(input_shape, num_classes, **kwargs)
