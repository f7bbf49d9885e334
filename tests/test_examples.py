"""Every example runs under its step cap (so examples cannot rot).

The training examples run mobilenet_tiny (`--model`) instead of their default ResNet-20,
in float32 (`--mixed_precision`; "auto" trains in bfloat16 on a CPU that has it, then
evaluates each run again in float32): what is checked is the example's plumbing (runs,
tables, reuse, figures, errors), and ResNet-20 and bfloat16 only take longer."""

import json
import subprocess
import sys
from pathlib import Path

import pytest

from tests.helpers.scripts import load_script

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"


@pytest.mark.slow
@pytest.mark.usefixtures("absl_flags_restored")
def test_reproduce_paper_under_a_step_cap(tmp_path, monkeypatch, capsys):
    out = tmp_path / "paper"
    command = [
        sys.executable, str(EXAMPLES / "reproduce_paper.py"), "--datasets", "mnist_subset",
        "--max_steps", "1", "--model", "mobilenet_tiny", "--mixed_precision", "float32",
        "--out_dir", str(out), "--progress", "0",
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
    # Rerunning reuses the finished runs instead of training again, and gives the same
    # table (called in-process, the command's settings: no second TensorFlow start).
    paper = load_script(EXAMPLES / "reproduce_paper.py", monkeypatch)
    capsys.readouterr()
    rows = paper.run_rows(["mnist_subset"], str(out), max_steps=1, mixed_precision="float32",
                          progress=0, model="mobilenet_tiny")  # fmt: skip
    assert capsys.readouterr().out.count("finished earlier, reusing") == 2
    assert paper.markdown_table(rows) == table


# examples/your_own_images.py runs in tests/test_progress.py, whose test of the three tools'
# progress lines runs them through it (one run checks both the example and the tools).


@pytest.mark.slow
def test_bitwidth_sweep_under_a_step_cap(tmp_path, capsys, monkeypatch):
    out = tmp_path / "sweep"
    sweep = load_script(EXAMPLES / "bitwidth_sweep.py", monkeypatch)
    argv = [
        "bitwidth_sweep", "--dataset", "mnist_subset",
        "--bits", "float,2", "--max_steps", "1", "--batch_size", "16", "--curve_images", "32",
        "--agreement_images", "8", "--methods", "vanilla", "--model", "mobilenet_tiny",
        "--out_dir", str(out), "--progress", "0", "--fill", "blur", "--patch_size", "4",
        "--kl_weight", "0.2", "--mixed_precision", "float32",
    ]  # fmt: skip
    # The command line's main() in-process (no second TensorFlow start); the command itself
    # runs below, on bad input.
    assert sweep.main(argv) == 0, capsys.readouterr().err[-3000:]
    stdout = capsys.readouterr().out
    metrics = {
        name: json.loads((out / name / "metrics.json").read_text())
        for name in ("float-pact", "float-sgt", "2-pact", "2-sgt")
    }
    # SGT's masking reached the SGT runs only; the PACT-only runs keep the defaults (so they
    # are the same runs whichever masking the SGT runs use). PACT-only runs train first.
    masking = {"fill": "blur", "patch_size": 4, "kl_weight": 0.2}
    defaults = {"fill": "random", "patch_size": 1, "kl_weight": 0.1}
    for name, run in metrics.items():
        expected = masking if name.endswith("-sgt") else defaults
        assert {key: run["flags"][key] for key in expected} == expected, name
    order = [line.rsplit(": training (", 1)[0] for line in stdout.splitlines()
             if ": training (" in line]  # fmt: skip
    assert [Path(path).name for path in order] == ["float-pact", "2-pact", "float-sgt", "2-sgt"]
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
    settings = sweep.SweepSettings(
        dataset="mnist_subset", bits=("float", 2), out_dir=str(out), model="mobilenet_tiny",
        max_steps=1, batch_size=16, progress=0, methods=("vanilla",), curve_images=32,
        agreement_images=8, fill="blur", patch_size=4, kl_weight=0.2, mixed_precision="float32",
    )  # fmt: skip
    capsys.readouterr()
    runs = sweep.train_runs(settings)
    assert [run.reused for run in runs] == [True] * 4
    assert capsys.readouterr().out.count("finished earlier, reusing") == 4
    # A finished run is not reused for other settings.
    with pytest.raises(ValueError, match=r"finished run with other settings \(epochs: 5 -> 2\)"):
        sweep.train_runs(sweep.dataclasses.replace(settings, epochs=2))
    # Checked before anything trains: a finished SGT run of other masking (the PACT-only
    # runs fit any masking), a patch size that does not tile the 28 x 28 images.
    with pytest.raises(ValueError, match=r"float-sgt holds a finished run with other settings "
                       r"\(kl_weight: 0.2 -> 0.5\)"):  # fmt: skip
        sweep.dataclasses.replace(settings, kl_weight=0.5).check()
    with pytest.raises(ValueError, match="patch_size"):
        sweep.dataclasses.replace(settings, patch_size=5).check()
    # --init_from: every run fine-tunes the given model (here the sweep's own float run),
    # its α calibrated from it (train's default from trained weights).
    tuned = sweep.dataclasses.replace(settings, init_from=str(out / "float-pact"),
                                      out_dir=str(tmp_path / "tuned"))  # fmt: skip
    for bits, training in ((2, "pact"), (2, "sgt"), ("float", "sgt")):
        config = tuned.train_config(bits, training)
        assert config.init_from == str(out / "float-pact")
        if bits != "float":
            assert config.alpha_init == "calibrate"
    assert sweep.parse_bits(["float", "8", "2"]) == ("float", 8, 2)
    for bits in (["9"], ["1"], [], ["abc"], ["4", "4"]):
        with pytest.raises(sweep.InputError) as caught:
            sweep.parse_bits(bits)
        assert caught.value.for_flags().startswith("--bits must list float and/or integer bit")

    # Bad input: one line on stderr, exit status 2, nothing written.
    bad = [sys.executable, str(EXAMPLES / "bitwidth_sweep.py"), "--dataset", "mnist_subset",
           "--bits", "9", "--out_dir", str(tmp_path / "bad")]  # fmt: skip
    result = subprocess.run(bad, capture_output=True, text=True, timeout=300)
    assert result.returncode == 2
    assert result.stderr.splitlines() == [
        "bitwidth_sweep: error: --bits must list float and/or integer bit widths in [2, 8], "
        "each once, e.g. float,8,4,3,2. Received: '9'"
    ]
    assert not (tmp_path / "bad").exists()


def _write_row(run: Path, flags: dict | None, metrics: dict | None, summary: dict | None,
               history: str | None = None) -> None:  # fmt: skip
    import json

    run.mkdir(parents=True)
    if flags is not None:
        (run / "flags.json").write_text(json.dumps(flags))
    if metrics is not None:
        (run / "metrics.json").write_text(json.dumps(metrics))
    if history is not None:
        (run / "history.csv").write_text(history)
    if summary is not None:
        (run / "explain").mkdir()
        (run / "explain" / "summary.json").write_text(json.dumps(summary))


def _summary(accuracy: float, road: dict, region: dict) -> dict:
    def curves(measure, areas, unit, fill):
        key = "probability_areas" if measure == "probability" else "areas"
        return {"measure": measure, key: areas, "unit": unit, "fill": fill, "num_images": 40}

    return {"models": [{"accuracy": accuracy, "protocols": {
        "road": curves("accuracy", road, "pixels", "noisy linear imputation (noise 0.01)"),
        "region": curves("probability", region, "4x4 patches", "uniform"),
    }}]}  # fmt: skip


def test_sgt_grid_table_from_run_directories(tmp_path, monkeypatch):
    """The table is read back from the row directories, whatever trained them (no TF)."""
    grid = load_script(EXAMPLES / "sgt_grid.py", monkeypatch)
    out = tmp_path / "grid"
    road = {"top": 0.50, "bottom": 0.62, "random": 0.55}
    region = {"top": 0.30, "bottom": 0.45, "random": 0.35}
    sgt_flags = {"sgt": True, "fill": "impute", "patch_size": 4, "mask_fraction": 0.5,
                 "kl_weight": 0.05}  # fmt: skip
    _write_row(out / "impute-p4-f0.5-l0.05", sgt_flags,
               {"test_accuracy": 0.9012, "wall_time_seconds": 812.4},
               _summary(0.905, road, region),
               "epoch,accuracy,masked_accuracy\n0,0.8,0.41\n1,0.85,0.625\n")  # fmt: skip
    _write_row(out / "pact", {"sgt": False}, {"test_accuracy": 0.9}, None)  # trained, unmeasured
    _write_row(out / "init", None, None, _summary(0.92, road, region))
    _write_row(out / "random-p1-f0.5-l0.05", {**sgt_flags, "fill": "random", "patch_size": 1},
               None, None)  # still training  # fmt: skip
    (out / "notes").mkdir()  # neither a run nor a measurement: no row

    results = grid.read_results(out)
    assert [r.name for r in results] == [
        "init",
        "pact",
        "impute-p4-f0.5-l0.05",
        "random-p1-f0.5-l0.05",
    ]
    table = grid.markdown_table(results).splitlines()
    road_fill = "noisy linear imputation (noise 0.01)"
    assert table[0] == f"- road: pixels, fill {road_fill}, 40 class-stratified test images"
    assert table[1] == "- region: 4x4 patches, fill uniform, 40 class-stratified test images"
    cells = {line.split("|")[1].strip(): [c.strip() for c in line.strip().strip("|").split("|")]
             for line in table[4:]}  # fmt: skip
    assert cells["impute-p4-f0.5-l0.05"] == [
        "impute-p4-f0.5-l0.05", "impute", "4x4", "0.50", "0.05", "90.12", "62.5", "90.5",
        "0.500", "0.620", "0.550", "0.120", "0.050",  # ROAD: LeRF − MoRF, random − MoRF
        "0.300", "0.450", "0.350", "0.150", "0.050", "812",
    ]  # fmt: skip
    assert cells["pact"][:8] == ["pact", "", "", "", "", "90.00", "", ""]
    assert cells["pact"][8:18] == [""] * 10
    assert cells["init"][5:9] == ["", "", "92.0", "0.500"]
    assert cells["random-p1-f0.5-l0.05"][1:5] == ["random", "pixel", "0.50", "0.05"]

    # Rows: names and the train flags they add; bad rows are one-line errors.
    row = grid.parse_row("blur:4:0.25:0.3")
    assert row.name == "blur-p4-f0.25-l0.3"
    assert row.train_flags() == ["--kl_weight", "0.3", "--mask_fraction", "0.25", "--fill",
                                 "blur", "--patch_size", "4"]  # fmt: skip
    assert grid.parse_row("pact").train_flags() == ["--nosgt"]
    for bad in ("blur:4:0.5", "blur:x:0.5:0.1", ":4:0.5:0.1", "sgt"):
        with pytest.raises(grid.GridError, match="is not a row: pact, init, or FILL:PATCH"):
            grid.parse_row(bad)
    with pytest.raises(grid.GridError, match="each once"):
        grid.parse_rows(["pact", "pact"])


@pytest.mark.slow
def test_sgt_grid_under_a_step_cap(tmp_path):
    import json

    out = tmp_path / "grid"
    command = [
        sys.executable, str(EXAMPLES / "sgt_grid.py"), "--dataset", "mnist_subset",
        "--init_from", "none", "--alpha_init", "10", "--model", "mobilenet_tiny",
        "--rows", "impute:4:0.5:0.1",
        "--max_steps", "1", "--batch_size", "16", "--mixed_precision", "float32",
        "--curve_images", "16", "--agreement_images", "4", "--out_dir", str(out),
    ]  # fmt: skip
    result = subprocess.run(command, capture_output=True, text=True, timeout=900)
    assert result.returncode == 0, result.stderr[-3000:]
    run = out / "impute-p4-f0.5-l0.1"
    flags = json.loads((run / "flags.json").read_text())
    assert (flags["fill"], flags["patch_size"], flags["mask_fraction"]) == ("impute", 4, 0.5)
    summary = json.loads((run / "explain" / "summary.json").read_text())
    road = summary["models"][0]["protocols"]["road"]["areas"]
    line = next(
        x for x in (out / "table.md").read_text().splitlines() if x.startswith(f"| {run.name} |")
    )
    cells = [c.strip() for c in line.strip().strip("|").split("|")]
    assert [float(c) for c in cells[8:11]] == pytest.approx(
        [road["top"], road["bottom"], road["random"]], abs=6e-4
    )
    saved = json.loads((out / "grid.json").read_text())
    assert "--fill impute --patch_size 4" in saved["commands"][run.name]["train"]

    # Rerunning trains and measures nothing again.
    again = subprocess.run(command, capture_output=True, text=True, timeout=600)
    assert again.returncode == 0 and "training" not in again.stdout
    assert "measuring" not in again.stdout

    # A row the train CLI refuses: one line, exit status 2.
    bad = [*command[:-2], "--rows", "sepia:4:0.5:0.1", "--out_dir", str(tmp_path / "bad")]
    result = subprocess.run(bad, capture_output=True, text=True, timeout=300)
    assert result.returncode == 2 and len(result.stderr.splitlines()) == 1
    assert result.stderr.startswith("sgt_grid: error: exit status 2 of `-m sgt_tfmot.train")
    assert "fill" in result.stderr
