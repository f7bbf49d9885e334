"""`python -m sgt_tfmot.convert --int8 MODEL`: end to end, exit codes, and bad input.

Exit codes: 0 all checks passed, 1 a check failed (files written), 2 bad input (one line on
stderr, no traceback, no file written). Most cases call `main(argv)` in-process; two run
the module in a subprocess to see the real exit status and stderr.
"""

import json
import os
import shutil
import subprocess
import sys

import numpy as np
import pytest

from sgt_tfmot import convert, saving
from sgt_tfmot._files import write_outputs
from sgt_tfmot.conversion import CheckOptions, Delivery, stages
from sgt_tfmot.keras import keras
from sgt_tfmot.tflite.flatbuffer import read_model
from sgt_tfmot.tflite.profile import delegate_partitions
from tests.helpers.models import tiny_mnist_classifier

L = keras.layers
ERROR_PREFIX = "sgt_tfmot.convert: error: "
REPORT_KEYS = {
    "keras_accuracy",
    "tflite_accuracy",
    "agreement",
    "edgetpu_compatible",
    "size_bytes",
    "float_size_bytes",
    "checks_passed",
}
# Small runs: a few hundred test images, 100 for the fidelity curves.
FAST = ["--num_test", "300", "--fidelity_images", "100", "--calibration_samples", "200"]


@pytest.fixture(scope="module")
def models_dir(tmp_path_factory, mnist_qat):
    """A training run directory (8-bit QAT model + metrics.json) and a few model files."""
    root = tmp_path_factory.mktemp("models")
    run = root / "run"
    saving.save_model(mnist_qat, run / "model.h5")  # biases aligned, as a training run ends
    (run / "metrics.json").write_text(
        json.dumps({"flags": {"dataset": "mnist_subset", "data_dir": None}})
    )
    keras.utils.set_random_seed(0)
    # LeakyReLU converts to an int8 LEAKY_RELU, which the Edge TPU does not run. Built under
    # mixed_bfloat16 and saved with plain `model.save` (so its layers stay bfloat16): the
    # converter needs float32 and rebuilds it.
    keras.mixed_precision.set_global_policy("mixed_bfloat16")
    try:
        tiny_mnist_classifier(L.LeakyReLU).save(root / "leaky.h5")
    finally:
        keras.mixed_precision.set_global_policy("float32")
    tiny_mnist_classifier().save(root / "float.keras")  # the .keras format loads too
    inputs = keras.Input((28, 28, 1))
    saving.save_model(keras.Model(inputs, L.Conv2D(4, 3)(inputs)), root / "segmenter.h5")
    inputs = keras.Input((32, 32, 3))
    dense = L.Dense(10)(L.GlobalAveragePooling2D()(inputs))
    saving.save_model(keras.Model(inputs, dense), root / "cifar_shaped.h5")
    (root / "corrupt.h5").write_bytes(b"this is not an HDF5 file")
    rng = np.random.default_rng(0)
    colour = {
        f"x_{s}": rng.integers(0, 256, (8, 32, 32, 3), dtype=np.uint8) for s in ("train", "test")
    }
    np.savez(root / "colour.npz", **colour, y_train=np.arange(8) % 10, y_test=np.arange(8) % 10)
    return root


def run_main(argv, capsys):
    code = convert.main(["convert", *argv])
    out, err = capsys.readouterr()
    return code, out, err


def listing(path):
    """The files in `path`, without the tools' manifest (tests/test_files.py checks it)."""
    return sorted(p.name for p in path.iterdir() if p.name != ".sgt_tfmot.json")


