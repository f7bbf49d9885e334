"""What the docs and docstrings name exists: every module path and attribute they mention.

* Every dotted `sgt_tfmot.…` name and every `from sgt_tfmot… import …` in the README, the
  docs (not the changelog, which names what was removed on purpose), the package's data
  README and every source file of the package, the examples and the benchmarks imports and
  resolves: a module, then attributes (class attributes, dataclass fields and constructor
  arguments count).
* Every file or folder that docs/ARCHITECTURE.md and the README name in backticks
  (`masking.py`, `tflite/targets.py`, `explain/protocols/`, `quantizers.export_range_scale`)
  exists in the checkout or the package, and its module imports (and has the attribute).
"""

import configparser
import dataclasses
import importlib
import inspect
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
DOTTED = re.compile(r"(?<![\w./-])sgt_tfmot(?:\.[A-Za-z_]\w*)+")
FROM_IMPORT = re.compile(r"from (sgt_tfmot[\w.]*) import ([\w, ]+)")
SOURCES = ("sgt_tfmot", "tflite", "trainers", "examples", "benchmarks")


def texts() -> dict[str, str]:
    files = [ROOT / "README.md", ROOT / "sgt_tfmot" / "data_files" / "README.md"]
    files += [path for path in sorted((ROOT / "docs").glob("*.md")) if path.name != "CHANGELOG.md"]
    for folder in SOURCES:
        files += sorted((ROOT / folder).rglob("*.py"))
    return {str(path.relative_to(ROOT)): path.read_text() for path in files}


def _has(obj, attribute: str) -> bool:
    if hasattr(obj, attribute):
        return True
    if inspect.isclass(obj):  # instance attributes: dataclass fields, constructor arguments
        fields = {f.name for f in dataclasses.fields(obj)} if dataclasses.is_dataclass(obj) else ()
        return attribute in fields or attribute in inspect.signature(obj).parameters
    return False


def resolve(name: str) -> str | None:
    """None when `name` (a.b.c) is a module and attributes of it, else what is missing."""
    parts = name.split(".")
    for cut in range(len(parts), 0, -1):
        module = ".".join(parts[:cut])
        try:
            obj = importlib.import_module(module)
        except ModuleNotFoundError as error:
            if error.name is not None and (module + ".").startswith(error.name + "."):
                continue
            raise
        for at, attribute in enumerate(parts[cut:], cut):
            if not _has(obj, attribute):
                return f"{'.'.join(parts[:at])} has no {attribute!r}"
            obj = getattr(obj, attribute, None)
        return None
    return "no such module"


def named() -> dict[str, set[str]]:
    """Dotted name -> the files that name it."""
    found: dict[str, set[str]] = {}
    for where, text in texts().items():
        names = [match.rstrip(".") for match in DOTTED.findall(text)]
        for module, imported in FROM_IMPORT.findall(text):
            imported = [name.split(" as ")[0].strip() for name in imported.split(",")]
            names += [f"{module}.{name}" for name in imported if name]
        for name in names:
            found.setdefault(name, set()).add(where)
    return found


def test_every_dotted_name_in_docs_and_docstrings_exists():
    missing = []
    for name, where in sorted(named().items()):
        problem = resolve(name)
        if problem is not None:
            missing.append(f"{name} ({problem}), named in {', '.join(sorted(where))}")
    assert missing == []


def test_the_scan_sees_what_the_docs_name():
    found = named()
    assert "sgt_tfmot.explain.attributions" in found  # docs and docstrings
    assert "sgt_tfmot.data.embedded._make_mnist_subset" in found  # data_files/README.md
    assert resolve("sgt_tfmot.no_such_module") == "sgt_tfmot has no 'no_such_module'"
    assert resolve("sgt_tfmot.explain.attribution_maps") is None
    assert resolve("sgt_tfmot.data.DatasetInfo.mean") is None  # a dataclass field
    assert (
        resolve("sgt_tfmot.data.DatasetInfo.hflip") == "sgt_tfmot.data.DatasetInfo has no 'hflip'"
    )


