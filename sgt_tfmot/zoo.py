"""The model zoo: the trained models behind the figures of docs/RESULTS.md, in the repository.

Every command that takes a model accepts `zoo:NAME` (`python -m sgt_tfmot.convert --int8
zoo:cifar10-w4a4-sgt-ft ...`). An entry is a folder `zoo/NAME/` holding the run's
`model.h5`, `metrics.json` (its settings: the dataset comes from there) and `labels.txt`;
`zoo/manifest.json` names each entry with the command that trained it, the commit, the
dataset, the bits, the test accuracy and the sha256 of its model file, so the figures can be
re-checked without retraining and a changed file is noticed.

The zoo is found at `$SGT_TFMOT_ZOO`, else at `zoo/` beside the package in a checkout.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

from sgt_tfmot._checks import InputError
from sgt_tfmot._files import atomic_write, sha256

__all__ = ["PREFIX", "ZOO_ENV", "add", "entries", "resolve", "verify", "zoo_dir"]

PREFIX = "zoo:"
ZOO_ENV = "SGT_TFMOT_ZOO"
MANIFEST = "manifest.json"
FILES = ("model.h5", "metrics.json", "labels.txt")


def zoo_dir() -> Path:
    env = os.environ.get(ZOO_ENV)
    return Path(env) if env else Path(__file__).resolve().parents[1] / "zoo"


def entries() -> dict[str, dict]:
    """Name -> manifest entry."""
    path = zoo_dir() / MANIFEST
    if not path.is_file():
        return {}
    return json.loads(path.read_text())["models"]


def resolve(reference: str) -> Path:
    """The run-like folder of `zoo:NAME`.

    Raises:
      InputError: for an unknown name (the known ones are listed) or a missing folder.
    """
    name = reference[len(PREFIX) :]
    known = entries()
    if name not in known:
        listed = ", ".join(sorted(known)) or f"none (no {zoo_dir() / MANIFEST})"
        raise InputError(f"No zoo model {name!r}. The zoo has: {listed}.")
    folder = zoo_dir() / name
    if not (folder / "model.h5").is_file():
        raise InputError(f"zoo:{name}: {folder / 'model.h5'} is missing (set ${ZOO_ENV}?).")
    return folder


def verify(name: str) -> bool:
    """True when `zoo/NAME/model.h5` has the sha256 of the manifest."""
    return sha256(resolve(PREFIX + name) / "model.h5") == entries()[name]["sha256"]


def add(run_dir: str | os.PathLike, name: str, command: str, commit: str, note: str = "") -> dict:
    """Copies a finished run's model, metrics and labels into the zoo and records it."""
    run = Path(run_dir)
    metrics = json.loads((run / "metrics.json").read_text())
    folder = zoo_dir() / name
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
        "sha256": sha256(folder / "model.h5"),
        "size_bytes": (folder / "model.h5").stat().st_size,
        "note": note,
    }
    known = entries()
    known[name] = entry
    content = json.dumps({"models": dict(sorted(known.items()))}, indent=2) + "\n"
    atomic_write(zoo_dir() / MANIFEST, content.encode())
    return entry
