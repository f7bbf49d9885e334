"""Removal protocols, one module each, in one registry (see `base.Protocol`).

| name        | module   | unit    | fill (default first)                      | curve       |
|-------------|----------|---------|-------------------------------------------|-------------|
| `pixel`     | `pixel`  | pixel   | mean, zero, random (the trainer's)        | accuracy    |
| `road`      | `road`   | pixel   | noisy linear imputation                   | accuracy    |
| `deletion`  | `rise`   | pixel   | blur, mean, black                         | probability |
| `insertion` | `rise`   | pixel   | blur, mean, black                         | probability |
| `region`    | `region` | patch   | uniform, black, mean, blur, imputation    | probability |

The registry is read at call time: `supports(name)`, `get(name)`, `names()`; `register(p)`
adds a `Protocol` instance, and the CLIs' accepted values, help texts and reports see it.

Example:

    from sgt_tfmot.explain import protocols
    road = protocols.get("road")                  # a `Protocol`
    curves = drop_curves(model, images, labels, protocol="road")   # sgt_tfmot.explain
"""

from __future__ import annotations

from sgt_tfmot._checks import InputError
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
    "Registry",
    "get",
    "names",
    "register",
    "removal_curves",
    "supports",
]


class Registry:
    """Name -> `Protocol`, in the order registered; every lookup reads the current entries."""

    def __init__(self, entries=()):
        self._entries: dict[str, Protocol] = {}
        for entry in entries:
            self.register(entry)

    def register(self, protocol: Protocol) -> None:
        """Adds (or replaces) the protocol under its `name`."""
        if not isinstance(protocol, Protocol) or not protocol.name:
            raise TypeError(f"A protocol is a named `Protocol` instance. Received: {protocol!r}")
        self._entries[protocol.name] = protocol

    def supports(self, name) -> bool:
        return isinstance(name, str) and name in self._entries

    def names(self) -> tuple[str, ...]:
        return tuple(self._entries)

    def get(self, name, argument: str = "protocol") -> Protocol:
        """The protocol `name`; an `InputError` naming `argument` and the accepted names."""
        if not self.supports(name):
            raise InputError(f"must be one of {', '.join(map(repr, self.names()))}", argument, name)
        return self._entries[name]

    def parse(self, names, argument: str = "protocol") -> tuple[str, ...]:
        """Protocol names from a list or a comma-separated string, each known, each once."""
        if isinstance(names, str):
            names = [part.strip() for part in names.split(",")]
        names = list(names)
        for name in names:
            self.get(name, argument)
        if not names or len(set(names)) != len(names):
            raise InputError(
                f"must name each of {', '.join(map(repr, self.names()))} at most once, and at "
                "least one",
                argument,
                ",".join(map(str, names)),
            )
        return tuple(names)


# The registry: a new protocol is one module and one line here.
REGISTRY = Registry([PerPixel(), ROAD(), Deletion(), Insertion(), RegionPerturbation()])
supports, names, get, register, parse = (
    REGISTRY.supports, REGISTRY.names, REGISTRY.get, REGISTRY.register, REGISTRY.parse
)  # fmt: skip
