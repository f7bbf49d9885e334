"""Deployment targets: checkers with a name, a verdict and a report section, in one registry.

| name        | module      | what it checks                                                |
|-------------|-------------|---------------------------------------------------------------|
| `edgetpu`   | `edgetpu`   | ops, tensor types and shapes against the Edge TPU's rules      |
| `mediapipe` | `mediapipe` | MediaPipe Tasks' ImageClassifier loads it, agrees with LiteRT  |
| `tflm`      | `tflm`      | TFLite Micro's outputs equal LiteRT's reference; arena, flash  |

The converter runs every registered target and puts each report under `targets.<name>` of
its JSON report; `--require NAME` makes a target's verdict part of the release gate. The
registry is read at call time: `supports(name)`, `get(name)`, `names()`; `register(target)`
adds a `Target` instance (`target_base`), and `convert`'s accepted values, help, report and
gate see it. Adding a target is one module with a `Target` subclass and one line here.
"""

from __future__ import annotations

from sgt_tfmot._registry import Registry
from sgt_tfmot.tflite.edgetpu import EdgeTpu
from sgt_tfmot.tflite.mediapipe import MediaPipe
from sgt_tfmot.tflite.target_base import Target, TargetContext, TargetReport
from sgt_tfmot.tflite.tflm import Tflm

__all__ = [
    "REGISTRY",
    "Target",
    "TargetContext",
    "TargetReport",
    "get",
    "names",
    "register",
    "supports",
    "unregister",
]

# The registry: a new target is one module and one line here.
REGISTRY: Registry[Target] = Registry(
    "deployment target", Target, "target", [EdgeTpu(), MediaPipe(), Tflm()]
)
supports, names, get, register, unregister = (
    REGISTRY.supports, REGISTRY.names, REGISTRY.get, REGISTRY.register, REGISTRY.unregister
)  # fmt: skip
