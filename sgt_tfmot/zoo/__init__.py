"""The model zoo: the trained models behind the figures of docs/RESULTS.md, by name.

Every command that takes a model accepts `zoo:NAME` (`python -m sgt_tfmot.convert --int8
zoo:cifar10-w4a4-sgt-ft ...`). An entry is a run-like folder `NAME/` holding the run's
`model.h5`, `metrics.json` (its settings: the dataset comes from there) and, for most,
`labels.txt`. The package's own `manifest.json` (package data, so it ships in the wheel)
names each entry with the command that trained it, the commit, the dataset, the bits, the
test accuracy, and the sha256 and size of each of its files.

`zoo:NAME` resolves in this order:

1. a local directory holding `NAME/`: the `--zoo_dir` flag of the CLIs or `$SGT_TFMOT_ZOO`;
   without either, the `zoo/` folder of the source checkout the package runs from (an
   editable install or `python -m` in the repository; a wheel has none, `checkout_zoo`);
2. the user cache, `$SGT_TFMOT_CACHE/zoo/NAME/` (default: `~/.cache/sgt_tfmot` on Linux,
   `$XDG_CACHE_HOME/sgt_tfmot` when set, `~/Library/Caches/sgt_tfmot` on macOS,
   `%LOCALAPPDATA%/sgt_tfmot/Cache` on Windows);
3. a download of the files the cache lacks from `$SGT_TFMOT_ZOO_URL/NAME/FILE` (default
   `DEFAULT_URL`, the `zoo/` folder of this release's tag in the project's repository),
   each checked against the manifest before it is renamed into the cache
   (`sgt_tfmot.zoo.download`).

Every file is checked against the manifest's sha256 before it is used, wherever it came
from. A name that cannot be resolved raises `ZooError`: one line saying what was tried and
how to point at a local copy.
"""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
import sys
from collections.abc import Mapping
from pathlib import Path

from sgt_tfmot import __version__
from sgt_tfmot._checks import InputError
from sgt_tfmot._files import atomic_write, sha256
from sgt_tfmot.zoo.download import DownloadError, download

__all__ = [
    "CACHE_ENV",
    "DEFAULT_URL",
    "PREFIX",
    "URL_ENV",
    "ZOO_ENV",
    "Zoo",
    "ZooError",
    "add",
    "cache_root",
    "checkout_zoo",
    "entries",
    "file_record",
    "problems",
    "resolve",
]

PREFIX = "zoo:"
ZOO_ENV = "SGT_TFMOT_ZOO"
CACHE_ENV = "SGT_TFMOT_CACHE"
URL_ENV = "SGT_TFMOT_ZOO_URL"
DEFAULT_URL = f"https://raw.githubusercontent.com/sgt-tfmot/sgt-tfmot/v{__version__}/zoo"
MANIFEST_FILE = Path(__file__).with_name("manifest.json")
FILES = ("model.h5", "metrics.json", "labels.txt")  # what `add` copies from a run


class ZooError(InputError):
    """A `zoo:` name that cannot be resolved; the message is one line."""


def entries() -> dict[str, dict]:
    """Name -> manifest entry, from the manifest that ships with the package."""
    return json.loads(MANIFEST_FILE.read_text())["models"]


_LISTED_CHARACTERS = 500  # of names in the one-line error; the rest are counted


def unknown_name(name: str, models: Mapping[str, dict]) -> str:
    """The one-line error for a name the zoo lacks: the names closest to it, then the zoo's
    names in order as far as one line allows (`entries()` has them all)."""
    import difflib

    names = sorted(models)
    close = difflib.get_close_matches(name, names, n=3, cutoff=0.6)
    hint = f" Did you mean {' or '.join(repr(n) for n in close)}?" if close else ""
    shown, length = [], 0
    for known in names:
        if length + len(known) > _LISTED_CHARACTERS:
            break
        shown.append(known)
        length += len(known) + 2
    rest = len(names) - len(shown)
    listed = ", ".join(shown) + (f", and {rest} more (sgt_tfmot.zoo.entries())" if rest else "")
    return f"No zoo model {name!r}.{hint} The zoo has {len(names)}: {listed or 'none'}."


def cache_root() -> Path:
    """The package's user cache directory: `$SGT_TFMOT_CACHE`, else the platform's."""
    if os.environ.get(CACHE_ENV):
        return Path(os.environ[CACHE_ENV]).expanduser()
    home = Path.home()
    if sys.platform == "win32":
        base = Path(os.environ.get("LOCALAPPDATA") or home / "AppData" / "Local")
        return base / "sgt_tfmot" / "Cache"
    if sys.platform == "darwin":
        return home / "Library" / "Caches" / "sgt_tfmot"
    return Path(os.environ.get("XDG_CACHE_HOME") or home / ".cache") / "sgt_tfmot"


def checkout_zoo() -> Path | None:
    """The `zoo/` folder of the source checkout this package is imported from, or None.

    A checkout is recognised by the repository's `setup.cfg` beside the package and its
    `zoo/` folder; an installed wheel has neither, so nothing outside the package is read
    there.
    """
    root = Path(__file__).resolve().parents[2]  # a checkout's, never a wheel's
    folder = root / "zoo"
    return folder if (root / "setup.cfg").is_file() and folder.is_dir() else None


def file_record(path: Path) -> dict:
    """A file's manifest record: {"sha256": ..., "size_bytes": ...}."""
    return {"sha256": sha256(path), "size_bytes": path.stat().st_size}


