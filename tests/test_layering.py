"""The layers of docs/ARCHITECTURE.md, read from the imports (ast), so the picture stays true.

core  (sgt_tfmot.*: quantizers, quantize, export, masking, data, models, saving, ...)
  <-  trainers | explain | tflite      (each imports core and itself, never a sibling)
  <-  apps (training, conversion, the CLIs and _cli)
"""

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = {"sgt_tfmot": ROOT / "sgt_tfmot", "sgt_tfmot.trainers": ROOT / "trainers",
            "sgt_tfmot.tflite": ROOT / "tflite"}  # fmt: skip
MIDDLE = ("sgt_tfmot.trainers", "sgt_tfmot.explain", "sgt_tfmot.tflite")
APPS = ("sgt_tfmot._cli", "sgt_tfmot.train", "sgt_tfmot.training", "sgt_tfmot.convert",
        "sgt_tfmot.conversion", "sgt_tfmot.explain.__main__")  # fmt: skip


def modules():
    found = {}
    for package, folder in PACKAGES.items():
        for path in folder.rglob("*.py"):
            parts = path.relative_to(folder).with_suffix("").parts
            if parts[-1] == "__init__":
                parts = parts[:-1]
            name = ".".join((package, *parts))
            if package == "sgt_tfmot" and parts and parts[0] in ("trainers", "tflite"):
                continue
            found[name] = path
    return found


def imports(path: Path) -> set[str]:
    names = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module)
            names |= {f"{node.module}.{alias.name}" for alias in node.names}
    return {name for name in names if name.startswith("sgt_tfmot")}


def within(name: str, prefixes) -> bool:
    return any(name == p or name.startswith(p + ".") for p in prefixes)


def layer(name: str) -> tuple[int, str | None]:
    if within(name, APPS):
        return 2, None
    for package in MIDDLE:
        if within(name, (package,)):
            return 1, package
    return 0, None


def test_no_module_imports_a_higher_layer_or_a_sibling():
    known = modules()
    back_edges = []
    for name, path in sorted(known.items()):
        level, package = layer(name)
        for target in sorted(imports(path)):
            if target not in known and target.rsplit(".", 1)[0] not in known:
                continue  # an attribute, e.g. `from sgt_tfmot.keras import keras`
            target = target if target in known else target.rsplit(".", 1)[0]
            target_level, target_package = layer(target)
            if target_level > level or (
                level == 1 and target_level == 1 and target_package != package
            ):
                back_edges.append(f"{name} -> {target}")
    assert back_edges == []


def test_the_layering_test_sees_the_package():
    known = modules()
    assert {
        "sgt_tfmot.quantize",
        "sgt_tfmot.trainers.saliency_guided",
        "sgt_tfmot.tflite.converter",
        "sgt_tfmot.explain.attributions.vanilla",
        "sgt_tfmot.conversion.stages",
    } <= set(known)
    assert layer("sgt_tfmot.explain.__main__") == (2, None)
    assert layer("sgt_tfmot.explain.fidelity") == (1, "sgt_tfmot.explain")


def test_no_test_module_imports_another():
    """Shared test code lives in tests/helpers (and fixtures in tests/conftest.py)."""
    found = []
    for path in sorted((ROOT / "tests").rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom):
                names = [node.module if node.level == 0 else "." * node.level]
            else:
                continue
            for name in names:
                if name.startswith((".", "tests")) and not within(name, ("tests.helpers",)):
                    found.append(f"{path.relative_to(ROOT)} imports {name}")
    assert found == []
