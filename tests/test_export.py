"""Export to full-integer TFLite: k-bit QAT models and float models, run in LiteRT.

Tolerances, stated once:
* TFLite against the k-bit QAT Keras model as trained: at most 3 steps of the output
  tensor's quantization scale. The integer model rounds each folded bias to int32 units,
  which moves a logit by a step or two; more would mean a wrong range, weight or grid.
* After `align_biases`, the Keras model computes the integer model: the same class for every
  image and at most 1 output step apart (fixed-point requantization vs float).
* The 8-bit export model computes the aligned QAT model's values to float precision.
"""

import numpy as np
import pytest
from ai_edge_litert.interpreter import Interpreter

from sgt_tfmot import quantize_model
from sgt_tfmot.export import align_biases, biases_aligned, export_model
from sgt_tfmot.keras import keras, tf
from sgt_tfmot.quantizers import quantize_weights
from sgt_tfmot.tflite.converter import _integer_settings, _representative, to_integer_tflite
from sgt_tfmot.tflite.flatbuffer import read_model
from sgt_tfmot.tflite.rewrite import op_code, unpack_model, with_signature
from sgt_tfmot.tflite.runtime import TFLiteModel, integer_outputs
from tests.helpers.models import RESIDUAL_X as X, RESIDUAL_Y as Y, residual_model

OUTPUT_STEPS = 3


@pytest.fixture(scope="module", params=[8, 4, 2])
def converted(request, residual_qat):
    """(bits, the session's trained QAT residual model, its integer model)."""
    qat = residual_qat(request.param)
    return request.param, qat, to_integer_tflite(qat, X[:32])


def test_int8_tflite_matches_the_k_bit_keras_model(converted):
    _, qat, flatbuffer = converted
    tflite = TFLiteModel(flatbuffer)
    scale = tflite.output["quantization"][0]
    expected = qat.predict(X, verbose=0)
    np.testing.assert_allclose(tflite.predict(X), expected, atol=OUTPUT_STEPS * scale + 1e-6)
    assert (tflite.predict(X).argmax(1) == expected.argmax(1)).mean() >= 0.95


def aligned_copy(qat):
    copy = keras.models.clone_model(qat)
    copy.set_weights(qat.get_weights())
    align_biases(copy)
    return copy


def test_export_model_computes_the_aligned_qat_model(converted):
    _, qat, _ = converted
    aligned = aligned_copy(qat)
    np.testing.assert_allclose(
        export_model(qat).predict(X, verbose=0), aligned.predict(X, verbose=0), atol=1e-5
    )


def test_aligned_qat_model_computes_the_integer_model(converted):
    _, qat, flatbuffer = converted
    aligned = aligned_copy(qat)
    assert to_integer_tflite(aligned, X[:32]) == flatbuffer  # the same integer model
    tflite = TFLiteModel(flatbuffer)
    scale = tflite.output["quantization"][0]
    expected, actual = aligned.predict(X, verbose=0), tflite.predict(X)
    np.testing.assert_allclose(actual, expected, atol=scale + 1e-6)
    np.testing.assert_array_equal(actual.argmax(1), expected.argmax(1))


def half_units(model) -> float:
    """The largest half int32 unit (input step × weight step) of the export model's biases:
    how far rounding or `align_biases` may move a bias."""
    from sgt_tfmot._graph import inbound_layer
    from sgt_tfmot.export import _output_step

    exported, found = export_model(model), []
    for layer in exported.layers:
        quantizer = getattr(getattr(layer, "quantize_config", None), "weight_quantizer", None)
        if quantizer is not None and getattr(layer.layer, "use_bias", False):
            step = _output_step(inbound_layer(layer))
            found.append(0.5 * step * quantizer.steps(weight(layer, "kernel:0")).max())
    return max(found)


def test_align_biases_moves_only_biases_a_little_and_is_idempotent(converted):
    _, qat, _ = converted
    aligned = aligned_copy(qat)
    moved = []
    for before, after in zip(qat.weights, aligned.weights, strict=True):
        if not np.array_equal(before.numpy(), after.numpy()):
            moved.append(after.name)
            # at most half an int32 unit (~0.03 here at 2 bits: input step α/3 times the
            # weight step m/7 of the 4-bit container)
            shift = np.abs(after.numpy() - before.numpy()).max()
            assert shift <= half_units(qat) * (1 + 1e-5), after.name
    # BN offsets (β) of the two folded convs and the logits' own bias.
    assert moved and all(name.endswith(("beta:0", "bias:0")) for name in moved), moved
    again = aligned_copy(aligned)
    for first, second in zip(aligned.weights, again.weights, strict=True):
        np.testing.assert_allclose(first.numpy(), second.numpy(), atol=1e-6)
    assert offset(again) == offset(aligned)


