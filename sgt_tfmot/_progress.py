"""Progress lines for long work, also when nobody watches a terminal.

A `Progress` prints a line for each stage (`progress("converting ...")`) and keeps a status
that can change without a line (`progress.update("step 120/1000 ...")`). Used as a context
manager, it also runs a heartbeat when its stream is not a terminal (a log file, a job
scheduler, a pipe): whenever `interval` seconds (20, or `$SGT_TFMOT_PROGRESS_SECONDS`)
passed without a line of any `Progress` of the process, it prints the latest status with the
time spent on it, so a log never stays silent for 30 s while the work goes on.

    with Progress("sgt_tfmot.convert: ") as say:
        say("converting to an integer TFLite model")   # a line now
        ...                                            # every 20 s in a log: the same stage,
                                                       # "(still running, 1m00s)"
"""

from __future__ import annotations

import math
import os
import sys
import threading
import time
from collections.abc import Callable
from typing import TextIO

from sgt_tfmot._checks import InputError

__all__ = ["ENVIRONMENT", "HEARTBEAT_SECONDS", "Progress", "duration_text", "heartbeat_seconds"]

# The promise is a line at least every 30 s; the heartbeat beats at 20 s, so that a busy
# machine's scheduling and a main thread holding the GIL for a while still keep it.
HEARTBEAT_SECONDS = 20.0
ENVIRONMENT = "SGT_TFMOT_PROGRESS_SECONDS"  # another interval, for a log read by a scheduler
_LIMITS = (1.0, 3600.0)


def heartbeat_seconds() -> float:
    """The heartbeat's interval: `$SGT_TFMOT_PROGRESS_SECONDS` when set, else 20 s.

    Raises:
      InputError: when the variable is set to anything but a number of seconds in [1, 3600].
    """
    text = os.environ.get(ENVIRONMENT)
    if text is None:
        return HEARTBEAT_SECONDS
    try:
        seconds = float(text)
    except ValueError:
        seconds = math.nan
    low, high = _LIMITS
    if not low <= seconds <= high:  # also NaN
        raise InputError(
            f"{ENVIRONMENT}={text!r}: the seconds between progress lines in a log must be a "
            f"number in [{low:g}, {high:g}]; unset it for the default ({HEARTBEAT_SECONDS:g})."
        )
    return seconds


_LAST_LINE = [time.monotonic()]  # of any Progress in the process: one start-up and one work


def duration_text(seconds: float) -> str:
    """A duration for people: 45s, 3m05s, 2h04m."""
    seconds = max(0, int(round(seconds)))
    if seconds < 60:
        return f"{seconds}s"
    if seconds < 3600:
        return f"{seconds // 60}m{seconds % 60:02d}s"
    return f"{seconds // 3600}h{seconds % 3600 // 60:02d}m"


class Progress:
    """Stage lines and a status, with a heartbeat in logs (see the module docstring).

    Args:
      prefix: Put before every line ("PROGRAM: ").
      stream: Returns the stream to print to, looked up at each line (default: stderr).
      interval: Seconds without a line after which the heartbeat prints the status
        (default: `heartbeat_seconds()`).
      heartbeat: Run the heartbeat; None: when the stream is not a terminal.
    """

    def __init__(
        self,
        prefix: str = "",
        stream: Callable[[], TextIO] | None = None,
        interval: float | None = None,
        heartbeat: bool | None = None,
    ):
        self.prefix = prefix
        self._stream = stream or (lambda: sys.stderr)
        self.interval = heartbeat_seconds() if interval is None else interval
        self._heartbeat = heartbeat
        self._lock = threading.Lock()
        self._status, self._since, self._live = "", time.monotonic(), False
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def __call__(self, message: str) -> None:
        """Prints `message` now and makes it the status (the heartbeat adds the time since)."""
        with self._lock:
            self._status, self._since, self._live = message, time.monotonic(), False
            self._print(message)

    def update(self, status: str, live: bool = True) -> None:
        """Changes the status without a line. A `live` status says itself where the work
        stands (a step count, a rate, an ETA) and the heartbeat prints it as it is; else it
        names a stage, and the heartbeat adds the time spent on it."""
        with self._lock:
            if not live and (self._live or status != self._status):
                self._since = time.monotonic()
            self._status, self._live = status, live

    def _print(self, text: str) -> None:
        _LAST_LINE[0] = time.monotonic()
        try:
            print(f"{self.prefix}{text}", file=self._stream(), flush=True)
        except (ValueError, OSError):  # the stream was closed or swapped meanwhile
            pass

    def _beat(self) -> None:
        while not self._stop.wait(max(0.05, _LAST_LINE[0] + self.interval - time.monotonic())):
            with self._lock:
                now = time.monotonic()
                if self._status and now - _LAST_LINE[0] >= self.interval:
                    elapsed = duration_text(now - self._since)
                    self._print(self._status if self._live else
                                f"{self._status} (still running, {elapsed})")  # fmt: skip

    def __enter__(self) -> Progress:
        heartbeat = self._heartbeat
        if heartbeat is None:
            stream = self._stream()
            heartbeat = not (hasattr(stream, "isatty") and stream.isatty())
        if heartbeat:
            self._thread = threading.Thread(target=self._beat, name="progress", daemon=True)
            self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
            self._thread = None
