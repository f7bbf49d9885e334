"""Tests of the flatbuffer reader and the Edge TPU checker on tiny converted models.

Every model is Conv2D(8) -> activation -> GlobalAveragePooling -> Dense(3) on 8x8x3 inputs
(251 parameters), converted once per module with the TF 2.21 converter. Expected op lists
and versions are what that converter writes; the reasons come from Coral's rules.
"""

import json
from collections import Counter

import flatbuffers
import numpy as np
import pytest
from ai_edge_litert import schema_py_generated as schema

from sgt_tfmot.keras import keras, tf
from sgt_tfmot.tflite import edgetpu
from sgt_tfmot.tflite.edgetpu import check_edgetpu, format_table, summary_line
from sgt_tfmot.tflite.flatbuffer import ModelSummary, OpInfo, TensorInfo, read_model

H, W, C = 8, 8, 3


def _model(activation: str = "relu") -> keras.Model:
    keras.utils.set_random_seed(0)
    inputs = keras.Input((H, W, C))
    x = keras.layers.Conv2D(8, 3, padding="same")(inputs)
    x = keras.layers.ReLU()(x) if activation == "relu" else keras.layers.LeakyReLU(0.1)(x)
    x = keras.layers.GlobalAveragePooling2D()(x)
    outputs = keras.layers.Dense(3, bias_initializer="ones")(x)
    return keras.Model(inputs, outputs)


def _convert(
    model: keras.Model,
    batch: int | None = 1,
    quantize: bool = True,
    io_type: tf.DType | None = tf.int8,
    float_fallback: bool = False,
) -> bytes:
    """Full-integer post-training quantization with a fixed (or None) batch size."""
    function = tf.function(lambda x: model(x, training=False))
    concrete = function.get_concrete_function(tf.TensorSpec([batch, H, W, C], tf.float32))
    converter = tf.lite.TFLiteConverter.from_concrete_functions([concrete], model)
    if quantize:
        rng = np.random.default_rng(0)
        converter.optimizations = [tf.lite.Optimize.DEFAULT]
        converter.representative_dataset = lambda: (
            [rng.uniform(-1.0, 1.0, (batch or 1, H, W, C)).astype(np.float32)] for _ in range(8)
        )
        ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
        if float_fallback:
            ops.append(tf.lite.OpsSet.TFLITE_BUILTINS)
        converter.target_spec.supported_ops = ops
        if io_type is not None:
            converter.inference_input_type = io_type
            converter.inference_output_type = io_type
    return converter.convert()


@pytest.fixture(scope="module")
def int8_model() -> bytes:
    return _convert(_model())


@pytest.fixture(scope="module")
def int8_summary(int8_model: bytes) -> ModelSummary:
    return read_model(int8_model)


# --- reader -------------------------------------------------------------------------------


def test_reader_lists_ops_in_order_with_int8_types_and_static_shapes(int8_summary):
    # The converter fuses the ReLU layer into the convolution and turns global average
    # pooling into MEAN over axes (1, 2).
    assert int8_summary.op_names == ["CONV_2D", "MEAN", "FULLY_CONNECTED"]
    assert [op.index for op in int8_summary.ops] == [0, 1, 2]
    # Versions as TF 2.21's converter writes int8 ops (setup.cfg pins tensorflow 2.21).
    assert [op.version for op in int8_summary.ops] == [3, 2, 4]
    conv, mean, dense = int8_summary.ops
    assert conv.fused_activation == "RELU"
    assert conv.custom_code is None

    assert [t.type for t in conv.inputs] == ["INT8", "INT8", "INT32"]
    assert [t.is_constant for t in conv.inputs] == [False, True, True]
    assert conv.inputs[1].shape == (8, 3, 3, C)  # OHWI kernel
    assert conv.outputs[0].shape == (1, H, W, 8)
    assert mean.inputs[1].values == (1, 2)
    assert mean.outputs[0].shape == (1, 8)
    assert dense.outputs[0].shape == (1, 3)
    for op in int8_summary.ops:
        for tensor in op.outputs:
            assert tensor.type == "INT8"
            assert tensor.shape_signature == tensor.shape
            assert not tensor.is_dynamic

    (model_input,) = int8_summary.inputs
    (model_output,) = int8_summary.outputs
    assert model_input.index == conv.inputs[0].index
    assert model_output.index == dense.outputs[0].index
    assert (model_input.type, model_input.shape) == ("INT8", (1, H, W, C))
    # Inputs are uniform in [-1, 1): the int8 grid spans about 2.0 in 255 steps, with the
    # zero point near the middle of [-128, 127].
    assert model_input.quantization.scale[0] == pytest.approx(2.0 / 255.0, rel=0.01)
    assert model_input.quantization.zero_point[0] in (-1, 0)


