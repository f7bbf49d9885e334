"""Export to full-integer TFLite: k-bit QAT models and float models, run in LiteRT.

Tolerances, stated once:
* TFLite against the k-bit QAT Keras model: at most 3 steps of the output tensor's
  quantization scale. Integer kernels round every intermediate requantization, which moves
  a logit by a step or two; more would mean a wrong range, a wrong weight or a wrong grid.
* The 8-bit export model computes the QAT model's values (checked to float precision).
"""

import numpy as np
import pytest

from sgt_tfmot import quantize_model
from sgt_tfmot._keras import keras
from sgt_tfmot.quantizers import quantize_weights
from sgt_tfmot.tflite.converter import export_model, to_integer_tflite
from sgt_tfmot.tflite.flatbuffer import read_model
from sgt_tfmot.tflite.runtime import TFLiteModel
from tests.test_quantize import residual_model

OUTPUT_STEPS = 3

RNG = np.random.default_rng(0)
X = RNG.integers(0, 256, (64, 8, 8, 3)).astype("float32")
Y = (X[:, :4, :4].mean(axis=(1, 2, 3)) > 127).astype("int64") + 2 * (X[..., 0].mean((1, 2)) > 127)


def trained_qat(bits):
    keras.utils.set_random_seed(bits)
    qat = quantize_model(residual_model(), weight_bits=bits, activation_bits=bits, alpha_init=4.0)
    qat.compile(keras.optimizers.Adam(1e-2), keras.losses.SparseCategoricalCrossentropy(True))
    qat.fit(X, Y, epochs=4, batch_size=16, verbose=0)
    return qat


@pytest.fixture(scope="module", params=[8, 4, 2])
def converted(request):
    qat = trained_qat(request.param)
    return request.param, qat, to_integer_tflite(qat, X[:32])


def test_int8_tflite_matches_the_k_bit_keras_model(converted):
    _, qat, flatbuffer = converted
    tflite = TFLiteModel(flatbuffer)
    scale = tflite.output["quantization"][0]
    expected = qat.predict(X, verbose=0)
    np.testing.assert_allclose(tflite.predict(X), expected, atol=OUTPUT_STEPS * scale + 1e-6)
    assert (tflite.predict(X).argmax(1) == expected.argmax(1)).mean() >= 0.95


def test_export_model_computes_the_qat_model(converted):
    _, qat, _ = converted
    np.testing.assert_allclose(
        export_model(qat).predict(X, verbose=0), qat.predict(X, verbose=0), atol=1e-5
    )


def test_flatbuffer_is_full_integer_with_a_static_batch(converted):
    bits, _, flatbuffer = converted
    summary = read_model(flatbuffer)
    assert summary.inputs[0].type == "INT8" and summary.outputs[0].type == "INT8"
    assert summary.inputs[0].shape_signature == (1, 8, 8, 3)
    assert "QUANTIZE" not in summary.op_names and "DEQUANTIZE" not in summary.op_names
    for op in summary.ops:
        for tensor in op.inputs + op.outputs:
            if tensor is not None:
                assert tensor.type in {"INT8", "INT32"}, (op.name, tensor.name, tensor.type)
    # The input is raw pixels over [0, 255]: scale 1.
    assert summary.inputs[0].quantization.scale == (1.0,)
    # Rescaling is MUL + ADD, BN folds into the convs, ReLUs fuse, the residual sum is one
    # ADD; below 8 bits each PACT activation adds one MINIMUM (the clip at α).
    minimum = ["MINIMUM"] if bits < 8 else []
    assert summary.op_names == [
        "MUL", "ADD", "CONV_2D", *minimum, "CONV_2D", "ADD", *minimum, "MEAN", "FULLY_CONNECTED"
    ]  # fmt: skip


def test_export_model_holds_the_k_bit_kernels(converted):
    bits, qat, _ = converted
    exported = export_model(qat)
    for layer in qat.layers:
        config = getattr(layer, "quantize_config", None)
        if config is None or config.weight_quantizer is None:
            continue
        (kernel,) = [w for w in layer.weights if w.name.endswith("/kernel:0")]
        (baked,) = [
            w for w in exported.get_layer(layer.name).weights if w.name.endswith("/kernel:0")
        ]
        q = config.weight_quantizer
        np.testing.assert_allclose(
            baked.numpy(), quantize_weights(kernel, q.num_bits, q.per_channel).numpy(), atol=1e-7
        )


def test_uint8_io_and_larger_fixed_batch():
    qat = trained_qat(4)
    flatbuffer = to_integer_tflite(qat, X[:32], io_dtype="uint8", batch_size=4)
    summary = read_model(flatbuffer)
    assert summary.inputs[0].type == "UINT8" and summary.outputs[0].type == "UINT8"
    assert summary.inputs[0].shape_signature == (4, 8, 8, 3)
    assert summary.inputs[0].quantization.zero_point == (0,)  # uint8 pixels go in unchanged
    tflite = TFLiteModel(flatbuffer)
    scale = tflite.output["quantization"][0]
    expected = qat.predict(X[:10], verbose=0)
    np.testing.assert_allclose(tflite.predict(X[:10]), expected, atol=OUTPUT_STEPS * scale + 1e-6)


def test_float_model_post_training_quantization():
    keras.utils.set_random_seed(3)
    model = residual_model()
    model.compile(keras.optimizers.Adam(1e-2), keras.losses.SparseCategoricalCrossentropy(True))
    model.fit(X, Y, epochs=4, batch_size=16, verbose=0)
    tflite = TFLiteModel(to_integer_tflite(model, X))
    expected = model.predict(X, verbose=0)
    # Post-training quantization rounds weights and activations the model never saw rounded:
    # allow 5 % of the logit range, and the same top-1 class on at least 90 % of the images.
    actual = tflite.predict(X)
    assert np.abs(actual - expected).max() <= 0.05 * np.ptp(expected)
    assert (actual.argmax(1) == expected.argmax(1)).mean() >= 0.9


def test_bad_arguments():
    qat = quantize_model(residual_model())
    with pytest.raises(ValueError, match=r"`io_dtype` must be one of \['int8', 'uint8'\]"):
        to_integer_tflite(qat, X, io_dtype="float32")
    with pytest.raises(ValueError, match=r"`batch_size` must be a positive int\. Received: 0"):
        to_integer_tflite(qat, X, batch_size=0)
    with pytest.raises(ValueError, match="is a float model: post-training quantization needs"):
        to_integer_tflite(residual_model())
