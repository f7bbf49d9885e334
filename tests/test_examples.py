"""Every example runs under its step cap (so examples cannot rot).

The training examples run mobilenet_tiny (`--model`) instead of their default ResNet-20:
what is checked is the example's plumbing (runs, tables, reuse, figures, errors), and
ResNet-20 only takes longer to build and trace."""

import json
import subprocess
import sys
from pathlib import Path

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"


def test_reproduce_paper_under_a_step_cap(tmp_path):
    out = tmp_path / "paper"
    command = [
        sys.executable, str(EXAMPLES / "reproduce_paper.py"), "--datasets", "mnist_subset",
        "--max_steps", "1", "--model", "mobilenet_tiny", "--out_dir", str(out), "--progress", "0",
    ]  # fmt: skip
    result = subprocess.run(command, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    table = (out / "table.md").read_text()
    assert "| mnist_subset | 8 | PACT only | 1 |" in table
    assert "| mnist_subset | 8 | SGT + PACT | 1 |" in table
    assert "| 99.35 |" in table  # the paper's number sits next to ours
    for run in ("mnist_subset-pact", "mnist_subset-sgt"):
        metrics = json.loads((out / run / "metrics.json").read_text())
        assert metrics["flags"]["model"] == "mobilenet_tiny"  # --model reached the run
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


def test_bitwidth_sweep_under_a_step_cap(tmp_path, capsys, monkeypatch):
    import importlib.util

    import pytest

    out = tmp_path / "sweep"
    command = [
        sys.executable, str(EXAMPLES / "bitwidth_sweep.py"), "--dataset", "mnist_subset",
        "--bits", "float,2", "--max_steps", "1", "--batch_size", "16", "--curve_images", "32",
        "--agreement_images", "8", "--methods", "vanilla", "--model", "mobilenet_tiny",
        "--out_dir", str(out), "--progress", "0",
    ]  # fmt: skip
    result = subprocess.run(command, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    metrics = {
        name: json.loads((out / name / "metrics.json").read_text())
        for name in ("float-pact", "float-sgt", "2-pact", "2-sgt")
    }
    rows = {
        line.split("|")[1].strip(): [cell.strip() for cell in line.strip().strip("|").split("|")]
        for line in (out / "table.md").read_text().splitlines()
        if line.startswith("| ") and not line.startswith("| model")
    }
    assert sorted(rows) == sorted(metrics)  # one table per protocol, the same four models
    table = (out / "table.md").read_text()
    assert "## vanilla gradient: ROAD (pixels, noisy linear imputation (noise 0.01) fill)" in table
    assert {m["flags"]["model"] for m in metrics.values()} == {"mobilenet_tiny"}
    for name, cells in rows.items():
        _, bits, training, accuracy, top, bottom, random, separation, below, share, rho = cells
        assert bits == name.split("-")[0]
        assert training == {"float-pact": "plain", "float-sgt": "SGT", "2-pact": "PACT only",
                            "2-sgt": "SGT + PACT"}[name]  # fmt: skip
        # The accuracy column is metrics.json's test accuracy, in %.
        assert float(accuracy) == pytest.approx(100 * metrics[name]["test_accuracy"], abs=0.006)
        for area in (top, bottom, random):  # over 0..0.9 removed, accuracy in [0, 1]
            assert 0.0 <= float(area) <= 0.9
        assert float(separation) == pytest.approx(float(bottom) - float(top), abs=0.0015)
        assert below == ("yes" if float(top) < float(random) else "no")
        rho = rho.removesuffix(" FAILED")  # a failed sanity check is marked
        for value in (share, rho):  # n/a only where every map is all zero
            assert value == "n/a" or -1.0 <= float(value) <= 1.0
    for figure in ("drop_vanilla.png", "drop_vanilla_road.png"):
        assert (out / figure).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    summary = json.loads((out / "sweep.json").read_text())
    assert [run["name"] for run in summary["runs"]] == list(metrics)
    assert len(summary["methods"]["vanilla"]["rows"]) == 4 * 2  # the pixel and ROAD protocols

    # Rerunning reuses the four finished runs (called in-process: no second evaluation).
    spec = importlib.util.spec_from_file_location("bitwidth_sweep", EXAMPLES / "bitwidth_sweep.py")
    sweep = importlib.util.module_from_spec(spec)
    monkeypatch.setitem(sys.modules, "bitwidth_sweep", sweep)  # its dataclasses look it up
    spec.loader.exec_module(sweep)
    settings = sweep.SweepSettings(
        dataset="mnist_subset", bits=("float", 2), out_dir=str(out), model="mobilenet_tiny",
        max_steps=1, batch_size=16, progress=0, methods=("vanilla",), curve_images=32,
        agreement_images=8,
    )  # fmt: skip
    capsys.readouterr()
    runs = sweep.train_runs(settings)
    assert [run.reused for run in runs] == [True] * 4
    assert capsys.readouterr().out.count("finished earlier, reusing") == 4
    # A finished run is not reused for other settings.
    with pytest.raises(ValueError, match=r"finished run with other settings \(epochs: 5 -> 2\)"):
        sweep.train_runs(sweep.dataclasses.replace(settings, epochs=2))
    assert sweep.parse_bits(["float", "8", "2"]) == ("float", 8, 2)
    for bits in (["9"], ["1"], [], ["abc"], ["4", "4"]):
        with pytest.raises(sweep.InputError) as caught:
            sweep.parse_bits(bits)
        assert caught.value.for_flags().startswith("--bits must list float and/or integer bit")

    # Bad input: one line on stderr, exit status 2, nothing written.
    bad = [*command[:4], "--bits", "9", "--out_dir", str(tmp_path / "bad")]
    result = subprocess.run(bad, capture_output=True, text=True, timeout=300)
    assert result.returncode == 2
    assert result.stderr.splitlines() == [
        "bitwidth_sweep: error: --bits must list float and/or integer bit widths in [2, 8], "
        "each once, e.g. float,8,4,3,2. Received: '9'"
    ]
    assert not (tmp_path / "bad").exists()