def test_reader_bias_values_match_the_quantization_parameters(int8_summary):
    # Dense bias initialised to 1.0 is stored as round(1.0 / (s_input * s_weight[c])) per
    # output channel, with bias scale s_input * s_weight[c].
    dense = int8_summary.ops[2]
    activations, weights, bias = dense.inputs
    assert bias.type == "INT32" and bias.is_constant
    expected_scale = np.float32(activations.quantization.scale[0]) * np.float32(
        weights.quantization.scale
    )
    np.testing.assert_allclose(bias.quantization.scale, expected_scale, rtol=1e-6)
    np.testing.assert_array_equal(bias.values, np.round(1.0 / np.array(bias.quantization.scale)))


def test_reader_reads_a_path_like_the_bytes(int8_model, int8_summary, tmp_path):
    path = tmp_path / "model.tflite"
    path.write_bytes(int8_model)
    assert read_model(path) == int8_summary
    assert read_model(str(path)) == int8_summary


def test_reader_summary_is_json_serializable(int8_summary):
    data = json.loads(json.dumps(int8_summary.to_dict()))
    assert [op["name"] for op in data["ops"]] == ["CONV_2D", "MEAN", "FULLY_CONNECTED"]
    assert data["inputs"][0]["shape"] == [1, H, W, C]


def test_reader_rejects_bytes_without_the_tflite_identifier():
    # Bytes 4..8 of b"junk bytes ..." are b" byt".
    with pytest.raises(
        ValueError,
        match=r"Not a TFLite flatbuffer \(the given bytes\): expected the file identifier "
        r"b'TFL3' at bytes 4..8, received b' byt' \(26 bytes in all\)",
    ):
        read_model(b"junk bytes, not a model...")
    with pytest.raises(ValueError, match=r"received b'' \(0 bytes in all\)"):
        read_model(b"")


def test_reader_rejects_truncated_bytes(int8_model):
    with pytest.raises(ValueError, match=r"corrupt or truncated \(100 bytes\)"):
        read_model(int8_model[:100])


def test_reader_rejects_a_file_that_is_not_a_model(tmp_path):
    path = tmp_path / "notes.txt"
    path.write_bytes(b"just some text")
    with pytest.raises(ValueError, match=r"Not a TFLite flatbuffer \(file '.*notes.txt'\)"):
        read_model(path)


def test_reader_rejects_a_missing_path(tmp_path):
    missing = tmp_path / "nothing.tflite"
    with pytest.raises(ValueError, match="No TFLite file at the given path. Received: '.*nothing"):
        read_model(missing)


def test_reader_rejects_other_types():
    with pytest.raises(TypeError, match="Received: int"):
        read_model(42)


# --- checker on converted models -----------------------------------------------------------


def test_int8_batch1_model_is_compatible(int8_summary):
    report = check_edgetpu(int8_summary)
    assert report.compatible
    assert report.first_cpu_op is None
    assert report.internal_quantize_ops == 0
    assert report.model_issues == []
    assert [v.placement for v in report.ops] == ["edgetpu"] * 3
    assert all(v.supported and v.reasons == () for v in report.ops)
    assert report.ops[0].input_types == ("INT8", "INT8", "INT32")

    table = format_table(report)
    lines = table.splitlines()
    assert lines[0].split() == ["#", "op", "ver", "inputs", "outputs", "verdict"]
    assert lines[1].split() == ["0", "CONV_2D", "3", "INT8,INT8,INT32", "INT8", "Edge", "TPU"]
    assert lines[3].split() == [
        "2",
        "FULLY_CONNECTED",
        "4",
        "INT8,INT8,INT32",
        "INT8",
        "Edge",
        "TPU",
    ]
    assert "Edge TPU: compatible" in table
    assert "QUANTIZE/DEQUANTIZE inside the graph: 0" in table

    data = json.loads(json.dumps(report.to_dict()))
    assert data["compatible"] is True
    assert [op["version"] for op in data["ops"]] == [3, 2, 4]


def test_checker_accepts_bytes_directly(int8_model):
    assert check_edgetpu(int8_model).compatible


