"""Plumbing shared by the command-line tools: run directories and atomic output files."""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path

METRICS_FILE = "metrics.json"


def run_flags(model_file: Path, error: type[ValueError]) -> dict:
    """The flags of the training run that wrote `model_file` (its metrics.json), or {}.

    Raises:
      `error`: when the run's metrics.json exists but cannot be read.
    """
    metrics = model_file.parent / METRICS_FILE
    if not metrics.is_file():
        return {}
    try:
        flags = json.loads(metrics.read_text()).get("flags", {})
    except (OSError, ValueError, AttributeError) as exc:
        raise error(
            f"Cannot read the training run's {metrics} ({exc}); pass --dataset (and "
            "--data_dir) explicitly."
        ) from None
    return flags if isinstance(flags, dict) else {}


def write_files(
    contents: dict[Path, bytes], overwrite: bool = True, error: type[ValueError] = ValueError
) -> None:
    """Writes every file to a temporary name in its directory, then renames all of them.

    Nothing half-written is ever left behind: on any failure the temporary files are removed
    and no target is touched.

    Raises:
      `error`: when a target appeared meanwhile and `overwrite` is False.
    """
    umask = os.umask(0)
    os.umask(umask)
    temporary: dict[Path, str] = {}
    try:
        for path, content in contents.items():
            path.parent.mkdir(parents=True, exist_ok=True)
            handle, name = tempfile.mkstemp(
                dir=path.parent, prefix=f".{path.name}.", suffix=".partial"
            )
            temporary[path] = name
            with os.fdopen(handle, "wb") as file:
                file.write(content)
            os.chmod(name, 0o666 & ~umask)  # mkstemp makes 0600; write like open() would
        for path in contents:
            if path.exists() and not overwrite:
                raise error(f"{path} appeared meanwhile; pass --overwrite to replace it.")
        for path, name in temporary.items():
            os.replace(name, path)
    finally:
        for name in temporary.values():
            if os.path.exists(name):
                os.remove(name)
