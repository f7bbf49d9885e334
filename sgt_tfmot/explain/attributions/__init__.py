"""Attribution methods, one module each, in one registry (see `base.Attribution`).

| name         | module        | per pixel | needs gradients |
|--------------|---------------|-----------|-----------------|
| `vanilla`    | `vanilla`     | no        | yes             |
| `smoothgrad` | `smoothgrad`  | no        | yes             |
| `gradcam`    | `gradcam`     | yes       | yes             |
| `gradcampp`  | `gradcampp`   | yes       | yes             |
| `occlusion`  | `occlusion`   | yes       | no              |

Example:

    from sgt_tfmot.explain import attributions
    maps = attributions.get("gradcam")(model, images, labels)
"""

from __future__ import annotations

from sgt_tfmot._checks import check_choice
from sgt_tfmot.explain.attributions.base import Attribution, AttributionOptions
from sgt_tfmot.explain.attributions.gradcam import GradCAM
from sgt_tfmot.explain.attributions.gradcampp import GradCAMPlusPlus
from sgt_tfmot.explain.attributions.occlusion import Occlusion
from sgt_tfmot.explain.attributions.smoothgrad import SmoothGrad
from sgt_tfmot.explain.attributions.vanilla import Vanilla

__all__ = [
    "CAM_METHODS",
    "MAP_METHODS",
    "METHODS",
    "REGISTRY",
    "Attribution",
    "AttributionOptions",
    "feature_methods",
    "get",
    "layer_methods",
    "names",
    "register",
]

# The registry: a new method is one module and one line here.
REGISTRY: dict[str, Attribution] = {
    method.name: method
    for method in (Vanilla(), SmoothGrad(), GradCAM(), GradCAMPlusPlus(), Occlusion())
}


def _derived():
    global METHODS, CAM_METHODS, MAP_METHODS
    METHODS = feature_methods()
    CAM_METHODS = layer_methods()
    MAP_METHODS = names()


def register(method: Attribution) -> None:
    """Adds a method (an `Attribution` instance with a new `name`)."""
    REGISTRY[method.name] = method
    _derived()


def names(gradient_free: bool | None = None) -> tuple[str, ...]:
    """Registered method names (only the gradient-free ones, or only the others)."""
    return tuple(
        name
        for name, method in REGISTRY.items()
        if gradient_free is None or (not method.needs_gradients) == gradient_free
    )


def feature_methods() -> tuple[str, ...]:
    """Gradient methods with one score per input feature (the converter's fidelity check)."""
    return tuple(n for n, m in REGISTRY.items() if not m.per_pixel and m.needs_gradients)


def layer_methods() -> tuple[str, ...]:
    """Methods that read an inner convolution (Grad-CAM's `penultimate_layer`)."""
    return tuple(n for n, m in REGISTRY.items() if m.uses_layer)


def get(name: str, argument: str = "method") -> Attribution:
    """The registered method `name`; an `InputError` naming `argument` otherwise."""
    check_choice(name, tuple(REGISTRY), argument)
    return REGISTRY[name]


METHODS: tuple[str, ...] = ()  # gradient methods with per-feature maps
CAM_METHODS: tuple[str, ...] = ()  # methods reading an inner convolution
MAP_METHODS: tuple[str, ...] = ()  # every method
_derived()
