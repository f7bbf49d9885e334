"""The full-resolution stage of an integer .tflite in space-to-depth layout, bit for bit.

XNNPACK's int8 convolution on x86 costs about the same per output pixel for any channel
count up to 64 (`docs/latency-notes.md`): ResNet-20's first stage (32x32, 16 channels) holds
three quarters of the int8 time although it does a third of the multiply-adds. The same
stage stored as 2x2 blocks of pixels, a (H/2, W/2, 4C) tensor (TFLite's SPACE_TO_DEPTH
order: channel (2a + b)·C + c holds pixel (2i + a, 2j + b), channel c), has a quarter of the
pixels and four times the channels, and every convolution of the stage has an exact
counterpart there:

* a k x k convolution with stride 1 and SAME padding: output block (i, j), sub-pixel (a, b),
  reads original row 2i + a + dy − p (p = (k − 1)/2), which lies in block row
  i + ⌊(a + dy − p)/2⌋ at sub-row (a + dy − p) mod 2; putting each original weight at that
  block offset and sub-position (zeros elsewhere) gives a K' x K' convolution with SAME
  padding, K' = 2⌈p/2⌉ + 1, and 4x the output channels (output channel (2a + b)·O + o takes
  channel o's weights, bias and scale);
* a k x k convolution with stride 2 (SAME, or 1x1 VALID) that leaves the stage: output
  (i, j) reads original row 2i + dy − p₀ (p₀ TensorFlow's top padding, ⌊max(k − 2, 0)/2⌋), the
  same rule with a = 0, a stride-1 convolution of the blocks with the original O outputs;
* an ADD of two stage tensors: elementwise, the layout is a permutation.

Rows outside the image are outside the blocks and the other way round (H and W are even),
so both sides pad with the zero point alike. Each output is the same int32 sum Σ w·(q − z)
(the added taps have weight 0), the same bias and the same per-channel requantization, hence
the same int8 value in every runtime (XNNPACK, LiteRT's builtin and reference kernels). A
SPACE_TO_DEPTH op (int8; XNNPACK and the Edge TPU run it) at the input does the relayout.

The price: the stage's convolutions do 4x the multiply-adds (mostly with zero weights), and
their weights take about 16x the bytes (CIFAR-10 ResNet-20: +239 kB). Faster where the
kernel's cost is per pixel (XNNPACK's int8 on x86); kernels whose cost follows the
multiply-adds (likely an ARM CPU's, a microcontroller's, the Edge TPU's; not measured here)
would run the stage slower, so this is an option of the converter, off by default.

Example:

    flatbuffer = space_to_depth_stage(to_integer_tflite(model))   # same outputs, faster here
"""

from __future__ import annotations

import copy
import dataclasses

import numpy as np
from ai_edge_litert import schema_py_generated as schema

from sgt_tfmot.tflite.rewrite import (
    OpGraph,
    builtin_code,
    drop_unused,
    op_code,
    pack_model,
    unpack_model,
)

__all__ = ["LayoutError", "space_to_depth_stage"]

_OPS = schema.BuiltinOperator
_OP_NAMES = {code: name for name, code in vars(_OPS).items() if not name.startswith("_")}
_SAME, _VALID = schema.Padding.SAME, schema.Padding.VALID
_TYPES = {np.int8: schema.TensorType.INT8, np.int32: schema.TensorType.INT32}
BLOCK = 2


class LayoutError(ValueError):
    """A model whose first stage has no exact space-to-depth form (named in the message)."""


@dataclasses.dataclass(frozen=True)
class _Conv:
    """A CONV_2D of the stage: `leaves` when it has stride 2 (its output is outside)."""

    index: int
    leaves: bool


def _block_offset(position: int) -> tuple[int, int]:
    """(block offset, sub-position) of an original pixel offset from a block's first pixel."""
    return position // BLOCK, position % BLOCK


def _radius(kernel: int, top_pad: int, subs: range) -> int:
    """The largest block offset a `kernel`-tap window with top padding `top_pad` reaches."""
    return max(abs(_block_offset(s + tap - top_pad)[0]) for s in subs for tap in range(kernel))


