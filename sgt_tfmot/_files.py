"""Files the tools write: atomically, and never over a file they did not write themselves.

The ownership rule, in one place. Every directory that receives output of this package's
tools holds a manifest, `.sgt_tfmot.json`, naming each file a tool wrote there, which tool
wrote it and (for files written once) its sha256. A tool replaces an existing file only when
asked to (`--overwrite`) *and* the manifest says the file is its own, unchanged since it was
written; anything else is the user's and is never replaced or deleted.

Every file is written to a temporary name in its directory (`.NAME.XXXX.partial`) and then
renamed, so a kill at any moment leaves either the old file or the new one, never half of
one. Such temporary names count as the tool's own.

Files the tools *read* are checked before they are trusted: what a file says it holds (an
array's shape, a zip member's size) must fit the file's own size and `read_limit()` before
anything is allocated for it (`check_claim`).

A directory that one process at a time may write (a training run's) is locked with
`DirectoryLock`: a lock file in it, locked with flock(2), which the kernel releases when the
process ends, however it ends (a kill included), so a lock file left behind never blocks.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import socket
import tempfile
import time
from collections.abc import Iterable, Mapping
from pathlib import Path

from sgt_tfmot._checks import InputError

MANIFEST = ".sgt_tfmot.json"
PARTIAL_SUFFIX = ".partial"
LOCK_FILE = ".sgt_tfmot.lock"

__all__ = [
    "DEFLATE_MAX_RATIO",
    "LOCK_FILE",
    "MANIFEST",
    "DirectoryBusy",
    "DirectoryLock",
    "Manifest",
    "atomic_write",
    "check_claim",
    "check_memory",
    "check_output_dir",
    "check_output_file",
    "read_limit",
    "sha256",
    "size_text",
    "write_outputs",
]

# Deflate (zip, gzip) cannot expand its input more than 1032 times (RFC 1951: at best one
# 258-byte match per 2 bits): a compressed member claiming more is not what it says.
DEFLATE_MAX_RATIO = 1032


def sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as file:
        for block in iter(lambda: file.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def atomic_write(path: Path, content: bytes) -> None:
    """Writes `content` to `path` through a temporary file in the same directory."""
    path = Path(path)
    umask = os.umask(0)
    os.umask(umask)
    handle, name = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=PARTIAL_SUFFIX)
    try:
        with os.fdopen(handle, "wb") as file:
            file.write(content)
        os.chmod(name, 0o666 & ~umask)  # mkstemp makes 0600; write like open() would
        os.replace(name, path)
    except OSError as error:  # a full disk, say: name the file
        raise OSError(error.errno, error.strerror, str(path)) from None
    finally:
        if os.path.exists(name):
            os.remove(name)


def _is_partial_of(name: str, owned: Iterable[str]) -> bool:
    return PARTIAL_SUFFIX in name and any(name.startswith(f".{o}.") for o in owned)


class Manifest:
    """The `.sgt_tfmot.json` of one directory: which files our tools wrote there.

    Entries map a file (or sub-directory) name to {"tool": ..., "sha256": ... or None}; a
    None checksum marks a file the tool keeps changing (a training log) or a directory.
    """

    def __init__(self, directory: str | os.PathLike, entries: dict[str, dict] | None = None):
        self.directory = Path(directory)
        self.entries = dict(entries or {})

    @classmethod
    def read(cls, directory: str | os.PathLike) -> Manifest:
        """The manifest of `directory` (empty when there is none)."""
        path = Path(directory) / MANIFEST
        if not path.is_file():
            return cls(directory)
        try:
            entries = json.loads(path.read_text())["files"]
            if not isinstance(entries, dict):
                raise TypeError("files is not a mapping")
        except (OSError, ValueError, KeyError, TypeError) as error:
            raise InputError(
                f"{path} is not a readable sgt_tfmot manifest ({error}); remove it only if "
                "the files it listed are not needed."
            ) from None
        return cls(directory, entries)

    @property
    def exists(self) -> bool:
        return (self.directory / MANIFEST).is_file()

    def owner(self, name: str) -> str | None:
        """The tool that wrote `name`, when the file is still what that tool wrote."""
        entry = self.entries.get(name)
        if entry is None:
            return None
        path = self.directory / name
        if entry.get("sha256") and (not path.is_file() or sha256(path) != entry["sha256"]):
            return None
        return entry.get("tool")

    def foreign(self, tool: str) -> list[str]:
        """Names in the directory that `tool` did not write (the manifest itself excluded)."""
        owned = [name for name in self.entries if self.owner(name) == tool]
        names = sorted(p.name for p in self.directory.iterdir()) if self.directory.is_dir() else []
        return [
            name
            for name in names
            if name != MANIFEST and name not in owned and not _is_partial_of(name, owned)
        ]

    def record(self, name: str, tool: str, digest: str | None = None) -> None:
        self.entries[name] = {"tool": tool, "sha256": digest}

    def write(self) -> None:
        content = json.dumps({"files": self.entries}, indent=1, sort_keys=True) + "\n"
        atomic_write(self.directory / MANIFEST, content.encode())


def _nearest_existing(path: Path) -> Path:
    for ancestor in [path, *path.parents]:
        if ancestor.exists():
            return ancestor
    return Path(".")


def check_output_dir(path: str | os.PathLike, flag: str) -> Path:
    """Fails now, with one line, when the directory `path` cannot be created or written."""
    path = Path(path)
    existing = _nearest_existing(path)
    if not existing.is_dir():
        where = "is a file" if existing == path else f"cannot be created: {existing} is a file"
        raise InputError(f"--{flag} {path} {where}, not a directory.")
    if not os.access(existing, os.W_OK | os.X_OK):
        verb = "is not writable" if existing == path else f"cannot be created in {existing}"
        raise InputError(f"--{flag} {path} {verb} ({_why_not_writable(existing)}).")
    if _full(existing):
        raise InputError(f"--{flag} {path}: the file system of {existing} is full.")
    return path


def _full(path: Path) -> bool:
    """No byte left for this user on the file system of `path` (a nearly full one is found
    only when a write fails: nothing is left half-written then either)."""
    try:
        return os.statvfs(path).f_bavail == 0
    except OSError:
        return False


def _why_not_writable(path: Path) -> str:
    try:
        read_only = bool(os.statvfs(path).f_flag & os.ST_RDONLY)
    except OSError:
        read_only = False
    return "a read-only file system" if read_only else "permission denied"


def check_output_file(path: str | os.PathLike, flag: str, overwrite: bool) -> Path:
    """Fails now, with one line, unless the file `path` may be written (see module docstring)."""
    path = Path(path)
    if path.is_dir():
        raise InputError(f"--{flag} {path} is a directory; pass a file path.")
    check_output_dir(path.parent, flag)
    if path.exists() or path.is_symlink():
        if not overwrite:
            raise InputError(f"--{flag} {path} already exists; pass --overwrite to replace it.")
        if Manifest.read(path.parent).owner(path.name) is None:
            raise InputError(
                f"--{flag} {path} exists and was not written by sgt_tfmot (or was changed "
                "since); --overwrite only replaces the tools' own files. Remove it yourself "
                "or choose another path."
            )
    return path


def write_outputs(contents: Mapping[Path, bytes], tool: str) -> None:
    """Writes every file atomically and records it in its directory's manifest.

    All files are written to temporary names first and renamed only when every one of them
    was written, so a failure leaves no target touched.
    """
    temporary: dict[Path, str] = {}
    umask = os.umask(0)
    os.umask(umask)
    try:
        for path, content in contents.items():
            try:
                path.parent.mkdir(parents=True, exist_ok=True)
                handle, name = tempfile.mkstemp(
                    dir=path.parent, prefix=f".{path.name}.", suffix=PARTIAL_SUFFIX
                )
                temporary[path] = name
                with os.fdopen(handle, "wb") as file:
                    file.write(content)
                os.chmod(name, 0o666 & ~umask)
            except OSError as error:
                raise InputError(
                    f"{path}: cannot write it ({error.strerror}); none of the output files "
                    "was written."
                ) from None
        for path, name in temporary.items():
            os.replace(name, path)
    finally:
        for name in temporary.values():
            if os.path.exists(name):
                os.remove(name)
    by_directory: dict[Path, list[Path]] = {}
    for path in contents:
        by_directory.setdefault(path.parent, []).append(path)
    for directory, paths in by_directory.items():
        manifest = Manifest.read(directory)
        for path in paths:
            manifest.record(path.name, tool, hashlib.sha256(contents[path]).hexdigest())
        manifest.write()


class DirectoryBusy(InputError):
    """Another process holds the directory's `DirectoryLock`."""