def offset(model):
    """The `offset` of the model's input Rescaling (inside its quantize wrapper)."""
    (rescaling,) = [
        layer.layer
        for layer in model.layers
        if isinstance(getattr(layer, "layer", None), keras.layers.Rescaling)
    ]
    return rescaling.offset


def test_align_biases_puts_the_input_offset_on_the_int32_grid(converted):
    _, qat, _ = converted
    aligned = aligned_copy(qat)
    # Rescaling(1/127.5, offset=-1): the 1x1 conv's int32 unit is input step 1 × weight step
    # (1/127.5)/127 per channel; -1 is -16192.5 units, a tie, so the offset moves.
    unit = np.float32(1 / 127.5) / 127
    before, after = np.asarray(offset(qat)), np.asarray(offset(aligned), np.float64)
    assert before.shape == () and after.shape == (3,)
    np.testing.assert_allclose(after / unit, np.round(after / unit), atol=1e-3)
    assert np.all(np.abs(after - before) <= unit / 2 + 1e-9) and np.any(after != before)


def test_align_biases_retraces_a_model_that_already_predicted(converted):
    _, qat, _ = converted
    copy = keras.models.clone_model(qat)
    copy.set_weights(qat.get_weights())
    copy.predict(X, verbose=0)  # traces the old offset into the predict function
    align_biases(copy)
    # The offset is a constant of the traced graph; the tiny shift here changes no output
    # value, so check that the traced function was dropped as well as the outputs.
    assert copy.predict_function is None
    np.testing.assert_array_equal(
        copy.predict(X, verbose=0), aligned_copy(qat).predict(X, verbose=0)
    )


def test_biases_aligned_tells_an_aligned_model(converted):
    _, qat, _ = converted
    assert not biases_aligned(qat)
    assert biases_aligned(aligned_copy(qat))


def test_exported_biases_are_the_int32_biases_of_the_tflite_model(converted):
    _, qat, flatbuffer = converted
    from ai_edge_litert.interpreter import Interpreter

    interpreter = Interpreter(model_content=flatbuffer)
    interpreter.allocate_tensors()
    tensors = {t["index"]: t for t in interpreter.get_tensor_details()}
    int32_biases = []
    for op in interpreter._get_ops_details():
        if op["op_name"] in ("CONV_2D", "FULLY_CONNECTED"):
            bias = tensors[op["inputs"][2]]
            scales = bias["quantization_parameters"]["scales"]
            int32_biases.append(interpreter.get_tensor(bias["index"]) * scales)
    exported = export_model(qat)
    keras_biases = [
        weight(layer, "bias:0")
        for layer in exported.layers
        if any(w.name.endswith("bias:0") for w in layer.weights)
    ]
    assert len(keras_biases) == len(int32_biases) == 4  # normalization, stem, conv, logits
    for keras_bias, int32_bias in zip(keras_biases, int32_biases, strict=True):
        np.testing.assert_allclose(keras_bias, int32_bias, rtol=1e-6, atol=1e-7)


def test_align_biases_rejects_a_float_model():
    with pytest.raises(ValueError, match="is not a QAT model"):
        align_biases(residual_model())


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
    # Rescaling is a 1x1 CONV_2D (exact per-channel scale), BN folds into the convs, ReLUs
    # fuse, the residual sum is one ADD. Below 8 bits the converter writes a MINIMUM after
    # each PACT activation, which `fold_minimums` turns into the producer's int8 saturation
    # (tests/test_tflite_rewrite.py): the same graph at every bit width.
    assert summary.op_names == [
        "CONV_2D", "CONV_2D", "CONV_2D", "ADD", "MEAN", "FULLY_CONNECTED"
    ]  # fmt: skip
    if bits < 8:  # each PACT activation's int8 range ends at α: its level is 127
        relu = [op for op in summary.ops if op.fused_activation == "RELU"]
        assert len(relu) == 2
        for op in relu:
            (zero_point,) = op.outputs[0].quantization.zero_point
            assert zero_point == 127 - (2**bits - 1)


def _graph_without_names(flatbuffer: bytes) -> list:
    """Each op of the file: its code, options and, for each operand, type, shape,
    quantization and constant bytes (tensor names left out)."""
    model = unpack_model(flatbuffer)
    subgraph = model.subgraphs[0]

    def operand(index):
        if index < 0:
            return None
        tensor = subgraph.tensors[index]
        data = model.buffers[tensor.buffer].data if tensor.buffer else None
        q = tensor.quantization
        return (
            tensor.type,
            tuple(tensor.shape),
            None if q is None or q.scale is None else (tuple(q.scale), tuple(q.zeroPoint)),
            None if data is None else bytes(data),
        )

    return [
        (op_code(model, op), repr(vars(op.builtinOptions)) if op.builtinOptions else None,
         [operand(i) for i in op.inputs], [operand(i) for i in op.outputs])
        for op in subgraph.operators
    ]  # fmt: skip


