"""A user's own model file as the model to train, and the checks of a classifier."""

from __future__ import annotations

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
    check_classifier(model, f"--model {path}", input_shape, num_classes)
    return saving.with_policy(model)


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
