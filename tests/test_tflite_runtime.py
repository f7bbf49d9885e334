"""The LiteRT runner (`sgt_tfmot.tflite.runtime`): what a model LiteRT cannot prepare gives."""

import re

import numpy as np
import pytest
from ai_edge_litert.interpreter import Interpreter

from sgt_tfmot import quantize_model
from sgt_tfmot.keras import keras
from sgt_tfmot.tflite.converter import to_integer_tflite
from sgt_tfmot.tflite.runtime import TFLiteModel

L = keras.layers


def test_a_model_litert_cannot_prepare_is_one_line_with_its_smallest_scale(monkeypatch):
    """XNNPACK refuses ops whose requantization is out of its range (seen on a model whose
    PACT α had collapsed to 0.018): one ValueError line (the CLIs' exit 2), the runtime's
    words and the smallest int8 scale, never a RuntimeError from inside LiteRT."""
    keras.utils.set_random_seed(0)
    inputs = keras.Input((8, 8, 1))
    x = L.Conv2D(4, 3, activation="relu", name="conv")(inputs)
    qat = quantize_model(keras.Model(inputs, L.Dense(2)(L.Flatten()(x))))
    for weight in qat.weights:
        if "alpha" in weight.name:
            weight.assign(1e-3)  # a collapsed α: the conv's output range becomes tiny
    images = np.random.default_rng(0).uniform(0, 255, (8, 8, 8, 1)).astype(np.float32)
    flatbuffer = to_integer_tflite(qat, representative_data=images)

    def refuse(self):
        raise RuntimeError("failed to create XNNPACK runtimeNode number 1 (TfLiteXNNPackDelegate)"
                           " failed to prepare.")  # fmt: skip

    monkeypatch.setattr(Interpreter, "allocate_tensors", refuse)
    with pytest.raises(ValueError) as caught:
        TFLiteModel(flatbuffer)
    message = str(caught.value)
    assert "\n" not in message, message
    assert re.fullmatch(
        r"LiteRT could not prepare the converted model \(failed to create XNNPACK runtimeNode "
        r"number 1 \(TfLiteXNNPackDelegate\) failed to prepare\.\); the model's smallest int8 "
        r"scale is [0-9.e-]+ \(tensor '.*quant_conv.*', a range of [0-9.]+\): a range that small "
        r"usually means an activation's range or PACT α collapsed in training \(see the run's "
        r"alpha\.json\)\.",
        message,
    )
