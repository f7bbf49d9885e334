"""Keras Applications: MobileNetV2 through quantize -> SGT fit -> save/load -> int8 TFLite,
and the compatibility matrix's script (docs/COMPATIBILITY.md) on a Keras 3 model file.

The pipeline (`mobilenet_v2_w4a4`, tests/helpers/models.py) runs once, in the first test,
which checks each of its steps and what `fold_minimums` does to its file (ReLU6 and
depthwise convolutions, tests/test_tflite_rewrite.py's other models): one test, so that the
two pytest-xdist workers do not each build it. The other applications' layer patterns are
checked exactly in tests/test_exact_layers.py; the whole matrix is
benchmarks/compatibility.py's."""

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from sgt_tfmot.tflite import TFLiteModel, check_edgetpu
from sgt_tfmot.tflite.flatbuffer import read_model
from sgt_tfmot.tflite.rewrite import fold_minimums
from tests.helpers.models import mobilenet_v2_w4a4
from tests.helpers.scripts import load_script, run_absl_main
from tests.helpers.tflite import assert_folded, assert_same_outputs, quantized, random_images

BENCHMARKS = Path(__file__).resolve().parents[1] / "benchmarks"


@pytest.mark.slow
def test_mobilenet_v2_w4a4_sgt_to_int8_on_the_edge_tpu_with_the_same_values(tmp_path):
    run = mobilenet_v2_w4a4(tmp_path)
    assert run.flat  # Keras Applications' nested model inlined
    assert run.reestimated == 52  # every BN layer's statistics, from the data
    np.testing.assert_array_equal(run.loaded_outputs, run.qat_outputs)  # save -> load
    flatbuffer = fold_minimums(run.raw)  # what to_integer_tflite(loaded, x[:16]) returns
    assert check_edgetpu(flatbuffer).compatible
    tflite = TFLiteModel(flatbuffer)
    step = tflite.output["quantization"][0]
    expected, actual = run.loaded.predict(run.x, verbose=0), tflite.predict(run.x)
    assert np.ptp(expected, axis=0).max() > 4 * step  # the logits depend on the image
    # One output step, but on at most one image of the 48: a W4A4 model after 3 steps is
    # on the edge of its 4-bit levels, and the Keras model's float32 sums (their order
    # varies from run to run with oneDNN's threads) can put one early activation on the
    # other side of a rounding tie, which then grows through the network. Seen on an Intel
    # Xeon (AMX): image 12 in one run, image 33 in the next, every other image within a step.
    beyond = np.abs(actual - expected).max(axis=1) > step + 1e-6
    assert beyond.sum() <= 1, np.flatnonzero(beyond)
    assert np.mean(actual.argmax(1) == expected.argmax(1)) >= 47 / 48

    # fold_minimums on ReLU6 and depthwise convolutions: every MINIMUM gone, not one int8
    # value changed in any runtime (tests/test_tflite_rewrite.py has the other models).
    assert_folded(run.raw, flatbuffer)
    producers = {op.name for op in read_model(run.raw).ops if op.fused_activation == "RELU6"}
    assert producers == {"CONV_2D", "DEPTHWISE_CONV_2D"}  # ReLU6 under PACT: α <= 6
    images = np.concatenate([random_images(run.raw, 100), quantized(run.raw, run.x)])
    assert_same_outputs(run.raw, flatbuffer, images)


@pytest.mark.slow
@pytest.mark.usefixtures("absl_flags_restored")
def test_compatibility_script_runs_a_keras_3_row(tmp_path, monkeypatch, capsys):
    """benchmarks/compatibility.py under a step cap, on a 32x32 RGB stand-in for CIFAR-10:
    the Keras 3 model file is made, trained, converted and tabled."""
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (80, 32, 32, 3)).astype(np.uint8)
    labels = rng.integers(0, 10, 80)
    np.savez(tmp_path / "cifar10.npz", x_train=images[:64], y_train=labels[:64],
             x_test=images[64:], y_test=labels[64:])  # fmt: skip
    out = tmp_path / "out"
    command = [
        sys.executable, str(BENCHMARKS / "compatibility.py"), "--rows", "user patterns (Keras 3)",
        "--data_dir", str(tmp_path), "--out_dir", str(out), "--max_steps", "2",
        "--pretrain_epochs", "1",
        "--batch_size", "16", "--num_test", "16", "--tflm_images", "1",
        "--markdown", str(out / "table.md"),
    ]  # fmt: skip
    result = subprocess.run(command, capture_output=True, text=True, timeout=900)
    assert result.returncode == 0, result.stderr[-3000:]
    (row,) = json.loads((out / "rows.json").read_text())
    assert row["stage"] == "done", row.get("error")
    assert (out / "user_patterns_keras_3" / "model.keras").is_file()
    assert row["report"]["num_test"] == 16 and row["steps"] == 2
    table = (out / "table.md").read_text().splitlines()
    assert table[2].startswith("| user patterns (Keras 3) | 1, ")
    made = json.loads((out / "user_patterns_keras_3" / "model.pretrained.json").read_text())
    assert made == {"epochs": 1, "batch_size": 16, "bn_momentum": 0.9, "seconds": made["seconds"]}
    assert row["pretrain_s"] == made["seconds"] > 0
    assert not list((out / "user_patterns_keras_3").glob("model.pretraining*"))  # removed
    # Run again (its main in this process: no second TensorFlow start): the row is kept,
    # nothing is trained.
    compatibility = load_script(BENCHMARKS / "compatibility.py", monkeypatch)
    capsys.readouterr()
    run_absl_main(compatibility, command[1:])
    assert "(done before with the same settings: kept)" in capsys.readouterr().out
    # The table alone, from rows.json
    (out / "table.md").unlink()
    run_absl_main(compatibility, [*command[1:], "--table_only"])
    assert (out / "table.md").read_text().splitlines() == table
    assert "==" not in capsys.readouterr().out  # nothing was run