def blocked_weights(weights: np.ndarray, stride: int) -> np.ndarray:
    """The (O', K', K', 4I) weights of a (O, k, k, I) convolution in space-to-depth layout.

    Stride 1 (SAME, odd k) stays in the layout: O' = 4·O, output (2a + b)·O + o. Stride 2
    (SAME, or k = 1) leaves it: O' = O. K' = 2r + 1 with r the largest block offset read.
    """
    outputs, kernel, kernel_w, inputs = weights.shape
    if kernel != kernel_w:
        raise LayoutError(f"a {kernel}x{kernel_w} kernel is not square")
    top_pad = (kernel - 1) // 2 if stride == 1 else max(kernel - 2, 0) // 2
    subs = range(BLOCK) if stride == 1 else range(1)
    radius = _radius(kernel, top_pad, subs)
    size = 2 * radius + 1
    blocked = np.zeros((len(subs) ** 2 * outputs, size, size, BLOCK**2 * inputs), weights.dtype)
    for a in subs:
        for b in subs:
            rows = slice((a * len(subs) + b) * outputs, (a * len(subs) + b + 1) * outputs)
            for dy in range(kernel):
                u, a_in = _block_offset(a + dy - top_pad)
                for dx in range(kernel):
                    v, b_in = _block_offset(b + dx - top_pad)
                    channels = slice(
                        (a_in * BLOCK + b_in) * inputs, (a_in * BLOCK + b_in + 1) * inputs
                    )
                    blocked[rows, u + radius, v + radius, channels] = weights[:, dy, dx, :]
    return blocked


def _shape(graph: OpGraph, tensor: int) -> list[int]:
    return [int(d) for d in graph.subgraph.tensors[tensor].shape]


def _constant(graph: OpGraph, tensor: int, dtype) -> np.ndarray | None:
    """The values of a constant tensor of type `dtype`, else None."""
    entry = graph.subgraph.tensors[tensor]
    data = graph.model.buffers[entry.buffer].data if entry.buffer else None
    if data is None or not len(data):
        return None
    values = np.frombuffer(bytes(np.asarray(data, np.uint8)), dtype)
    return values.reshape(_shape(graph, tensor))


def _entry(graph: OpGraph) -> int:
    """The int8 image tensor the stage starts from: the input, or the QUANTIZE of a uint8
    input."""
    subgraph = graph.subgraph
    if len(subgraph.inputs) != 1:
        raise LayoutError(f"the model has {len(subgraph.inputs)} inputs, the layout takes one")
    tensor = int(subgraph.inputs[0])
    if subgraph.tensors[tensor].type == schema.TensorType.INT8:
        return tensor
    readers = graph.readers.get(tensor, [])
    if len(readers) == 1 and op_code(graph.model, graph.op(readers[0][0])) == _OPS.QUANTIZE:
        (output,) = graph.op(readers[0][0]).outputs
        if graph.subgraph.tensors[output].type == schema.TensorType.INT8:
            return int(output)
    raise LayoutError("the input is neither int8 nor a uint8 input quantized to int8")


