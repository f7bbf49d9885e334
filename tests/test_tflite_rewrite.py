"""`fold_minimums`: the MINIMUM after each k-bit activation removed, not one int8 value changed.

Every comparison is bit-exact (`assert_array_equal` on the int8/uint8 outputs) within each of
LiteRT's default runtime (XNNPACK), its builtin kernels and its reference kernels (which round
differently from one another), on random images over the input type's whole range and on
dataset images, for models trained a few steps (ranges and α off their initial values): the
W4A4 and W2A2 residual model of tests/test_export.py and the W4A4 tiny MNIST classifier of
tests/helpers/models.py (RESHAPE before the logits) with the delivery options (softmax, RGB
input, uint8 I/O); a W4A4 MobileNetV2 (ReLU6, depthwise convolutions) in
tests/test_applications.py, which builds it. A W8A8 model has no MINIMUM and comes back byte
for byte.

Then each ADD and MEAN that reads a moved zero point is checked alone and exhaustively: every
pair of input levels (ADD) and every sum of input levels (MEAN) the original op can see.
"""

import numpy as np
import pytest

from sgt_tfmot.tflite.converter import to_integer_tflite
from sgt_tfmot.tflite.flatbuffer import read_model
from sgt_tfmot.tflite.profile import delegate_partitions, prefix_model
from sgt_tfmot.tflite.rewrite import fold_minimums, pack_model, unpack_model
from sgt_tfmot.tflite.runtime import RUNTIMES, integer_outputs
from tests.helpers.models import RESIDUAL_X
from tests.helpers.tflite import (
    MNIST,
    assert_folded,
    assert_same_outputs,
    interpreter,
    quantized,
    random_images,
)


@pytest.fixture(scope="module", params=[4, 2])
def residual(request, residual_qat):
    qat = residual_qat(request.param)
    pair = [to_integer_tflite(qat, RESIDUAL_X[:32], optimize=o) for o in (False, True)]
    return request.param, *pair  # the converter's graph, and what `to_integer_tflite` returns


@pytest.mark.slow
def test_residual_model_loses_every_minimum_and_no_value(residual):
    _, before, after = residual
    assert_folded(before, after)
    assert fold_minimums(before) == after and fold_minimums(after) == after  # idempotent
    images = np.concatenate([random_images(before), quantized(before, RESIDUAL_X)])
    assert_same_outputs(before, after, images)
    assert delegate_partitions(before) == 1 + read_model(before).op_names.count("MINIMUM")
    assert delegate_partitions(after) == 1  # XNNPACK takes the whole graph


def test_w8a8_has_no_minimum_and_comes_back_unchanged(residual_qat):
    qat = residual_qat(8)
    before = to_integer_tflite(qat, RESIDUAL_X[:32], optimize=False)
    assert "MINIMUM" not in read_model(before).op_names
    assert to_integer_tflite(qat, RESIDUAL_X[:32]) == before == fold_minimums(before)


@pytest.mark.parametrize(
    "io_dtype, softmax, rgb_input",
    [("int8", False, False), ("uint8", True, False), ("int8", True, True), ("uint8", False, True)],
)
def test_delivery_options_lose_the_minimums_and_no_value(mnist_w4a4, io_dtype, softmax, rgb_input):
    images = np.repeat(MNIST, 3, axis=-1) if rgb_input else MNIST
    before = to_integer_tflite(mnist_w4a4, images[:8], io_dtype=io_dtype, softmax=softmax,
                               rgb_input=rgb_input, optimize=False)  # fmt: skip
    after = fold_minimums(before)  # what `to_integer_tflite` returns (tested above)
    assert_folded(before, after)
    names = read_model(after).op_names
    assert ("SOFTMAX" in names) == softmax and "RESHAPE" in names  # Flatten reads a moved one
    assert_same_outputs(before, after, np.concatenate([random_images(before),
                                                       quantized(before, images)]))  # fmt: skip


# --- each ADD and MEAN that reads a moved zero point, exhaustively ----------------------------


def single_op(flatbuffer: bytes, index: int) -> bytes:
    """The model made of op `index` alone: its non-constant inputs are the model's inputs."""
    model = unpack_model(flatbuffer)
    subgraph = model.subgraphs[0]
    op = subgraph.operators[index]
    constant = constant_tensors(flatbuffer)
    subgraph.operators = [op]
    subgraph.inputs = [int(t) for t in op.inputs if t >= 0 and int(t) not in constant]
    subgraph.outputs = [int(t) for t in op.outputs]
    model.signatureDefs = None
    return pack_model(model)


def run_op(flatbuffer: bytes, feeds: list[np.ndarray], runtime: str) -> np.ndarray:
    """Runs a single-op model on batches of inputs (one array per model input, in order)."""
    model = interpreter(flatbuffer, runtime)
    details, (sink,) = model.get_input_details(), model.get_output_details()
    shape = details[0]["shape"]
    size = int(np.prod(shape))
    found = []
    for start in range(0, len(feeds[0]), size):
        for detail, feed in zip(details, feeds, strict=True):
            chunk = feed[start : start + size]
            chunk = np.concatenate([chunk, np.repeat(chunk[-1:], size - len(chunk))])
            model.set_tensor(detail["index"], chunk.reshape(shape).astype(np.int8))
        model.invoke()
        found.append(model.get_tensor(sink["index"]).reshape(-1))
    return np.concatenate(found)


def constant_tensors(flatbuffer: bytes) -> set[int]:
    model = unpack_model(flatbuffer)
    return {i for i, t in enumerate(model.subgraphs[0].tensors)
            if t.buffer and model.buffers[t.buffer].data is not None}  # fmt: skip