def test_the_frozen_conversion_writes_the_saved_model_conversions_file(residual_qat):
    """The converter converts the frozen graph (no SavedModel written first: ~10x faster).
    Against the SavedModel conversion it ran before, on the same export model and data: the
    same ops, options, operand types, shapes, quantization and constants, the same outputs,
    and the same `serving_default` signature (`images` in, `output_0` out)."""
    qat = residual_qat(4)
    frozen = to_integer_tflite(qat, X[:32], optimize=False)
    source = export_model(qat)

    @tf.function(input_signature=[tf.TensorSpec([1, 8, 8, 3], tf.float32)])
    def serve(images):
        return source(images, training=False)

    converter = tf.lite.TFLiteConverter.from_concrete_functions(
        [serve.get_concrete_function()], source
    )
    saved = _integer_settings(converter, "int8", _representative(X[:32], 1, 32)).convert()

    assert _graph_without_names(frozen) == _graph_without_names(saved)
    np.testing.assert_array_equal(TFLiteModel(frozen).predict(X), TFLiteModel(saved).predict(X))
    signatures = Interpreter(model_content=saved).get_signature_list()
    assert signatures == {"serving_default": {"inputs": ["images"], "outputs": ["output_0"]}}
    assert Interpreter(model_content=frozen).get_signature_list() == signatures
    images = TFLiteModel(frozen).quantize(X[:1])
    runner = Interpreter(model_content=frozen).get_signature_runner("serving_default")
    np.testing.assert_array_equal(
        runner(images=images)["output_0"], integer_outputs(frozen, images)
    )


def test_with_signature_replaces_the_signature_and_changes_nothing_else(residual_qat):
    flatbuffer = to_integer_tflite(residual_qat(8), X[:32])
    renamed = with_signature(flatbuffer, "classify", ("pixels",), ("scores",))
    assert Interpreter(model_content=renamed).get_signature_list() == {
        "classify": {"inputs": ["pixels"], "outputs": ["scores"]}
    }
    assert _graph_without_names(renamed) == _graph_without_names(flatbuffer)
    with pytest.raises(ValueError, match="names 2 inputs and 1 outputs; the graph has 1 and 1"):
        with_signature(flatbuffer, inputs=("a", "b"))


def weight(layer, short_name):
    """The value of `layer`'s variable called `short_name` (without its layer prefix)."""
    (found,) = [w.numpy() for w in layer.weights if w.name.split("/")[-1] == short_name]
    return found


def bn_factor_and_offset(model, bn_name):
    """γ/√(σ² + ε) and β − μ·γ/√(σ² + ε) of a BatchNormalization layer, in numpy."""
    bn = next(
        getattr(layer, "layer", layer)
        for layer in model.layers
        if getattr(layer, "layer", layer).name == bn_name
    )
    gamma, beta, mean, variance = (bn.gamma, bn.beta, bn.moving_mean, bn.moving_variance)
    gamma, beta, mean, variance = (v.numpy() for v in (gamma, beta, mean, variance))
    factor = gamma / np.sqrt(variance + bn.epsilon)
    return factor, beta - mean * factor


def test_export_model_holds_the_k_bit_kernels(converted):
    """Every exported kernel lies on the symmetric k-bit grid of its QAT kernel: the Dense
    logits kernel unchanged, the two Conv kernels times their BN's per-channel factor
    γ/√(σ² + ε), and with the folded BN offset as bias."""
    _, qat, _ = converted
    exported = export_model(qat)
    for name, bn_name in [("stem", "stem_bn"), ("conv", "conv_bn"), ("logits", None)]:
        wrapper = next(layer for layer in qat.layers if getattr(layer, "layer", layer).name == name)
        q = wrapper.quantize_config.weight_quantizer
        kernel = weight(wrapper, "kernel:0")
        expected = quantize_weights(kernel, q.num_bits, q.per_channel).numpy()
        target = exported.get_layer(wrapper.name)
        baked, bias = weight(target, "kernel:0"), weight(target, "bias:0")
        if bn_name is not None:
            factor, offset = bn_factor_and_offset(qat, bn_name)
            expected = expected * factor
            # on its int32 grid: see test_exported_biases_are_the_int32_biases_of_the_tflite_model
            np.testing.assert_allclose(bias, offset, atol=half_units(qat) * (1 + 1e-5))
        np.testing.assert_allclose(baked, expected, rtol=1e-6, atol=1e-7)
        axes = tuple(range(baked.ndim - 1)) if q.per_channel else None
        levels = 2 ** (q.num_bits - 1) - 1  # the stem and the logits keep 8 bits
        steps = baked / (np.abs(baked).max(axis=axes) / levels)
        np.testing.assert_allclose(steps, np.round(steps), atol=1e-4)


