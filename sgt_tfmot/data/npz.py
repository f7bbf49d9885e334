"""Datasets stored as numpy archives: a path to an `.npz`, or `DATA_DIR/NAME.npz`.

An `.npz` holds `x_train`, `y_train`, `x_test`, `y_test` (images uint8 (N, H, W) or
(N, H, W, C), labels integer (N,) or (N, 1)), and optionally `labels`, one class name per
class. Class names may instead come from a text file beside the archive, one name per line:
`NAME.labels.txt`, else `labels.txt`.

An archive is checked before it is trusted (`read_npz`): it must be a zip of `.npy` members;
only the members named above are read, each after its header: a dtype of numbers (class
names: text), never Python objects (nothing is ever unpickled), the rank of its key, and a
size (shape x item size) that the member really holds and that fits `read_limit()`.
"""

from __future__ import annotations

import math
import os
import zipfile
from pathlib import Path

import numpy as np

from sgt_tfmot._checks import InputError
from sgt_tfmot._files import check_claim
from sgt_tfmot.data.base import KEYS, Arrays, DataError, DataOptions, DataSource, check_arrays

__all__ = ["DataDirSource", "NpzFileSource", "read_labels_file", "read_npz"]

DATA_DIR_ENV = "SGT_TFMOT_DATA_DIR"


# What each member may hold: dtype kinds (b bool, i/u integers, f floats, U text) and ranks.
# `check_arrays` then checks the values (uint8 images, integer labels, ...).
_MEMBERS = {
    "x_train": ("biuf", (3, 4)), "y_train": ("biuf", (1, 2)),
    "x_test": ("biuf", (3, 4)), "y_test": ("biuf", (1, 2)),
    "labels": ("U", (1,)),
}  # fmt: skip
_MAX_HEADER = 10_000  # bytes of an .npy header (numpy's own default limit)


def _one_line(error: BaseException) -> str:
    lines = str(error).strip().splitlines()
    text = f"{type(error).__name__}: {lines[0] if lines else ''}".rstrip(": ")
    return text if len(text) <= 300 else text[:297] + "..."


def _unreadable(path: Path, reason: str) -> DataError:
    """One line saying why `path` is not a readable .npz (never numpy's pickle advice)."""
    return DataError(
        f"{str(path)!r} is not a readable .npz archive: {reason}. Expected numpy's .npz "
        f"(np.savez) with keys {', '.join(KEYS)}."
    )


def _not_a_zip(path: Path) -> str | None:
    """Why the file at `path` is not a zip archive, or None when it starts like one."""
    with open(path, "rb") as file:
        head = file.read(8)
    if not head:
        return "the file is empty"
    if head.startswith(np.lib.format.MAGIC_PREFIX):
        return (
            "it is a single .npy array (np.save), not an archive of arrays: write the dataset "
            "with np.savez(path, x_train=..., y_train=..., x_test=..., y_test=...)"
        )
    if head[:1] == b"\x80":
        return "it is a Python pickle, and pickles are never loaded"
    if not head.startswith(b"PK"):
        return "it is not a zip archive"
    return None


def _member_header(archive: zipfile.ZipFile, info: zipfile.ZipInfo, where: str):
    """(shape, dtype) of an .npy member, read from its header alone, checked against the
    member's own size and the read limit."""
    entry = f"{where} (its zip entry)"
    check_claim(info.compress_size, os.path.getsize(archive.filename), entry)
    check_claim(info.file_size, info.compress_size, entry,
                compressed=info.compress_type != zipfile.ZIP_STORED)  # fmt: skip
    with archive.open(info) as member:
        version = np.lib.format.read_magic(member)
        if version == (1, 0):
            header = np.lib.format.read_array_header_1_0(member, max_header_size=_MAX_HEADER)
        elif version == (2, 0):
            header = np.lib.format.read_array_header_2_0(member, max_header_size=_MAX_HEADER)
        else:
            raise ValueError(f"an .npy format version {version} this reader does not take")
        offset = member.tell()
    shape, _, dtype = header
    data_bytes = math.prod(shape) * dtype.itemsize
    check_claim(data_bytes, info.file_size - offset, f"{where} (shape {shape}, {dtype})")
    return shape, dtype