def test_float_model_fails_on_float_tensors_at_the_first_op():
    report = check_edgetpu(_convert(_model(), quantize=False))
    assert not report.compatible
    assert report.first_cpu_op == 0
    assert {r.code for r in report.ops[0].reasons} == {edgetpu.FLOAT_TENSOR}
    assert report.ops[0].input_types == ("FLOAT32", "FLOAT32", "FLOAT32")
    assert [v.placement for v in report.ops] == ["cpu"] * 3


def test_dynamic_batch_is_flagged_on_every_op():
    summary = read_model(_convert(_model(), batch=None))
    # The batch dimension is -1 in the signature and 1 in the static shape.
    assert summary.inputs[0].shape_signature == (-1, H, W, C)
    assert summary.inputs[0].shape == (1, H, W, C)
    report = check_edgetpu(summary)
    assert report.first_cpu_op == 0
    assert all(edgetpu.DYNAMIC_SHAPE in {r.code for r in v.reasons} for v in report.ops)
    assert "[-1, 8, 8, 3]" in report.ops[0].reasons[0].message


def test_batch_two_has_four_effective_dimensions():
    report = check_edgetpu(_convert(_model(), batch=2))
    assert report.first_cpu_op == 0
    assert [r.code for r in report.ops[0].reasons] == [edgetpu.TOO_MANY_DIMS]
    # MEAN's output [2, 8] is 2-D and fine, its input [2, 8, 8, 8] is not.
    assert [r.code for r in report.ops[1].reasons] == [edgetpu.TOO_MANY_DIMS]
    # Coral: a FULLY_CONNECTED output must be one-dimensional; [2, 3] is not.
    assert [r.code for r in report.ops[2].reasons] == [edgetpu.UNSUPPORTED_OPTIONS]


def test_unsupported_op_is_the_first_cpu_op_and_splits_the_graph():
    # LeakyReLU converts to an int8 LEAKY_RELU, which the Edge TPU does not run
    # (google-coral/edgetpu issue 272).
    summary = read_model(_convert(_model("leaky")))
    assert summary.op_names == ["CONV_2D", "LEAKY_RELU", "MEAN", "FULLY_CONNECTED"]
    report = check_edgetpu(summary)
    assert not report.compatible
    assert report.first_cpu_op == 1
    assert [v.supported for v in report.ops] == [True, False, True, True]
    assert [v.placement for v in report.ops] == ["edgetpu", "cpu", "cpu", "cpu"]
    assert report.ops[1].reasons == (
        edgetpu.Reason(edgetpu.UNSUPPORTED_OP, "LEAKY_RELU is not an Edge TPU op"),
    )
    lines = format_table(report).splitlines()
    assert lines[2].startswith("1  LEAKY_RELU")
    assert lines[2].endswith("<- first CPU op")
    assert lines[3].endswith("CPU (after op 1)")
    assert "First op on the CPU: #1 LEAKY_RELU" in format_table(report)
    assert summary_line(report) == (
        "Edge TPU: NOT compatible (first CPU op #1 LEAKY_RELU: LEAKY_RELU is not an Edge TPU "
        "op); 4 ops: CONV_2D x1, LEAKY_RELU x1, MEAN x1, FULLY_CONNECTED x1; "
        "QUANTIZE/DEQUANTIZE inside the graph: 0"
    )


def test_float_fallback_op_counts_quantize_ops_inside_the_graph():
    # SIN has no int8 kernel: with the TFLITE_BUILTINS fallback the converter wraps it in
    # DEQUANTIZE ... QUANTIZE inside the graph.
    keras.utils.set_random_seed(0)
    inputs = keras.Input((H, W, C))
    x = keras.layers.Conv2D(8, 3, padding="same")(inputs)
    x = keras.layers.Lambda(tf.sin)(x)
    outputs = keras.layers.Dense(3)(keras.layers.GlobalAveragePooling2D()(x))
    model = keras.Model(inputs, outputs)
    summary = read_model(_convert(model, float_fallback=True))
    assert summary.op_names == [
        "CONV_2D",
        "DEQUANTIZE",
        "SIN",
        "QUANTIZE",
        "MEAN",
        "FULLY_CONNECTED",
    ]
    assert summary.ops[2].inputs[0].type == "FLOAT32"
    report = check_edgetpu(summary)
    assert report.internal_quantize_ops == 2
    assert report.first_cpu_op == 1
    assert {r.code for r in report.ops[2].reasons} == {
        edgetpu.UNSUPPORTED_OP,
        edgetpu.FLOAT_TENSOR,
    }
    assert [r.code for r in report.ops[3].reasons] == [edgetpu.FLOAT_TENSOR]


