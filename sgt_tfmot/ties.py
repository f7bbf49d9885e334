"""A QAT model's ADDs moved off their rounding ties, on the Keras side, before it is saved.

An int8 ADD sums two input levels in output steps, `((a − z_a)·s_a + (b − z_b)·s_b) / s_y`,
and rounds once. When the scales put a pair of levels near a half step, XNNPACK's 21-bit
fixed-point multipliers (`int8_kernels.xnnpack_add`) can round it to the other level than
the exact sum, which the Keras model rounds (in float32: within a few millionths of a step
it may go either way); in a k-bit residual network one such pair in the first block changed
1.3 % of a W4A4 ResNet-20's top-1 predictions (docs/RESULTS.md, "SGT on photos,
confirmed").

`rounding_ties` finds them in the model itself: for every Add (and Subtract), the grids its
file will have (each tensor's quantizer's export range, nudged as the converter nudges it:
`int8_kernels.nudged_grid`), the levels each input can hold (2^k for a k-bit PACT output,
else 256), and the sums the output keeps (a PACT ReLU after the Add keeps levels 0..2^k − 1
of its grid), through `int8_kernels.add_rounding`: an Add is tied when XNNPACK rounds a pair
apart from its exact sum, or a pair lies within `NEAR_TIE` of a half step. The converted file
agrees with it (tests/test_rounding_ties.py; `sgt_tfmot.tflite.requantize.add_rounding_ties`
checks a file).

`separate_rounding_ties` moves them: an input whose range is a moving-average statistic (the
8-bit range a BatchNormalization or convolution output is quantized over, `RangeQuantizer`)
has that range scaled by 1 + ε for the first ε of `NUDGES` after which XNNPACK rounds every
pair of that Add as the exact sum, each `SEPARATION` from a tie, and no other Add is newly
tied. The model changes in a range's last digits; `train` measures the test accuracy after
it, on the model it saves. Trained ranges (PACT's α) are never touched.

Example:

    moved = separate_rounding_ties(qat_model)   # [(layer name, ε), ...]
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from sgt_tfmot import _graph
from sgt_tfmot.int8_kernels import add_rounding, nudged_grid
from sgt_tfmot.keras import keras
from sgt_tfmot.quantize import grid_quantizer
from sgt_tfmot.quantizers import PACTQuantizer, RangeQuantizer

__all__ = [
    "NEAR_TIE",
    "NUDGES",
    "SEPARATION",
    "KerasTie",
    "rounding_ties",
    "separate_rounding_ties",
]

NEAR_TIE = 1e-5
"""Distance from a half step, in output steps, under which a pair is a tie whatever XNNPACK
does: the Keras model's float32 sum of up to ±255 steps is itself off the exact one by a few
millionths of a step."""

SEPARATION = 5e-5
"""How far a moved Add's pairs end from a tie, in output steps: `NEAR_TIE` with room for the
converter's scales, which can differ from the ones computed here by a float32 ulp (~1e-6 of
a step), and for the Keras model's bfloat16 or float32 arithmetic."""

NUDGES = (1e-5, -1e-5, 3e-5, -3e-5, 1e-4, -1e-4, 3e-4, -3e-4)
"""Relative changes of a statistic range tried in turn (its scale moves by as much)."""

_INT8 = np.arange(-128, 128)


@dataclass(frozen=True)
class KerasTie:
    """An Add with a pair of input levels that XNNPACK rounds apart from its exact sum, or
    within `NEAR_TIE` of a rounding tie.

    Attributes:
      add: The Add layer's name.
      distance: Of its telling pair's sum from a half step, in output steps
        (`int8_kernels.AddRounding`).
      apart: How many pairs XNNPACK rounds to another level than their exact sum's.
      statistics: The layers feeding it whose output range is a statistic (can move): only
        for an Add whose result is a k < 8-bit PACT activation (at 8 bits one level is 1/255
        of the range, and W8A8 files agree with their Keras models without moves).
    """

    add: str
    distance: float
    apart: int
    statistics: tuple[str, ...]


def _tensor(layer):
    """(grid as the file will store it, the levels it can hold, quantizer) of `layer`'s
    output, or None when it has no range."""
    found = grid_quantizer(layer)
    if found is None:
        return None
    quantizer, variables = found
    scale, zero = (float(v) for v in nudged_grid(*quantizer.export_range(variables)))
    if isinstance(quantizer, PACTQuantizer):
        return (scale, zero), zero + np.arange(quantizer.levels + 1), quantizer
    return (scale, zero), _INT8, quantizer


