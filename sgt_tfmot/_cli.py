"""Plumbing shared by the command-line tools: the main() frame, run directories and atomic
output files."""

from __future__ import annotations

import json
import os
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path

from absl import flags

METRICS_FILE = "metrics.json"
EXIT_OK, EXIT_BAD_INPUT = 0, 2


class UsageError(ValueError):
    """A command line that cannot run (a missing or extra argument); printed as one line."""


def run_main(
    argv: list[str],
    program: str,
    flag_values: flags.FlagValues,
    module_name: str,
    body: Callable[[list[str]], int],
) -> int:
    """The frame of a CLI's main(): parse, --help, run `body`, turn bad input into one line.

    Parses `argv` into the tool's own `flag_values` (not absl's global FLAGS, so the
    package's CLIs can be imported together), prints the module docstring and flag help for
    --help, and otherwise returns `body(positional arguments)`. A flag error, or a
    ValueError / OSError from `body` (a `UsageError`, a model that cannot be loaded, an
    unwritable path, ...), is printed as "PROGRAM: error: <its first line>" on stderr and
    gives exit status 2, never a traceback.
    """
    flag_values.unparse_flags()
    try:
        positional = flag_values(list(argv))[1:]
    except flags.Error as error:
        return _bad_input(program, str(error))
    if flag_values["help"].value:
        module = sys.modules[module_name]
        print(module.__doc__.strip() + "\n\nFlags:\n" + flag_values.module_help(module))
        return EXIT_OK
    try:
        return body(positional)
    except (ValueError, OSError) as error:
        return _bad_input(program, str(error) or type(error).__name__)


def _bad_input(program: str, message: str) -> int:
    lines = message.strip().splitlines()
    print(f"{program}: error: {lines[0] if lines else message}", file=sys.stderr)
    return EXIT_BAD_INPUT


def progress(program: str) -> Callable[[str], None]:
    """A progress callback printing "PROGRAM: message" lines on stderr."""
    return lambda message: print(f"{program}: {message}", file=sys.stderr)


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
