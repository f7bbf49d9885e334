"""Where TFLite Micro and LiteRT's reference kernels part, op by op, and why.

TFLM's kernels are LiteRT's reference kernels compiled for microcontrollers, with one known
difference: LiteRT's reference FULLY_CONNECTED requantizes its accumulator in double
precision, TFLM's (like LiteRT's own optimized kernels) in fixed point
(`sgt_tfmot.tflite.requantize`), so a few outputs in ten thousand round the other way.
`first_divergences` runs an image in both with every tensor kept, finds the first op whose
output differs although its inputs are equal, and calls the difference explained when that
op is a FULLY_CONNECTED whose TFLM output is the fixed-point rule's and whose LiteRT output
is the double-precision rule's, both recomputed here from the op's input, filter and bias.
Anything else is a real disagreement.

Example:

    found = first_divergences(flatbuffer, images_that_differ)
    print([(d.op, d.name, d.explained) for d in found])
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from ai_edge_litert import schema_py_generated as schema
from ai_edge_litert.interpreter import Interpreter

from sgt_tfmot.tflite.flatbuffer import OpInfo, TensorInfo, read_model
from sgt_tfmot.tflite.int4 import unpack_nibbles
from sgt_tfmot.tflite.requantize import fully_connected
from sgt_tfmot.tflite.rewrite import unpack_model
from sgt_tfmot.tflite.runtime import RUNTIMES

__all__ = ["Divergence", "FC_ROUNDING", "first_divergences"]

FC_ROUNDING = (
    "LiteRT's reference FULLY_CONNECTED requantizes in double precision, TFLM in fixed point "
    "(both recomputed in numpy from the op's input)"
)
_PRESERVE_ARENA = 64 << 20  # every tensor kept: far more than the planned arena
_CONSTANT_DTYPES = {"INT8": np.int8, "INT32": np.int32, "INT64": np.int64, "UINT8": np.uint8}


@dataclass(frozen=True)
class Divergence:
    """The first op of one image whose TFLM output differs from LiteRT's reference kernels'.

    Attributes:
      op: Its index in execution order (None: no op differs when run again, not explained).
      name: Its builtin name.
      explained: Whether `FC_ROUNDING` accounts for it (see the module docstring).
    """

    op: int | None
    name: str | None
    explained: bool


def _activation_range(op: OpInfo, output: TensorInfo) -> tuple[int, int] | None:
    """The int8 clamp of the op's fused activation (TFLite's
    `CalculateActivationRangeQuantized`), or None for one not handled here."""
    scale, zero = output.quantization.scale[0], output.quantization.zero_point[0]
    if op.fused_activation in (None, "NONE"):
        return -128, 127
    if op.fused_activation == "RELU":
        return max(-128, zero), 127
    if op.fused_activation == "RELU6":
        return max(-128, zero), min(127, zero + int(math.floor(6.0 / scale + 0.5)))
    return None


class _Constants:
    """The values of the file's constant tensors, INT4 unpacked."""

    def __init__(self, flatbuffer: bytes):
        self.model = unpack_model(flatbuffer)

    def __call__(self, tensor: TensorInfo) -> np.ndarray:
        stored = self.model.subgraphs[0].tensors[tensor.index]
        data = bytes(np.asarray(self.model.buffers[stored.buffer].data, np.uint8))
        if stored.type == schema.TensorType.INT4:
            return unpack_nibbles(data, int(np.prod(tensor.shape))).reshape(tensor.shape)
        return np.frombuffer(data, _CONSTANT_DTYPES[tensor.type]).reshape(tensor.shape)


def _fc_explains(op: OpInfo, values, constants: _Constants, micro_out, litert_out) -> bool:
    x, weights, bias = (op.inputs + (None,))[:3]
    output = op.outputs[0]
    clamp = _activation_range(op, output)
    if clamp is None or x.quantization is None or weights.quantization is None:
        return False
    if any(z != 0 for z in weights.quantization.zero_point):
        return False
    arguments = (
        values(x).reshape(-1, weights.shape[-1]), constants(weights),
        None if bias is None else constants(bias),
        (x.quantization.scale[0], x.quantization.zero_point[0]),
        np.asarray(weights.quantization.scale, np.float32),
        (output.quantization.scale[0], output.quantization.zero_point[0]), clamp,
    )  # fmt: skip
    fixed = fully_connected(*arguments, fixed_point=True).reshape(micro_out.shape)
    double = fully_connected(*arguments, fixed_point=False).reshape(litert_out.shape)
    return np.array_equal(fixed, micro_out) and np.array_equal(double, litert_out)


def first_divergences(flatbuffer: bytes, images: np.ndarray) -> list[Divergence]:
    """For each quantized image (input shape without the batch), the first op where TFLM and
    LiteRT's reference kernels part (see the module docstring)."""
    from tflite_micro.python.tflite_micro import runtime

    summary = read_model(flatbuffer)
    constants = _Constants(flatbuffer)
    litert = Interpreter(
        model_content=bytes(flatbuffer), num_threads=1, experimental_preserve_all_tensors=True,
        **RUNTIMES["reference"],
    )  # fmt: skip
    litert.allocate_tensors()
    micro = runtime.Interpreter.from_bytes(
        bytes(flatbuffer), arena_size=_PRESERVE_ARENA,
        intrepreter_config=runtime.InterpreterConfig.kPreserveAllTensors,
    )  # fmt: skip
    source = litert.get_input_details()[0]["index"]
    found = []
    for image in images:
        litert.set_tensor(source, image[None])
        litert.invoke()
        micro.set_input(np.ascontiguousarray(image[None]), 0)
        micro.invoke()

        def values(tensor, interpreter=litert):
            return interpreter.get_tensor(tensor.index)

        def micro_values(tensor):
            data = micro.GetTensor(tensor.index, 0)["tensor_data"]
            return np.asarray(data).reshape(values(tensor).shape)

        divergence = Divergence(None, None, False)
        for op in summary.ops:
            output = op.outputs[0]
            if np.array_equal(micro_values(output), values(output)):
                continue
            same_inputs = all(
                t is None or t.is_constant or np.array_equal(micro_values(t), values(t))
                for t in op.inputs
            )
            explained = same_inputs and op.name == "FULLY_CONNECTED" and _fc_explains(
                op, values, constants, micro_values(output), values(output)
            )  # fmt: skip
            divergence = Divergence(op.index, op.name, explained)
            break
        found.append(divergence)
    return found