def _add_output(model, add, consumers):
    """(grid, lowest, highest level kept, k-bit) of an Add's result in the file: its own
    range, that of the one PACT ReLU after it (fused into the ADD: levels 0..2^k − 1), or
    that of the one Concatenate after it (which gives its inputs without a range its own
    grid); k-bit when that ReLU has k < 8 bits, where one level is a large step
    (1/(2^k − 1) of its range) that grows through the layers after it. None when the result
    has no range."""
    own = _tensor(add)
    if own is not None:
        return own[0], -128, 127, False
    after = consumers.get(add.name, [])
    if len(after) != 1 or after[0] == _graph.OUTPUT:
        return None
    consumer = model.get_layer(after[0])
    found = _tensor(consumer)
    if found is not None and isinstance(
        getattr(consumer, "layer", consumer), keras.layers.Concatenate
    ):
        return found[0], -128, 127, False
    if found is None or not isinstance(found[2], PACTQuantizer):
        return None
    grid, levels, quantizer = found
    return grid, int(levels[0]), int(levels[-1]), quantizer.num_bits < 8


def rounding_ties(model: keras.Model, within: float = NEAR_TIE) -> list[KerasTie]:
    """Every two-input Add (or Subtract: XNNPACK's SUB rounds as its ADD does,
    `int8_kernels.xnnpack_subtract`) of `model` that XNNPACK rounds apart from its exact sums
    on a pair of input levels, or with a pair within `within` output steps of a rounding tie,
    in the grids its integer file will have (module docstring)."""
    consumers = _graph.consumers(model.get_config())
    found = []
    for add in model.layers:
        merge = getattr(add, "layer", add)
        if not isinstance(merge, (keras.layers.Add, keras.layers.Subtract)):
            continue
        if len(add.inbound_nodes) != 1:
            continue
        inputs = add.inbound_nodes[0].inbound_layers
        if not isinstance(inputs, list) or len(inputs) != 2:
            continue
        tensors = [_tensor(layer) for layer in inputs]
        output = _add_output(model, add, consumers)
        if output is None or None in tensors:
            continue
        (grid_a, levels_a, _), (grid_b, levels_b, _) = tensors
        *kept, k_bit = output
        subtract = isinstance(merge, keras.layers.Subtract)
        rounding = add_rounding(levels_a, grid_a, levels_b, grid_b, *kept, subtract=subtract)
        if rounding is not None and (rounding.apart or rounding.distance < within):
            statistics = (
                ()
                if not k_bit
                else tuple(
                    layer.name
                    for layer, tensor in zip(inputs, tensors, strict=True)
                    if isinstance(tensor[2], RangeQuantizer)
                    and grid_quantizer(layer)[1] is not None
                    and not hasattr(layer, "quantizer")  # the model input's range: the file's input
                )
            )
            found.append(KerasTie(add.name, rounding.distance, rounding.apart, statistics))
    return found


def _key(variables) -> tuple[int, ...]:
    return tuple(id(variable) for variable in variables)


def _range_variables(model: keras.Model, name: str) -> list:
    """The min and max variables of the range that quantizes layer `name`'s output."""
    _, variables = grid_quantizer(model.get_layer(name))
    return [variables["min_var"], variables["max_var"]]


def separate_rounding_ties(model: keras.Model) -> list[tuple[str, float]]:
    """Moves every Add of `model` off its rounding ties (module docstring).

    Args:
      model: A QAT model (any bits); its statistic ranges change in place.

    Returns:
      (name of the layer whose range moved, ε) for each move; empty when no Add is near a
      tie, or when a tie has no statistic range to move (it then stays, and `convert` names
      it in its agreement check).
    """
    moved, tried = [], set()  # tried: the ranges' variables (layers may share a range)
    while True:
        ties = rounding_ties(model)
        pending = [
            (tie, name, variables)
            for tie in ties
            for name in tie.statistics
            for variables in [_range_variables(model, name)]
            if _key(variables) not in tried
        ]
        if not pending:
            return moved
        tie, name, variables = pending[0]
        tried.add(_key(variables))
        original = [variable.numpy() for variable in variables]
        kept = False
        try:
            for nudge in NUDGES:
                for variable, value in zip(variables, original, strict=True):
                    variable.assign(value * np.float32(1.0 + nudge))
                clear = tie.add not in {found.add for found in rounding_ties(model, SEPARATION)}
                left = {found.add for found in rounding_ties(model)}
                if clear and left <= {found.add for found in ties}:
                    moved.append((name, nudge))
                    kept = True
                    break
        finally:
            if not kept:  # no nudge worked, or an error: the range as it was
                for variable, value in zip(variables, original, strict=True):
                    variable.assign(value)