class DirectoryLock:
    """An exclusive lock on a directory, held by one process until `release` or its end.

    The lock is `LOCK_FILE` in the directory, locked with flock(2). The kernel drops the lock
    when the process ends, however it ends, so the file of a killed process blocks nobody:
    the next process takes it over. The holder writes its pid, host and start time into the
    file, for the message another process gives. `release` removes the file (a finished
    directory keeps no lock file); a process that opened the file just before checks, once
    it holds the lock, that the file is still the one in the directory.
    """

    def __init__(self, path: Path, descriptor: int):
        self.path, self._descriptor = path, descriptor

    @classmethod
    def acquire(
        cls, directory: str | os.PathLike, create: bool = True, sign: bool = True
    ) -> DirectoryLock | None:
        """The lock of `directory` (None without `create` when it has no lock file); `sign`
        writes this process into the file.

        Raises:
          DirectoryBusy: when another process holds it; the message names that process.
        """
        path = Path(directory) / LOCK_FILE
        while True:
            flags = os.O_RDWR | (os.O_CREAT if create else 0)
            try:
                descriptor = os.open(path, flags, 0o666)
            except FileNotFoundError:
                if create:
                    raise
                return None
            try:
                fcntl.flock(descriptor, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                holder = _lock_holder(descriptor)
                os.close(descriptor)
                message = f"{directory} is in use by another process ({holder})"
                raise DirectoryBusy(message) from None
            try:
                current = os.stat(path).st_ino == os.fstat(descriptor).st_ino
            except FileNotFoundError:
                current = False
            if current:
                lock = cls(path, descriptor)
                try:
                    if sign:
                        lock._write_holder()
                except OSError:  # a full disk: no lock file left behind
                    lock.release()
                    raise
                return lock
            os.close(descriptor)  # its holder removed it meanwhile: take the current one

    @classmethod
    def check_free(cls, directory: str | os.PathLike) -> None:
        """Raises `DirectoryBusy` when another process holds the lock of `directory`; writes
        nothing (a lock file left by a process that ended is left as it is)."""
        if Path(directory).is_dir():
            lock = cls.acquire(directory, create=False, sign=False)
            if lock is not None:
                lock.release(remove=False)

    def _write_holder(self) -> None:
        since = time.strftime("%Y-%m-%d %H:%M:%S")
        text = f"pid {os.getpid()} on {socket.gethostname()}, since {since}\n"
        os.ftruncate(self._descriptor, 0)
        os.pwrite(self._descriptor, text.encode(), 0)

    def release(self, remove: bool = True) -> None:
        """Ends the lock; with `remove`, deletes the lock file first (while still held)."""
        if self._descriptor < 0:
            return
        if remove:
            try:
                if os.stat(self.path).st_ino == os.fstat(self._descriptor).st_ino:
                    os.remove(self.path)
            except FileNotFoundError:
                pass
        os.close(self._descriptor)
        self._descriptor = -1


def _lock_holder(descriptor: int) -> str:
    try:
        text = os.pread(descriptor, 200, 0).decode(errors="replace").strip()
    except OSError:
        text = ""
    return text or "a process that has not said which yet"


def read_limit() -> int:
    """Bytes one file may make a tool allocate: half of this machine's physical memory."""
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") // 2
    except (ValueError, OSError, AttributeError):  # no sysconf: a fixed 8 GiB
        return 8 << 30


def size_text(count: int) -> str:
    """A byte count for people: "512 bytes", "3.2 MiB", "9.09 TiB"."""
    if count < 1024:
        return f"{count} bytes"
    value = float(count)
    for unit in ("KiB", "MiB", "GiB", "TiB", "PiB", "EiB"):
        value /= 1024
        if value < 1024 or unit == "EiB":
            return f"{value:.3g} {unit}"
    return f"{count} bytes"


def check_claim(claimed: int, stored: int, what: str, compressed: bool = False) -> None:
    """Refuses data whose claimed size the file cannot hold, before it is read.

    Args:
      claimed: Bytes the data says it holds (shape x item size, a declared member size).
      stored: Bytes the file really has for it.
      what: Names the file and the data, for the message.
      compressed: The data is deflated: it may expand up to `DEFLATE_MAX_RATIO` times.

    Raises:
      InputError: naming `what`, the claim and what the file holds, or the limit.
    """
    most = stored * DEFLATE_MAX_RATIO if compressed else stored
    if claimed > most:
        how = "compressed in" if compressed else "stored in"
        raise InputError(
            f"{what} claims {size_text(claimed)} ({claimed:,} bytes) but only "
            f"{size_text(stored)} are {how} the file: damaged or not what it says; nothing "
            "was read."
        )
    check_memory(claimed, what)


def check_memory(claimed: int, what: str) -> None:
    """Refuses data that would take more than `read_limit()` bytes once read or decoded.

    Args:
      claimed: Bytes it would take in memory.
      what: Names the file and the data, for the message.

    Raises:
      InputError: naming `what`, the claim and the limit.
    """
    limit = read_limit()
    if claimed > limit:
        raise InputError(
            f"{what} claims {size_text(claimed)}, more than the {size_text(limit)} a file may "
            "take here (half of this machine's memory); nothing was read."
        )