def data_inputs(op, constants: set[int]) -> list:
    return [t for t in op.inputs if t is not None and t.index not in constants]


def minimums(flatbuffer: bytes) -> list[tuple[int, int, int, int]]:
    """(input, output, zero point, level of α) of every MINIMUM of the file."""
    model, constants = unpack_model(flatbuffer), constant_tensors(flatbuffer)
    found = []
    for op in read_model(flatbuffer).ops:
        if op.name == "MINIMUM":
            (data,) = data_inputs(op, constants)
            (constant,) = (t for t in op.inputs if t.index in constants)
            buffer = model.buffers[model.subgraphs[0].tensors[constant.index].buffer].data
            level = int(np.frombuffer(bytes(np.asarray(buffer, np.uint8)), np.int8)[0])
            found.append((data.index, op.outputs[0].index, data.quantization.zero_point[0], level))
    return found


def test_every_add_and_mean_reading_a_moved_zero_point_is_exact_for_all_inputs(residual):
    """The original op sees min(relu(x), α): levels zero point .. level of α on a moved input,
    all 256 on another; its result passes through the MINIMUM that follows it, if one does.
    Both files must give the same (q − zero point) for each input."""
    _, before, after = residual
    found = minimums(before)
    held = {output: (zero_point, level) for _, output, zero_point, level in found}
    clamped = {data: (zero_point, level) for data, _, zero_point, level in found}
    constants_before, constants_after = constant_tensors(before), constant_tensors(after)
    kept = [op for op in read_model(before).ops if op.name != "MINIMUM"]
    checked = set()
    for op_b, op_a in zip(kept, read_model(after).ops, strict=True):
        inputs_b, inputs_a = data_inputs(op_b, constants_before), data_inputs(op_a, constants_after)
        if op_b.name not in ("ADD", "MEAN") or not any(t.index in held for t in inputs_b):
            continue
        if op_b.name == "ADD":  # every pair of levels
            bounds = [held.get(t.index, (-128, 127)) for t in inputs_b]
            levels = [np.arange(low, high + 1) for low, high in bounds]
            feeds = [grid.reshape(-1) for grid in np.meshgrid(*levels, indexing="ij")]
        else:  # MEAN over H x W: every sum of levels
            (tensor,) = inputs_b
            height, width, channels = tensor.shape[1:]
            feeds = [mean_inputs(height * width, channels, *held[tensor.index])]
        shifts = [a.quantization.zero_point[0] - b.quantization.zero_point[0]
                  for a, b in zip(inputs_a, inputs_b, strict=True)]  # fmt: skip
        output = op_b.outputs[0].index
        zero_point, level = clamped.get(output, (op_b.outputs[0].quantization.zero_point[0], 127))
        for runtime in RUNTIMES:
            original = run_op(single_op(before, op_b.index), feeds, runtime)
            expected = np.minimum(original, level) - zero_point
            shifted = [feed + shift for feed, shift in zip(feeds, shifts, strict=True)]
            actual = run_op(single_op(after, op_a.index), shifted, runtime)
            actual = actual - op_a.outputs[0].quantization.zero_point[0]
            np.testing.assert_array_equal(actual, expected, err_msg=f"{op_b.name} {runtime}")
        checked.add(op_b.name)
    assert checked == {"ADD", "MEAN"}


def mean_inputs(count: int, channels: int, zero_point: int, level: int) -> np.ndarray:
    """Flat NHWC inputs of a MEAN over `count` pixels whose channels, together, hold every
    sum 0 .. count·(level − zero_point) of levels: channel j of block b has sum b·channels + j,
    spread as full levels then a remainder."""
    top = level - zero_point
    sums = np.arange(count * top + 1)
    blocks = -(-len(sums) // channels)
    sums = np.concatenate([sums, np.full(blocks * channels - len(sums), sums[-1])])
    per_pixel = np.zeros((len(sums), count), np.int64)
    for position in range(count):
        per_pixel[:, position] = np.clip(sums - position * top, 0, top)
    # (block, channel, pixel) -> (block, pixel, channel): the op's NHWC layout
    values = per_pixel.reshape(blocks, channels, count).transpose(0, 2, 1)
    return (values + zero_point).reshape(-1)


# --- what stays ---------------------------------------------------------------------------------


def test_a_minimum_that_writes_a_model_output_stays(residual):
    """The last MINIMUM of a prefix is a model output: an app reads its int8 values, so its
    zero point cannot move; the MINIMUMs before it still fold, bit-exactly."""
    _, before, _ = residual
    names = read_model(before).op_names
    last = max(i for i, name in enumerate(names) if name == "MINIMUM")
    prefix = prefix_model(before, last)
    folded = fold_minimums(prefix)
    assert read_model(folded).op_names.count("MINIMUM") == 1
    assert read_model(folded).op_names[-1] == "MINIMUM"
    images = random_images(prefix, 50)
    for runtime in RUNTIMES:
        expected = integer_outputs(prefix, images, runtime)
        np.testing.assert_array_equal(integer_outputs(folded, images, runtime), expected)


def test_a_producer_that_does_not_clamp_at_zero_keeps_its_minimum(residual):
    _, before, _ = residual
    model = unpack_model(before)
    subgraph = model.subgraphs[0]
    minimum = next(op for op in read_model(before).ops if op.name == "MINIMUM")
    (data,) = data_inputs(minimum, constant_tensors(before))
    producer = next(op for op in subgraph.operators if data.index in list(op.outputs))
    producer.builtinOptions.fusedActivationFunction = 2  # RELU_N1_TO_1: clamps at −1
    assert read_model(fold_minimums(pack_model(model))).op_names.count("MINIMUM") == 1
