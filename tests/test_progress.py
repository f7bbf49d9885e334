"""Progress lines in logs: sgt_tfmot._progress and the training status (step, images/s, ETA)."""

import io
import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path

import pytest

from sgt_tfmot._checks import InputError
from sgt_tfmot._progress import ENVIRONMENT, HEARTBEAT_SECONDS, Progress, duration_text
from sgt_tfmot.training import Plan
from sgt_tfmot.training.callbacks import TrainingProgress

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"


class Log(io.StringIO):
    """A stream that is not a terminal, with the time of each line."""

    def __init__(self):
        super().__init__()
        self.times = []

    def write(self, text):
        if text.endswith("\n"):
            self.times.append(time.monotonic())
        return super().write(text)

    def lines(self):
        return self.getvalue().splitlines()


def test_the_heartbeat_repeats_the_stage_in_a_log_and_stops_with_the_block():
    log = Log()
    with Progress("tool: ", stream=lambda: log, interval=0.2) as say:
        say("converting")
        time.sleep(0.7)
    lines = log.lines()
    assert lines[0] == "tool: converting"
    repeats = lines[1:]
    assert 2 <= len(repeats) <= 4, lines
    assert all(re.fullmatch(r"tool: converting \(still running, \d+s\)", line) for line in repeats)
    gaps = [b - a for a, b in zip(log.times, log.times[1:], strict=False)]
    assert max(gaps) < 0.2 + 0.15  # at least every interval (plus scheduling)
    count = len(log.lines())
    time.sleep(0.4)
    assert len(log.lines()) == count  # the heartbeat ended with the block


def test_a_live_status_is_printed_as_it_is_and_no_status_prints_nothing():
    log = Log()
    with Progress(stream=lambda: log, interval=0.1) as progress:
        time.sleep(0.3)
        assert log.lines() == []  # nothing to say yet: a refusal stays one line
        progress.update("step 3/10: 12.5 images/s, ETA 1s")
        time.sleep(0.25)
    assert log.lines()[0] == "step 3/10: 12.5 images/s, ETA 1s"


def test_no_heartbeat_on_a_terminal():
    class Terminal(Log):
        def isatty(self):
            return True

    terminal = Terminal()
    with Progress(stream=lambda: terminal, interval=0.1) as say:
        say("converting")
        time.sleep(0.35)
    assert terminal.lines() == ["converting"]


def hold_the_gil(seconds: float) -> None:
    """One C call that keeps Python's GIL for about `seconds` (sum over a range never lets
    another thread run), as TensorFlow's converter does for seconds at a time."""
    start = time.perf_counter()
    sum(range(10**6))
    per_item = (time.perf_counter() - start) / 10**6
    sum(range(int(seconds / per_item)))


@pytest.mark.slow
def test_in_a_file_the_heartbeat_prints_while_the_main_thread_holds_the_gil(tmp_path):
    log_path = tmp_path / "log"
    with open(log_path, "w") as log:
        with Progress("tool: ", stream=lambda: log, interval=0.5) as say:
            say("converting")
            started = time.monotonic()
            hold_the_gil(3.0)
            held = time.monotonic() - started
            during = log_path.read_text().splitlines()  # read as soon as the GIL was free
    assert during[0] == "tool: converting"
    # A thread could not print while the GIL was held; the heartbeat's own process did.
    assert len(during) - 1 >= held / 0.5 - 3, (held, during)
    assert all(re.fullmatch(r"tool: converting \(still running, \d+s\)", line)
               for line in during[1:]), during  # fmt: skip


def test_durations_read_like_a_clock():
    assert [duration_text(s) for s in (0, 45.4, 185, 7440)] == ["0s", "45s", "3m05s", "2h04m"]


def test_training_status_counts_global_steps_rate_and_eta(monkeypatch):
    clock = iter([100.0, 101.0, 103.0])  # batch ends: the first (after tracing), +1 s, +2 s
    monkeypatch.setattr("sgt_tfmot.training.callbacks.time.monotonic", lambda: next(clock))
    statuses = []

    class Recorder:
        def update(self, status, live=True):
            statuses.append((status, live))

    plan = Plan(steps_per_epoch=10, epochs=3, total_steps=30)
    callback = TrainingProgress(Recorder(), plan, batch_size=16, start_step=12)  # resumed
    callback.on_train_begin()
    for batch in range(3):
        callback.on_train_batch_end(batch)
    assert statuses[0] == ("step 12/30: building and tracing the training step", False)
    assert statuses[1] == ("step 13/30 (epoch 2/3)", True)  # no rate from one step
    # 2 steps of 16 images in 3 s since the first: 10.7 images/s; 15 steps left at 1.5 s.
    assert statuses[-1] == ("step 15/30 (epoch 2/3): 10.7 images/s, ETA 22s", True)