def _package_dirs() -> dict[str, Path]:
    config = configparser.ConfigParser()
    config.read(ROOT / "setup.cfg")
    lines = config["options"]["package_dir"].strip().splitlines()
    pairs = (line.split("=") for line in lines if line.strip())
    return {package.strip(): ROOT / folder.strip() for package, folder in pairs}


def _module_of(path: Path) -> str | None:
    """The module a .py file or package folder of the checkout is, by setup.cfg's mapping."""
    path = path.with_suffix("") if path.suffix == ".py" else path
    best = None
    for package, folder in _package_dirs().items():
        if path == folder or folder in path.parents:
            if best is None or len(folder.parts) > len(best[1].parts):
                best = (package, folder)
    if best is None:
        return None
    parts = path.relative_to(best[1]).parts
    return ".".join((best[0], *[p for p in parts if p != "__init__"]))


PATH = re.compile(r"^((?:[\w<>]+/)*)([\w<>]+)(\.py|/)?(?:\.(\w+))?$")


def _module_file(folders: str, stem: str) -> bool:
    return any((root / f"{folders}{stem}.py").is_file() for root in (ROOT, ROOT / "sgt_tfmot"))


def documented_paths() -> list[tuple[str, str]]:
    """(the backticked text, the document) of every module path ARCHITECTURE and the README
    name: a .py file, a folder (ARCHITECTURE, which is about the code; the README's are the
    user's), or a module file's attribute (`quantizers.export_range_scale`)."""
    found = []
    for document in ("docs/ARCHITECTURE.md", "README.md"):
        for text in re.findall(r"`([^`\s]+)`", (ROOT / document).read_text()):
            match = PATH.match(text)
            if match is None:
                continue
            folders, stem, suffix, attribute = match.groups()
            if attribute is None and (
                suffix == ".py" or (suffix == "/" and document.startswith("docs/"))
            ):
                found.append((text, document))
            elif suffix is None and attribute is not None and _module_file(folders, stem):
                found.append((text, document))
    return found


def check_path(text: str) -> str | None:
    """None when the path exists (in the checkout or under sgt_tfmot/) and its module
    imports and has the attribute named after it; else what is wrong."""
    folders, stem, suffix, attribute = PATH.match(text).groups()
    if "<" in text:  # a placeholder (`sgt_tfmot/data/<name>.py`): its folder must exist
        folder = folders.split("<")[0]
        roots = (ROOT / folder, ROOT / "sgt_tfmot" / folder)
        return None if any(p.is_dir() for p in roots) else f"no folder {folder}"
    relative = f"{folders}{stem}{suffix or ''}"
    candidates = [ROOT / relative, ROOT / "sgt_tfmot" / relative]
    if suffix is None:  # `trainers/multi_worker.report_synchronised_metrics`
        candidates = [c.with_name(c.name + ".py") for c in candidates]
    path = next((c for c in candidates if c.exists()), None)
    if path is None:
        return "no such file or folder"
    if path.is_dir() and not (path / "__init__.py").exists():
        return None  # a data folder (`zoo/`, `data_files/`)
    module = _module_of(path.resolve())
    if module is None:
        return None  # outside the package (`examples/`, `tests/`)
    return resolve(module if attribute is None else f"{module}.{attribute}")


@pytest.mark.parametrize("text, document", documented_paths())
def test_every_file_architecture_and_readme_name_exists_and_imports(text, document):
    assert check_path(text) is None, f"{document} names `{text}`: {check_path(text)}"


def test_the_path_scan_sees_the_where_to_add_table():
    texts_found = {text for text, _ in documented_paths()}
    assert {"tflite/targets.py", "explain/protocols/", "quantizers.export_range_scale",
            "sgt_tfmot/data/<name>.py", "_registry.py"} <= texts_found  # fmt: skip
    assert check_path("tflite/targets.py") is None and check_path("tflite/checks.py")
    assert _module_of(ROOT / "tflite" / "targets.py") == "sgt_tfmot.tflite.targets"
