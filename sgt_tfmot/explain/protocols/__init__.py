"""Removal protocols, one module each, in one registry (see `base.Protocol`).

| name        | module   | unit    | fill (default first)                      | curve       |
|-------------|----------|---------|-------------------------------------------|-------------|
| `pixel`     | `pixel`  | pixel   | mean, zero, random (the trainer's)        | accuracy    |
| `road`      | `road`   | pixel   | noisy linear imputation                   | accuracy    |
| `deletion`  | `rise`   | pixel   | blur, mean, black                         | probability |
| `insertion` | `rise`   | pixel   | blur, mean, black                         | probability |
| `region`    | `region` | patch   | uniform, black, mean, blur, imputation    | probability |

The registry (a `sgt_tfmot._registry.Registry`) is read at call time: `supports(name)`,
`get(name)`, `names()`; `register(p)` adds a `Protocol` instance, and the CLIs' accepted
values, help texts and reports see it.

Example:

    from sgt_tfmot.explain import protocols
    road = protocols.get("road")                  # a `Protocol`
    curves = drop_curves(model, images, labels, protocol="road")   # sgt_tfmot.explain
"""

from __future__ import annotations

from sgt_tfmot._registry import Registry
from sgt_tfmot.explain.protocols.base import (
    ORDER_TITLES,
    ORDERS,
    Protocol,
    ProtocolOptions,
    removal_curves,
)
from sgt_tfmot.explain.protocols.pixel import PerPixel
from sgt_tfmot.explain.protocols.region import RegionPerturbation
from sgt_tfmot.explain.protocols.rise import Deletion, Insertion
from sgt_tfmot.explain.protocols.road import ROAD

__all__ = [
    "ORDERS",
    "ORDER_TITLES",
    "REGISTRY",
    "Protocol",
    "ProtocolOptions",
    "get",
    "names",
    "register",
    "removal_curves",
    "supports",
    "unregister",
]

# The registry: a new protocol is one module and one line here.
REGISTRY: Registry[Protocol] = Registry(
    "removal protocol",
    Protocol,
    "protocol",
    [PerPixel(), ROAD(), Deletion(), Insertion(), RegionPerturbation()],
)
supports, names, get, register, unregister, parse = (
    REGISTRY.supports, REGISTRY.names, REGISTRY.get, REGISTRY.register, REGISTRY.unregister,
    REGISTRY.parse,
)  # fmt: skip