@pytest.mark.usefixtures("absl_flags_restored")
def test_the_table_names_a_row_s_own_training_settings(monkeypatch):
    """A row's own clipnorm (float training) and learning rate (QAT fit) are in its line."""
    report = {
        "keras_accuracy": 0.5,
        "tflite_accuracy": 0.5,
        "agreement": 1.0,
        "ulp_agreement": 1.0,
        "checks_passed": True,
        "failures": [],
        "op_names": ["ADD"],
    }
    row = {"row": "EfficientNetB0", "settings": {"pretrain_epochs": 10}, "pretrain_s": 10.0,
           "steps": 300, "precision": "float32", "train_s": 5.0, "convert_s": 1.0,
           "clipnorm": 1.0, "learning_rate": 0.001, "report": report}  # fmt: skip
    compatibility = load_script(BENCHMARKS / "compatibility.py", monkeypatch)
    line = compatibility.markdown([row]).splitlines()[2]
    assert line.startswith("| EfficientNetB0 | 10 (clipnorm 1), 10 | 300 (learning rate 0.001), "
                           "float32, 5 | 1 | 50.00 % |"), line  # fmt: skip
    plain = {**row, "clipnorm": None, "learning_rate": None}
    assert "| EfficientNetB0 | 10, 10 | 300, float32, 5 |" in compatibility.markdown([plain])


def small_model():
    from sgt_tfmot.keras import keras

    keras.utils.set_random_seed(0)
    L = keras.layers
    inputs = keras.Input((8, 8, 3))
    x = L.BatchNormalization()(L.Conv2D(4, 3)(L.Rescaling(1 / 255)(inputs)))
    return keras.Model(inputs, L.Dense(3, activation="softmax")(L.GlobalAveragePooling2D()(x)))


@pytest.mark.usefixtures("absl_flags_restored")
def test_an_interrupted_pretraining_resumes_at_its_next_epoch_bit_identical(
    tmp_path, monkeypatch, capsys
):
    """The matrix's float pretraining saves model and optimizer after each epoch: a run
    stopped after epoch 1 and run again trains epochs 2 and 3 only and ends with the weights
    of a run that was never stopped (each epoch's order is seeded by its number)."""
    from sgt_tfmot.keras import keras

    compatibility = load_script(BENCHMARKS / "compatibility.py", monkeypatch)
    rng = np.random.default_rng(0)
    npz = str(tmp_path / "d.npz")
    np.savez(npz, x_train=rng.integers(0, 256, (48, 8, 8, 3)).astype(np.uint8),
             y_train=rng.integers(0, 3, 48))  # fmt: skip
    straight, _ = compatibility.pretrain(keras, small_model(), npz, 3, 16, str(tmp_path / "a.h5"))
    stopped = str(tmp_path / "stopped.h5")
    compatibility.pretrain(keras, small_model(), npz, 1, 16, stopped)  # stopped after epoch 1
    capsys.readouterr()
    resumed, seconds = compatibility.pretrain(keras, small_model(), npz, 3, 16, stopped)
    assert capsys.readouterr().out.count("resuming the pretraining after epoch 1") == 1
    for a, b in zip(straight.get_weights(), resumed.get_weights(), strict=True):
        np.testing.assert_array_equal(a, b)
    progress = json.loads(Path(stopped + ".json").read_text())
    assert progress["epochs"] == 3 and progress["seconds"] == seconds > 0
