"""sgt_tfmot._files: the run-directory lock, and what a file may make a tool allocate."""

import os
import signal
import subprocess
import sys

import pytest

from sgt_tfmot._checks import InputError
from sgt_tfmot._files import (
    DEFLATE_MAX_RATIO,
    LOCK_FILE,
    DirectoryBusy,
    DirectoryLock,
    check_claim,
    read_limit,
    size_text,
)

HOLD = """
import sys, time
from sgt_tfmot._files import DirectoryLock
lock = DirectoryLock.acquire(sys.argv[1])
print("held", flush=True)
time.sleep(600)
"""


def holder(directory):
    """A process holding the lock of `directory` (as a training run does)."""
    process = subprocess.Popen([sys.executable, "-c", HOLD, str(directory)],
                               stdout=subprocess.PIPE, text=True)  # fmt: skip
    assert process.stdout.readline().strip() == "held"
    return process


def test_a_held_lock_refuses_another_process_and_names_it(tmp_path):
    process = holder(tmp_path)
    try:
        before = (tmp_path / LOCK_FILE).read_bytes()
        busy = rf"is in use by another process \(pid {process.pid} on "
        with pytest.raises(DirectoryBusy, match=busy):
            DirectoryLock.acquire(tmp_path)
        with pytest.raises(DirectoryBusy):
            DirectoryLock.check_free(tmp_path)
        assert (tmp_path / LOCK_FILE).read_bytes() == before  # the refused side wrote nothing
        assert sorted(os.listdir(tmp_path)) == [LOCK_FILE]
    finally:
        process.kill()
        process.wait()


def test_the_lock_of_a_killed_process_is_taken_over(tmp_path):
    process = holder(tmp_path)
    process.send_signal(signal.SIGKILL)
    process.wait()
    assert (tmp_path / LOCK_FILE).exists()  # left behind, but not held any more
    DirectoryLock.check_free(tmp_path)  # writes nothing
    lock = DirectoryLock.acquire(tmp_path)
    assert f"pid {os.getpid()} " in (tmp_path / LOCK_FILE).read_text()
    lock.release()
    assert not (tmp_path / LOCK_FILE).exists()  # a released lock leaves no file


def test_a_lock_file_replaced_between_open_and_flock_is_not_taken(tmp_path, monkeypatch):
    """The file this process opened is removed by its ending holder and another process
    locks a new one before this process's flock: the lock on the removed file counts for
    nothing, the new holder is named."""
    import fcntl

    real, others = fcntl.flock, []

    def flock(descriptor, operation):
        if not others:
            os.remove(tmp_path / LOCK_FILE)
            others.append(holder(tmp_path))
        return real(descriptor, operation)

    (tmp_path / LOCK_FILE).write_text("pid 1 on a host, since a run that ended")
    monkeypatch.setattr(fcntl, "flock", flock)
    try:
        with pytest.raises(DirectoryBusy) as refused:
            DirectoryLock.acquire(tmp_path)
        assert f"(pid {others[0].pid} on " in str(refused.value)
    finally:
        for process in others:
            process.kill()
            process.wait()


def test_check_free_without_a_lock_file_creates_none(tmp_path):
    DirectoryLock.check_free(tmp_path)
    DirectoryLock.check_free(tmp_path / "missing")
    assert os.listdir(tmp_path) == []
    assert DirectoryLock.acquire(tmp_path, create=False) is None


@pytest.mark.parametrize(
    ("claimed", "stored", "compressed", "message"),
    [
        (10**13, 16, False, r"claims 9\.09 TiB \(10,000,000,000,000 bytes\) but only 16 bytes"),
        (DEFLATE_MAX_RATIO * 100 + 1, 100, True, "are compressed in the file"),
        (2 * 1024**5, 2 * 1024**5, False, "more than the .* a file may take here"),
    ],
)
def test_claims_a_file_cannot_hold_are_refused(claimed, stored, compressed, message):
    with pytest.raises(InputError, match=message):
        check_claim(claimed, stored, "x.npz member a.npy", compressed=compressed)


def test_claims_a_file_can_hold_pass():
    check_claim(100, 100, "a")
    check_claim(DEFLATE_MAX_RATIO * 100, 100, "a", compressed=True)
    assert 0 < read_limit() < 2 * 1024**5
    assert [size_text(n) for n in (512, 2048, 10**13)] == ["512 bytes", "2 KiB", "9.09 TiB"]
