"""The run directory and who owns it: the lock, flags.json, the resume point, --overwrite.

`inspect_run_directory` decides, reading only, what a run does with --out_dir (create,
resume, overwrite, or refuse); `open_run_directory` then locks it and writes the first files
(the manifest and flags.json). A run has finished when its metrics.json exists; until then
its backup/ is where it resumes (`backup_position`), and a run with the same flags resumes
there. `--overwrite` removes only the files the manifest names as the run's own.
"""

from __future__ import annotations

import csv
import dataclasses
import hashlib
import json
import os
import shutil
import tempfile
from pathlib import Path

from sgt_tfmot._checks import InputError
from sgt_tfmot._files import (
    LOCK_FILE,
    MANIFEST,
    DirectoryBusy,
    DirectoryLock,
    Manifest,
    atomic_write,
    check_output_dir,
)
from sgt_tfmot.keras import tf
from sgt_tfmot.saving import RUN_MODEL_FILE
from sgt_tfmot.training.config import TOOL, TrainConfig

BACKUP_DIR = "backup"
RUN_FILES = (
    MANIFEST, "flags.json", RUN_MODEL_FILE, "metrics.json", "history.csv", "history.json",
    "alpha.json", "alpha.png", "wall_time.json", "labels.txt", "tensorboard", BACKUP_DIR,
    LOCK_FILE,
)  # fmt: skip


@dataclasses.dataclass(frozen=True)
class RunDirectory:
    """Where a run writes, and where it stands.

    Attributes:
      out: The run directory.
      work: Where this process writes the run's files: `out` on the chief (or alone), a
        temporary directory on the other workers of a multi-worker run, which never touch
        `out` (it may not even exist on their hosts).
      finished: The run finished earlier (its metrics.json exists).
      resumes: The directory holds an unfinished run of the same settings.
      lock: The chief's lock on `out` while the run goes on (`sgt_tfmot._files.DirectoryLock`).
    """

    out: Path
    work: Path
    finished: bool
    resumes: bool
    lock: DirectoryLock | None = None

    @property
    def backup(self) -> Path:
        """This process's backup directory (see
        `sgt_tfmot.trainers.multi_worker.ChiefBackupAndRestore`)."""
        return self.work / BACKUP_DIR

    @property
    def is_chief(self) -> bool:
        return self.work == self.out

    def close(self) -> None:
        """Releases the lock (removing its file); a worker's temporary directory goes."""
        if self.lock is not None:
            self.lock.release()
        if not self.is_chief:
            shutil.rmtree(self.work, ignore_errors=True)


def _run_manifest(out: Path) -> Manifest:
    manifest = Manifest.read(out)
    for name in RUN_FILES:
        if name != MANIFEST:
            manifest.record(name, TOOL)
    return manifest


def _is_run_directory(out: Path) -> bool:
    return Manifest.read(out).owner("flags.json") == TOOL


CREATE, RESUME, OVERWRITE = "create", "resume", "overwrite"


def inspect_run_directory(config: TrainConfig) -> str:
    """What the run will do with --out_dir: CREATE, RESUME or OVERWRITE; writes nothing.

    Every refusal of the directory happens here, before a model is built or a file written
    (`open_run_directory` writes, after every other check passed).

    Raises:
      InputError: when the directory cannot be created or written; is in use by another
        training process; holds files that are not a run's (and is not empty); holds a
        finished run without --overwrite; holds an unfinished run with other settings; or,
        with --overwrite, holds anything besides the run's own files (named in the message).
    """
    out = check_output_dir(config.out_dir, "out_dir")
    try:
        DirectoryLock.check_free(out)
    except DirectoryBusy as error:
        raise _busy(error) from None
    return _decide(config, out)


def _busy(error: DirectoryBusy) -> InputError:
    return InputError(
        f"--out_dir {error}: another {TOOL} is training there; wait for it to end, or choose "
        "another --out_dir."
    )


def _decide(config: TrainConfig, out: Path) -> str:
    if out.is_dir() and any(p.name != LOCK_FILE for p in out.iterdir()):
        if not _is_run_directory(out):
            raise InputError(
                f"--out_dir {out} is not empty and is not a sgt_tfmot run directory (no "
                f"{MANIFEST} naming its files); choose another --out_dir."
            )
        finished = (out / "metrics.json").is_file()
        if config.overwrite:
            foreign = Manifest.read(out).foreign(TOOL)
            if foreign:
                shown = ", ".join(foreign[:5]) + (", ..." if len(foreign) > 5 else "")
                raise InputError(
                    f"--out_dir {out} holds files that are not the run's own ({shown}); "
                    "--overwrite only replaces a run's own files: move them elsewhere or "
                    "choose another --out_dir."
                )
            return OVERWRITE
        if finished:  # a kill at the very end left these; nobody holds the lock
            shutil.rmtree(out / BACKUP_DIR, ignore_errors=True)
            (out / LOCK_FILE).unlink(missing_ok=True)
            raise InputError(
                f"--out_dir {out} holds a finished run; pass --overwrite to train again "
                "there, or choose another --out_dir."
            )
        if (out / "flags.json").is_file():
            detail = config.changes_from(json.loads((out / "flags.json").read_text()))
            if detail:
                raise InputError(
                    f"--out_dir {out} holds an unfinished run with other settings ({detail}); "
                    "rerun with the same flags to resume, or pass --overwrite."
                )
            return RESUME
    return CREATE


