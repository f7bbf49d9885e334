"""Kernels of 4 bits or fewer stored as INT4, two per byte: the same integer model, smaller.

A k-bit kernel (k ≤ 4) exported into the 4-bit container (`WeightQuantizer.container_bits`,
the default for k ≤ 4; `sgt_tfmot.export`) holds int8 values in [−7, 7]. `pack_int4` stores
such filters as the schema's INT4 type, two values per byte, low nibble first (the order of
`UnpackDenseInt4IntoInt8` in both runtimes), with the same scales and zero points; the
kernels unpack them to the same int8 values before computing, so every output is the int8
file's in LiteRT's builtin and reference kernels and in TFLite Micro
(`tests/test_tflite_int4.py`). The op's version rises to the
one the converter's versioning gives an int8 op with INT4 filter (CONV_2D and
DEPTHWISE_CONV_2D 7, FULLY_CONNECTED 10), on an operator code of its own if int8 ops of
the same type remain.

Which ops take an INT4 filter with int8 input and output, read in the runtimes' sources
(LiteRT f674577 of 2026-08-21, tflite-micro 90b983c of 2026-08-20) and run here:

* CONV_2D. LiteRT's builtin and reference kernels: yes, per channel, unpacked into a heap
  buffer at every invoke (`conv.cc`). LiteRT's XNNPACK delegate: no ("unsupported mixed
  types"), the op stays on the builtin kernel. TFLM: yes, reference and CMSIS-NN kernels,
  unpacked into an arena scratch buffer of the filter's size (`conv.cc`, `conv_common.cc`).
* DEPTHWISE_CONV_2D. LiteRT builtin and reference: yes (`depthwise_conv.cc`). XNNPACK: no
  (input and filter types must match), builtin kernel. TFLM: yes (`depthwise_conv.cc`).
* FULLY_CONNECTED. LiteRT builtin and reference: yes (`fully_connected.cc`). XNNPACK: yes,
  with an even number of input channels. TFLM: per-tensor filters only
  (`fully_connected_common.cc` refuses per-channel INT4).

So those three ops are packed (FULLY_CONNECTED only with one scale); nothing else. The Edge
TPU compiler takes int8/uint8 tensors only (Coral's model requirements): a packed file is not
for the Edge TPU, whose target says so (`sgt_tfmot.tflite.edgetpu`), and the default file
keeps the int8 container. Costs: TFLM unpacks each filter into a scratch buffer of its size,
planned in the arena with the activations (the arena grows by at most the largest packed
filter); LiteRT's XNNPACK leaves packed convolutions to its slower builtin kernels, so under
XNNPACK a packed file computes those ops with the builtin kernels' rounding.

Example:

    packed, found = pack_int4(flatbuffer)
    print(found.tensors, found.bytes_saved)
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from ai_edge_litert import schema_py_generated as schema

from sgt_tfmot.tflite.rewrite import OpGraph, drop_unused, op_code, pack_model, unpack_model

__all__ = ["INT4_OPS", "Packing", "pack_int4", "pack_nibbles", "unpack_nibbles"]

_OPS = schema.BuiltinOperator
_TYPES = schema.TensorType
_INT4_MIN, _INT4_MAX = -8, 7

INT4_OPS = {_OPS.CONV_2D: 7, _OPS.DEPTHWISE_CONV_2D: 7, _OPS.FULLY_CONNECTED: 10}
"""Ops whose INT4 filter both LiteRT and TFLite Micro accept -> the op version it needs (the
converter's `op_version.cc`)."""
_FILTER = 1  # the filter's input position in each of them


@dataclass(frozen=True)
class Packing:
    """What `pack_int4` did.

    Attributes:
      tensors: Filters stored as INT4.
      ops: The names of the ops that read them, in execution order.
      bytes_saved: The file's size before minus after.
      skipped: Filters of those ops left int8, with the reason ("values outside [-8, 7]", ...).
    """

    tensors: int
    ops: tuple[str, ...]
    bytes_saved: int
    skipped: tuple[str, ...]

    def to_dict(self) -> dict:
        return {"tensors": self.tensors, "ops": list(self.ops),
                "bytes_saved": self.bytes_saved, "skipped": list(self.skipped)}  # fmt: skip


def pack_nibbles(values: np.ndarray) -> bytes:
    """Signed 4-bit values in [−8, 7], two per byte, the first of each pair in the low nibble;
    an odd count leaves the last high nibble 0."""
    flat = np.asarray(values, np.int8).reshape(-1)
    if flat.size and (flat.min() < _INT4_MIN or flat.max() > _INT4_MAX):
        raise ValueError(f"INT4 values must lie in [-8, 7]; found [{flat.min()}, {flat.max()}]")
    nibbles = (flat.astype(np.uint8) & 0x0F).astype(np.uint8)
    if nibbles.size % 2:
        nibbles = np.append(nibbles, np.uint8(0))
    return (nibbles[0::2] | (nibbles[1::2] << 4)).astype(np.uint8).tobytes()


def unpack_nibbles(data: bytes, count: int) -> np.ndarray:
    """The inverse of `pack_nibbles`: `count` int8 values (sign-extended nibbles)."""
    raw = np.frombuffer(data, np.uint8)
    low = (raw & 0x0F).astype(np.int8)
    high = (raw >> 4).astype(np.int8)
    values = np.stack([low, high], axis=1).reshape(-1)[:count]
    return np.where(values > _INT4_MAX, values - 16, values).astype(np.int8)


def _why_not(graph: OpGraph, index: int) -> str | None:
    """Why the filter of op `index` (one of `INT4_OPS`) cannot be packed, else None."""
    model, tensors = graph.model, graph.subgraph.tensors
    op = graph.op(index)
    if len(op.inputs) <= _FILTER or op.inputs[_FILTER] < 0:
        return "no filter"
    source, filter_index = op.inputs[0], int(op.inputs[_FILTER])
    tensor = tensors[filter_index]
    if tensors[source].type != _TYPES.INT8 or tensors[op.outputs[0]].type != _TYPES.INT8:
        return "input or output not int8"
    data = model.buffers[tensor.buffer].data if tensor.buffer else None
    if tensor.type != _TYPES.INT8 or data is None or not len(data):
        return "filter not a constant int8 tensor"
    params = tensor.quantization
    if params is None or params.scale is None or np.any(np.asarray(params.zeroPoint) != 0):
        return "filter not symmetric (zero point 0)"
    if op_code(model, op) == _OPS.FULLY_CONNECTED and len(params.scale) != 1:
        return "per-channel FULLY_CONNECTED (TFLite Micro takes INT4 only per tensor)"
    values = np.frombuffer(bytes(np.asarray(data, np.uint8)), np.int8)
    if values.min() < _INT4_MIN or values.max() > _INT4_MAX:
        return f"values in [{values.min()}, {values.max()}], outside [-8, 7]"
    readers = graph.readers.get(filter_index, [])
    if any(op_code(model, graph.op(i)) not in INT4_OPS or p != _FILTER for i, p in readers):
        return "filter shared with an op that needs int8"
    return None


def _int4_opcode(model: schema.ModelT, op: schema.OperatorT, version: int, cache: dict) -> int:
    """The index of an operator code for `op`'s builtin at `version` or later (new if needed)."""
    code = model.operatorCodes[op.opcodeIndex]
    if code.version >= version:
        return op.opcodeIndex
    key = (op.opcodeIndex, version)
    if key not in cache:
        new = schema.OperatorCodeT()
        new.__dict__.update(code.__dict__)
        new.version = version
        model.operatorCodes.append(new)
        cache[key] = len(model.operatorCodes) - 1
    return cache[key]


def pack_int4(flatbuffer: bytes) -> tuple[bytes, Packing]:
    """Stores every filter of `INT4_OPS` whose int8 values fit [−8, 7] as INT4.

    Args:
      flatbuffer: An integer .tflite (subgraph 0 is rewritten).

    Returns:
      (the rewritten file, what was packed); the file comes back unchanged (same bytes) when
      no filter fits.
    """
    model = unpack_model(flatbuffer)
    if not model.subgraphs or not model.subgraphs[0].operators:
        return bytes(flatbuffer), Packing(0, (), 0, ())
    graph = OpGraph(model)
    tensors, names = graph.subgraph.tensors, {v: k for k, v in vars(_OPS).items()
                                              if not k.startswith("_")}  # fmt: skip
    packed, ops, skipped, codes = set(), [], [], {}
    for index, op in enumerate(graph.subgraph.operators):
        builtin = op_code(model, op)
        if builtin not in INT4_OPS:
            continue
        reason = _why_not(graph, index)
        filter_index = int(op.inputs[_FILTER]) if len(op.inputs) > _FILTER else -1
        if reason is not None:
            skipped.append(f"{names[builtin]} #{index}: {reason}")
            continue
        if filter_index not in packed:
            tensor = tensors[filter_index]
            data = np.frombuffer(bytes(np.asarray(model.buffers[tensor.buffer].data, np.uint8)),
                                 np.int8)  # fmt: skip
            buffer = schema.BufferT()
            buffer.data = np.frombuffer(pack_nibbles(data), np.uint8)
            model.buffers.append(buffer)  # a buffer of its own: others may share the old one
            tensor.buffer = len(model.buffers) - 1
            tensor.type = _TYPES.INT4
            packed.add(filter_index)
        op.opcodeIndex = _int4_opcode(model, op, INT4_OPS[builtin], codes)
        ops.append(names[builtin])
    if not packed:
        return bytes(flatbuffer), Packing(0, (), 0, tuple(skipped))
    drop_unused(model)
    result = pack_model(model)
    return result, Packing(len(packed), tuple(ops), len(flatbuffer) - len(result), tuple(skipped))
