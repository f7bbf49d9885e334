"""TFLite Micro's interpreter in a process of its own, for `sgt_tfmot.tflite.tflm`.

TFLM crashes (SIGSEGV) instead of failing on some arenas too small for the model (seen:
MobileNetV3Small at 200,000 and 260,784 bytes; a small residual classifier at 64-400 bytes,
where 512 fails cleanly), so the arena's bisection and the runs happen here: a crash ends
this process, which the target reports, and not the tool that checks the file.

    python _tflm_worker.py              the file, then requests, on stdin; replies on stdout

Everything on the pipes is pickled. The first message is the .tflite file's bytes; then
requests, each answered in turn:

    ("allocations", image, arena_size)  one invoke on `image` (the input without its batch
                                        axis) in an arena of that size -> the text of
                                        `print_allocations`
    ("run", images, arena_size)         one invoke per image -> (the raw outputs,
                                        concatenated; the seconds the invokes took)

Replies: ("ok", value), or ("error", TFLM's log of the request, the exception's text).
What TFLM prints (MicroPrintf, on file descriptors 1 and 2) is collected per request, never
mixed into the replies. Standard library, numpy and tflite_micro only: it starts in a
fraction of a second.
"""

from __future__ import annotations

import sys
from pathlib import Path

# Run as a script, this folder comes first on sys.path; its profile.py or runtime.py must not
# stand in for the modules of those names that numpy or tflite_micro import.
if sys.path and Path(sys.path[0] or ".").resolve() == Path(__file__).resolve().parent:
    del sys.path[0]

import ctypes  # noqa: E402
import os  # noqa: E402
import pickle  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402

import numpy as np  # noqa: E402


def _serve(runtime, flatbuffer: bytes, request: tuple, log) -> object:
    kind, images, arena_size = request
    interpreter = runtime.Interpreter.from_bytes(flatbuffer, arena_size=arena_size)
    if kind == "allocations":
        interpreter.set_input(np.ascontiguousarray(images[None]), 0)
        interpreter.invoke()
        log.clear()
        interpreter.print_allocations()
        return log.text()
    found, start = [], time.perf_counter()
    for image in images:
        interpreter.set_input(np.ascontiguousarray(image[None]), 0)
        interpreter.invoke()
        found.append(np.array(interpreter.get_output(0), copy=True))
    return np.concatenate(found), time.perf_counter() - start


class _Log:
    """Files descriptors 1 and 2 of this process, pointed at a temporary file."""

    def __init__(self):
        self.libc = ctypes.CDLL(None)
        self.sink = tempfile.TemporaryFile()
        os.dup2(self.sink.fileno(), 1)
        os.dup2(self.sink.fileno(), 2)

    def clear(self) -> None:
        self.libc.fflush(None)
        self.sink.seek(0)
        self.sink.truncate()

    def text(self) -> str:
        sys.stdout.flush()
        self.libc.fflush(None)
        self.sink.seek(0)
        return self.sink.read().decode(errors="replace")


def main() -> None:
    replies = os.fdopen(os.dup(1), "wb")  # before file descriptor 1 becomes the log
    requests = sys.stdin.buffer
    flatbuffer = pickle.load(requests)
    log = _Log()
    runtime = None
    while True:
        try:
            request = pickle.load(requests)
        except EOFError:
            return
        log.clear()
        try:
            if runtime is None:
                from tflite_micro.python.tflite_micro import runtime
            reply = ("ok", _serve(runtime, flatbuffer, request, log))
        except Exception as error:  # noqa: BLE001 (TFLM's own errors: RuntimeError, ValueError)
            reply = ("error", log.text(), f"{type(error).__name__}: {error}")
        pickle.dump(reply, replies)
        replies.flush()


if __name__ == "__main__":
    main()
