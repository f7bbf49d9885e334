"""`explain` of a .tflite converted with --rgb_input, on its own one-channel dataset: the
grey images go in repeated into three channels, as convert feeds them."""

import json

import numpy as np
import pytest

from sgt_tfmot import data
from sgt_tfmot.explanation import explain_models
from sgt_tfmot.tflite import to_integer_tflite
from sgt_tfmot.tflite.converter import grey_to_rgb
from sgt_tfmot.tflite.runtime import TFLiteModel
from tests.helpers.data import write_bars_npz
from tests.helpers.models import small_classifier


@pytest.mark.slow
def test_an_rgb_input_file_is_explained_on_its_grey_dataset(tmp_path):
    npz = write_bars_npz(tmp_path / "bars.npz", train=64, test=24)
    arrays = np.load(npz)
    model = small_classifier((12, 12, 1), 3)
    calibration = grey_to_rgb(arrays["x_train"].astype(np.float32))  # as convert gives them
    flatbuffer = to_integer_tflite(model, calibration, calibration_samples=64, rgb_input=True)
    path = tmp_path / "rgb.tflite"
    path.write_bytes(flatbuffer)
    assert TFLiteModel(flatbuffer).input_shape == (12, 12, 3)
    explanation = explain_models(
        [path], tmp_path / "out", dataset=str(npz), curve_images=12, agreement_images=4,
        num_images=2,
    )  # fmt: skip
    evaluated = explanation.evaluation.models[0]
    chosen = data.stratified_order(arrays["y_test"], 0)[:12]
    x = arrays["x_test"][chosen].astype(np.float32)
    expected = TFLiteModel(flatbuffer).predict(grey_to_rgb(x)).argmax(-1)
    assert evaluated.accuracy == np.mean(expected == arrays["y_test"][chosen])
    summary = json.loads((tmp_path / "out" / "summary.json").read_text())
    assert summary["model_paths"] == {"rgb": str(path)}