def problems(folder: Path, files: Mapping[str, dict]) -> dict[str, str]:
    """File name -> what is wrong with it in `folder` ("missing", or its size or hash)."""
    found = {}
    for name, record in files.items():
        path = folder / name
        if not path.is_file():
            found[name] = "missing"
        elif (size := path.stat().st_size) != record["size_bytes"]:
            found[name] = f"{size:,} bytes, the manifest says {record['size_bytes']:,}"
        elif sha256(path) != record["sha256"]:
            found[name] = "sha256 differs from the manifest's"
    return found


@dataclasses.dataclass(frozen=True)
class Zoo:
    """Where `zoo:` names are looked up: a manifest, a local copy, the cache, a base URL."""

    models: Mapping[str, dict]
    local_dir: Path | None
    cache_dir: Path
    base_url: str

    @classmethod
    def from_environment(cls) -> Zoo:
        """The package's manifest; `$SGT_TFMOT_ZOO` (else the checkout's `zoo/`), the user
        cache, `$SGT_TFMOT_ZOO_URL`."""
        local = os.environ.get(ZOO_ENV)
        return cls(
            models=entries(),
            local_dir=Path(local).expanduser() if local else checkout_zoo(),
            cache_dir=cache_root() / "zoo",
            base_url=os.environ.get(URL_ENV) or DEFAULT_URL,
        )

    def resolve(self, name: str) -> Path:
        """The folder holding `name`'s files, each checked against the manifest.

        Raises:
          ZooError: an unknown name (the known ones are listed), a local copy that differs
            from the manifest, or files that are neither local, cached nor downloadable.
        """
        if name not in self.models:
            raise ZooError(unknown_name(name, self.models))
        files = self.models[name]["files"]
        tried = []
        if self.local_dir is None:
            tried.append(f"no local zoo (${ZOO_ENV} or --zoo_dir; not run from a checkout)")
        else:
            folder = self.local_dir / name
            wrong = problems(folder, files)
            if not wrong:
                return folder
            changed = {file: why for file, why in wrong.items() if why != "missing"}
            if changed:
                file, why = next(iter(changed.items()))
                raise ZooError(
                    f"zoo:{name}: {folder / file} does not match the package's manifest ({why}): "
                    f"${ZOO_ENV} holds another version of the zoo; point it at this release's."
                )
            tried.append(f"{folder} (no {', '.join(wrong)})")
        return self._cached(name, files, tried)

    def _cached(self, name: str, files: Mapping[str, dict], tried: list[str]) -> Path:
        folder = self.cache_dir / name
        wrong = problems(folder, files)
        if wrong:
            tried.append(f"the cache {folder}")
        for file in wrong:
            url = f"{self.base_url.rstrip('/')}/{name}/{file}"
            try:
                download(url, folder / file, label=f"zoo:{name}/{file}", **files[file])
            except DownloadError as error:
                raise ZooError(
                    f"zoo:{name} not found; tried {', '.join(tried)}, {error}. Point "
                    f"${ZOO_ENV} or --zoo_dir at a copy of the zoo (a checkout's zoo/ "
                    f"folder), or ${URL_ENV} at a mirror of it."
                ) from None
            except OSError as error:  # the cache itself cannot be written
                reason = error.strerror or type(error).__name__
                raise ZooError(
                    f"zoo:{name}: cannot write the cache {folder} ({reason}); set "
                    f"${CACHE_ENV} to a writable directory, or ${ZOO_ENV} to a copy of the zoo."
                ) from None
        return folder


def resolve(reference: str) -> Path:
    """The run-like folder of `zoo:NAME` (see the module docstring for the order).

    Raises:
      ZooError: one line, for a name that is unknown or cannot be found or fetched.
    """
    return Zoo.from_environment().resolve(reference[len(PREFIX) :])


def add(
    run_dir: str | os.PathLike,
    name: str,
    command: str,
    commit: str,
    note: str = "",
    zoo_dir: str | os.PathLike | None = None,
) -> dict:
    """Copies a finished run's files into a zoo folder and records them in the manifest.

    For maintainers, in a checkout: the files go to `zoo_dir` (default `$SGT_TFMOT_ZOO`,
    the checkout's `zoo/`), the entry to the package's `manifest.json` beside this module.
    """
    target = zoo_dir or os.environ.get(ZOO_ENV)
    if not target:
        raise InputError(f"`zoo_dir` is needed (or ${ZOO_ENV}): the checkout's zoo/ folder.")
    run = Path(run_dir)
    metrics = json.loads((run / "metrics.json").read_text())
    folder = Path(target) / name
    folder.mkdir(parents=True, exist_ok=True)
    for file in FILES:
        if (run / file).is_file():
            shutil.copyfile(run / file, folder / file)
    flags = metrics.get("flags", {})
    entry = {
        "command": command,
        "commit": commit,
        "dataset": flags.get("dataset"),
        "bits": "float"
        if flags.get("float")
        else f"W{flags.get('weight_bits')}A{flags.get('activation_bits')}",
        "sgt": bool(flags.get("sgt")),
        "test_accuracy": metrics.get("test_accuracy"),
        "files": {file: file_record(folder / file) for file in FILES if (folder / file).is_file()},
        "note": note,
    }
    known = entries()
    known[name] = entry
    content = json.dumps({"models": dict(sorted(known.items()))}, indent=2) + "\n"
    atomic_write(MANIFEST_FILE, content.encode())
    return entry
