"""Delivery to apps: a softmax at the end, RGB in front of a grey model (exact on grey images),
labels as TFLite metadata, the report's deployment section, MediaPipe running the file."""

import json
import os

import numpy as np
import pytest

from sgt_tfmot import convert, data, saving
from sgt_tfmot.tflite import TFLiteModel, check_edgetpu, to_integer_tflite
from sgt_tfmot.tflite.converter import grey_to_rgb
from sgt_tfmot.tflite.metadata import read_image_classifier_metadata

X, _ = data.load_arrays("mnist_subset", "test")
X = X[:100].astype(np.float32)


@pytest.mark.slow
def test_rgb_input_is_exact_on_grey_images_and_softmax_gives_probabilities(mnist_qat):
    grey = TFLiteModel(to_integer_tflite(mnist_qat, io_dtype="uint8"))
    rgb = to_integer_tflite(mnist_qat, io_dtype="uint8", rgb_input=True)
    assert check_edgetpu(rgb).compatible
    rgb_model = TFLiteModel(rgb)
    assert rgb_model.input_shape == (28, 28, 3)
    # (38 + 75 + 15) / 128 = 1 on the int8 grid: (v, v, v) -> v exactly, logits identical.
    rgb_images = grey_to_rgb(X)  # the images convert's checks feed a --rgb_input file
    assert rgb_images.shape == (100, 28, 28, 3)
    for channel in range(3):
        np.testing.assert_array_equal(rgb_images[..., channel], X[..., 0])
    np.testing.assert_array_equal(rgb_model.predict(rgb_images), grey.predict(X))
    probabilities = TFLiteModel(to_integer_tflite(mnist_qat, io_dtype="uint8", softmax=True))
    assert probabilities.output["quantization"] == pytest.approx((1 / 256, 0))
    scores = probabilities.predict(X)
    assert scores.min() >= 0 and np.all(np.abs(scores.sum(1) - 1) <= 10 / 256)
    logits = grey.predict(X)
    top = np.sort(scores, axis=1)
    untied = top[:, -1] > top[:, -2]  # a 1/256 grid can tie two classes
    np.testing.assert_array_equal(scores.argmax(1)[untied], logits.argmax(1)[untied])


def run(argv, capsys):
    code = convert.main(["convert", *argv])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


FAST = ["--num_test", "40", "--fidelity_images", "0", "--dataset", "mnist_subset"]


@pytest.mark.slow
def test_labels_reach_the_metadata_and_the_deployment_section(mnist_qat, tmp_path, capsys):
    model = saving.save_model(mnist_qat, tmp_path / "qat.h5")
    labels = tmp_path / "digits.txt"
    labels.write_text("\n".join(f"digit {i}" for i in range(10)) + "\n")
    output, report = tmp_path / "app.tflite", tmp_path / "app.json"
    argv = ["--int8", str(model), "--output", str(output), "--report", str(report), "--uint8"]
    code, out, err = run([*argv, "--rgb_input", "--labels", str(labels), *FAST], capsys)
    assert code == 0, err
    written = read_image_classifier_metadata(output.read_bytes())
    assert written["labels"] == [f"digit {i}" for i in range(10)]
    section = json.loads(report.read_text())["deployment"]
    assert section["input"] == {"shape": [1, 28, 28, 3], "dtype": "uint8", "scale": 1.0,
                                "zero_point": 0}  # fmt: skip
    assert section["output"]["scale"] == pytest.approx(1 / 256) and section["scores"].startswith(
        "probabilities"
    )
    assert section["metadata"]["labels"][0] == "digit 0"
    targets = json.loads(report.read_text())["targets"]
    assert targets["edgetpu"]["compatible"] is True
    assert "edgetpu_compiler" in targets["edgetpu"]["compiler_command"]
    mediapipe = targets["mediapipe"]
    if mediapipe["compatible"] is None and not os.environ.get("CI"):
        pytest.skip("mediapipe is not installed (CI installs requirements/mediapipe.txt)")
    assert mediapipe["compatible"] is True, mediapipe
    assert mediapipe["agreement"] == 1.0 and mediapipe["category_names_match"] is True


@pytest.mark.parametrize(
    "content, message",
    [
        ("a\nb\n", "has 2 class names but the model has 10 classes"),
        ("", "must hold one non-empty class name per line"),
        (b"\xff\xfe\x00", "is not UTF-8 text"),
    ],
)
def test_bad_label_files_write_nothing(mnist_qat, tmp_path, capsys, content, message):
    model = saving.save_model(mnist_qat, tmp_path / "qat.h5")
    labels = tmp_path / "labels.txt"
    labels.write_bytes(content if isinstance(content, bytes) else content.encode())
    output = tmp_path / "out" / "m.tflite"
    output.parent.mkdir()
    code, _, err = run(["--int8", str(model), "--output", str(output), "--labels", str(labels),
                        *FAST], capsys)  # fmt: skip
    assert code == 2 and message in err and err.count("\n") == 1, err
    assert list(output.parent.iterdir()) == []
