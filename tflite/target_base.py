"""The interface of a deployment target: what it may look at, what it returns.

A target reads the converted model (and, when it runs the model, a few test images) and
returns a `TargetReport`: a verdict, one line for the release gate when it fails, the lines
of the summary and its section of the JSON report. Each target is a `Target` subclass in its
own module, which imports this one and never another target; `sgt_tfmot.tflite.targets`
holds the registry.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import numpy as np

__all__ = ["Target", "TargetContext", "TargetReport"]


@dataclasses.dataclass(frozen=True)
class TargetContext:
    """What a target may look at.

    Attributes:
      flatbuffer: The integer .tflite file's bytes.
      output: Where the file is written (for commands to print).
      images: A few float test images in the model's input range (may be empty).
      class_names: The class names, or None.
      integer_predict: Images -> dequantized scores of the file in LiteRT.
      test_images: The test images a target that checks every image runs (the whole
        checked test split unless capped), or None: such a target then takes `images`.
    """

    flatbuffer: bytes
    output: str
    images: np.ndarray
    class_names: tuple[str, ...] | None
    integer_predict: Any
    test_images: np.ndarray | None = None


@dataclasses.dataclass(frozen=True)
class TargetReport:
    """One target's verdict.

    Attributes:
      name: The target's registry name ("edgetpu").
      title: Its display name ("Edge TPU").
      compatible: True, False, or None when it could not be checked (said in `lines`).
      failure: One line saying why it is not compatible (for the gate), else None.
      lines: The human summary of the verdict.
      section: The JSON report section (`to_dict`).
      details: Lines a verbose summary adds (an op table).
    """

    name: str
    title: str
    compatible: bool | None
    failure: str | None
    lines: tuple[str, ...]
    section: dict
    details: tuple[str, ...] = ()

    def to_dict(self) -> dict:
        return {"compatible": self.compatible, "failure": self.failure, **self.section}


class Target:
    """Base class of the deployment targets.

    Class attributes:
      name: The registry name ("edgetpu"): the key of the report's `targets` section and a
        value of `convert --require`.
      title: How summaries name it ("Edge TPU").
    """

    name: str = ""
    title: str = ""

    def check(self, context: TargetContext) -> TargetReport:
        """The verdict on the file of `context` (never raises for an incompatible file: the
        report says why)."""
        raise NotImplementedError

    def __repr__(self) -> str:
        return f"{type(self).__name__}()"
