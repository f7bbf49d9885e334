"""Argument validation, in one place: the bad-input error type and the checks every module uses.

A bad argument raises `InputError`, a `ValueError` that knows which argument was wrong. Its
text names the argument as the library user wrote it (`` `mask_fraction` must be ...``);
a command-line tool prints `error.for_flags()`, which names the flag the user typed
(``--mask_fraction must be ...``). So one check serves the API and the CLIs, and no message
is rewritten after the fact.

Example:

>>> check_int(9, "weight_bits", 2, 8)
Traceback (most recent call last):
...
sgt_tfmot._checks.InputError: `weight_bits` must be an integer in [2, 8]. Received: weight_bits=9
"""

from __future__ import annotations

import math
import numbers
import re
from collections.abc import Sequence

__all__ = [
    "InputError",
    "RunStopped",
    "check_bool",
    "check_choice",
    "check_int",
    "check_number",
    "check_open_fraction",
    "plain_message",
]

_MISSING = object()


class RunStopped(RuntimeError):
    """A run that cannot go on for a reason outside the input (e.g. a lost worker); its
    message is one line that says what to do. The CLIs print it and exit with status 1."""


class InputError(ValueError):
    """A bad input, shown to users as one line (the CLIs exit with status 2).

    Args:
      message: The whole message, or, with `argument`, what the argument must be ("must be
        an integer >= 1").
      argument: The argument (or flag) that was wrong, without dashes or backticks.
      received: The value that was received, shown after the requirement.
      cli: The whole message as the command-line tools show it, when its advice differs
        from the API's (an API argument such as `layer_configs` that no flag offers).
    """

    def __init__(self, message: str, argument: str | None = None, received=_MISSING, *, cli=None):
        self.requirement = message
        self.argument = argument
        self.received = received
        self.cli = cli
        super().__init__(self._render(flag=False))

    def _render(self, flag: bool) -> str:
        if self.argument is None:
            return self.requirement
        name = f"--{self.argument}" if flag else f"`{self.argument}`"
        text = f"{name} {self.requirement}"
        if self.received is not _MISSING:
            value = repr(self.received) if not flag else _flag_value(self.received)
            text += f". Received: {value if flag else f'{self.argument}={value}'}"
        return text

    def for_flags(self) -> str:
        """The message naming the command-line flag (`--name`) instead of the argument."""
        return self.cli if self.cli is not None else self._render(flag=True)


def _flag_value(value) -> str:
    if isinstance(value, str):
        return repr(value)
    if isinstance(value, list | tuple):
        return ",".join(str(v) for v in value)
    return str(value)


def _is_int(value) -> bool:
    return isinstance(value, numbers.Integral) and not isinstance(value, bool)


def _interval(low, high, low_open: bool = False, high_open: bool = False) -> str:
    if low is not None and high is not None:
        return f"in {'(' if low_open else '['}{low:g}, {high:g}{')' if high_open else ']'}"
    if low is not None:
        return f"{'>' if low_open else '>='} {low:g}"
    if high is not None:
        return f"{'<' if high_open else '<='} {high:g}"
    return ""


def check_int(
    value, name: str, low: int | None = None, high: int | None = None, allow_none: bool = False
) -> int | None:
    """`value` as an `int` if it is an integer (Python or numpy) in [low, high].

    Raises:
      InputError: naming `name`, the accepted range and the value received.
    """
    if value is None and allow_none:
        return None
    ok = _is_int(value) and (low is None or value >= low) and (high is None or value <= high)
    if not ok:
        where = _interval(low, high)
        requirement = f"must be an integer{' ' + where if where else ''}"
        if allow_none:
            requirement += " or None"
        raise InputError(requirement, name, value)
    return int(value)


def check_number(
    value,
    name: str,
    low: float | None = None,
    high: float | None = None,
    *,
    low_open: bool = False,
    high_open: bool = False,
    allow_none: bool = False,
) -> float | None:
    """`value` as a finite `float` in the interval given by `low`, `high` (open or closed).

    Raises:
      InputError: naming `name`, the accepted interval and the value received.
    """
    if value is None and allow_none:
        return None
    number = (
        float(value) if isinstance(value, numbers.Real) and not isinstance(value, bool) else None
    )
    ok = number is not None and math.isfinite(number)
    if ok and low is not None:
        ok = number > low if low_open else number >= low
    if ok and high is not None:
        ok = number < high if high_open else number <= high
    if not ok:
        where = _interval(low, high, low_open, high_open)
        raise InputError(f"must be a finite number{' ' + where if where else ''}", name, value)
    return number


def check_open_fraction(value, name: str) -> float:
    """`value` as a float in the open interval (0, 1)."""
    return check_number(value, name, 0.0, 1.0, low_open=True, high_open=True)


def check_choice(value, choices: Sequence, name: str):
    """`value` if it is one of `choices`.

    Raises:
      InputError: naming `name`, every accepted value and the value received.
    """
    try:
        known = value in choices
    except TypeError:  # unhashable value against a set
        known = False
    if not known:
        accepted = ", ".join(repr(c) for c in choices)
        raise InputError(f"must be one of {accepted}", name, value)
    return value


def check_bool(value, name: str) -> bool:
    """`value` if it is True or False (numpy booleans included)."""
    if not isinstance(value, bool) and type(value).__name__ != "bool_":
        raise InputError("must be True or False", name, value)
    return bool(value)


# What TensorFlow and LiteRT add to their messages that says nothing to a user: the
# function-node and graph-node names, the op tag, placement suffixes.
_INTERNALS = (
    re.compile(r"\{\{function_node [^}]*\}\}"),
    re.compile(r"\[\[\{\{node [^}]*\}\}\]\]"),
    re.compile(r"\[Op:\w+\](\s*name:\s*\S*)?"),
    re.compile(r"\s*\(defined at [^)]*\)"),
)


def plain_message(error: BaseException | str, limit: int = 300) -> str:
    """The first line of an error message, without TensorFlow's and LiteRT's internals.

    >>> plain_message("{{function_node __wrapped__DecodeImage_device_/job:localhost/replica:0"
    ...               "/task:0/device:CPU:0}} Unknown image file format. [Op:DecodeImage] name: ")
    'Unknown image file format.'
    """
    text = str(error)
    for pattern in _INTERNALS:
        text = pattern.sub(" ", text)
    lines = [" ".join(line.split()) for line in text.strip().splitlines()]
    first = next((line for line in lines if line), "")
    if not first and isinstance(error, BaseException):
        first = type(error).__name__
    return first if len(first) <= limit else first[: limit - 3] + "..."
