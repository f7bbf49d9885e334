"""Datasets stored as numpy archives: a path to an `.npz`, or `DATA_DIR/NAME.npz`.

An `.npz` holds `x_train`, `y_train`, `x_test`, `y_test` (images uint8 (N, H, W) or
(N, H, W, C), labels integer (N,) or (N, 1)), and optionally `labels`, one class name per
class. Class names may instead come from a text file beside the archive, one name per line:
`NAME.labels.txt`, else `labels.txt`. Archives are read with `allow_pickle=False`.
"""

from __future__ import annotations

import os
import zipfile
from pathlib import Path

import numpy as np

from sgt_tfmot.data.base import KEYS, Arrays, DataError, DataOptions, DataSource, check_arrays

__all__ = ["DataDirSource", "NpzFileSource", "read_labels_file", "read_npz"]

DATA_DIR_ENV = "SGT_TFMOT_DATA_DIR"


def _one_line(error: BaseException) -> str:
    lines = str(error).strip().splitlines()
    text = f"{type(error).__name__}: {lines[0] if lines else ''}".rstrip(": ")
    return text if len(text) <= 300 else text[:297] + "..."


def _unreadable(path: Path, error: BaseException) -> str:
    """One line saying why `path` is not a readable .npz (never numpy's pickle advice)."""
    if isinstance(error, EOFError) or (path.is_file() and path.stat().st_size == 0):
        reason = "the file is empty"
    elif isinstance(error, zipfile.BadZipFile):
        reason = f"the zip archive is damaged or truncated ({error})"
    elif "pickle" in str(error):
        reason = "it is not a numpy archive (it would need pickle, which is never used)"
    else:
        reason = _one_line(error)
    return (
        f"{str(path)!r} is not a readable .npz archive: {reason}. Expected numpy's .npz "
        f"(np.savez) with keys {', '.join(KEYS)}."
    )


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


def _class_names(path: Path, archive) -> tuple[str, ...] | None:
    if "labels" in archive.files:
        return tuple(str(name) for name in archive["labels"].tolist())
    for candidate in (path.with_suffix(".labels.txt"), path.parent / "labels.txt"):
        if candidate.is_file():
            return read_labels_file(candidate)
    return None


def read_npz(path: Path, source: str | None = None) -> Arrays:
    """The checked arrays of one .npz archive.

    Raises:
      DataError: naming the file, for an archive that cannot be read, lacks a key, or
        holds arrays that are not a dataset (`check_arrays`).
    """
    path = Path(path)
    try:
        with np.load(path, allow_pickle=False) as archive:
            if not hasattr(archive, "files"):
                raise ValueError("it holds a single array, not an .npz archive of arrays")
            missing = [key for key in KEYS if key not in archive.files]
            if missing:
                raise DataError(
                    f"{str(path)!r} has no key {missing[0]!r}. Keys found: "
                    f"{sorted(archive.files)}; expected {', '.join(KEYS)} (and optionally "
                    "labels)."
                )
            arrays = [archive[key] for key in KEYS]
            names = _class_names(path, archive)
    except DataError:
        raise
    except (OSError, EOFError, ValueError, zipfile.BadZipFile) as error:
        raise DataError(_unreadable(path, error)) from None
    return check_arrays(*arrays, class_names=names, source=source or repr(str(path)))


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
