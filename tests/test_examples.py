"""Every example runs under its step cap (so examples cannot rot)."""

import subprocess
import sys
from pathlib import Path

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"


def test_reproduce_paper_under_a_step_cap(tmp_path):
    out = tmp_path / "paper"
    command = [
        sys.executable, str(EXAMPLES / "reproduce_paper.py"), "--datasets", "mnist_subset",
        "--max_steps", "1", "--out_dir", str(out), "--progress", "0",
    ]  # fmt: skip
    result = subprocess.run(command, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    table = (out / "table.md").read_text()
    assert "| mnist_subset | 8 | PACT only | 1 |" in table
    assert "| mnist_subset | 8 | SGT + PACT | 1 |" in table
    assert "| 99.35 |" in table  # the paper's number sits next to ours
    for run in ("mnist_subset-pact", "mnist_subset-sgt"):
        assert (out / run / "metrics.json").is_file()
    # Rerunning reuses the finished runs instead of training again.
    again = subprocess.run(command, capture_output=True, text=True, timeout=600)
    assert again.returncode == 0 and again.stdout.count("finished earlier, reusing") == 2


def test_your_own_images_under_a_step_cap(tmp_path):
    out = tmp_path / "demo"
    command = [
        sys.executable, str(EXAMPLES / "your_own_images.py"), "--dataset", "mnist_subset",
        "--per_class", "5", "--max_steps", "2", "--out_dir", str(out),
    ]  # fmt: skip
    result = subprocess.run(command, capture_output=True, text=True, timeout=900)
    assert result.returncode == 0, result.stderr[-3000:]
    classes = sorted(p.name for p in (out / "images" / "train").iterdir())
    assert classes[:2] == ["00_0", "01_1"] and len(classes) == 10
    assert len(list((out / "images" / "test" / "00_0").iterdir())) == 1
    assert (out / "run" / "labels.txt").read_text().splitlines()[:2] == ["00_0", "01_1"]
    assert (out / "int8.tflite").is_file() and (out / "explain" / "report.md").is_file()
