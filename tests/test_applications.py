"""Keras Applications: MobileNetV2 through quantize -> SGT fit -> save/load -> int8 TFLite.

The pipeline runs once per session (the `mobilenet_v2_run` fixture, tests/helpers/models.py);
this test checks each of its steps."""

import numpy as np

from sgt_tfmot.tflite import TFLiteModel, check_edgetpu
from sgt_tfmot.tflite.rewrite import fold_minimums


def test_mobilenet_v2_w4a4_sgt_to_int8_on_the_edge_tpu_with_the_same_values(mobilenet_v2_run):
    run = mobilenet_v2_run
    assert run.flat  # Keras Applications' nested model inlined
    assert run.reestimated == 52  # every BN layer's statistics, from the data
    np.testing.assert_array_equal(run.loaded_outputs, run.qat_outputs)  # save -> load
    flatbuffer = fold_minimums(run.raw)  # what to_integer_tflite(loaded, x[:16]) returns
    assert check_edgetpu(flatbuffer).compatible
    tflite = TFLiteModel(flatbuffer)
    step = tflite.output["quantization"][0]
    expected, actual = run.loaded.predict(run.x, verbose=0), tflite.predict(run.x)
    assert np.ptp(expected, axis=0).max() > 4 * step  # the logits depend on the image
    np.testing.assert_allclose(actual, expected, atol=step + 1e-6)  # one output step
    np.testing.assert_array_equal(actual.argmax(1), expected.argmax(1))
