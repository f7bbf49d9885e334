"""Rewrites of a converted integer .tflite that change no value: the MINIMUM fold, the signature.

`fold_minimums` removes the int8 MINIMUM that follows every k-bit PACT activation (k < 8)
of the export model (`sgt_tfmot.quantizers.pact_integer`: an 8-bit range with the k-bit step
s = α/(2^k − 1), then min(·, α)). In the converted file that activation is

    q_x = clamp(r + z, z, H)          the producer's requantized output (r its rounded
                                      accumulator, z its zero point; the fused RELU clamps
                                      at real 0, i.e. at z; H = 127, or less for RELU6)
    q_y = min(q_x, q_c)               the MINIMUM, with q_c the int8 level of α

so q_y = clamp(r + z, z, m) with m = min(H, q_c). Moving the producer's output zero point to

    z' = z + (127 − m)

makes the same producer compute clamp(r + z', z', 127) = q_y + (127 − m): every element has
the same real value (q − z)·s as before, and the int8 saturation at 127 does the MINIMUM's
work (PACT's output range now ends at α). The scale s and the producer's requantization are
untouched, so r is the same integer; only where it is stored moves. The ops that read the
tensor see the same q − z: a convolution or dense layer accumulates Σ w·(q − z) in int32,
an ADD rescales (q − z), a MEAN sums (q − z), PAD pads with the zero point (real 0), and
RESHAPE copies bytes (its output takes the new zero point too). For any other reader, or
when the tensor is a model output (whose int8 values an app reads), the MINIMUM is kept.

Besides one op per activation, the MINIMUM is an op XNNPACK does not take for int8: each one
splits the graph into another delegate partition (`sgt_tfmot.tflite.profile`).

`with_signature` names the graph's input and output for `get_signature_runner()`: the
converter writes no signature for a frozen graph (`sgt_tfmot.tflite.converter`).

Example:

    flatbuffer = fold_minimums(converter_output)     # bit-exact, fewer ops
"""

from __future__ import annotations

import flatbuffers
import numpy as np
from ai_edge_litert import schema_py_generated as schema

from sgt_tfmot.tflite.flatbuffer import TFLITE_FILE_IDENTIFIER

__all__ = [
    "OpGraph",
    "builtin_code",
    "drop_unused",
    "fold_minimums",
    "op_code",
    "pack_model",
    "unpack_model",
    "with_signature",
]

_OPS = schema.BuiltinOperator
_ACTIVATIONS = schema.ActivationFunctionType
_INT8_MIN, _INT8_MAX = -128, 127
_BUFFER_ALIGNMENT = 16  # the schema's `force_align: 16` on buffer data

# Producers whose options carry the fused activation that clamps at the zero point.
_PRODUCERS = frozenset(
    {_OPS.CONV_2D, _OPS.DEPTHWISE_CONV_2D, _OPS.FULLY_CONNECTED, _OPS.ADD}
)  # fmt: skip
# Readers whose int8 kernels use the input only as (q − zero point): (op, input positions).
_READERS = {
    _OPS.CONV_2D: (0,),
    _OPS.DEPTHWISE_CONV_2D: (0,),
    _OPS.FULLY_CONNECTED: (0,),
    _OPS.ADD: (0, 1),
    _OPS.MEAN: (0,),
}
# Readers whose output has the input's quantization and the same bytes moved about (PAD
# fills with the zero point, real 0): the output's zero point moves with the input's.
_PASS_THROUGH = {_OPS.PAD: (0,), _OPS.RESHAPE: (0,)}


class _AlignedBuffer(schema.BufferT):
    """A `BufferT` whose data starts on a 16-byte boundary of the file (the generated Python
    code does not apply the schema's `force_align`)."""

    def Pack(self, builder):  # the generated API's name
        if self.data is not None and len(self.data):
            builder.Prep(_BUFFER_ALIGNMENT, len(self.data))
        return super().Pack(builder)


def unpack_model(flatbuffer: bytes) -> schema.ModelT:
    """The mutable object form of a .tflite flatbuffer."""
    return schema.ModelT.InitFromObj(schema.Model.GetRootAs(bytes(flatbuffer), 0))