@pytest.mark.parametrize(
    "io_type, edge_types, edge_placement",
    [
        (tf.uint8, ("UINT8", "UINT8"), "edgetpu"),  # uint8 <-> int8 requantize: an Edge TPU op
        (None, ("FLOAT32", "FLOAT32"), "cpu"),  # float edges: CPU, without splitting the graph
    ],
)
def test_quantize_ops_at_the_edges_are_not_internal(io_type, edge_types, edge_placement):
    summary = read_model(_convert(_model(), io_type=io_type))
    assert summary.op_names[0] == "QUANTIZE"
    assert summary.op_names[-1] in ("QUANTIZE", "DEQUANTIZE")
    assert (summary.inputs[0].type, summary.outputs[0].type) == edge_types
    report = check_edgetpu(summary)
    assert report.compatible
    assert report.first_cpu_op is None
    assert report.internal_quantize_ops == 0
    assert report.ops[0].placement == report.ops[-1].placement == edge_placement
    assert [v.placement for v in report.ops[1:-1]] == ["edgetpu"] * 3
    verdict = format_table(report).splitlines()[len(report.ops) + 1]
    if edge_placement == "cpu":
        assert verdict.endswith("except 2 float edge conversion(s) that run on the CPU.")
    else:
        assert verdict == "Edge TPU: compatible; every op maps to the Edge TPU."
    edge = " (2 float edge conversion(s) on the CPU)" if edge_placement == "cpu" else ""
    counted = ", ".join(f"{op} x{n}" for op, n in Counter(summary.op_names).most_common())
    assert summary_line(report) == (
        f"Edge TPU: compatible{edge}; {len(report.ops)} ops: {counted}; QUANTIZE/DEQUANTIZE "
        "inside the graph: 0"
    )


# --- checker rules on hand-built summaries -------------------------------------------------


def _tensor(index, shape, type_="INT8", constant=False, values=None, signature=None):
    return TensorInfo(
        index=index,
        name=f"t{index}",
        type=type_,
        shape=tuple(shape),
        shape_signature=tuple(signature or shape),
        quantization=None,
        is_constant=constant,
        values=values,
    )


def _summary(*ops, num_subgraphs=1):
    return ModelSummary(
        schema_version=3,
        description="hand-built",
        num_subgraphs=num_subgraphs,
        ops=tuple(ops),
        inputs=(ops[0].inputs[0],),
        outputs=(ops[-1].outputs[0],),
    )


def _op(name, inputs, outputs, index=0, custom_code=None, fused_activation=None, options=None):
    return OpInfo(
        index=index,
        name=name,
        builtin_code=0,
        version=1,
        custom_code=custom_code,
        inputs=tuple(inputs),
        outputs=tuple(outputs),
        fused_activation=fused_activation,
        options=options or {},
    )


@pytest.mark.parametrize(
    "shape, too_many",
    [
        ((1, 128, 128, 3), False),  # Coral's example of a valid 4-D tensor
        ((3, 128, 128, 1), True),  # Coral's example: a size > 1 outside the 3 innermost
        ((128, 128, 3), False),
        ((1, 1, 4, 4, 4), False),
        ((1, 2, 4, 4, 4), True),
    ],
)
def test_effective_dimensions_rule(shape, too_many):
    relu = _op("RELU", [_tensor(0, shape)], [_tensor(1, shape)])
    codes = {r.code for r in check_edgetpu(_summary(relu)).ops[0].reasons}
    assert (edgetpu.TOO_MANY_DIMS in codes) == too_many


