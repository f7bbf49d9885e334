"""The README's usage example runs as written."""

import re
from pathlib import Path

import pytest

README = Path(__file__).resolve().parents[1] / "README.md"


@pytest.mark.slow
def test_readme_usage_example_runs(tmp_path, monkeypatch, capsys):
    text = README.read_text()
    usage = text[text.index("## Usage") :]
    (code,) = re.findall(r"```python\n(.*?)```", usage, flags=re.S)[:1]
    monkeypatch.chdir(tmp_path)
    exec(compile(code, "README.md", "exec"), {})
    accuracy = float(capsys.readouterr().out.strip().splitlines()[-1].split(":")[1])
    assert 0.0 <= accuracy <= 1.0


def test_readme_starts_with_the_two_setup_commands():
    text = README.read_text()
    commands = re.findall(r"```bash\n(.*?)```", text, flags=re.S)
    assert (
        commands[0].strip() == 'python3 -m pip install -e ".[test]" && python3 -m sgt_tfmot.train'
    )
    assert commands[1].strip() == (
        'python3 -m pip install -e ".[test,tflm]" && python3 -m pip install --no-deps -r '
        "requirements/mediapipe.txt && python3 -m pytest -q -n 2 --dist worksteal"
    )
    ci = (README.parent / ".ci" / "run").read_text()
    assert "python3 -m pytest -q -n 2 --dist worksteal" in ci
    assert 'python3 -m pip install --quiet -e ".[test,tflm]"' in ci
    assert "python3 -m pip install --quiet --no-deps -r requirements/mediapipe.txt" in ci
    assert "python3 -m ruff check ." in ci and "python3 -m ruff format --check ." in ci
