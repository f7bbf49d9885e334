"""Scripts of examples/ and benchmarks/ loaded as modules, to call their functions (and their
absl `main`) in the test's process: no second TensorFlow start per call."""

import importlib.util
import sys
from pathlib import Path
from types import ModuleType

ROOT = Path(__file__).resolve().parents[2]


def load_script(path: Path, monkeypatch) -> ModuleType:
    """The script at `path` (absolute, or relative to the repository) as a module named
    after its file. It is in sys.modules for the test (its dataclasses look it up there);
    the flags it defines stay in absl's FLAGS: use the `absl_flags_restored` fixture."""
    path = ROOT / path
    spec = importlib.util.spec_from_file_location(path.stem, path)
    module = importlib.util.module_from_spec(spec)
    monkeypatch.setitem(sys.modules, path.stem, module)
    spec.loader.exec_module(module)
    return module


def run_absl_main(module: ModuleType, argv: list[str]) -> None:
    """What `app.run(module.main)` does with the command line `argv` (its first item the
    program's name), without absl's logging and signal set-up: the flags parsed, then main."""
    from absl import flags

    module.main(flags.FLAGS(argv))