def test_the_interval_comes_from_the_environment_and_a_bad_value_is_refused(monkeypatch):
    monkeypatch.delenv(ENVIRONMENT, raising=False)
    assert Progress().interval == HEARTBEAT_SECONDS == 20
    monkeypatch.setenv(ENVIRONMENT, "5")
    assert Progress().interval == 5.0
    assert Progress(interval=0.2).interval == 0.2  # an explicit interval wins
    for bad in ("0", "-3", "soon", "nan", "1e9", ""):
        monkeypatch.setenv(ENVIRONMENT, bad)
        with pytest.raises(InputError) as caught:
            Progress()
        assert str(caught.value) == (
            f"{ENVIRONMENT}={bad!r}: the seconds between progress lines in a log must be a "
            "number in [1, 3600]; unset it for the default (20)."
        )


def stamped_lines(command, env):
    """(exit status, [(seconds since the start, line)], seconds in all) of a command whose
    stdout and stderr go to one pipe, as in a log."""
    start = time.monotonic()
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                               text=True, env=env)  # fmt: skip
    lines = [(time.monotonic() - start, line.rstrip("\n")) for line in process.stdout]
    return process.wait(timeout=60), lines, time.monotonic() - start


INTERVAL = 2  # seconds: the heartbeat's 20 s scaled down, so that a short run shows it
MARGIN = 10  # seconds: what the 20 s heartbeat keeps for its 30 s promise, kept here too


@pytest.mark.slow
def test_the_three_tools_in_a_log_print_a_line_at_least_every_interval(tmp_path):
    """train, convert and explain with their output in a pipe (no terminal): from the start
    (TensorFlow's import included) to their last line, a line at least every INTERVAL +
    MARGIN seconds, heartbeat lines among them. Before, a first epoch or a conversion was
    silent for minutes.

    The tools run as examples/your_own_images.py runs them, one after the other with their
    output in its own: this is also that example's test (its folder of images, run and files)."""
    env = {**os.environ, ENVIRONMENT: str(INTERVAL), "TF_CPP_MIN_LOG_LEVEL": "3"}
    env.pop("TF_CONFIG", None)
    out = tmp_path / "demo"
    command = [
        sys.executable, str(EXAMPLES / "your_own_images.py"), "--dataset", "mnist_subset",
        "--per_class", "5", "--max_steps", "2", "--train_args=--mixed_precision=float32",
        "--out_dir", str(out),
    ]  # fmt: skip
    code, lines, _ = stamped_lines(command, env)
    text = "\n".join(line for _, line in lines)
    # Train and explain failing fail the example; convert's exit status 1 (a check failed,
    # after a complete run) does not, another does.
    assert code == 0, text[-3000:]

    # Each tool's lines, from the time it started: the example prints "$ <command>" as it
    # starts train and explain. It prints nothing as it starts convert (after train's last
    # line, "Next: ..."): convert's are timed from its first line, its start-up heartbeat
    # being the one that train's and explain's show from their start.
    def first(prefix):
        return next(i for i, (_, line) in enumerate(lines) if line.startswith(prefix))

    train, convert = first("$ -m sgt_tfmot.train "), first("Next: python -m sgt_tfmot.convert")
    explain = first("$ -m sgt_tfmot.explain ")
    assert train < convert < explain, text
    tools = {  # name: (when it started, its lines)
        "train": (lines[train][0], lines[train + 1 : convert + 1]),
        "convert": (lines[convert + 1][0], lines[convert + 1 : explain]),
        "explain": (lines[explain][0], lines[explain + 1 :]),
    }
    for name, (start, own) in tools.items():
        assert own, f"{name}: no line\n{text[-3000:]}"
        tool_text = "\n".join(line for _, line in own)
        stamps = [start] + [stamp for stamp, _ in own]
        gaps = [b - a for a, b in zip(stamps, stamps[1:], strict=False)]
        assert max(gaps) < INTERVAL + MARGIN, f"{name}: {max(gaps):.1f} s of silence\n{tool_text}"
        assert "(still running, " in tool_text, f"{name}: no heartbeat line\n{tool_text}"

    # The example: a folder of PNGs per class, the run on it (--train_args reached it), the
    # integer model and the explanation.
    classes = sorted(p.name for p in (out / "images" / "train").iterdir())
    assert classes[:2] == ["00_0", "01_1"] and len(classes) == 10
    assert len(list((out / "images" / "test" / "00_0").iterdir())) == 1
    assert (out / "run" / "labels.txt").read_text().splitlines()[:2] == ["00_0", "01_1"]
    flags = json.loads((out / "run" / "metrics.json").read_text())["flags"]
    assert flags["mixed_precision"] == "float32"
    assert (out / "int8.tflite").is_file() and (out / "explain" / "report.md").is_file()
    assert json.loads((out / "int8.json").read_text())["class_names"][:2] == ["00_0", "01_1"]
    assert (out / "explain" / "maps.png").read_bytes()[:4] == b"\x89PNG"
