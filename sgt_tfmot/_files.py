"""Files the tools write: atomically, and never over a file they did not write themselves.

The ownership rule, in one place. Every directory that receives output of this package's
tools holds a manifest, `.sgt_tfmot.json`, naming each file a tool wrote there, which tool
wrote it and (for files written once) its sha256. A tool replaces an existing file only when
asked to (`--overwrite`) *and* the manifest says the file is its own, unchanged since it was
written; anything else is the user's and is never replaced or deleted.

Every file is written to a temporary name in its directory (`.NAME.XXXX.partial`) and then
renamed, so a kill at any moment leaves either the old file or the new one, never half of
one. Such temporary names count as the tool's own.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from collections.abc import Iterable, Mapping
from pathlib import Path

from sgt_tfmot._checks import InputError

MANIFEST = ".sgt_tfmot.json"
PARTIAL_SUFFIX = ".partial"

__all__ = [
    "MANIFEST",
    "Manifest",
    "atomic_write",
    "check_output_dir",
    "check_output_file",
    "sha256",
    "write_outputs",
]


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
        raise InputError(f"--{flag} {path} {verb} (permission denied).")
    return path


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
            path.parent.mkdir(parents=True, exist_ok=True)
            handle, name = tempfile.mkstemp(
                dir=path.parent, prefix=f".{path.name}.", suffix=PARTIAL_SUFFIX
            )
            temporary[path] = name
            with os.fdopen(handle, "wb") as file:
                file.write(content)
            os.chmod(name, 0o666 & ~umask)
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
