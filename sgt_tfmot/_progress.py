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
import queue
import subprocess
import sys
import threading
from collections.abc import Callable
from typing import TextIO

from sgt_tfmot import _heartbeat
from sgt_tfmot._checks import InputError
from sgt_tfmot._heartbeat import duration_text

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


class Progress:
    """Stage lines and a status, with a heartbeat in logs (see the module docstring).

    The heartbeat (`sgt_tfmot._heartbeat`) runs in its own small process when the stream is a
    file or a pipe, so that it prints while the tool's main thread holds the GIL in C++; on a
    stream without a file descriptor (a test's buffer), in a thread. It starts with the
    first status, so a refusal before any work stays one line.

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
        self._entered = False
        self._beater: _ProcessBeater | _ThreadBeater | None = None

    def __call__(self, message: str) -> None:
        """Prints `message` now and makes it the status (the heartbeat adds the time since)."""
        with self._lock:
            self._print(message)
            self._send(f"said\t{_one_line(message)}", start=True)
            for other in list(_OPEN):
                if other is not self:
                    other._send("line")

    def update(self, status: str, live: bool = True) -> None:
        """Changes the status without a line. A `live` status says itself where the work
        stands (a step count, a rate, an ETA) and the heartbeat prints it as it is; else it
        names a stage, and the heartbeat adds the time spent on it."""
        with self._lock:
            self._send(f"{'live' if live else 'stage'}\t{_one_line(status)}", start=True)

    def _print(self, text: str) -> None:
        try:
            print(f"{self.prefix}{text}", file=self._stream(), flush=True)
        except (ValueError, OSError):  # the stream was closed or swapped meanwhile
            pass

    def _send(self, message: str, start: bool = False) -> None:
        if self._beater is None and start and self._entered and self._wants_heartbeat():
            self._beater = _start_beater(self)
        if self._beater is not None:
            self._beater.send(message)

    def _wants_heartbeat(self) -> bool:
        if self._heartbeat is not None:
            return self._heartbeat
        stream = self._stream()
        return not (hasattr(stream, "isatty") and stream.isatty())

    def __enter__(self) -> Progress:
        self._entered = True
        _OPEN.add(self)
        return self

    def __exit__(self, *exc) -> None:
        _OPEN.discard(self)
        self._entered = False
        with self._lock:
            beater, self._beater = self._beater, None
        if beater is not None:
            beater.close()


_OPEN: set[Progress] = set()  # entered in this process; a line of one counts for all


def _one_line(text: str) -> str:
    return " ".join(str(text).split("\n"))


class _ProcessBeater:
    """The heartbeat as its own process, writing to the stream's file descriptor."""

    def __init__(self, process: subprocess.Popen):
        self._process = process

    def send(self, message: str) -> None:
        try:
            self._process.stdin.write(message + "\n")
            self._process.stdin.flush()
        except (OSError, ValueError):  # it ended (Ctrl-C reaches the whole process group)
            pass

    def close(self) -> None:
        try:
            self._process.stdin.close()
        except OSError:
            pass
        try:
            self._process.wait(timeout=5)
        except subprocess.TimeoutExpired:
            self._process.kill()
            self._process.wait()


class _ThreadBeater:
    """The heartbeat as a thread of this process (a stream without a file descriptor)."""

    def __init__(self, progress: Progress):
        self._messages: queue.Queue = queue.Queue()
        self._thread = threading.Thread(
            target=_heartbeat.beat, args=(self._messages, progress.interval, progress._print),
            name="progress", daemon=True,
        )  # fmt: skip
        self._thread.start()

    def send(self, message: str) -> None:
        self._messages.put(message)

    def close(self) -> None:
        self._messages.put(None)
        self._thread.join()


def _start_beater(progress: Progress) -> _ProcessBeater | _ThreadBeater:
    try:
        stream = progress._stream()
        stream.flush()
        descriptor = stream.fileno()
    except (AttributeError, OSError, ValueError):  # io.UnsupportedOperation is an OSError
        return _ThreadBeater(progress)
    if not sys.executable:
        return _ThreadBeater(progress)
    try:
        process = subprocess.Popen(
            [sys.executable, "-S", _heartbeat.__file__, repr(progress.interval), progress.prefix],
            stdin=subprocess.PIPE, stdout=descriptor, stderr=subprocess.DEVNULL, text=True,
            encoding=getattr(stream, "encoding", None) or "utf-8", errors="replace",
        )  # fmt: skip
    except OSError:  # no process can be started here
        return _ThreadBeater(progress)
    return _ProcessBeater(process)
