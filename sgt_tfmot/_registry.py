"""The registry of an extension point: named entries of one base class, read at call time.

Each extension point of the package (data sources, model builders, attribution methods,
removal protocols, deployment targets) has one `Registry` object, in the shape of TFMOT's
`QuantizeRegistry` and larq's `get(identifier)`:

    registry.supports(name)  ->  bool
    registry.get(name)       ->  the entry (an `InputError` naming the accepted names)
    registry.names()         ->  the names, in the order registered

Every CLI choice list, help text, report and check asks the registry when it runs, never a
copy taken at import time, so an entry registered at run time (`registry.register(entry)`)
is accepted, listed and reported like the built-in ones.

Example:

    from sgt_tfmot.explain import attributions
    attributions.register(MyMethod())          # an `Attribution` with name "mine"
    attributions.get("mine")(model, images, labels)
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from typing import Generic, TypeVar

from sgt_tfmot._checks import InputError

__all__ = ["Registry"]

T = TypeVar("T")


class Registry(Generic[T]):
    """Name -> entry (an instance of `base` with a non-empty `name`), in registration order.

    Args:
      kind: What an entry is, for messages ("attribution method").
      base: The class every entry is an instance of.
      argument: The argument (or flag) named by errors of `get` and `parse` by default.
      entries: The built-in entries.
    """

    def __init__(self, kind: str, base: type, argument: str, entries: Iterable[T] = ()):
        self.kind, self.base, self.argument = kind, base, argument
        self._entries: dict[str, T] = {}
        for entry in entries:
            self.register(entry)

    def register(self, entry: T, *, before: str | None = None) -> T:
        """Adds (or replaces) `entry` under its `name`: last, or in front of entry `before`.

        Raises:
          TypeError: When `entry` is not a named instance of the registry's base class.
        """
        name = getattr(entry, "name", None)
        if not isinstance(entry, self.base) or not isinstance(name, str) or not name:
            raise TypeError(
                f"A {self.kind} is a `{self.base.__name__}` instance with a `name`. "
                f"Received: {entry!r}"
            )
        self._entries.pop(name, None)
        if before is None:
            self._entries[name] = entry
        else:
            self.get(before, "before")
            items = list(self._entries.items())
            at = next(i for i, (key, _) in enumerate(items) if key == before)
            self._entries = dict([*items[:at], (name, entry), *items[at:]])
        return entry

    def unregister(self, name: str) -> T:
        """Removes the entry `name` and returns it."""
        entry = self.get(name)
        del self._entries[name]
        return entry

    def supports(self, name) -> bool:
        """Whether `name` is a registered name."""
        return isinstance(name, str) and name in self._entries

    def names(self, where: Callable[[T], bool] | None = None) -> tuple[str, ...]:
        """The registered names (those of the entries `where(entry)` accepts), in order."""
        return tuple(n for n, e in self._entries.items() if where is None or where(e))

    def get(self, name, argument: str | None = None) -> T:
        """The entry `name`; an `InputError` naming `argument` and the accepted names."""
        if not self.supports(name):
            accepted = ", ".join(map(repr, self.names()))
            raise InputError(f"must be one of {accepted}", argument or self.argument, name)
        return self._entries[name]

    def parse(self, names, argument: str | None = None) -> tuple[str, ...]:
        """Names from a list or a comma-separated string, each registered, each once.

        Raises:
          InputError: naming `argument`, on an unknown name, a repeated one, or none.
        """
        argument = argument or self.argument
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

    def __iter__(self) -> Iterator[T]:
        return iter(tuple(self._entries.values()))

    def __len__(self) -> int:
        return len(self._entries)

    def __repr__(self) -> str:
        return f"Registry({self.kind!r}: {', '.join(self.names())})"