def test_export_model_folds_batch_norm_into_the_conv(converted):
    _, qat, _ = converted
    exported = export_model(qat)
    assert not any(
        isinstance(getattr(layer, "layer", layer), keras.layers.BatchNormalization)
        for layer in exported.layers
    )
    assert any(
        isinstance(getattr(layer, "layer", layer), keras.layers.BatchNormalization)
        for layer in qat.layers
    )


def test_uint8_io_and_larger_fixed_batch(residual_qat):
    qat = residual_qat(4)
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


# ----------------------------------------------------------------------------- depthwise
def depthwise_model():
    """Conv-BN-ReLU6, DepthwiseConv-BN-ReLU6 (MobileNet's pattern), 1x1 Conv-BN-ReLU6."""
    L = keras.layers
    inputs = keras.Input((8, 8, 3))
    x = L.Rescaling(1 / 127.5, offset=-1.0)(inputs)
    x = L.Conv2D(8, 3, padding="same", use_bias=False)(x)
    x = L.ReLU(6.0)(L.BatchNormalization(momentum=0.5)(x))
    x = L.DepthwiseConv2D(3, strides=2, padding="same", use_bias=False, depth_multiplier=2)(x)
    x = L.ReLU(6.0)(L.BatchNormalization(momentum=0.5)(x))
    x = L.Conv2D(8, 1, use_bias=False)(x)
    x = L.ReLU(6.0)(L.BatchNormalization(momentum=0.5)(x))
    outputs = L.Dense(4)(L.GlobalAveragePooling2D()(x))
    return keras.Model(inputs, outputs)


def test_depthwise_conv_with_batch_norm_converts_exactly():
    """BN folds into the depthwise kernel in the export model (per-channel int8 weights);
    left to the converter, the int32 bias got another scale than input × weight (issue 12)."""
    keras.utils.set_random_seed(3)
    qat = quantize_model(depthwise_model(), weight_bits=4, activation_bits=4, alpha_init=4.0)
    qat.compile(keras.optimizers.Adam(1e-2), keras.losses.SparseCategoricalCrossentropy(True))
    qat.fit(X, Y, epochs=4, batch_size=16, verbose=0)  # BN statistics far from (0, 1)
    align_biases(qat)
    flatbuffer = to_integer_tflite(qat, X[:32])
    tflite = TFLiteModel(flatbuffer)
    scale = tflite.output["quantization"][0]
    expected, actual = qat.predict(X, verbose=0), tflite.predict(X)
    np.testing.assert_allclose(actual, expected, atol=scale + 1e-6)
    assert np.ptp(expected, axis=0).max() > 10 * scale  # the logits depend on the input
    summary = read_model(flatbuffer)
    for op in summary.ops:
        if op.name in ("CONV_2D", "DEPTHWISE_CONV_2D", "FULLY_CONNECTED") and op.inputs[2]:
            x, w, b = op.inputs[:3]
            ratio = np.asarray(b.quantization.scale) / (
                x.quantization.scale[0] * np.asarray(w.quantization.scale)
            )
            np.testing.assert_allclose(ratio, 1.0, rtol=1e-5, err_msg=op.name)


@pytest.mark.slow
@pytest.mark.parametrize("make_model", [residual_model, depthwise_model])
def test_mse_weight_range_converts_exactly(make_model):
    """With weight_range="mse" some weights are clipped: the export still holds each kernel's
    k-bit grid, BN folded (conv and depthwise), and the aligned model computes the integer
    model (same class everywhere, at most one output step apart)."""
    keras.utils.set_random_seed(5)
    qat = quantize_model(
        make_model(), weight_bits=2, activation_bits=2, alpha_init=4.0, weight_range="mse"
    )
    qat.compile(keras.optimizers.Adam(1e-2), keras.losses.SparseCategoricalCrossentropy(True))
    qat.fit(X, Y, epochs=4, batch_size=16, verbose=0)
    align_biases(qat)
    tflite = TFLiteModel(to_integer_tflite(qat, X[:32]))
    scale = tflite.output["quantization"][0]
    expected, actual = qat.predict(X, verbose=0), tflite.predict(X)
    np.testing.assert_allclose(actual, expected, atol=scale + 1e-6)
    np.testing.assert_array_equal(actual.argmax(1), expected.argmax(1))
    assert np.ptp(expected, axis=0).max() > 10 * scale  # the logits depend on the input
