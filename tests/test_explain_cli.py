"""`python -m sgt_tfmot.explain`: end to end on tiny saved models, and bad input.

Models: a float conv net saved under mixed_bfloat16 (rebuilt in float32 by the CLI) and an
8-bit QAT copy in a training run directory with metrics.json (which names the dataset),
each trained one epoch on 1000 images of the embedded `mnist_subset`. Exit codes: 0 files
written, 2 bad input (one line on stderr, no traceback, nothing written). Most cases call
`main(argv)` in-process; one runs the module in a subprocess to see the real exit status.
The library function behind the CLI (`sgt_tfmot.explanation.explain_models`) is called
directly too: on the CLI's models it writes the CLI's bytes, and it takes Keras models.
"""

import csv
import json
import re
import subprocess
import sys

import numpy as np
import pytest

from sgt_tfmot import data, explain, quantize_model, saving
from sgt_tfmot.explain import __main__ as cli, attributions
from sgt_tfmot.explanation import FILES, default_options, explain_models
from sgt_tfmot.keras import keras
from sgt_tfmot.saving import float32_model
from tests.helpers.models import tiny_mnist_classifier

L = keras.layers
ERROR_PREFIX = "sgt_tfmot.explain: error: "
SMALL = ["--num_images", "3", "--curve_images", "60", "--agreement_images", "8"]
SMALL += ["--smooth_samples", "2"]
OUTPUTS = ["drop_curves.csv", "drop_curves.json", "drop_curves.png", "maps.png", "summary.json"]
OUTPUTS += ["curves_road.png"]  # the default protocols: pixel (drop_curves.png), then road


def fit_briefly(model):
    x, y = data.load_arrays("mnist_subset", "train")
    model.compile(keras.optimizers.Adam(1e-2), keras.losses.SparseCategoricalCrossentropy(True))
    model.fit(x[:1000].astype(np.float32), y[:1000], epochs=1, batch_size=50, verbose=0)
    return model


@pytest.fixture(scope="module")
def models_dir(tmp_path_factory):
    root = tmp_path_factory.mktemp("models")
    keras.utils.set_random_seed(0)
    keras.mixed_precision.set_global_policy("mixed_bfloat16")
    try:
        saving.save_model(fit_briefly(tiny_mnist_classifier()), root / "float.h5")
    finally:
        keras.mixed_precision.set_global_policy("float32")
    qat = quantize_model(tiny_mnist_classifier(), weight_bits=8, activation_bits=8, alpha_init=6.0)
    saving.save_model(fit_briefly(qat), root / "run" / "model.h5")
    (root / "run" / "metrics.json").write_text(
        json.dumps({"flags": {"dataset": "mnist_subset", "data_dir": None}})
    )
    inputs = keras.Input((28, 28, 1))
    saving.save_model(keras.Model(inputs, L.Dense(10)(L.Flatten()(inputs))), root / "dense.h5")
    inputs = keras.Input((32, 32, 3))
    cifar = keras.Model(inputs, L.Dense(10)(L.GlobalAveragePooling2D()(inputs)))
    saving.save_model(cifar, root / "cifar_shaped.h5")
    (root / "corrupt.h5").write_bytes(b"this is not an HDF5 file")
    return root


def run_main(argv, capsys):
    code = cli.main(["explain", *argv])
    out, err = capsys.readouterr()
    return code, out, err


@pytest.fixture(scope="module")
def explained(models_dir, tmp_path_factory):
    """One run on both models; the report goes to another folder than the other files."""
    root = tmp_path_factory.mktemp("explained")
    (root / "reports").mkdir()
    argv = ["explain", "--model", str(models_dir / "float.h5"), "--model", str(models_dir / "run")]
    argv += ["--out_dir", str(root / "out"), "--report", str(root / "reports" / "r.md"), *SMALL]
    code = cli.main(argv)
    return code, root