def pack_model(model: schema.ModelT) -> bytes:
    """A .tflite flatbuffer of `model`, buffer data 16-byte aligned."""
    buffers = []
    for old in model.buffers or []:
        new = _AlignedBuffer()
        new.__dict__.update(old.__dict__)
        buffers.append(new)
    model.buffers = buffers
    builder = flatbuffers.Builder(1024)
    builder.Finish(model.Pack(builder), file_identifier=TFLITE_FILE_IDENTIFIER)
    return bytes(builder.Output())


def with_signature(
    flatbuffer: bytes, key: str = "serving_default", inputs=("images",), outputs=("output_0",)
) -> bytes:
    """`flatbuffer` with one signature over its first subgraph: its inputs and outputs named
    `inputs` and `outputs`, in order (what `Interpreter.get_signature_runner(key)` calls
    them). Replaces any signature the file had.

    Raises:
      ValueError: When the names are not one per input and one per output.
    """
    model = unpack_model(flatbuffer)
    subgraph = model.subgraphs[0]
    if len(inputs) != len(subgraph.inputs) or len(outputs) != len(subgraph.outputs):
        raise ValueError(
            f"The signature names {len(inputs)} inputs and {len(outputs)} outputs; the graph "
            f"has {len(subgraph.inputs)} and {len(subgraph.outputs)}."
        )
    signature = schema.SignatureDefT()
    signature.signatureKey, signature.subgraphIndex = key, 0
    signature.inputs, signature.outputs = [], []
    for names, indices, maps in (
        (inputs, subgraph.inputs, signature.inputs),
        (outputs, subgraph.outputs, signature.outputs),
    ):
        for name, index in zip(names, indices, strict=True):
            entry = schema.TensorMapT()
            entry.name, entry.tensorIndex = name, int(index)
            maps.append(entry)
    model.signatureDefs = [signature]
    return pack_model(model)


def builtin_code(code: schema.OperatorCodeT) -> int:
    """The builtin operator of an operator code (`sgt_tfmot.tflite.flatbuffer` on its two
    code fields)."""
    return max(code.deprecatedBuiltinCode, code.builtinCode)


def op_code(model: schema.ModelT, op: schema.OperatorT) -> int:
    """The builtin operator of `op`."""
    return builtin_code(model.operatorCodes[op.opcodeIndex])


def _per_tensor(tensor: schema.TensorT) -> tuple[float, int] | None:
    """(scale, zero point) of an int8 tensor quantized per tensor, else None."""
    params = tensor.quantization
    if tensor.type != schema.TensorType.INT8 or params is None or params.scale is None:
        return None
    if len(params.scale) != 1 or params.zeroPoint is None or len(params.zeroPoint) != 1:
        return None
    return float(np.float32(params.scale[0])), int(params.zeroPoint[0])


def _constant_level(model: schema.ModelT, tensor: schema.TensorT) -> int | None:
    """The one int8 value every element of a constant tensor holds, else None."""
    data = model.buffers[tensor.buffer].data if tensor.buffer else None
    if data is None or not len(data) or tensor.type != schema.TensorType.INT8:
        return None
    values = np.frombuffer(bytes(np.asarray(data, np.uint8)), np.int8)
    return int(values[0]) if np.all(values == values[0]) else None


def _upper_clamp(activation: int, scale: float, zero_point: int) -> int | None:
    """The producer's upper int8 clamp when its fused activation clamps below at the zero
    point (TFLite's `CalculateActivationRangeQuantized`), else None."""
    if activation == _ACTIVATIONS.RELU:
        return _INT8_MAX
    if activation == _ACTIVATIONS.NONE and zero_point == _INT8_MIN:
        return _INT8_MAX  # the int8 floor is real 0 already
    if activation == _ACTIVATIONS.RELU6:
        six = float(np.float32(6.0) / np.float32(scale))
        if six - np.floor(six) == 0.5:
            return None  # a tie: runtimes round it differently
        return min(_INT8_MAX, zero_point + int(np.floor(six + 0.5)))
    return None