def _read_member(archive: zipfile.ZipFile, key: str, path: Path) -> np.ndarray:
    """The array `key` of the archive, its header checked before its data is read."""
    where = f"{str(path)!r} member {key}.npy"
    kinds, ranks = _MEMBERS[key]
    try:
        info = archive.getinfo(f"{key}.npy")
        shape, dtype = _member_header(archive, info, where)
    except (ValueError, EOFError, zipfile.BadZipFile, OSError) as error:
        if isinstance(error, InputError):
            raise DataError(str(error)) from None
        raise DataError(f"{where} is not a readable .npy array ({_one_line(error)}).") from None
    if dtype.hasobject:
        raise DataError(
            f"{where} holds Python objects (a pickled object array, dtype {dtype}); arrays "
            "are never unpickled: store numbers (images uint8, labels integers)."
        )
    if dtype.kind not in kinds or len(shape) not in ranks:
        expected = "text" if kinds == "U" else "numbers"
        raise DataError(
            f"{where} has shape {shape} and dtype {dtype}; {key} must hold {expected} of rank "
            f"{' or '.join(map(str, ranks))}."
        )
    try:
        with archive.open(info) as member:
            return np.lib.format.read_array(member, allow_pickle=False,
                                            max_header_size=_MAX_HEADER)  # fmt: skip
    except (ValueError, EOFError, zipfile.BadZipFile, OSError) as error:
        raise DataError(f"{where} is damaged or truncated ({_one_line(error)}).") from None


def read_labels_file(path: Path) -> tuple[str, ...]:
    """Class names, one per line (blank lines at the end ignored).

    Raises:
      DataError: for a file that is empty or not UTF-8.
    """
    try:
        text = Path(path).read_bytes().decode("utf-8")
    except UnicodeDecodeError:
        raise DataError(f"{path}: the label file is not UTF-8 text.") from None
    names = text.rstrip("\n").split("\n") if text.strip() else []
    names = [name.rstrip("\r") for name in names]
    if not names or any(not name.strip() for name in names):
        raise DataError(f"{path}: the label file must hold one non-empty class name per line.")
    return tuple(names)


def _class_names(path: Path, archive: zipfile.ZipFile, names: set[str]):
    if "labels" in names:
        return tuple(str(name) for name in _read_member(archive, "labels", path).tolist())
    for candidate in (path.with_suffix(".labels.txt"), path.parent / "labels.txt"):
        if candidate.is_file():
            return read_labels_file(candidate)
    return None


def read_npz(path: Path, source: str | None = None) -> Arrays:
    """The checked arrays of one .npz archive (see the module docstring for the checks).

    Raises:
      DataError: naming the file, for a file that is not a zip of .npy arrays (a lone .npy,
        a pickle, an empty or truncated file), lacks a key, holds a member that is not an
        array of numbers of its key's rank or claims more than it stores, or holds arrays
        that are not a dataset (`check_arrays`).
    """
    path = Path(path)
    reason = _not_a_zip(path)
    if reason is not None:
        raise _unreadable(path, reason)
    try:
        with zipfile.ZipFile(path) as archive:
            names = {n[: -len(".npy")] for n in archive.namelist() if n.endswith(".npy")}
            missing = [key for key in KEYS if key not in names]
            if missing:
                raise DataError(
                    f"{str(path)!r} has no key {missing[0]!r}. Keys found: "
                    f"{sorted(names)}; expected {', '.join(KEYS)} (and optionally labels)."
                )
            arrays = [_read_member(archive, key, path) for key in KEYS]
            class_names = _class_names(path, archive, names)
    except zipfile.BadZipFile as error:
        raise _unreadable(path, f"the zip archive is damaged or truncated ({error})") from None
    except OSError as error:
        raise _unreadable(path, _one_line(error)) from None
    return check_arrays(*arrays, class_names=class_names, source=source or repr(str(path)))


class NpzFileSource(DataSource):
    """A reference that is the path of an `.npz` file."""

    name = "npz"
    reference = "a path ending in .npz"

    def claims(self, reference: str, data_dir) -> bool:
        return reference.endswith(".npz")

    def load(self, reference: str, data_dir, options: DataOptions) -> Arrays:
        path = Path(reference)
        if not path.is_file():
            raise DataError(f"No .npz file at {reference!r}: the path does not exist.")
        return read_npz(path)


class DataDirSource(DataSource):
    """`DATA_DIR/NAME.npz` for any NAME: `data_dir` when given (the file must exist),
    else `$SGT_TFMOT_DATA_DIR` when it holds the file."""

    name = "data_dir"
    reference = f"NAME with --data_dir DIR (or ${DATA_DIR_ENV}) holding NAME.npz"

    def claims(self, reference: str, data_dir) -> bool:
        if data_dir is not None:
            return True
        env = os.environ.get(DATA_DIR_ENV)
        return bool(env) and (Path(env) / f"{reference}.npz").is_file()

    def load(self, reference: str, data_dir, options: DataOptions) -> Arrays:
        folder = Path(data_dir if data_dir is not None else os.environ[DATA_DIR_ENV])
        path = folder / f"{reference}.npz"
        if not path.is_file():
            raise DataError(
                f"data_dir {str(folder)!r} has no file {path.name!r} for dataset "
                f"{reference!r} (looked for {str(path)!r}). Expected an .npz with keys "
                f"{', '.join(KEYS)}."
            )
        return read_npz(path)
