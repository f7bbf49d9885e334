"""A user's own model file as the model to train, and the checks of a classifier."""

from __future__ import annotations

import numpy as np

from sgt_tfmot._checks import InputError
from sgt_tfmot.heads import check_head
from sgt_tfmot.keras import keras

MODEL_FILE_SUFFIXES = (".h5", ".keras")

__all__ = [
    "MODEL_FILE_SUFFIXES",
    "check_classifier",
    "copy_weights",
    "is_model_file",
    "model_from_file",
    "with_channel_axis",
]


def is_model_file(name: str) -> bool:
    """True when `name` names a saved model file (.h5 / .keras) rather than a builder."""
    return isinstance(name, str) and name.endswith(MODEL_FILE_SUFFIXES)


def model_from_file(path, input_shape, num_classes, trust_code) -> keras.Model:
    """The float classifier in `path`, checked against the data, its layers under Keras's
    global precision policy like a built-in model's (`sgt_tfmot.saving.with_policy`)."""
    from sgt_tfmot import saving
    from sgt_tfmot.export import is_quantized

    model = saving.load_model(path, trust_code=trust_code)
    if is_quantized(model):
        raise InputError(
            f"--model {path} is already a QAT model; pass its float model (or train it "
            "further with the Keras API: sgt_tfmot.load_model and fit)."
        )
    model = with_channel_axis(model, f"--model {path}")
    check_classifier(model, f"--model {path}", input_shape, num_classes)
    return saving.with_policy(model)


def with_channel_axis(model: keras.Model, what: str) -> keras.Model:
    """`model` itself, or, when it takes (batch, H, W) images without a channel axis (TFMOT's
    tutorial model: a `Reshape` to (H, W, 1) first), the same layers and weights rebuilt
    with input (batch, H, W, 1), the one-channel images the tools give.

    The rebuilt model is checked: every weight fits its layer, and it computes the same
    outputs as `model` on random images (within 1e-5 of their size).

    Raises:
      InputError: naming `what` and the layer that does not take the channel axis (its
        weights no longer fit, or it cannot be built on it), or the outputs that differ.
    """
    from sgt_tfmot import saving

    if len(model.inputs) != 1 or len(model.inputs[0].shape) != 3:
        return model
    shape = tuple(model.inputs[0].shape)
    if None in shape[1:]:
        return model  # check_classifier names it: no fixed image size
    height, width = shape[1:]
    refused = (
        f"{what}: the model takes ({height}, {width}) images without a channel axis; the "
        f"tools give ({height}, {width}, 1) and the model rebuilt on them"
    )
    config = _with_channel(model.get_config(), [None, height, width])
    try:
        rebuilt = saving.from_own_config(model, config)
    except (ValueError, TypeError) as error:
        first = str(error).strip().splitlines()[0]
        raise InputError(f"{refused} cannot be built ({first}).") from None
    for layer in model.layers:
        try:
            rebuilt.get_layer(layer.name).set_weights(layer.get_weights())
        except ValueError:
            raise InputError(
                f"{refused} does not take the weights of layer {layer.name!r} "
                f"({type(layer).__name__}): give the model a ({height}, {width}, 1) input."
            ) from None
    images = np.random.default_rng(0).uniform(0, 255, (2, height, width)).astype(np.float32)
    expected = np.asarray(model(images, training=False))
    found = np.asarray(rebuilt(images[..., np.newaxis], training=False))
    difference = float(np.abs(found - expected).max())
    if difference > 1e-5 * max(1.0, float(np.abs(expected).max())):
        raise InputError(
            f"{refused} computes other outputs (up to {difference:.3g} apart): give the model "
            f"a ({height}, {width}, 1) input."
        )
    return rebuilt


_SHAPE_KEYS = ("batch_input_shape", "build_input_shape", "input_shape", "batch_shape")


def _with_channel(value, shape: list):
    """A model config with every input shape `shape` (batch, H, W) given a channel axis."""
    if isinstance(value, dict):
        return {
            key: [*shape, 1]
            if key in _SHAPE_KEYS and isinstance(item, list | tuple) and list(item) == shape
            else _with_channel(item, shape)
            for key, item in value.items()
        }
    if isinstance(value, list):
        return [_with_channel(item, shape) for item in value]
    return value


def check_classifier(
    model: keras.Model, what: str, input_shape=None, num_classes: int | None = None
) -> tuple[tuple[int, ...], int]:
    """(image shape, classes) of a one-input image classifier, checked against the data.

    Raises:
        InputError: naming `what` when the model is not a (batch, H, W, C) -> (batch, C)
            classifier with logits or a softmax (`sgt_tfmot.heads.check_head`), or does not
            fit `input_shape` / `num_classes`.
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
    check_head(model, what)
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