def test_known_limitations_from_the_supported_ops_table():
    x = _tensor(0, (1, 8, 8, 4))
    pool = _op("MAX_POOL_2D", [x], [_tensor(1, (1, 4, 4, 4))], fused_activation="RELU")
    batch_mean = _op(
        "MEAN",
        [x, _tensor(2, (1,), "INT32", constant=True, values=(0,))],
        [_tensor(3, (8, 8, 4))],
        index=1,
    )
    batch_pad = _op(
        "PAD",
        [x, _tensor(4, (4, 2), "INT32", constant=True, values=(0, 1, 1, 1, 1, 1, 0, 0))],
        [_tensor(5, (2, 10, 10, 4))],
        index=2,
    )
    runtime_weights = _op(
        "CONV_2D",
        [x, _tensor(6, (4, 3, 3, 4)), _tensor(7, (4,), "INT32", constant=True)],
        [_tensor(8, (1, 8, 8, 4))],
        index=3,
    )
    report = check_edgetpu(_summary(pool, batch_mean, batch_pad, runtime_weights))
    assert [[r.code for r in v.reasons] for v in report.ops] == [
        [edgetpu.UNSUPPORTED_OPTIONS],
        [edgetpu.UNSUPPORTED_OPTIONS],
        # The padded output [2, 10, 10, 4] also has 4 effective dimensions.
        [edgetpu.TOO_MANY_DIMS, edgetpu.UNSUPPORTED_OPTIONS],
        [edgetpu.NON_CONSTANT_PARAMETER],
    ]
    assert "fused RELU" in report.ops[0].reasons[0].message
    assert "axes [0]" in report.ops[1].reasons[0].message
    assert "paddings [0, 1]" in report.ops[2].reasons[1].message
    assert "'t6'" in report.ops[3].reasons[0].message


def test_custom_ops_and_several_subgraphs():
    x, y = _tensor(0, (1, 8)), _tensor(1, (1, 8))
    compiled = check_edgetpu(_summary(_op("CUSTOM", [x], [y], custom_code="edgetpu-custom-op")))
    assert compiled.compatible
    assert compiled.ops[0].name == "CUSTOM:edgetpu-custom-op"

    flex = check_edgetpu(_summary(_op("CUSTOM", [x], [y], custom_code="FlexSin")))
    assert flex.first_cpu_op == 0
    assert flex.ops[0].reasons[0].message == "custom op 'FlexSin' is not an Edge TPU op"

    looped = check_edgetpu(_summary(_op("RELU", [x], [y]), num_subgraphs=2))
    assert not looped.compatible
    assert looped.first_cpu_op is None
    assert [issue.code for issue in looped.model_issues] == [edgetpu.MULTIPLE_SUBGRAPHS]
    assert "Model: the model has 2 subgraphs" in format_table(looped)


# --- operator codes, on a flatbuffer packed by hand -------------------------------------------


def _packed_model(operator_codes: list) -> bytes:
    """A one-subgraph model whose i-th op uses operator_codes[i] on one int8 [1, 4] tensor."""
    model = schema.ModelT()
    model.version = 3
    model.buffers = [schema.BufferT()]
    model.operatorCodes = operator_codes
    tensor = schema.TensorT()
    tensor.name, tensor.type, tensor.shape, tensor.buffer = "x", schema.TensorType.INT8, [1, 4], 0
    subgraph = schema.SubGraphT()
    subgraph.tensors, subgraph.inputs, subgraph.outputs = [tensor], [0], [0]
    subgraph.operators = []
    for index in range(len(operator_codes)):
        op = schema.OperatorT()
        op.opcodeIndex, op.inputs, op.outputs = index, [0], [0]
        subgraph.operators.append(op)
    model.subgraphs = [subgraph]
    builder = flatbuffers.Builder(0)
    builder.Finish(model.Pack(builder), file_identifier=b"TFL3")
    return bytes(builder.Output())


def _code(deprecated: int, builtin: int, version: int = 1, custom: str | None = None):
    code = schema.OperatorCodeT()
    code.deprecatedBuiltinCode, code.builtinCode, code.version = deprecated, builtin, version
    code.customCode = custom
    return code


def test_builtin_code_is_the_max_of_the_deprecated_and_the_new_field():
    ops = read_model(
        _packed_model(
            [
                _code(3, 0),  # old writer: only the 8-bit field (CONV_2D = 3)
                _code(3, 3, version=5),  # new writer below 127: both fields
                _code(127, 150),  # above 127: placeholder in the 8-bit field (GELU = 150)
                _code(32, 32, custom="FlexSin"),  # CUSTOM = 32
            ]
        )
    ).ops
    assert [op.name for op in ops] == ["CONV_2D", "CONV_2D", "GELU", "CUSTOM"]
    assert [op.builtin_code for op in ops] == [3, 3, 150, 32]
    assert [op.version for op in ops] == [1, 5, 1, 1]
    assert ops[3].custom_code == "FlexSin"
    assert ops[0].inputs[0].shape_signature == (1, 4)  # no signature stored: equal to shape