def _conv(graph: OpGraph, index: int, height: int, width: int) -> _Conv:
    """The stage's view of CONV_2D number `index` reading a full-resolution tensor."""
    op = graph.op(index)
    options = op.builtinOptions
    where = f"CONV_2D (op {index})"
    weights = _constant(graph, int(op.inputs[1]), np.int8)
    if weights is None or weights.ndim != 4:
        raise LayoutError(f"{where} has no constant int8 (O, k, k, I) filter")
    if weights.shape[3] != _shape(graph, int(op.inputs[0]))[3]:
        raise LayoutError(f"{where} is a grouped convolution")
    kernel = weights.shape[1]
    if (options.dilationHFactor, options.dilationWFactor) != (1, 1):
        raise LayoutError(f"{where} is dilated")
    if options.strideH != options.strideW or options.strideH not in (1, 2):
        raise LayoutError(f"{where} has strides {options.strideH}x{options.strideW}")
    stride = options.strideH
    if not (options.padding == _SAME or (kernel == 1 and options.padding == _VALID)):
        raise LayoutError(f"{where} has VALID padding with a {kernel}x{kernel} kernel")
    if stride == 1 and kernel % 2 == 0:
        raise LayoutError(f"{where} has an even {kernel}x{kernel} kernel")
    expected = [1, height // stride, width // stride, weights.shape[0]]
    if _shape(graph, int(op.outputs[0])) != expected:
        raise LayoutError(f"{where} does not output {expected}")
    for position, kind in ((1, np.int8), (2, np.int32)):
        if len(op.inputs) > position and op.inputs[position] >= 0:
            tensor = graph.subgraph.tensors[op.inputs[position]]
            params = tensor.quantization
            scales = params.scale if params is not None else None
            if (
                _constant(graph, int(op.inputs[position]), kind) is None
                or tensor.type != _TYPES[kind]
                or tensor.sparsity is not None
                or scales is None
                or len(scales) not in (1, weights.shape[0])
                or np.any(np.asarray(params.zeroPoint) != 0)
            ):
                raise LayoutError(
                    f"{where}: its input {position} is not a dense constant {np.dtype(kind)} "
                    "tensor with zero points 0 and one scale per output or per tensor"
                )
    return _Conv(index, leaves=stride == 2)


def _stage(graph: OpGraph, entry: int) -> tuple[list[int], list[_Conv]]:
    """The full-resolution tensors from `entry` on, the CONV_2Ds reading them and the ADDs
    joining them; LayoutError when any other op reads one or one is a model output."""
    shape = _shape(graph, entry)
    if len(shape) != 4 or shape[0] != 1 or shape[1] % BLOCK or shape[2] % BLOCK:
        raise LayoutError(f"the input is {shape}: the layout takes (1, H, W, C) with H, W even")
    height, width = shape[1:3]
    tensors, convs, adds, pending = [entry], {}, set(), [entry]
    while pending:
        tensor = pending.pop()
        if tensor in graph.outputs:
            name = graph.subgraph.tensors[tensor].name
            raise LayoutError(f"the model output {name!r} is at full resolution")
        for index, position in graph.readers.get(tensor, []):
            code = op_code(graph.model, graph.op(index))
            if code == _OPS.CONV_2D and position == 0:
                convs[index] = _conv(graph, index, height, width)
                if convs[index].leaves:
                    continue
            elif code == _OPS.ADD:
                adds.add(index)
            else:
                raise LayoutError(
                    f"{_OP_NAMES.get(code)} (op {index}) reads a full-resolution tensor"
                )
            (output,) = (int(t) for t in graph.op(index).outputs)
            if output not in tensors:
                tensors.append(output)
                pending.append(output)
    for index in adds:
        operands = [int(t) for t in graph.op(index).inputs]
        if (
            not set(operands) <= set(tensors)
            or len({tuple(_shape(graph, t)) for t in operands}) != 1
        ):
            raise LayoutError(f"ADD (op {index}) adds a tensor from outside the stage")
    if not any(conv.leaves for conv in convs.values()):
        raise LayoutError("no stride-2 convolution ends the full-resolution stage")
    return tensors, sorted(convs.values(), key=lambda conv: conv.index)


def _new_constant(graph: OpGraph, like: int, values: np.ndarray, copies: int) -> int:
    """A new constant tensor holding `values`, with the quantization of tensor `like`, its
    per-channel scales and zero points repeated `copies` times; its index."""
    model, tensors = graph.model, graph.subgraph.tensors
    tensor = copy.deepcopy(tensors[like])
    tensor.shape = np.array(values.shape, np.int32)
    tensor.shapeSignature = None
    params = tensor.quantization
    if params is not None and params.scale is not None and len(params.scale) > 1:
        for field in ("scale", "zeroPoint", "min", "max"):
            if getattr(params, field) is not None and len(getattr(params, field)) > 1:
                setattr(params, field, np.tile(getattr(params, field), copies))
    buffer = schema.BufferT()
    buffer.data = np.frombuffer(np.ascontiguousarray(values).tobytes(), np.uint8)
    model.buffers.append(buffer)
    tensor.buffer = len(model.buffers) - 1
    tensors.append(tensor)
    return len(tensors) - 1


def _relayout_conv(graph: OpGraph, conv: _Conv) -> None:
    """CONV_2D `conv` on blocked inputs: blocked weights, bias (and scales) per output."""
    op = graph.op(conv.index)
    copies = 1 if conv.leaves else BLOCK**2
    weights = _constant(graph, int(op.inputs[1]), np.int8)
    inputs = list(op.inputs)
    inputs[1] = _new_constant(
        graph, inputs[1], blocked_weights(weights, 2 if conv.leaves else 1), copies
    )
    if len(inputs) > 2 and inputs[2] >= 0:
        bias = _constant(graph, int(inputs[2]), np.int32)
        inputs[2] = _new_constant(graph, inputs[2], np.tile(bias, copies), copies)
    op.inputs = np.array(inputs, np.int32)
    options = op.builtinOptions
    options.strideH = options.strideW = 1
    options.padding = _SAME


def _space_to_depth_op(graph: OpGraph, source: int, target: int) -> schema.OperatorT:
    """A SPACE_TO_DEPTH op (block 2) from tensor `source` to tensor `target`."""
    model = graph.model
    codes = [builtin_code(code) for code in model.operatorCodes]
    if _OPS.SPACE_TO_DEPTH not in codes:
        code = schema.OperatorCodeT()
        code.builtinCode = code.deprecatedBuiltinCode = _OPS.SPACE_TO_DEPTH
        code.version = 2  # the int8 kernel's version
        model.operatorCodes.append(code)
        codes.append(_OPS.SPACE_TO_DEPTH)
    op = schema.OperatorT()
    op.opcodeIndex = codes.index(_OPS.SPACE_TO_DEPTH)
    op.inputs, op.outputs = np.array([source], np.int32), np.array([target], np.int32)
    op.builtinOptionsType = schema.BuiltinOptions.SpaceToDepthOptions
    op.builtinOptions = schema.SpaceToDepthOptionsT()
    op.builtinOptions.blockSize = BLOCK
    return op


def space_to_depth_stage(flatbuffer: bytes) -> bytes:
    """`flatbuffer` with its full-resolution stage in space-to-depth layout (module docstring):
    the same int8 output for every input, in fewer microseconds where int8 convolutions cost
    per pixel.

    Args:
      flatbuffer: An integer .tflite model (subgraph 0): an int8 (or quantized uint8) image
        input of even height and width, read only by CONV_2Ds (stride 1 with an odd kernel
        and SAME padding, or stride 2) and ADDs up to the stride-2 convolutions that end the
        stage, as in ResNets and the classifiers of `sgt_tfmot.models`.

    Returns:
      The rewritten .tflite flatbuffer.

    Raises:
      LayoutError (a ValueError): naming the op or tensor that has no exact blocked form.
    """
    model = unpack_model(flatbuffer)
    if not model.subgraphs or not model.subgraphs[0].operators:
        raise LayoutError("the model has no operators")
    graph = OpGraph(model)
    entry = _entry(graph)
    tensors, convs = _stage(graph, entry)
    subgraph = graph.subgraph
    blocked = copy.deepcopy(subgraph.tensors[entry])
    blocked.buffer = 0
    blocked.name = (blocked.name or b"input") + b"/space_to_depth"
    subgraph.tensors.append(blocked)
    relayout = len(subgraph.tensors) - 1
    for tensor, original in [(relayout, entry)] + [(t, t) for t in tensors[1:]]:
        batch, height, width, channels = _shape(graph, original)
        shape = np.array([batch, height // BLOCK, width // BLOCK, channels * BLOCK**2], np.int32)
        subgraph.tensors[tensor].shape = shape
        if subgraph.tensors[tensor].shapeSignature is not None:
            subgraph.tensors[tensor].shapeSignature = shape
    for index, position in graph.readers[entry]:
        inputs = np.array(subgraph.operators[index].inputs, np.int32)
        inputs[position] = relayout
        subgraph.operators[index].inputs = inputs
    for conv in convs:
        _relayout_conv(graph, conv)
    first = graph.producer[entry] + 1 if entry in graph.producer else 0
    subgraph.operators.insert(first, _space_to_depth_op(graph, entry, relayout))
    drop_unused(model)
    return pack_model(model)
