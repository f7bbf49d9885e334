"""The interface of a model builder: a name, a title and `build`, behind one registry.

A builder makes a float image classifier TFMOT can quantize (see `sgt_tfmot.models`):

    model = builder.build(input_shape, num_classes, mean=..., std=..., weight_decay=...,
                          name=...)

Each architecture is one module with its build function and a `ModelBuilder` subclass that
names it; `sgt_tfmot.models.REGISTRY` lists them, and `--model`, its help and the training's
checks read that registry.
"""

from __future__ import annotations

import inspect
from collections.abc import Sequence

from sgt_tfmot.keras import keras

__all__ = ["ModelBuilder"]


class ModelBuilder:
    """Base class of the model builders.

    Class attributes:
      name: The registry name, the value of `--model` ("resnet20").
      title: What it is, for help texts and docs ("CIFAR ResNet-20 (He et al. 2016)").
    """

    name: str = ""
    title: str = ""

    def build(self, input_shape: Sequence[int], num_classes: int, **options) -> keras.Model:
        """A new float classifier of `input_shape` (H, W, C) images into `num_classes`
        classes, taking raw 0..255 pixels. `options` are the keywords it takes (`takes`):
        `mean`, `std`, `weight_decay`, `name`, and its own (e.g. `width`)."""
        raise NotImplementedError

    def takes(self, argument: str) -> bool:
        """True when `build` has the keyword `argument` (e.g. "width", "mean")."""
        return argument in inspect.signature(self.build).parameters

    def __repr__(self) -> str:
        return f"{type(self).__name__}()"