@pytest.mark.slow
def test_end_to_end_in_a_subprocess(models_dir, tmp_path):
    # Thresholds a bit looser than the release targets: a 3-second model on 300 images,
    # where one image is 0.33 pp (measured here: agreement 100 %, fidelity gap 0.5-1 pp).
    args = ["--int8", str(models_dir / "run"), "--output", str(tmp_path / "model.tflite")]
    args += ["--report", str(tmp_path / "report.json"), *FAST]
    args += ["--max_accuracy_drop", "1", "--min_agreement", "0.98"]
    result = subprocess.run(
        [sys.executable, "-m", "sgt_tfmot.convert", *args],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "Traceback" not in result.stderr
    assert listing(tmp_path) == ["model.tflite", "report.json", "report.png"]

    report = json.loads((tmp_path / "report.json").read_text())
    assert REPORT_KEYS <= set(report)
    assert report["checks_passed"] is True and report["failures"] == []
    assert report["dataset"] == "mnist_subset"  # from the run's metrics.json
    assert report["dataset_source"].endswith("metrics.json")
    assert report["quantization"] == "qat" and report["io_dtype"] == "int8"
    assert report["biases_aligned"] is True  # the training run aligned them
    assert report["keras_compute_dtype"] == "float32"
    assert report["num_test"] == 300 and report["calibration_samples"] == 200
    assert report["size_bytes"] == os.path.getsize(tmp_path / "model.tflite")
    # int8 weights against float32 ones; the flatbuffer overhead of a tiny model keeps the
    # ratio far above the 0.25 of the weights alone (measured 0.67 here, 0.28 for ResNet-20).
    assert report["size_ratio"] == report["size_bytes"] / report["float_size_bytes"] < 0.75
    assert report["edgetpu_compatible"] is True and report["internal_quantize_ops"] == 0
    assert report["keras_accuracy"] > 0.85
    assert 0.99 <= report["ulp_agreement"] <= 1.0  # an 8-bit model is well conditioned
    assert report["fidelity"]["num_images"] == 100
    assert report["fidelity_gap_pp"] <= 5.0
    assert report["export_model"] is None  # an 8-bit model converts as it is
    assert (tmp_path / "report.png").read_bytes()[:4] == b"\x89PNG"
    assert report["deployment"]["latency"] is None  # only with --profile

    summary = read_model(str(tmp_path / "model.tflite"))
    assert summary.inputs[0].type == "INT8" and summary.inputs[0].shape_signature == (1, 28, 28, 1)
    out = result.stdout
    assert "Edge TPU: compatible" in out and "FULLY_CONNECTED" in out
    # One line counts the ops; the table is in the report (and printed with --verbose).
    table = report["targets"]["edgetpu"]["op_table"]
    assert table[0].split()[:3] == ["#", "op", "ver"] and len(table) > len(report["op_names"])
    assert table[0] not in out
    edgetpu_line = next(line for line in out.splitlines() if line.startswith("Edge TPU: "))
    counts = dict(item.rsplit(" x", 1) for item in edgetpu_line.split(" ops: ")[1].split("; ")[0]
                  .split(", "))  # fmt: skip
    assert {op: int(n) for op, n in counts.items()} == {
        op: report["op_names"].count(op) for op in set(report["op_names"])
    }
    assert f"Size: {report['size_bytes']:,} bytes vs" in out
    assert "Top-1 agreement" in out
    assert (
        "Saliency fidelity (vanilla, protocol road, fill noisy linear imputation (noise 0.01), "
        "100 images)" in out
    )
    assert "one-ulp change of its weights on" in out
    assert out.rstrip().endswith("Checks passed.")


def quick_run(models_dir, tmp_path):
    """(output, report, argv) of a conversion of the run with the slow checks off."""
    output, report = tmp_path / "model.tflite", tmp_path / "report.json"
    argv = ["--int8", str(models_dir / "run"), "--output", str(output), "--report", str(report)]
    argv += ["--num_test", "40", "--fidelity_images", "0", "--occlusion_images", "0"]
    return output, report, argv


def test_profile_says_where_the_time_goes(models_dir, tmp_path, capsys):
    output, report, argv = quick_run(models_dir, tmp_path)
    code, out, err = run_main([*argv, "--profile"], capsys)
    assert code == 0, err
    latency = json.loads(report.read_text())["deployment"]["latency"]
    ops = read_model(output.read_bytes()).ops
    listed = [(op["index"], op["name"]) for op in latency["ops"]]
    assert listed == [(op.index, op.name) for op in ops]
    assert all(op["microseconds"] >= 0 for op in latency["ops"])
    assert {share["name"] for share in latency["by_type"]} == {op.name for op in ops}
    assert sum(share["share"] for share in latency["by_type"]) == pytest.approx(1.0)
    integer, baseline = latency["integer_ms"], latency["float32_ms"]
    assert 0 < integer["min"] <= integer["median"] and 0 < baseline["min"] <= baseline["median"]
    assert latency["ratio"]["min"] == pytest.approx(integer["min"] / baseline["min"])
    assert latency["delegate_partitions"] == delegate_partitions(output.read_bytes())
    assert (latency["batch_size"], latency["num_threads"]) == (1, 1)
    lines = out.splitlines()
    (line,) = [line for line in lines if line.startswith("Latency (batch 1, 1 thread")]
    assert f"integer {integer['min']:.3f} ms, float32 {baseline['min']:.3f} ms" in line
    next_line = lines[lines.index(line) + 1]
    assert next_line.startswith(f"  integer time by op type: {latency['by_type'][0]['name']} ")


@pytest.mark.slow
def test_verbose_prints_the_op_table_after_the_one_line_summary(models_dir, tmp_path, capsys):
    output, report, argv = quick_run(models_dir, tmp_path)
    code, out, err = run_main([*argv, "--verbose"], capsys)
    assert code == 0, err
    table = json.loads(report.read_text())["targets"]["edgetpu"]["op_table"]
    ops = read_model(output.read_bytes()).ops
    assert len(table) > len(ops) and table[0].split()[:3] == ["#", "op", "ver"]
    lines = out.splitlines()
    summary = next(i for i, line in enumerate(lines) if line.startswith("Edge TPU: "))
    start = lines.index(table[0])
    assert lines[start : start + len(table)] == table  # the report's table, whole
    assert summary < start  # after the one-line count and the compiler command
    for op in ops:  # a row per op, by index and name
        assert any(row.split()[:2] == [str(op.index), op.name] for row in table[1:]), op.name


def test_space_to_depth_writes_the_blocked_file_and_says_so(models_dir, tmp_path, capsys):
    output, report, argv = quick_run(models_dir, tmp_path)
    code, out, err = run_main([*argv, "--space_to_depth"], capsys)
    assert code == 0, err
    assert json.loads(report.read_text())["deployment"]["layout"] == "space_to_depth"
    model = read_model(output.read_bytes())
    (relayout,) = [op for op in model.ops if op.name == "SPACE_TO_DEPTH"]
    assert tuple(relayout.outputs[0].shape) == (1, 14, 14, 4)
    assert "full-resolution stage as 2x2 pixel blocks)" in out.splitlines()[0]
    assert "Top-1 agreement: 100.00 %" in out  # tests/test_tflite_layout.py: bit-exact


def test_space_to_depth_on_a_model_without_a_blocked_form_writes_nothing(
    models_dir, tmp_path, capsys
):
    inputs = keras.Input((28, 28, 1))
    pooled = L.GlobalAveragePooling2D()(L.Conv2D(4, 3, padding="same")(inputs))
    saving.save_model(keras.Model(inputs, L.Dense(10)(pooled)), tmp_path / "in" / "pooled.h5")
    argv = ["--int8", str(tmp_path / "in" / "pooled.h5"), "--output", str(tmp_path / "out" / "m")]
    argv += ["--dataset", "mnist_subset", "--num_test", "8", "--calibration_samples", "8"]
    code, out, err = run_main([*argv, "--fidelity_images", "0", "--space_to_depth"], capsys)
    assert code == 2 and out == ""
    last = err.strip().splitlines()[-1]
    assert last.startswith(f"{ERROR_PREFIX}--space_to_depth does not apply to ")
    assert last.endswith("MEAN (op 1) reads a full-resolution tensor"), last
    assert not (tmp_path / "out").exists()


@pytest.mark.slow
def test_c_array_writes_a_pair_that_compiles_to_the_file(models_dir, tmp_path, capsys):
    pytest.importorskip("tflite_micro", reason="tflite-micro is not installed (the tflm extra)")
    output, report, argv = quick_run(models_dir, tmp_path)
    source = tmp_path / "firmware" / "model_data.c"
    code, out, err = run_main([*argv, "--c_array", str(source), "--require", "tflm"], capsys)
    assert code == 0, err
    assert listing(source.parent) == ["model_data.c", "model_data.h"]
    found = json.loads(report.read_text())
    target = found["targets"]["tflm"]
    assert (target["compatible"], target["differing_outputs"], target["images"]) == (True, 0, 40)
    assert found["c_array"] == {
        "source": str(source), "header": str(source.with_suffix(".h")), "name": "model_data",
        "length": output.stat().st_size, "written": True,
        "arena_bytes": target["arena_bytes_with_margin"], "op_count": target["resolver_size"],
    }  # fmt: skip
    assert "TFLite Micro: compatible." in out
    assert f"C array {source} + {source.with_suffix('.h')} (model_data, " in out
    header = source.with_suffix(".h").read_text()
    for _, method in target["resolver_ops"]:
        assert f"(resolver).{method}();" in header
    gcc = shutil.which("gcc")
    if gcc is None:
        pytest.skip("no gcc to compile the pair")
    (tmp_path / "main.c").write_text(
        '#include <stdio.h>\n#include "model_data.h"\nint main(int c, char **v) {\n'
        '  FILE *f = fopen(v[1], "wb"); fwrite(model_data, 1, MODEL_DATA_LEN, f);\n'
        "  return fclose(f) != 0 || c != 2;\n}\n"
    )
    program = tmp_path / "dump"
    subprocess.run([gcc, "-std=c11", "-Wall", "-Werror", "-I", str(source.parent), "-o",
                    str(program), str(tmp_path / "main.c"), str(source)],
                   check=True, capture_output=True, timeout=120)  # fmt: skip
    subprocess.run([str(program), str(tmp_path / "dumped")], check=True, timeout=60)
    assert (tmp_path / "dumped").read_bytes() == output.read_bytes()


def test_c_array_keeps_a_users_header(models_dir, tmp_path, capsys):
    pytest.importorskip("tflite_micro", reason="tflite-micro is not installed (the tflm extra)")
    output, report, argv = quick_run(models_dir, tmp_path)
    (tmp_path / "model_data.h").write_text("/* mine */")
    code, out, err = run_main([*argv, "--c_array", str(tmp_path / "model_data.c")], capsys)
    assert code == 2 and out == ""
    assert f"--c_array {tmp_path / 'model_data.h'} already exists" in err
    assert listing(tmp_path) == ["model_data.h"]


@pytest.mark.slow
def test_a_failed_check_exits_1_and_still_writes_the_files(models_dir, tmp_path, capsys):
    output = tmp_path / "model.tflite"
    write_outputs({output: b"old"}, "sgt_tfmot.convert")  # a file the tool wrote before
    code, out, err = run_main(
        [
            "--int8",
            str(models_dir / "leaky.h5"),
            "--output",
            str(output),
            "--report",
            str(tmp_path / "report.json"),
            "--uint8",
            "--require_edgetpu",
            "--overwrite",
            "--num_test",
            "50",
            "--calibration_samples",
            "50",
            "--fidelity_images",
            "0",
            "--dataset",
            "mnist_subset",
        ],
        capsys,
    )
    assert code == 1, err
    assert listing(tmp_path) == ["model.tflite", "report.json", "report.png"]
    report = json.loads((tmp_path / "report.json").read_text())
    assert report["checks_passed"] is False
    assert report["quantization"] == "post_training" and report["io_dtype"] == "uint8"
    assert report["keras_compute_dtype"] == "float32 (rebuilt from mixed precision)"
    # No metrics.json beside the file: the dataset must be given (never guessed from 28x28x1).
    assert report["dataset"] == "mnist_subset" and report["dataset_source"] == "--dataset"
    assert report["edgetpu_compatible"] is False
    assert report["fidelity"] is None
    assert any(f.startswith("not Edge TPU compatible (first CPU op:") for f in report["failures"])
    assert "LEAKY_RELU" in report["op_names"]
    assert read_model(str(output)).inputs[0].type == "UINT8"  # replaced (--overwrite)
    assert "Saliency fidelity: not run" in out
    assert "FAILED: not Edge TPU compatible" in out


def test_an_error_late_in_the_run_leaves_no_file(models_dir, tmp_path, capsys, monkeypatch):
    def full_disk(*args, **kwargs):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(stages, "save_saliency_figure", full_disk)
    code, _, err = run_main(
        [
            "--int8",
            str(models_dir / "float.keras"),
            "--output",
            str(tmp_path / "model.tflite"),
            "--report",
            str(tmp_path / "report.json"),
            "--num_test",
            "20",
            "--calibration_samples",
            "20",
            "--fidelity_images",
            "0",
            "--dataset",
            "mnist_subset",
        ],
        capsys,
    )
    assert code == 2
    # Progress lines came first; the error is the last line, the system's reason without
    # Python's "[Errno 28]".
    assert err.strip().splitlines()[-1] == f"{ERROR_PREFIX}No space left on device"
    assert listing(tmp_path) == []


BAD_INPUT = [
    # (argv after "--int8 MODEL --output OUT" substitutions, expected message part)
    (["--int8", "{dir}/missing.h5", "--output", "{out}"], "does not exist"),
    (["--int8", "{dir}/corrupt.h5", "--output", "{out}"], "is truncated or not a Keras model file"),
    (["--int8", "{dir}/segmenter.h5", "--output", "{out}"], "the model is not a classifier"),
    (
        ["--int8", "{dir}/float.keras", "--output", "{out}", "--calibration_samples", "0"],
        "float model: post-training quantization needs calibration images",
    ),
    (
        ["--int8", "{dir}/float.keras", "--output", "{out}", "--dataset", "{dir}/colour.npz"],
        "the model's input shape (28, 28, 1) does not fit the images (32, 32, 3)",
    ),
    (
        ["--int8", "{dir}/float.keras", "--output", "{out}", "--dataset", "no_such_dataset"],
        "Unknown dataset 'no_such_dataset'",
    ),
    (
        ["--int8", "{dir}/float.keras", "--output", "{out}", "--dataset", "mnist"]
        + ["--data_dir", "{tmp}"],
        "has no file 'mnist.npz'",
    ),
    (["--int8", "{dir}/cifar_shaped.h5", "--output", "{out}"], "pass --dataset NAME"),
    (["--int8", "{dir}/float.keras", "--output", "{dir}/corrupt.h5/x.tflite"], "is a file"),
    (["--int8", "{dir}/float.keras", "--output", "{tmp}"], "is a directory"),
    (
        ["--int8", "{dir}/float.keras", "--output", "{out}", "--report", "{out}"],
        "must be different files",
    ),
    (["{dir}/float.keras", "--output", "{out}"], "pass --int8"),
    (["--int8", "--output", "{out}"], "expected exactly one MODEL"),
    (["--int8", "{dir}/float.keras", "{dir}/leaky.h5", "--output", "{out}"], "exactly one"),
    (["--int8", "{dir}/float.keras"], "pass --output PATH"),
    (
        ["--int8", "{dir}/float.keras", "--output", "{out}", "--calibration_samples", "-1"],
        "--calibration_samples=-1 is not valid",
    ),
    (["--int8", "{dir}/float.keras", "--output", "{out}", "--bogus"], "bogus"),
    (
        ["--int8", "{dir}/float.keras", "--output", "{out}", "--min_agreement", "2"],
        "--min_agreement must be a finite number in [0, 1]. Received: 2",
    ),
    (
        ["--int8", "{dir}/float.keras", "--output", "{out}", "--saliency", "lime"],
        "--saliency must be one of 'vanilla', 'smoothgrad'. Received: 'lime'",
    ),
    (
        ["--int8", "{dir}/float.keras", "--output", "{out}", "--c_array", "{tmp}/model.txt"],
        "must name the C source to write, ending in .c, .cc, .cpp (its header goes beside it",
    ),
    (
        ["--int8", "{dir}/float.keras", "--output", "{out}", "--require", "tflm,tpu"],
        "--require must be one of 'edgetpu', 'mediapipe', 'tflm'. Received: 'tpu'",
    ),
    (
        ["--int8", "{dir}/float.keras", "--output", "{out}", "--tflm_images", "0"],
        "--tflm_images=0 is not valid",
    ),
]


@pytest.mark.parametrize("argv, message", BAD_INPUT)
def test_bad_input_is_one_line_exit_2_and_writes_nothing(
    argv, message, models_dir, tmp_path, capsys
):
    before = listing(models_dir)
    argv = [a.format(dir=models_dir, out=tmp_path / "model.tflite", tmp=tmp_path) for a in argv]
    code, out, err = run_main(argv, capsys)
    assert code == 2
    assert out == ""
    assert err.count("\n") == 1 and err.startswith(ERROR_PREFIX), err
    assert message in err
    assert listing(tmp_path) == [] and listing(models_dir) == before


def test_existing_output_is_kept_without_overwrite(models_dir, tmp_path, capsys):
    output = tmp_path / "model.tflite"
    output.write_bytes(b"keep me")
    code, _, err = run_main(["--int8", str(models_dir / "run"), "--output", str(output)], capsys)
    assert code == 2 and "already exists; pass --overwrite to replace it" in err
    assert output.read_bytes() == b"keep me"
    report = tmp_path / "report.json"
    report.write_text("{}")
    code, _, err = run_main(
        ["--int8", str(models_dir / "run"), "--output", str(tmp_path / "new.tflite")]
        + ["--report", str(report)],
        capsys,
    )
    assert code == 2 and f"--report {report} already exists" in err
    assert listing(tmp_path) == ["model.tflite", "report.json"]


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes into read-only directories")
def test_unwritable_output_directory(models_dir, tmp_path, capsys):
    locked = tmp_path / "locked"
    locked.mkdir()
    locked.chmod(0o500)
    try:
        code, _, err = run_main(
            ["--int8", str(models_dir / "run"), "--output", str(locked / "m.tflite")], capsys
        )
    finally:
        locked.chmod(0o700)
    assert code == 2 and "cannot write in" in err


@pytest.mark.slow
def test_bad_input_in_a_subprocess_has_no_traceback(tmp_path):
    result = subprocess.run(
        [sys.executable, "-m", "sgt_tfmot.convert", "--int8", str(tmp_path / "nope.h5")]
        + ["--output", str(tmp_path / "m.tflite")],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 2
    assert "Traceback" not in result.stderr
    ours = [line for line in result.stderr.splitlines() if line.startswith("sgt_tfmot.convert")]
    assert ours == [f"{ERROR_PREFIX}No model at {tmp_path / 'nope.h5'}: the path does not exist."]
    assert listing(tmp_path) == []


def test_help_lists_the_flags(capsys):
    code, out, _ = run_main(["--help"], capsys)
    assert code == 0
    for flag in ("--int8", "--uint8", "--output", "--report", "--max_fidelity_gap"):
        assert flag in out


def test_convert_and_check_validates_its_arguments(tmp_path):
    """The options are checked when made; convert_and_check's own before it reads a file."""
    with pytest.raises(ValueError, match=r"`io_dtype` must be one of 'int8', 'uint8'"):
        Delivery(io_dtype="int4")
    with pytest.raises(ValueError, match=r"`fidelity_images` must be an integer >= 0"):
        CheckOptions(fidelity_images=-1)
    with pytest.raises(ValueError, match=r"`fidelity_fill` must be one of 'mean', 'random'"):
        CheckOptions(fidelity_fill="black", fidelity_protocol="pixel")
    with pytest.raises(ValueError, match=r"`fidelity_fill` must be one of 'imputation'"):
        CheckOptions(fidelity_fill="mean")
    with pytest.raises(ValueError, match=r"`fidelity_protocol` must be one of 'pixel', 'road'"):
        CheckOptions(fidelity_protocol="lime")
    with pytest.raises(ValueError, match=r"`occlusion_images` must be an integer >= 0"):
        CheckOptions(occlusion_images=-1)
    with pytest.raises(ValueError, match=r"`calibration_samples` must be an integer >= 0"):
        convert.convert_and_check("m.h5", tmp_path / "m.tflite", calibration_samples=-1)
    with pytest.raises(TypeError, match="num_test"):  # a check option, not a keyword of its own
        convert.convert_and_check("m.h5", tmp_path / "m.tflite", num_test=10)
    assert CheckOptions(num_test=np.int64(5)).num_test == 5  # numpy integers made ints
    assert listing(tmp_path) == []
