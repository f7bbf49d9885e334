"""The layers of docs/ARCHITECTURE.md, read from the imports (ast), so the picture stays true.

core  (sgt_tfmot.*: quantizers, quantize, export, masking, data, models, saving, ...)
  <-  trainers | explain | tflite      (each imports core and itself, never a sibling)
  <-  apps (training, conversion, the CLIs and _cli)

and no import cycle anywhere (imports inside functions count: they run too). Module names
come from setup.cfg's `package_dir`, the mapping the installed package has (the top-level
`trainers/` and `tflite/` folders are `sgt_tfmot.trainers` and `sgt_tfmot.tflite`).
"""

import ast
import configparser
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
MIDDLE = ("sgt_tfmot.trainers", "sgt_tfmot.explain", "sgt_tfmot.tflite")
APPS = ("sgt_tfmot._cli", "sgt_tfmot.train", "sgt_tfmot.training", "sgt_tfmot.convert",
        "sgt_tfmot.conversion", "sgt_tfmot.explanation", "sgt_tfmot.explain.__main__")  # fmt: skip


def package_dirs() -> dict[str, Path]:
    """Package -> its folder, from setup.cfg's [options] package_dir."""
    config = configparser.ConfigParser()
    config.read(ROOT / "setup.cfg")
    lines = config["options"]["package_dir"].strip().splitlines()
    pairs = (line.split("=") for line in lines if line.strip())
    return {package.strip(): ROOT / folder.strip() for package, folder in pairs}


def modules() -> dict[str, Path]:
    """Module name -> file, for every .py file of every package of setup.cfg."""
    found = {}
    for package, folder in package_dirs().items():
        for path in folder.glob("*.py"):
            parts = path.relative_to(folder).with_suffix("").parts
            if parts[-1] == "__init__":
                parts = parts[:-1]
            found[".".join((package, *parts))] = path
    return found


def imports(name: str, path: Path, known) -> set[str]:
    """The package's modules that module `name` imports: `from a import b` is module `a.b`
    when that is a module, else `a` (b is an attribute of it); relative imports resolved."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            candidates = [[alias.name] for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*anchor, *([base] if base else [])])
            candidates = [[f"{base}.{alias.name}", base] for alias in node.names]
        else:
            continue
        for options in candidates:
            hit = next((option for option in options if option in known), None)
            if hit is not None:
                found.add(hit)
    return found


def graph() -> dict[str, set[str]]:
    known = modules()
    return {name: imports(name, path, known) - {name} for name, path in known.items()}


def cycles(edges: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components of more than one module (Tarjan), each sorted."""
    index, low, stack, on_stack, found = {}, {}, [], set(), []

    def visit(node):
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for target in sorted(edges.get(node, ())):
            if target not in index:
                visit(target)
                low[node] = min(low[node], low[target])
            elif target in on_stack:
                low[node] = min(low[node], index[target])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for node in sorted(edges):
        if node not in index:
            visit(node)
    return sorted(found)


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
    back_edges = []
    for name, targets in sorted(graph().items()):
        level, package = layer(name)
        for target in sorted(targets):
            target_level, target_package = layer(target)
            if target_level > level or (
                level == 1 and target_level == 1 and target_package != package
            ):
                back_edges.append(f"{name} -> {target}")
    assert back_edges == []


def test_no_import_cycles():
    assert cycles(graph()) == []


def test_the_cycle_finder_finds_cycles():
    edges = {"a": {"b"}, "b": {"c"}, "c": {"a", "d"}, "d": set(), "e": {"d"}}
    assert cycles(edges) == [["a", "b", "c"]]
    assert cycles({"a": {"b"}, "b": set()}) == []


def test_the_layering_test_sees_the_package_as_installed():
    known = modules()
    assert package_dirs()["sgt_tfmot.tflite"] == ROOT / "tflite"
    assert {
        "sgt_tfmot.quantize",
        "sgt_tfmot.trainers.saliency_guided",
        "sgt_tfmot.tflite.converter",
        "sgt_tfmot.explain.attributions.vanilla",
        "sgt_tfmot.conversion.stages",
    } <= set(known)
    assert not any(name.startswith(("tflite", "trainers")) for name in known)
    assert layer("sgt_tfmot.explain.__main__") == (2, None)
    assert layer("sgt_tfmot.explain.fidelity") == (1, "sgt_tfmot.explain")
    # `from package import module` is an edge to the module, `from module import name` to
    # the module; a relative import resolves against the importing module's package.
    vanilla = imports("sgt_tfmot.explain.attributions.vanilla",
                      known["sgt_tfmot.explain.attributions.vanilla"], known)  # fmt: skip
    assert vanilla == {
        "sgt_tfmot.explain.attributions._gradients",
        "sgt_tfmot.explain.attributions.base",
    }


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