@pytest.mark.slow
def test_end_to_end_writes_every_file(explained):
    code, root = explained
    assert code == 0
    assert sorted(p.name for p in (root / "out").iterdir()) == sorted([".sgt_tfmot.json", *OUTPUTS])
    for name in ("maps.png", "drop_curves.png", "curves_road.png"):
        assert (root / "out" / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    report = (root / "reports" / "r.md").read_text()
    assert "![saliency maps](../out/maps.png)" in report
    assert "![removal curves: pixel](../out/drop_curves.png)" in report
    assert "![removal curves: road](../out/curves_road.png)" in report
    assert "### ROAD (pixels, noisy linear imputation (noise 0.01) fill), accuracy" in report
    assert "- dataset: mnist_subset (test split, 1000 images)" in report
    for method in ("vanilla gradient", "SmoothGrad", "Grad-CAM", "Grad-CAM++"):
        assert f"| float | run | {method}" in report  # marked when its sanity check failed


def test_curves_hold_the_model_accuracy_and_their_areas(explained, models_dir):
    _, root = explained
    curves = json.loads((root / "out" / "drop_curves.json").read_text())
    assert curves["dataset"] == "mnist_subset" and curves["num_images"] == 60
    assert curves["fractions"] == list(explain.DEFAULT_FRACTIONS)
    assert [m["name"] for m in curves["models"]] == ["float", "run"]
    x, y = data.load_arrays("mnist_subset", "test")
    model = saving.load_model(models_dir / "float.h5")
    model = float32_model(model)
    chosen = data.stratified_order(y, seed=0)[:60]  # the curve images: stratified, seeded
    predicted = model.predict(x[chosen].astype(np.float32), verbose=0).argmax(1)
    accuracy = np.mean(predicted == y[chosen])
    first = curves["models"][0]
    assert first["accuracy"] == first["curves"]["top"][0] == pytest.approx(accuracy)
    assert accuracy > 0.5  # trained, so removing salient pixels has something to destroy
    for model in curves["models"]:
        for order, curve in model["curves"].items():
            assert model["areas"][order] == pytest.approx(
                explain.curve_area(curves["fractions"], curve)
            )
    rows = list(csv.DictReader((root / "out" / "drop_curves.csv").read_text().splitlines()))
    assert len(rows) == 2 * 2 * 3 * 10  # models x protocols x orders x fractions
    assert [row["protocol"] for row in rows[:: 3 * 10]] == ["pixel", "road"] * 2
    assert float(rows[0]["accuracy"]) == pytest.approx(first["curves"]["top"][0])
    road = curves["protocols"]["road"]
    assert road["fill"] == "noisy linear imputation (noise 0.01)" and road["unit"] == "pixels"
    for measured in road["models"]:  # x = 0 is the unperturbed image in every order
        start = {order: curve[0] for order, curve in measured["accuracy"].items()}
        assert set(start.values()) == {
            curves["models"][0 if measured["name"] == "float" else 1]["accuracy"]
        }
        assert measured["top_below_random"] == (
            measured["areas"]["top"] < measured["areas"]["random"]
        )


def test_summary_holds_agreement_concentration_and_sanity(explained, models_dir):
    _, root = explained
    summary = json.loads((root / "out" / "summary.json").read_text())
    assert summary["dataset"] == "mnist_subset"  # from the run's metrics.json
    assert len(summary["map_indices"]) == 3
    assert [(a["model_a"], a["model_b"]) for a in summary["agreements"]] == [("float", "run")] * 4
    for model, path in zip(summary["models"], ("float.h5", "run"), strict=True):
        assert set(model["sanity"]) == set(attributions.names(gradient_free=False))
        last_conv = explain.last_conv_layer(saving.load_model(models_dir / path))
        assert model["penultimate_layer"] == last_conv
        for check in model["sanity"].values():
            assert check["verdict"] == "passed" or check["verdict"].startswith("FAILED")


@pytest.mark.slow
def test_the_library_function_writes_the_cli_files_byte_for_byte(explained, models_dir, tmp_path):
    """`explain_models` with the CLI run's models and settings (the same folder layout, so
    the report's links and paths match): every file has the CLI's bytes."""
    _, root = explained
    (tmp_path / "reports").mkdir()
    explanation = explain_models(
        [models_dir / "float.h5", str(models_dir / "run")], tmp_path / "out",
        report=tmp_path / "reports" / "r.md", num_images=3, curve_images=60,
        agreement_images=8, smooth_samples=2,
    )  # fmt: skip
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == sorted(
        [".sgt_tfmot.json", *OUTPUTS]
    )
    for name in OUTPUTS:
        assert (tmp_path / "out" / name).read_bytes() == (root / "out" / name).read_bytes(), name
    assert (tmp_path / "reports" / "r.md").read_bytes() == (root / "reports" / "r.md").read_bytes()
    assert explanation.files["report"] == tmp_path / "reports" / "r.md"
    assert [model.name for model in explanation.evaluation.models] == ["float", "run"]
    assert explanation.summary.splitlines()[0].startswith("float: accuracy ")


def test_the_library_function_explains_a_keras_model_in_memory(tmp_path):
    """A Keras model object (no file, so `dataset` given) on a few mnist_subset images:
    the CLI's files, named after the model's `name`, its accuracy on the curve images."""
    keras.utils.set_random_seed(0)
    untrained = tiny_mnist_classifier()
    model = keras.Model(untrained.inputs, untrained.outputs, name="mine")
    explanation = explain_models(
        [model], tmp_path / "out", dataset="mnist_subset", methods=["vanilla"],
        protocols="pixel", num_images=2, curve_images=20, agreement_images=4,
    )  # fmt: skip
    written = sorted(p.name for p in (tmp_path / "out").iterdir())
    assert written == sorted([".sgt_tfmot.json", *FILES.values(), "report.md"])
    summary = json.loads((tmp_path / "out" / "summary.json").read_text())
    assert summary["dataset"] == "mnist_subset" and summary["model_paths"] == {"mine": None}
    assert summary["methods"] == ["vanilla"] and len(summary["map_indices"]) == 2
    x, y = data.load_arrays("mnist_subset", "test")
    chosen = data.stratified_order(y, seed=0)[:20]  # the curve images: stratified, seeded
    predicted = model.predict(x[chosen].astype(np.float32), verbose=0).argmax(1)
    (evaluated,) = explanation.evaluation.models
    assert evaluated.name == "mine"
    assert evaluated.accuracy == pytest.approx(np.mean(predicted == y[chosen]))
    report = (tmp_path / "out" / "report.md").read_text()
    assert "- models: mine (a Keras model in memory)" in report
    assert explanation.summary.endswith(f"{tmp_path / 'out' / 'report.md'}")
    with pytest.raises(ValueError, match=r"No dataset given and no model comes from a training"):
        explain_models([model], tmp_path / "again")
    assert not (tmp_path / "again").exists()


def test_the_default_options_follow_the_models():
    """Gradient methods for Keras models; occlusion when a model is an integer .tflite."""
    assert default_options(["run", "model.h5"]) == explain.EvaluationOptions()
    integer = default_options(["run", "deployed.tflite"])
    assert integer.methods == ("occlusion",) and integer.curve_method == "occlusion"


def test_existing_files_need_overwrite(explained, models_dir, capsys):
    _, root = explained
    before = (root / "out" / "maps.png").stat().st_mtime_ns
    argv = ["--model", str(models_dir / "run"), "--out_dir", str(root / "out"), *SMALL]
    code, _, err = run_main(argv, capsys)
    assert code == 2
    assert err == f"{ERROR_PREFIX}--out_dir {root / 'out' / 'maps.png'} already exists; " + (
        "pass --overwrite to replace it.\n"
    )
    assert (root / "out" / "maps.png").stat().st_mtime_ns == before


@pytest.mark.parametrize(
    "argv, match",
    [
        ([], r"pass at least one --model PATH"),
        (["--model", "{root}/missing.h5"], r"No model at .*missing.h5: the path does not exist"),
        (
            ["--model", "{root}/corrupt.h5"],
            r"corrupt.h5 is truncated or not a Keras model file \(HDF5 cannot read it\)",
        ),
        (
            ["--model", "{root}/cifar_shaped.h5", "--dataset", "mnist_subset"],
            r"cifar_shaped.h5: the model's input shape \(32, 32, 3\) does not fit the "
            r"images \(28, 28, 1\) of the data",
        ),
        (
            ["--model", "{root}/run", "--methods", "vanilla,lime"],
            r"--methods must each be one of 'vanilla', 'smoothgrad', 'gradcam', 'gradcampp', "
            r"'occlusion'. Received: vanilla,lime",
        ),
        (
            ["--model", "{root}/run", "--num_images", "0"],
            r"--num_images must be an integer >= 1. Received: 0",
        ),
        (
            ["--model", "{root}/run", "--model", "{root}/dense.h5"],
            r"dense.h5: Grad-CAM needs a convolution, but model '.*' has no Conv2D",
        ),
        (["--model", "{root}/dense.h5"], r"No dataset given and no model comes from a training"),
        (
            ["--model", "{root}/run", "--dataset", "no_such_dataset"],
            r"Unknown dataset 'no_such_dataset': Dataset no_such_dataset not found",
        ),
        (["--model", "{root}/run", "--images", "1,b"], r"--images must be a comma-separated"),
        (
            ["--model", "{root}/run", "--images", "1,1000"],
            r"`map_indices` must be a non-empty list of test image indices in \[0, 1000\)",
        ),
        (["--model", "{root}/run", "--curve_method", "lrp"], r"--curve_method must be one of"),
        (["--model", "{root}/run", "--bogus"], r"unknown flag --bogus"),
    ],
)
def test_bad_input_is_one_line_and_writes_nothing(argv, match, models_dir, tmp_path, capsys):
    out_dir = tmp_path / "out"
    argv = [arg.replace("{root}", str(models_dir)) for arg in argv]
    code, out, err = run_main([*SMALL, "--out_dir", str(out_dir), *argv], capsys)
    assert code == 2 and out == ""
    assert err.startswith(ERROR_PREFIX) and err.count("\n") == 1, err
    assert re.search(match, err), err
    assert not out_dir.exists()


@pytest.mark.slow
def test_bad_input_in_a_subprocess_exits_2_without_traceback(models_dir, tmp_path):
    result = subprocess.run(
        [sys.executable, "-m", "sgt_tfmot.explain", "--model", str(models_dir / "run")]
        + ["--out_dir", str(tmp_path / "out"), "--methods", "lime"],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 2, result.stderr[-2000:]
    assert result.stdout == ""
    # The whole of stderr: no TensorFlow start-up lines before the message.
    assert result.stderr.splitlines() == [
        f"{ERROR_PREFIX}--methods must each be one of 'vanilla', 'smoothgrad', 'gradcam', "
        "'gradcampp', 'occlusion'. Received: lime"
    ]
    assert "Traceback" not in result.stderr


@pytest.mark.slow
def test_an_integer_tflite_is_explained_as_deployed(models_dir, tmp_path, capsys):
    """A .tflite runs in LiteRT: occlusion maps and occlusion-ranked drop curves."""
    from sgt_tfmot import saving
    from sgt_tfmot.tflite import to_integer_tflite

    path = tmp_path / "deployed.tflite"
    path.write_bytes(to_integer_tflite(saving.load_model(models_dir / "run")))
    out = tmp_path / "out"
    argv = ["--model", str(path), "--dataset", "mnist_subset", "--out_dir", str(out), *SMALL]
    code, stdout, err = run_main(argv, capsys)
    assert code == 0, err
    summary = json.loads((out / "summary.json").read_text())
    (model,) = summary["models"]
    assert model["curves"]["method"] == "occlusion" and model["sanity"] == {}
    assert "deployed: accuracy" in stdout and "sanity n/a (integer model)" in stdout
    code, _, err = run_main([*argv, "--methods", "vanilla", "--overwrite"], capsys)
    assert code == 2 and "has no gradients (an integer model)" in err
