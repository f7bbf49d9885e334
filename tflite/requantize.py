"""TFLite's integer requantization in numpy: the fixed-point rule and the double-precision one.

An int8 FULLY_CONNECTED computes an int32 accumulator `acc = Σ (w − z_w)(x − z_x) + bias` and
rescales it by M = s_x·s_w / s_y to the output's int8 units. The runtimes round that product
in two ways:

* **fixed point** (TFLite Micro, LiteRT's optimized kernels, every CONV_2D): M is stored as a
  Q31 mantissa and a power-of-two shift (`sgt_tfmot.int8_kernels.quantize_multiplier`,
  TFLite's `QuantizeMultiplier`), and `acc·M` is `RoundingDivideByPOT(
  SaturatingRoundingDoublingHighMul(acc·2^left, mantissa), right)`
  (`int8_kernels.multiply_by_quantized_multiplier`, which the QAT model's "relu" kernel uses
  too): two roundings;
* **double precision** (LiteRT's reference FULLY_CONNECTED, `reference_integer_ops::
  FullyConnected` with scales, since 2024): `round(acc · (double(s_x)·double(s_w)/double(s_y)))`,
  one rounding, half away from zero.

The two agree except where `acc·M` lies within the fixed-point rounding error of a half step,
a few outputs in ten thousand. `sgt_tfmot.tflite.tflm` uses `fully_connected` to tell such a
difference (TFLM against LiteRT's reference kernels) from a wrong output.

An int8 ADD rescales two inputs to one output: `(a − z_a)·s_a + (b − z_b)·s_b`, in output
steps, rounded once. XNNPACK multiplies by 21-bit multipliers
(`sgt_tfmot.int8_kernels.xnnpack_add`, bit for bit), so where a pair of input levels puts that
sum near a half step (a rounding tie: within ~1e-4 of a step, less the more alike the input
scales) it can round it to the other level than the exact sum's, which the Keras model
rounds (in float32: a sum a few millionths of a step from a tie may go either way there).
A SUB is XNNPACK's ADD with the second multiplier negated (`xnnpack_subtract`), with the same
ties. `add_rounding_ties` finds every ADD and SUB with such a pair among the levels the file
can meet. A
frequent one changes a level in most images, and through a k-bit residual
network (one level is 1/(2^k − 1) of an activation's range) a top-1 prediction in a few
hundred (docs/RESULTS.md, "SGT on photos, confirmed").
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from ai_edge_litert import schema_py_generated as schema

from sgt_tfmot.int8_kernels import (
    add_rounding,
    multiply_by_quantized_multiplier,
    quantize_multiplier,
)
from sgt_tfmot.tflite.rewrite import OpGraph, op_code, unpack_model
from sgt_tfmot.ties import NEAR_TIE

__all__ = [
    "NEAR_TIE",
    "RoundingTie",
    "add_rounding_ties",
    "fully_connected",
]


def fully_connected(
    x: np.ndarray,
    weights: np.ndarray,
    bias: np.ndarray | None,
    input_quantization: tuple[float, int],
    weight_scales: np.ndarray,
    output_quantization: tuple[float, int],
    activation_range: tuple[int, int],
    fixed_point: bool,
) -> np.ndarray:
    """An int8 FULLY_CONNECTED (weights (units, depth), symmetric) on int8 `x` (..., depth).

    Args:
      x: The int8 input.
      weights: The int8 filter, (units, depth).
      bias: The int32 bias, (units,), or None.
      input_quantization: (scale, zero point) of `x`.
      weight_scales: One scale, or one per unit.
      output_quantization: (scale, zero point) of the output.
      activation_range: The int8 clamp of the fused activation.
      fixed_point: The fixed-point rule (TFLite Micro) or the double-precision one (LiteRT's
        reference kernel).

    Returns:
      The int8 output, (..., units).
    """
    (x_scale, x_zero), (y_scale, y_zero) = input_quantization, output_quantization
    acc = (np.asarray(x, np.int64) - x_zero) @ np.asarray(weights, np.int64).T
    if bias is not None:
        acc = acc + np.asarray(bias, np.int64)
    scales = np.broadcast_to(np.asarray(weight_scales, np.float32), (weights.shape[0],))
    # double(s_x) · double(s_w) / double(s_y), one per unit
    multipliers = np.float64(np.float32(x_scale)) * scales.astype(np.float64)
    multipliers = multipliers / np.float64(np.float32(y_scale))
    if fixed_point:
        out = multiply_by_quantized_multiplier(acc, *quantize_multiplier(multipliers)).numpy()
    else:  # std::round: half away from zero
        value = acc * multipliers
        out = np.sign(value) * np.floor(np.abs(value) + 0.5)
    return np.clip(out + y_zero, *activation_range).astype(np.int8)


@dataclass(frozen=True)
class RoundingTie:
    """An ADD (or SUB) that XNNPACK and the Keras model may round apart, and its telling
    pair of levels.

    Attributes:
      op: The op's index in the file's execution order.
      levels: The two int8 input levels (a, b): of the pairs XNNPACK rounds apart, the one
        closest to a half step; when it rounds none apart, the closest of all pairs.
      steps: Their sum in output steps, `((a − z_a)·s_a + (b − z_b)·s_b) / s_y` (float64;
        their difference for a SUB).
      distance: |steps − nearest half step|, in output steps.
      apart: How many pairs XNNPACK rounds to another level than their exact sum's
        (`sgt_tfmot.int8_kernels.add_rounding`).
      kind: "ADD" or "SUB".
    """

    op: int
    levels: tuple[int, int]
    steps: float
    distance: float
    apart: int = 0
    kind: str = "ADD"

    def to_dict(self) -> dict:
        return {"op": self.op, "kind": self.kind, "levels": list(self.levels),
                "steps": self.steps, "distance": self.distance,
                "xnnpack_apart": self.apart}  # fmt: skip

    def describe(self) -> str:
        """The tie in words (convert's summary and its failed agreement check)."""
        verb = "differ by" if self.kind == "SUB" else "sum to"
        said = (
            f"{self.kind} #{self.op}'s input levels {self.levels} {verb} {self.steps:.7f} "
            f"output steps, {self.distance:.1e} of a step from a rounding tie, "
        )
        if self.apart:
            pairs = "pair" if self.apart == 1 else "pairs"
            return said + (
                f"which XNNPACK rounds the other way than the Keras model ({self.apart} "
                f"{pairs} of this {self.kind}'s levels)"
            )
        return said + "which the Keras model's float32 may round either way"


_ROUNDED_MERGES = {schema.BuiltinOperator.ADD: "ADD", schema.BuiltinOperator.SUB: "SUB"}


def _input_levels(graph: OpGraph, tensor: int) -> np.ndarray:
    """The int8 levels `tensor` can hold (`OpGraph.level_range`)."""
    low, high = graph.level_range(tensor)
    return np.arange(low, high + 1)


def add_rounding_ties(flatbuffer: bytes, within: float = NEAR_TIE) -> tuple[RoundingTie, ...]:
    """Every int8 ADD or SUB of subgraph 0 that XNNPACK rounds apart from the exact sums (or
    differences) on a pair of input levels, or with a pair within `within` output steps of a
    rounding tie
    (`sgt_tfmot.int8_kernels.add_rounding`, over the levels each input can hold,
    `_input_levels`, and the sums its fused activation keeps).

    Returns:
      One `RoundingTie` per such ADD, in execution order.
    """
    graph = OpGraph(unpack_model(flatbuffer))
    tensors, found = graph.subgraph.tensors, []

    def grid(tensor):
        quantization = tensors[tensor].quantization
        return float(quantization.scale[0]), int(quantization.zeroPoint[0])

    for index, op in enumerate(graph.subgraph.operators or []):
        kind = _ROUNDED_MERGES.get(op_code(graph.model, op))
        if kind is None:
            continue
        first, second, (output,) = int(op.inputs[0]), int(op.inputs[1]), op.outputs
        if any(tensors[t].type != schema.TensorType.INT8 for t in (first, second, output)):
            continue
        activation = getattr(op.builtinOptions, "fusedActivationFunction", None)
        low, high = -128, 127
        if activation == schema.ActivationFunctionType.RELU:
            low = grid(output)[1]
        elif activation == schema.ActivationFunctionType.RELU6:
            low = grid(output)[1]
            high = min(high, low + round(6.0 / grid(output)[0]))
        rounding = add_rounding(
            _input_levels(graph, first), grid(first), _input_levels(graph, second),
            grid(second), grid(output), low, high, subtract=kind == "SUB",
        )  # fmt: skip
        if rounding is not None and (rounding.apart or rounding.distance < within):
            found.append(RoundingTie(index, rounding.levels, rounding.steps,
                                     rounding.distance, rounding.apart, kind))  # fmt: skip
    return tuple(found)
