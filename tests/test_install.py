"""What an install needs: one version, the supported Pythons said once, package data for every
file the code reads, and no code that reads the checkout (.ci/wheel runs the installed wheel)."""

import configparser
import re
import subprocess
from pathlib import Path

import sgt_tfmot

ROOT = Path(__file__).resolve().parents[1]
CONFIG = configparser.ConfigParser()
CONFIG.read(ROOT / "setup.cfg")
PACKAGE_DIRS = {
    name.strip(): ROOT / folder.strip()
    for name, folder in (
        line.split("=") for line in CONFIG["options"]["package_dir"].strip().splitlines()
    )
}


def test_the_version_is_written_once_and_the_changelog_has_it():
    assert CONFIG["metadata"]["version"] == "attr: sgt_tfmot.__version__"
    assert re.fullmatch(r"\d+\.\d+\.\d+", sgt_tfmot.__version__)
    changelog = (ROOT / "docs" / "CHANGELOG.md").read_text()
    assert f"\n## {sgt_tfmot.__version__} (" in changelog


def test_python_requires_and_the_classifiers_name_the_same_pythons():
    classifiers = CONFIG["metadata"]["classifiers"]
    minors = sorted(int(m) for m in re.findall(r"Python :: 3\.(\d+)$", classifiers, re.M))
    assert minors == list(range(minors[0], minors[-1] + 1)) and minors[0] == 10
    assert CONFIG["options"]["python_requires"] == f">=3.{minors[0]},<3.{minors[-1] + 1}"
    assert f"Python 3.{minors[0]}" in (ROOT / "README.md").read_text()


def test_ci_finds_the_newest_and_the_oldest_python_from_the_classifiers():
    script = ROOT / ".ci" / "python"
    for which, expected in (("newest", "3.13"), ("oldest", "3.10")):
        found = subprocess.run(["bash", script, which], capture_output=True, text=True)
        if found.returncode:  # this machine lacks that Python: the one line says so
            assert found.stderr.startswith(f".ci/python: no Python {expected} "), found.stderr
            continue
        version = subprocess.run([found.stdout.strip(), "--version"], capture_output=True)
        assert version.stdout.decode().startswith(f"Python {expected}.")


def test_package_data_holds_every_data_file_in_the_package():
    data = CONFIG["options.package_data"]
    listed = set()
    for package, patterns in data.items():
        folder = PACKAGE_DIRS[package]
        for pattern in patterns.split(","):
            matches = list(folder.glob(pattern.strip()))
            assert matches, (package, pattern)
            listed |= set(matches)
    for folder in set(PACKAGE_DIRS.values()):
        for path in folder.rglob("*"):
            code = path.suffix in (".py", ".pyc") or "__pycache__" in path.parts
            if path.is_file() and not code:
                assert path in listed, f"{path} is not package data: a wheel would lack it"


CHECKOUT_ONLY = "# a checkout's, never a wheel's"


def _escapes(path: Path, root: Path) -> list[str]:
    """The `Path(__file__)` `.parent` / `.parents[N]` chains of `path` that leave `root`."""
    text = path.read_text()
    found = (
        [f"{path.name}: os.path on __file__"] if "(__file__" in text.replace("Path(", "") else []
    )
    chain = r"Path\(__file__\)(?:\.resolve\(\))?((?:\.parents\[\d+\]|\.parent\b)+)"
    for match in re.finditer(chain, text):
        line = text[match.start() : text.find("\n", match.end())]
        if line.endswith(CHECKOUT_ONLY):
            continue  # guarded: read only where it exists (`sgt_tfmot.zoo.checkout_zoo`)
        target = path.resolve()
        for step in re.findall(r"parents\[(\d+)\]|\.parent\b", match.group(1)):
            for _ in range(int(step) + 1 if step else 1):
                target = target.parent
        if target != root and root not in target.parents:
            found.append(f"{path.relative_to(root.parent)}: {match.group(0)} is {target}")
    return found


def test_no_code_reads_a_path_outside_its_package():
    roots = {folder for folder in PACKAGE_DIRS.values() if folder.parent == ROOT}
    assert {r.name for r in roots} == {"sgt_tfmot", "trainers", "tflite"}
    escapes = [e for root in roots for path in root.rglob("*.py") for e in _escapes(path, root)]
    assert escapes == []


def test_the_escape_check_sees_a_path_into_the_checkout(tmp_path):
    package = tmp_path / "sgt_tfmot"
    (package / "data").mkdir(parents=True)
    inside, outside = package / "data" / "a.py", package / "b.py"
    inside.write_text('F = Path(__file__).resolve().parents[1] / "data_files"\n')
    outside.write_text('Z = Path(__file__).resolve().parents[1] / "zoo"\n')  # 0.1.0's zoo.py
    assert _escapes(inside, package) == []
    assert _escapes(outside, package) == [
        f"sgt_tfmot/b.py: Path(__file__).resolve().parents[1] is {tmp_path}"
    ]
    outside.write_text(f"Z = Path(__file__).resolve().parents[1]  {CHECKOUT_ONLY}\n")
    assert _escapes(outside, package) == []
    assert sum(CHECKOUT_ONLY in p.read_text() for p in (ROOT / "sgt_tfmot").rglob("*.py")) == 1


def test_the_readme_names_the_zoos_default_url_and_how_to_change_it():
    from sgt_tfmot import zoo

    readme = (ROOT / "README.md").read_text()
    assert f"`{zoo.DEFAULT_URL}`" in readme
    for name in (zoo.ZOO_ENV, zoo.CACHE_ENV, zoo.URL_ENV, "--zoo_dir"):
        assert name in readme, name


def test_every_subpackage_is_listed_so_the_wheel_has_it():
    listed = set(CONFIG["options"]["packages"].split())
    found = set()
    for package, folder in PACKAGE_DIRS.items():
        if folder.parent != ROOT:
            continue
        for init in folder.rglob("__init__.py"):
            parts = init.parent.relative_to(folder).parts
            if package == "sgt_tfmot" or not any(p.startswith("test") for p in parts):
                found.add(".".join((package, *parts)))
    assert found - listed == set(), "add these to setup.cfg's packages and package_dir"
    assert listed - found == set()
