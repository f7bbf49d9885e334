"""Keras Applications: MobileNetV2 through quantize -> SGT fit -> save/load -> int8 TFLite."""

import numpy as np

from sgt_tfmot import align_biases, load_model, models, quantize_model, save_model
from sgt_tfmot.keras import keras
from sgt_tfmot.quantize import calibrate_ranges
from sgt_tfmot.tflite import TFLiteModel, check_edgetpu, to_integer_tflite
from sgt_tfmot.trainers import SaliencyGuidedModel, reestimate_batch_norm


def test_mobilenet_v2_w4a4_sgt_to_int8_on_the_edge_tpu_with_the_same_values(tmp_path):
    keras.utils.set_random_seed(0)
    rng = np.random.default_rng(0)
    x = rng.integers(0, 256, (48, 32, 32, 3)).astype("float32")  # raw pixels
    y = (x[..., 0].mean((1, 2)) > 127.5).astype("int64") + 2 * (x[..., 1].mean((1, 2)) > 127.5)
    model = models.build("mobilenet_v2", (32, 32, 3), 4, width=0.35)
    assert not any(isinstance(layer, keras.Model) for layer in model.layers)  # flat
    # The inference-mode model of a random init computes nearly nothing until its BN
    # statistics describe the data; then ranges and α from the float model's activations
    # (far below α0 = 6, where 4-bit PACT would round every activation to 0).
    assert reestimate_batch_norm(model, x, batch_size=16) == 52
    qat = quantize_model(model, weight_bits=4, activation_bits=4)
    calibrate_ranges(qat, model, x)
    sgt = SaliencyGuidedModel(qat, kl_weight=0.1, seed=0)
    sgt.compile(keras.optimizers.SGD(0.05, momentum=0.9),
                keras.losses.SparseCategoricalCrossentropy(from_logits=True))  # fmt: skip
    sgt.fit(x, y, batch_size=16, epochs=1, verbose=0)  # 3 steps
    reestimate_batch_norm(qat, x, batch_size=16)  # after the short fine-tune, likewise
    loaded = load_model(save_model(qat, tmp_path / "mnv2.h5"))
    np.testing.assert_array_equal(loaded.predict(x, verbose=0), qat.predict(x, verbose=0))
    align_biases(loaded)
    flatbuffer = to_integer_tflite(loaded, x[:16])
    assert check_edgetpu(flatbuffer).compatible
    tflite = TFLiteModel(flatbuffer)
    step = tflite.output["quantization"][0]
    expected, actual = loaded.predict(x, verbose=0), tflite.predict(x)
    assert np.ptp(expected, axis=0).max() > 4 * step  # the logits depend on the image
    np.testing.assert_allclose(actual, expected, atol=step + 1e-6)  # one output step
    np.testing.assert_array_equal(actual.argmax(1), expected.argmax(1))