def open_run_directory(config: TrainConfig, expected: str) -> RunDirectory:
    """Locks --out_dir, checks it is still as `inspect_run_directory` found it, and creates,
    resumes or (with --overwrite) clears it, by the ownership rule.

    Nothing stays behind when it refuses: a directory it created is removed again.

    Raises:
      InputError: when another training process took the directory meanwhile, or it changed.
    """
    out = Path(config.out_dir)
    created = [p for p in [out, *out.parents] if not p.exists()]
    try:
        out.mkdir(parents=True, exist_ok=True)
        lock = DirectoryLock.acquire(out)
    except (DirectoryBusy, OSError) as error:
        _remove_empty(created)
        if isinstance(error, DirectoryBusy):
            raise _busy(error) from None
        raise InputError(f"--out_dir {out}: cannot write there ({error.strerror}).") from None
    written: list[Path] = []
    try:
        action = _decide(config, out)
        if action != expected:
            raise InputError(
                f"--out_dir {out} changed while this run was starting (another process wrote "
                "there); run the command again."
            )
        if action == OVERWRITE:
            _remove_run_files(out)
        written = [out / name for name in (MANIFEST, "flags.json") if not (out / name).exists()]
        _run_manifest(out).write()
        if action != RESUME:
            atomic_write(out / "flags.json", json.dumps(config.run_settings(), indent=2).encode())
    except BaseException as error:
        for path in written:  # a full disk, say: take back what this run wrote
            path.unlink(missing_ok=True)
        lock.release()
        _remove_empty(created)
        if isinstance(error, OSError):
            raise InputError(f"--out_dir {out}: cannot write there ({error.strerror}).") from None
        raise
    return RunDirectory(out, out, finished=False, resumes=action == RESUME, lock=lock)


def _remove_empty(directories: list[Path]) -> None:
    """Removes the directories this process created (deepest first) if they are empty."""
    for directory in directories:
        try:
            directory.rmdir()
        except OSError:
            return


def _remove_run_files(out: Path) -> None:
    for name in RUN_FILES:
        path = out / name
        if name in (MANIFEST, LOCK_FILE):
            continue
        if path.is_dir() and not path.is_symlink():
            shutil.rmtree(path)
        elif path.exists() or path.is_symlink():
            path.unlink()
    for path in out.glob(".*.partial*"):
        path.unlink()


def backup_position(backup: Path, steps_per_epoch: int) -> tuple[int, int] | None:
    """(epoch, step in epoch) where `fit` resumes from the backup, Keras's own rule."""
    latest = tf.train.latest_checkpoint(str(backup / "chief"))
    if latest is None:
        return None
    reader = tf.train.load_checkpoint(latest)
    epoch = int(reader.get_tensor("ckpt_saved_epoch/.ATTRIBUTES/VARIABLE_VALUE"))
    batch = int(reader.get_tensor("ckpt_saved_batch/.ATTRIBUTES/VARIABLE_VALUE"))
    if batch < 0:
        return epoch + 1, 0
    if batch == steps_per_epoch - 1:
        return epoch + 1, 0
    return epoch, batch + 1


def worker_directory(out_dir: str, task: str, resumes: bool) -> RunDirectory:
    """The directory into which a non-chief worker (`task`, e.g. "worker1") writes its copy of
    the run's files.

    It is a temporary directory named after the task and the run directory, so a worker
    restarted after a kill (which leaves it behind) clears it; it is removed when `train` ends.
    """
    digest = hashlib.sha1(os.path.abspath(out_dir).encode()).hexdigest()[:12]
    work = Path(tempfile.gettempdir()) / f"sgt_tfmot-{task}-{digest}"
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    return RunDirectory(Path(out_dir), work, finished=False, resumes=resumes)


def truncate_history(path: Path, epoch: int) -> None:
    """Keeps the history rows of the epochs before `epoch` (a resumed run redoes the rest)."""
    if not path.exists():
        return
    with path.open(newline="") as file:
        rows = list(csv.reader(file))
    if not rows:
        return
    kept = [rows[0]] + [row for row in rows[1:] if row and int(row[0]) < epoch]
    lines = [",".join(row) for row in kept]
    atomic_write(path, ("\n".join(lines) + "\n").encode())
