"""Deployment targets: checkers with a name, a verdict and a report section, in one list.

A target reads the converted model (and, when it runs the model, a few test images) and
returns a `TargetReport`. The converter runs every registered target and puts each report
under `targets.<name>` of its JSON report; `--require_<name>` makes a target's verdict part
of the release gate.

Adding a target is one module with a `Target` subclass and one line in `TARGETS`.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import numpy as np

__all__ = ["TARGETS", "Target", "TargetContext", "TargetReport", "get", "names"]


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
    """

    name: str
    title: str
    compatible: bool | None
    failure: str | None
    lines: tuple[str, ...]
    section: dict

    def to_dict(self) -> dict:
        return {"compatible": self.compatible, "failure": self.failure, **self.section}


class Target:
    """Base class: `check(context) -> TargetReport`."""

    name: str = ""
    title: str = ""

    def check(self, context: TargetContext) -> TargetReport:
        raise NotImplementedError


def _registry() -> list[Target]:
    from sgt_tfmot.tflite.edgetpu import EdgeTpu
    from sgt_tfmot.tflite.mediapipe import MediaPipe
    from sgt_tfmot.tflite.tflm import Tflm

    return [EdgeTpu(), MediaPipe(), Tflm()]


TARGETS: list[Target] = _registry()


def names() -> tuple[str, ...]:
    return tuple(target.name for target in TARGETS)


def get(name: str) -> Target:
    from sgt_tfmot._checks import check_choice

    check_choice(name, names(), "target")
    return next(target for target in TARGETS if target.name == name)