class OpGraph:
    """Producers and readers of subgraph 0's tensors (indices into its tensors and ops)."""

    def __init__(self, model: schema.ModelT):
        self.model = model
        self.subgraph = model.subgraphs[0]
        self.producer: dict[int, int] = {}
        self.readers: dict[int, list[tuple[int, int]]] = {}
        for index, op in enumerate(self.subgraph.operators or []):
            for tensor in op.outputs:
                self.producer[int(tensor)] = index
            for position, tensor in enumerate(op.inputs):
                if tensor >= 0:
                    self.readers.setdefault(int(tensor), []).append((index, position))
        self.outputs = {int(t) for t in self.subgraph.outputs}

    def op(self, index: int) -> schema.OperatorT:
        return self.subgraph.operators[index]

    def level_range(self, tensor: int) -> tuple[int, int]:
        """The lowest and highest int8 level `tensor` can hold, from the ops that made it: a
        fused RELU or RELU6 clamps, a MINIMUM or MAXIMUM with a constant on the same grid (a
        k-bit PACT clamp the converter kept), and the ops that move levels about on one grid
        (MAX_POOL_2D, RESHAPE, PAD with the zero point, CONCATENATION) keep their inputs'.
        (-128, 127) where nothing is known."""
        tensors = self.subgraph.tensors
        grid = _per_tensor(tensors[tensor])
        producer = self.producer.get(tensor)
        if grid is None or producer is None:
            return _INT8_MIN, _INT8_MAX
        op, (scale, zero) = self.op(producer), grid
        code = op_code(self.model, op)
        inputs = [int(t) for t in op.inputs if t >= 0]
        same = [t for t in inputs if _per_tensor(tensors[t]) == grid]
        low, high = _INT8_MIN, _INT8_MAX
        if code in (_OPS.MAX_POOL_2D, _OPS.RESHAPE, _OPS.PAD) and inputs[0] in same:
            low, high = self.level_range(inputs[0])
            if code == _OPS.PAD:
                low, high = min(low, zero), max(high, zero)
        elif code == _OPS.CONCATENATION and len(same) == len(inputs):
            ranges = [self.level_range(t) for t in inputs]
            low, high = min(r[0] for r in ranges), max(r[1] for r in ranges)
        elif code in (_OPS.MINIMUM, _OPS.MAXIMUM) and len(same) == len(inputs) == 2:
            constants = [_constant_level(self.model, tensors[t]) for t in inputs]
            if constants.count(None) == 1:
                level = next(c for c in constants if c is not None)
                low, high = self.level_range(inputs[constants.index(None)])
                if code == _OPS.MINIMUM:
                    low, high = min(low, level), min(high, level)
                else:
                    low, high = max(low, level), max(high, level)
        activation = getattr(op.builtinOptions, "fusedActivationFunction", None)
        if activation in (_ACTIVATIONS.RELU, _ACTIVATIONS.RELU6):
            low = max(low, zero)
        if activation == _ACTIVATIONS.RELU6:
            high = min(high, zero + round(6.0 / scale))
        return low, high

    def movable(self, tensor: int, quantization: tuple[float, int]) -> list[int] | None:
        """`tensor` and the pass-through results that share its quantization, when every
        reader of them uses the zero point only as an offset; None otherwise."""
        moved, pending = [], [tensor]
        while pending:
            current = pending.pop()
            if current in self.outputs:
                return None
            moved.append(current)
            for index, position in self.readers.get(current, []):
                code = op_code(self.model, self.op(index))
                if position in _READERS.get(code, ()):
                    continue
                if position not in _PASS_THROUGH.get(code, ()):
                    return None
                (result,) = self.op(index).outputs
                if _per_tensor(self.subgraph.tensors[result]) != quantization:
                    return None
                pending.append(int(result))
        return moved


def _fold(graph: OpGraph, index: int) -> bool:
    """Folds MINIMUM number `index` into its producer when that is exact; True if done."""
    model, tensors = graph.model, graph.subgraph.tensors
    op = graph.op(index)
    if op_code(model, op) != _OPS.MINIMUM or len(op.inputs) != 2 or len(op.outputs) != 1:
        return False
    (y,) = (int(t) for t in op.outputs)
    levels = [_constant_level(model, tensors[t]) for t in op.inputs]
    if (levels[0] is None) == (levels[1] is None):
        return False  # not one constant and one tensor
    x, c, level = (op.inputs[1], op.inputs[0], levels[0]) if levels[1] is None else (
        op.inputs[0], op.inputs[1], levels[1])  # fmt: skip
    x, c = int(x), int(c)
    quantization = _per_tensor(tensors[y])
    if quantization is None or {_per_tensor(tensors[x]), _per_tensor(tensors[c])} != {quantization}:
        return False
    if list(tensors[x].shape) != list(tensors[y].shape):
        return False  # the constant broadcasts x to a larger shape
    producer = graph.producer.get(x)
    if (
        producer is None
        or x in graph.outputs
        or graph.readers.get(x) != [(index, list(op.inputs).index(x))]
        or op_code(model, graph.op(producer)) not in _PRODUCERS
    ):
        return False
    options = graph.op(producer).builtinOptions
    scale, zero_point = quantization
    upper = _upper_clamp(options.fusedActivationFunction, scale, zero_point)
    if upper is None:
        return False
    top = min(upper, level)
    moved = graph.movable(y, quantization)
    if top < zero_point or moved is None:
        return False
    new_zero_point = zero_point + (_INT8_MAX - top)
    for tensor in moved:
        tensors[tensor].quantization.zeroPoint = np.array([new_zero_point], np.int64)
    graph.op(producer).outputs = [y if int(t) == x else int(t) for t in graph.op(producer).outputs]
    options.fusedActivationFunction = _ACTIVATIONS.RELU
    return True


