"""Progress lines in logs: sgt_tfmot._progress and the training status (step, images/s, ETA)."""

import io
import re
import time

from sgt_tfmot._progress import Progress, duration_text
from sgt_tfmot.training import TrainingProgress, _Plan


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


def test_durations_read_like_a_clock():
    assert [duration_text(s) for s in (0, 45.4, 185, 7440)] == ["0s", "45s", "3m05s", "2h04m"]


def test_training_status_counts_global_steps_rate_and_eta(monkeypatch):
    clock = iter([100.0, 101.0, 103.0])  # batch ends: the first (after tracing), +1 s, +2 s
    monkeypatch.setattr("sgt_tfmot.training.time.monotonic", lambda: next(clock))
    statuses = []

    class Recorder:
        def update(self, status, live=True):
            statuses.append((status, live))

    plan = _Plan(steps_per_epoch=10, epochs=3, total_steps=30)
    callback = TrainingProgress(Recorder(), plan, batch_size=16, start_step=12)  # resumed
    callback.on_train_begin()
    for batch in range(3):
        callback.on_train_batch_end(batch)
    assert statuses[0] == ("step 12/30: building and tracing the training step", False)
    assert statuses[1] == ("step 13/30 (epoch 2/3)", True)  # no rate from one step
    # 2 steps of 16 images in 3 s since the first: 10.7 images/s; 15 steps left at 1.5 s.
    assert statuses[-1] == ("step 15/30 (epoch 2/3): 10.7 images/s, ETA 22s", True)
