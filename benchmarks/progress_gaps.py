"""The longest silence of a command whose output goes to a log, not a terminal.

Runs the command with stdout and stderr on pipes (so it sees no terminal, as under a job
scheduler or `> log`), stamps every line it prints with the time it arrived, and reports the
longest gap between two lines (from the start to the first line too, up to the last line),
the time from the last line to the exit (the interpreter's and TensorFlow's teardown), the
number of lines and the exit status; `--show` prints the stamped lines. The tools promise a
line at least every 30 s while they work (`sgt_tfmot._progress`).

Usage:

    python benchmarks/progress_gaps.py [--show] -- python -m sgt_tfmot.train --max_steps 400
"""

from __future__ import annotations

import queue
import subprocess
import sys
import threading
import time


def _pump(stream, name: str, lines: queue.Queue) -> None:
    for line in iter(stream.readline, ""):
        lines.put((time.monotonic(), name, line.rstrip("\n")))
    lines.put((time.monotonic(), name, None))


def stamped_run(command: list[str]) -> tuple[int, float, list[tuple[float, str, str]]]:
    """(exit status, seconds in all, [(seconds since start, stream, line)])."""
    start = time.monotonic()
    process = subprocess.Popen(
        command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, bufsize=1
    )
    lines: queue.Queue = queue.Queue()
    for stream, name in ((process.stdout, "out"), (process.stderr, "err")):
        threading.Thread(target=_pump, args=(stream, name, lines), daemon=True).start()
    found, open_streams = [], 2
    while open_streams:
        stamp, name, line = lines.get()
        if line is None:
            open_streams -= 1
        else:
            found.append((stamp - start, name, line))
    status = process.wait()
    return status, time.monotonic() - start, found


def main(argv: list[str]) -> int:
    show = "--show" in argv[: argv.index("--")] if "--" in argv else False
    if "--" not in argv or argv.index("--") == len(argv) - 1:
        print(__doc__.strip(), file=sys.stderr)
        return 2
    command = argv[argv.index("--") + 1 :]
    status, total, lines = stamped_run(command)
    stamps = [0.0] + [stamp for stamp, _, _ in lines]
    gaps = [(b - a, a) for a, b in zip(stamps, stamps[1:], strict=False)] or [(total, 0.0)]
    longest, at = max(gaps)
    if show:
        for stamp, name, line in lines:
            print(f"{stamp:8.1f}s {name}  {line}")
    print(
        f"exit {status}; {len(lines)} lines in {total:.0f} s; longest silence {longest:.1f} s "
        f"(from {at:.1f} s); last line to exit {total - stamps[-1]:.1f} s; command: "
        f"{' '.join(command)}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
