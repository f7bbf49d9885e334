"""Argument checks shared by the modules of `sgt_tfmot.explain` (private)."""

from __future__ import annotations

import numpy as np

from sgt_tfmot._checks import check_choice, check_int, check_open_fraction  # noqa: F401
from sgt_tfmot.keras import keras


def check_positive_int(value, name: str) -> int:
    """`value` as an int if it is an integer >= 1."""
    return check_int(value, name, 1)


def check_labels(images: np.ndarray, labels, num_classes: int | None = None) -> np.ndarray:
    """`labels` as int64 after checking they are (N,) class ids matching `images`."""
    labels = np.asarray(labels)
    if labels.ndim != 1 or not np.issubdtype(labels.dtype, np.integer):
        raise ValueError(
            "`labels` must be integer class ids of shape (N,). Received: shape "
            f"{labels.shape}, dtype {labels.dtype}"
        )
    if len(labels) != len(images):
        raise ValueError(
            f"`images` and `labels` must have the same length. Received: {len(images)} images "
            f"and {len(labels)} labels"
        )
    if (
        num_classes is not None
        and len(labels)
        and not 0 <= labels.min() <= labels.max() < num_classes
    ):
        raise ValueError(
            f"`labels` must be class ids in [0, {num_classes}) for a model with {num_classes} "
            f"outputs. Received labels in [{labels.min()}, {labels.max()}]"
        )
    return labels.astype(np.int64)


def check_classifier(model: keras.Model) -> int:
    """The number of classes of a one-input classifier with output (batch, num_classes)."""
    if len(model.inputs) != 1 or len(model.outputs) != 1 or model.outputs[0].shape.rank != 2:
        raise ValueError(
            "`model` must be a classifier with one input and one output of shape (batch, "
            f"num_classes). Received: {len(model.inputs)} input(s), output shape(s) "
            f"{[tuple(output.shape) for output in model.outputs]}"
        )
    return int(model.outputs[0].shape[-1])


def check_model_inputs(model: keras.Model, images, labels) -> tuple[np.ndarray, np.ndarray]:
    """(float32 images, int64 labels) after checking both fit the classifier `model`."""
    num_classes = check_classifier(model)
    images = np.asarray(images, dtype=np.float32)
    labels = check_labels(images, labels, num_classes)
    if images.shape[1:] != tuple(model.inputs[0].shape[1:]):
        raise ValueError(
            f"`images` of shape {images.shape[1:]} do not fit the model input "
            f"{tuple(model.inputs[0].shape[1:])}"
        )
    return images, labels
