"""The heartbeat of `sgt_tfmot._progress`: the status repeated when nothing was printed for a
while. Standard library only, so that it also runs as its own small process:

    python -S _heartbeat.py INTERVAL PREFIX      (messages on stdin, lines on stdout)

A process keeps beating while the tool's main thread holds Python's GIL inside TensorFlow's
or LiteRT's C++ (a conversion step holds it for seconds of CPU time, half a minute of wall
time on a loaded machine): a thread of the tool could not print then.

Messages, one per line:

    said<TAB>TEXT     TEXT was printed now as a stage line; it is the status from now
    stage<TAB>TEXT    the status names a stage: repeated with the time spent on it
    live<TAB>TEXT     the status says where the work stands: repeated as it is
    line              another line was printed now

The end of the input (or None on a thread's queue) ends the heartbeat.
"""

from __future__ import annotations

import queue
import sys
import threading
import time
from collections.abc import Callable

__all__ = ["beat", "duration_text"]


def duration_text(seconds: float) -> str:
    """A duration for people: 45s, 3m05s, 2h04m."""
    seconds = max(0, int(round(seconds)))
    if seconds < 60:
        return f"{seconds}s"
    if seconds < 3600:
        return f"{seconds // 60}m{seconds % 60:02d}s"
    return f"{seconds // 3600}h{seconds % 3600 // 60:02d}m"


def beat(messages: queue.Queue, interval: float, write: Callable[[str], None]) -> None:
    """Writes the status whenever `interval` seconds passed without a line, until the end.

    Args:
      messages: The messages of the module docstring; None ends the heartbeat.
      interval: Seconds without a line after which the status is written.
      write: Writes one line; an OSError from it (a closed stream) ends the heartbeat.
    """
    status, live = "", False
    since = last = time.monotonic()
    while True:
        try:
            message = messages.get(timeout=max(0.0, last + interval - time.monotonic()))
        except queue.Empty:
            now = time.monotonic()
            if status:
                try:
                    write(status if live else
                          f"{status} (still running, {duration_text(now - since)})")  # fmt: skip
                except (OSError, ValueError):
                    return
            last = now
            continue
        if message is None:
            return
        kind, _, text = message.partition("\t")
        now = time.monotonic()
        if kind == "said":
            status, live, since, last = text, False, now, now
        elif kind == "line":
            last = now
        elif kind in ("stage", "live"):
            if kind == "stage" and (live or text != status):
                since = now
            status, live = text, kind == "live"


def _main(argv: list[str]) -> None:
    interval, prefix = float(argv[1]), argv[2]
    messages: queue.Queue = queue.Queue()

    def read() -> None:
        for line in sys.stdin:
            messages.put(line.rstrip("\n"))
        messages.put(None)  # the tool ended (or died): so does its heartbeat

    def write(text: str) -> None:
        sys.stdout.write(f"{prefix}{text}\n")
        sys.stdout.flush()

    threading.Thread(target=read, daemon=True).start()
    beat(messages, interval, write)


if __name__ == "__main__":
    try:
        _main(sys.argv)
    except KeyboardInterrupt:  # Ctrl-C reaches the whole process group: the tool says it
        pass