def drop_unused(model: schema.ModelT) -> None:
    """Removes the tensors no op, subgraph input/output or signature refers to, the buffers
    (other than the empty buffer 0) no tensor or metadata entry refers to, and the operator
    codes no op uses."""
    subgraph = model.subgraphs[0]
    codes = sorted({op.opcodeIndex for graph in model.subgraphs for op in graph.operators})
    new_code = {old: new for new, old in enumerate(codes)}
    model.operatorCodes = [model.operatorCodes[old] for old in codes]
    for graph in model.subgraphs:
        for op in graph.operators:
            op.opcodeIndex = new_code[op.opcodeIndex]
    used = {int(t) for op in subgraph.operators for t in [*op.inputs, *op.outputs] if t >= 0}
    used |= {int(t) for t in [*subgraph.inputs, *subgraph.outputs]}
    for op in subgraph.operators:
        used |= {int(t) for t in (op.intermediates if op.intermediates is not None else [])}
    for signature in model.signatureDefs or []:
        if signature.subgraphIndex == 0:
            used |= {m.tensorIndex for m in [*(signature.inputs or []),
                                             *(signature.outputs or [])]}  # fmt: skip
    new_index = {old: new for new, old in enumerate(sorted(used))}

    def remap(indices):
        return [new_index[int(t)] if t >= 0 else int(t) for t in indices]

    subgraph.tensors = [subgraph.tensors[old] for old in sorted(used)]
    for op in subgraph.operators:
        op.inputs, op.outputs = remap(op.inputs), remap(op.outputs)
        if op.intermediates is not None:
            op.intermediates = remap(op.intermediates)
    subgraph.inputs, subgraph.outputs = remap(subgraph.inputs), remap(subgraph.outputs)
    for signature in model.signatureDefs or []:
        if signature.subgraphIndex == 0:
            for entry in [*(signature.inputs or []), *(signature.outputs or [])]:
                entry.tensorIndex = new_index[entry.tensorIndex]

    buffers = {0} | {t.buffer for graph in model.subgraphs for t in graph.tensors}
    buffers |= {entry.buffer for entry in model.metadata or []}
    new_buffer = {old: new for new, old in enumerate(sorted(buffers))}
    model.buffers = [model.buffers[old] for old in sorted(buffers)]
    for graph in model.subgraphs:
        for tensor in graph.tensors:
            tensor.buffer = new_buffer[tensor.buffer]
    for entry in model.metadata or []:
        entry.buffer = new_buffer[entry.buffer]


def fold_minimums(flatbuffer: bytes) -> bytes:
    """`flatbuffer` without the int8 MINIMUMs that its producers' saturation can do (see the
    module docstring); the other bytes' meaning is unchanged. A model without such a MINIMUM
    comes back as the same bytes.

    Args:
      flatbuffer: A .tflite model (subgraph 0 is rewritten).

    Returns:
      The rewritten .tflite flatbuffer.
    """
    model = unpack_model(flatbuffer)
    if not model.subgraphs or not model.subgraphs[0].operators:
        return bytes(flatbuffer)
    graph = OpGraph(model)
    folded = {i for i in range(len(graph.subgraph.operators)) if _fold(graph, i)}
    if not folded:
        return bytes(flatbuffer)
    graph.subgraph.operators = [
        op for i, op in enumerate(graph.subgraph.operators) if i not in folded
    ]
    drop_unused(model)
    return pack_model(model)
