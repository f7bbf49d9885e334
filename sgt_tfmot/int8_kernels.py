"""The TFLite int8 kernels that a fake-quant op cannot express, as formulas the QAT model
runs: where an integer kernel rounds its own way (AVERAGE_POOL_2D), or moves a tensor from
one grid onto another with a fixed-point multiplier (the QUANTIZE in front of a
CONCATENATION input, LEAKY_RELU, a RELU that fuses into nothing), the Keras model computes
the same integers, so the `.tflite` gives the Keras model's logits.
`quantize.QuantizeWrapperV2` applies them where a layer's config names an `integer_kernel`.

Each takes and returns float values on int8 grids, given as (scale, int8 zero point) pairs
(`nudged_grid`, or a quantizer's `integer_grid`), computes in float32 (so models under the
`mixed_bfloat16` policy work; TFLite's 31-bit multipliers in int64: `quantize_multiplier`,
`multiply_by_quantized_multiplier`, which `sgt_tfmot.tflite.requantize` uses too) and has
the gradient of the identity (straight through, like every quantizer here).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from sgt_tfmot.keras import tf


def _to_float32(x):
    """A float32 tensor (never a variable: `tf.custom_gradient` must see plain tensors)."""
    x = tf.convert_to_tensor(x)
    return x if x.dtype == tf.float32 else tf.cast(x, tf.float32)


def nudged_grid(low, high, num_bits: int = 8):
    """(scale, int8 zero point) of the grid a fake-quant op over [low, high] rounds onto.

    TensorFlow's fake-quant ops (and the TFLite converter after them) move the range until
    0 is a grid point: scale = (high − low) / (2^k − 1), and the zero point
    z = round(−low / scale) (half away from zero), clipped to [0, 2^k − 1], is the level of
    0. TFLite stores the level minus 128 as an int8 tensor's zero point. Tensors in, tensors
    out (the ranges may be variables that move while training).
    """
    low, high = _to_float32(low), _to_float32(high)
    levels = float(2**num_bits - 1)
    scale = tf.maximum((high - low) / levels, 1e-12)
    zero_point = tf.clip_by_value(tf.floor(-low / scale + 0.5), 0.0, levels)
    return scale, zero_point - 128.0


def average_pool_int8(y, scale, zero_point, counts):
    """TFLite's int8 AVERAGE_POOL_2D, given the float average `y` of values on an int8 grid.

    The integer kernel keeps the input's scale and zero point for its output and computes,
    for each window of n input values q (int8, zero point included),

        r = sign(Σq) · ⌊(|Σq| + ⌊n/2⌋) / n⌋      (Σq / n rounded half away from zero)

    in LiteRT's XNNPACK, builtin and reference kernels alike (checked on every input
    pattern of the tests). Σq is recovered exactly from the float average:
    Σq = round(n · (y / scale + zero_point)). The gradient is the identity (straight
    through, like every quantizer here).

    Args:
      y: Float averages (B, H', W', C) of the pooled windows.
      scale, zero_point: The input's grid (`nudged_grid` or a PACT grid).
      counts: n for each output position, (H', W', 1) (fewer at a SAME-padded border), a
        numpy array (`pool_window_counts`).
    """

    counts = np.asarray(counts, np.float32)
    half = np.floor(counts / 2) + 0.5  # ⌊n/2⌋, and 0.5 against inexact division (below)

    @tf.custom_gradient
    def _round(y):
        total = tf.round(counts * (y / scale + zero_point))
        # (|Σq| + ⌊n/2⌋ + 0.5) / n lies at least 0.5/n away from an integer, so the floor
        # is exact even where TensorFlow's graph optimizations divide inexactly (a
        # reciprocal: 484 / 4 came out as 120.99999 in `predict`).
        r = tf.sign(total) * tf.floor((tf.abs(total) + half) / counts)
        r = tf.clip_by_value(r, -128.0, 127.0)
        return (r - zero_point) * scale, lambda dy: dy

    y32 = _to_float32(y)
    return tf.cast(_round(y32), y.dtype)


def requantize_int8(x, input_grid, output_grid):
    """An int8 tensor moved from its grid onto another, as LiteRT's XNNPACK delegate runs the
    int8 QUANTIZE op that the TFLite converter puts in front of a CONCATENATION input whose
    scale differs from the output's (an input that other layers read too).

    XNNPACK requantizes with an 8-bit fixed-point multiplier (checked on every int8 input
    for several scale ratios in the tests):

        M = rint(256 · s_in / s_out),   r = ⌊((q − z_in) · M + 128) / 256⌋ + z_out

    which differs from rounding (q − z_in) · s_in / s_out by one step wherever M / 256 is
    not the ratio closely enough (LiteRT's builtin kernels use a 31-bit multiplier). The
    gradient is the identity.

    Args:
      x: Values on `input_grid`.
      input_grid, output_grid: (scale, int8 zero point) pairs.
    """
    s_in, z_in = input_grid
    s_out, z_out = output_grid

    @tf.custom_gradient
    def _requantize(x):
        q = tf.round(x / s_in + z_in)
        r = _fixed_point_8(q - z_in, tf.round(256.0 * s_in / s_out), z_out)
        return (r - z_out) * s_out, lambda dy: dy

    return tf.cast(_requantize(_to_float32(x)), x.dtype)


def _fixed_point_8(d, multiplier, z_out):
    """⌊(d · M + 128) / 256⌋ + z_out, clipped to int8: XNNPACK's requantization of an int8
    difference d = q − z_in with an 8-bit fixed-point multiplier M. The numerator is an
    integer, so +0.5 keeps the floor exact under inexact division."""
    r = tf.floor((d * multiplier + 128.5) / 256.0) + z_out
    return tf.clip_by_value(r, -128.0, 127.0)


def leaky_relu_int8(x, y, alpha: float, input_grid, output_grid):
    """LiteRT's XNNPACK int8 LEAKY_RELU of `x` (values on `input_grid`), with the value of
    the float computation `y` (leaky_relu(x) on `output_grid`) replaced and its gradient
    kept (straight through).

    XNNPACK requantizes the positive and the negative side with its own 8-bit fixed-point
    multiplier (as the QUANTIZE op, `requantize_int8`):

        M+ = rint(256 · s_in / s_out),   M− = rint(256 · α · s_in / s_out)
        r = ⌊((q − z_in) · M + 128) / 256⌋ + z_out,   M = M+ where q ≥ z_in, else M−

    which is one step from rounding x·α/s_out wherever M/256 is not the ratio closely enough
    (LiteRT's builtin kernels use 31-bit multipliers).

    Args:
      x: The layer's input, on `input_grid`.
      y: The layer's float output after its output quantizer (on `output_grid`).
      alpha: The negative slope.
      input_grid, output_grid: (scale, int8 zero point) pairs.
    """
    s_in, z_in = input_grid
    s_out, z_out = output_grid

    @tf.custom_gradient
    def _kernel(x, y):
        d = tf.round(x / s_in + z_in) - z_in
        positive = tf.round(256.0 * s_in / s_out)
        negative = tf.round(256.0 * float(alpha) * s_in / s_out)
        r = _fixed_point_8(d, tf.where(d >= 0, positive, negative), z_out)
        return (r - z_out) * s_out, lambda dy: (tf.zeros_like(dy), dy)

    return tf.cast(_kernel(_to_float32(x), _to_float32(y)), y.dtype)


_INT32_MIN, _INT32_MAX = -(2**31), 2**31 - 1


def quantize_multiplier(ratio):
    """TFLite's `QuantizeMultiplier`, elementwise: int64 tensors (mantissa, shift) with
    ratio ≈ mantissa · 2^(shift − 31), the Q31 mantissa in [2^30, 2^31) rounded half up
    (exactly: scaling a float64 by a power of two rounds nothing); (0, 0) for a ratio of 0
    or one under 2^-32. `ratio` is a positive number, array or tensor (taken as float64)."""
    ratio = tf.cast(ratio, tf.float64) if tf.is_tensor(ratio) else tf.constant(ratio, tf.float64)
    positive = ratio > 0.0
    safe = tf.where(positive, ratio, tf.ones_like(ratio))
    two = tf.constant(2.0, tf.float64)
    exponent = tf.floor(tf.math.log(safe) / np.log(2.0)) + 1.0  # then mended where log is off
    fraction = safe * tf.pow(two, -exponent)
    exponent = tf.where(fraction >= 1.0, exponent + 1.0, exponent)
    exponent = tf.where(fraction < 0.5, exponent - 1.0, exponent)
    mantissa = tf.floor(safe * tf.pow(two, -exponent) * 2.0**31 + 0.5)
    carry = mantissa >= 2.0**31
    mantissa = tf.where(carry, mantissa / 2.0, mantissa)
    exponent = tf.where(carry, exponent + 1.0, exponent)
    zero = tf.logical_or(tf.logical_not(positive), exponent < -31.0)
    return (
        tf.cast(tf.where(zero, tf.zeros_like(mantissa), mantissa), tf.int64),
        tf.cast(tf.where(zero, tf.zeros_like(exponent), exponent), tf.int64),
    )


def multiply_by_quantized_multiplier(x, mantissa, shift):
    """TFLite's `MultiplyByQuantizedMultiplier` on integers, elementwise with broadcasting, in
    int64 tensors: a saturating rounding doubling high multiply of `x · 2^max(shift, 0)` by
    the mantissa, then a rounding right shift by max(−shift, 0) -- two roundings. `x` holds
    int32 values (an accumulator, a level difference); returns an int64 tensor."""
    x, mantissa, shift = (tf.cast(v, tf.int64) for v in (x, mantissa, shift))
    one = tf.constant(1, tf.int64)
    x = x * tf.bitwise.left_shift(one, tf.maximum(shift, 0))
    right = tf.maximum(-shift, 0)
    product = x * mantissa
    total = product + tf.where(product >= 0, one * 2**30, one * (1 - 2**30))
    high = tf.truncatediv(total, one * 2**31)  # C division: toward zero
    saturated = tf.logical_and(tf.equal(x, _INT32_MIN), tf.equal(mantissa, _INT32_MIN))
    high = tf.where(saturated, one * _INT32_MAX, high)
    mask = tf.bitwise.left_shift(one, right) - 1
    remainder = tf.bitwise.bitwise_and(high, mask)
    threshold = tf.bitwise.right_shift(mask, one) + tf.cast(high < 0, tf.int64)
    return tf.bitwise.right_shift(high, right) + tf.cast(remainder > threshold, tf.int64)


def relu_int8(x, y, input_grid, output_grid, levels: int = 255):
    """LiteRT's int8 RELU from one grid onto another (a RELU after a CONCATENATION, which
    the converter fuses nowhere), with the value of the float computation `y` (the PACT
    output on `output_grid`) replaced and its gradient kept (straight through).

    XNNPACK leaves a RELU whose scales differ to LiteRT's builtin kernel, which requantizes
    with TFLite's 31-bit multiplier of the float32 ratio s_in / s_out:

        r = z_out + MultiplyByQuantizedMultiplier(q − z_in, M, shift),  clipped to
        [z_out, z_out + levels] (the ReLU, and PACT's α: the file's MINIMUM)

    whose rounding doubling multiply rounds first at 2^shift of an output step: for a ratio
    under 1/2 that is a second rounding (at a ratio of 0.18, a quarter of a step), one step
    from rounding x / s_out wherever the first moved the value across a half step.

    Args:
      x: The layer's input, on `input_grid`.
      y: The layer's float output after its PACT quantizer (on `output_grid`).
      input_grid, output_grid: (scale, int8 zero point) pairs.
      levels: 2^k − 1 for a k-bit PACT output.
    """
    s_in, z_in = input_grid
    s_out, z_out = output_grid

    @tf.custom_gradient
    def _kernel(x, y):
        mantissa, shift = quantize_multiplier(_to_float32(s_in) / _to_float32(s_out))
        d = tf.cast(tf.round(x / s_in + z_in) - z_in, tf.int64)
        r = tf.cast(multiply_by_quantized_multiplier(d, mantissa, shift), tf.float32)
        z = _to_float32(z_out)
        r = tf.clip_by_value(r + z, z, tf.minimum(z + float(levels), 127.0))
        return (r - z) * s_out, lambda dy: (tf.zeros_like(dy), dy)

    return tf.cast(_kernel(_to_float32(x), _to_float32(y)), y.dtype)


def pool_window_counts(input_size, pool_size, strides, padding: str) -> np.ndarray:
    """n, the number of input values in each window of a 2-D pooling, shaped (H', W', 1):
    pool_h · pool_w everywhere for "valid" padding; fewer at the border for "same"
    (TensorFlow's padding, the larger half after the input; padded values do not count)."""

    def per_axis(size, pool, stride):
        if padding == "valid":
            return np.full((size - pool) // stride + 1, pool)
        out = -(-size // stride)
        before = max((out - 1) * stride + pool - size, 0) // 2
        starts = np.arange(out) * stride - before
        return np.minimum(starts + pool, size) - np.maximum(starts, 0)

    rows = per_axis(input_size[0], pool_size[0], strides[0])
    columns = per_axis(input_size[1], pool_size[1], strides[1])
    return np.outer(rows, columns)[..., None].astype(np.float32)


def xnnpack_add(a, b, grid_a, grid_b, grid_y, low: int = -128, high: int = 127) -> np.ndarray:
    """XNNPACK's int8 ADD, bit for bit: the output levels of input levels `a` and `b`.

    XNNPACK (LiteRT's default runtime) turns each input's scale ratio r = s/s_y (float32)
    into a 21-bit multiplier: shift = 20 − ⌊log2 max(r_a, r_b)⌋, m = rint(r · 2^shift); then
    out = ⌊(2^(shift−1) + m_a·(a − z_a) + m_b·(b − z_b)) / 2^shift⌋ + z_y, clamped to
    [low, high] (its `xnn_init_qs8_add_minmax_scalar_params` and the kernels that share its
    arithmetic). The multipliers are off the exact ratios by up to 2⁻²¹ of the larger one, so
    a sum within ~1e-4 of a step of a half step may round to the other level than the exact
    sum's (tests/test_rounding_ties.py runs LiteRT on every pair against this).

    Args:
      a, b: int8 levels (arrays that broadcast).
      grid_a, grid_b, grid_y: (scale, int8 zero point) of the inputs and of the output.
      low, high: The output clamp (a fused ReLU's lower end is z_y).
    """
    (scale_a, zero_a), (scale_b, zero_b), (scale_y, zero_y) = (
        (np.float32(scale), int(zero)) for scale, zero in (grid_a, grid_b, grid_y)
    )
    ratio_a, ratio_b = scale_a / scale_y, scale_b / scale_y  # float32 divisions, as XNNPACK
    shift = 20 - (int(np.frexp(max(ratio_a, ratio_b))[1]) - 1)
    multiplier_a, multiplier_b = (int(np.rint(float(r) * 2.0**shift)) for r in (ratio_a, ratio_b))
    a, b = np.asarray(a, np.int64), np.asarray(b, np.int64)
    total = (1 << (shift - 1)) + multiplier_a * (a - zero_a) + multiplier_b * (b - zero_b)
    return np.clip((total >> shift) + zero_y, low, high)


def xnnpack_subtract(a, b, grid_a, grid_b, grid_y, low: int = -128, high: int = 127):
    """XNNPACK's int8 SUB, bit for bit: its ADD with `b`'s multiplier negated, which is the
    ADD of `b` mirrored about its zero point (2·z_b − b) (tests/test_rounding_ties.py runs
    LiteRT on every pair against this). Arguments as `xnnpack_add`'s."""
    zero_b = int(grid_b[1])
    return xnnpack_add(a, 2 * zero_b - np.asarray(b, np.int64), grid_a, grid_b, grid_y, low, high)


@dataclass(frozen=True)
class AddRounding:
    """How an int8 ADD rounds its pairs of input levels (`add_rounding`).

    Attributes:
      levels: The pair it is about: the closest to a half step of those XNNPACK rounds to
        another level than the exact sum's, or, when it rounds none apart, of all pairs.
      steps: That pair's exact sum, in output steps.
      distance: Of that sum from the half step, in output steps.
      apart: How many pairs XNNPACK rounds to another level than the exact sum's.
    """

    levels: tuple[int, int]
    steps: float
    distance: float
    apart: int


def add_rounding(
    levels_a,
    grid_a,
    levels_b,
    grid_b,
    grid_y,
    low: int = -128,
    high: int = 127,
    subtract: bool = False,
) -> AddRounding | None:
    """Every pair of input levels of an int8 ADD (or SUB), rounded exactly and as XNNPACK
    rounds it.

    The exact sum `((a − z_a)·s_a + (b − z_b)·s_b) / s_y`, in output steps (the difference
    for a SUB), is what the Keras model rounds (half up, as its fake-quant ops do), in
    float32: a sum a few millionths of a step from a half step may go either way there;
    `xnnpack_add` (`xnnpack_subtract`) is what the file computes in LiteRT's default runtime.
    Exhaustive over the given levels; only sums between two output levels that both lie in
    [low, high] (the fused activation's clamp and the int8 range) count: at the clamp's edge
    every rounding gives the same level.

    Args:
      levels_a, levels_b: The int8 levels each input can hold (arrays).
      grid_a, grid_b, grid_y: (scale, int8 zero point) of the inputs and of the output.
      low, high: The output levels that are kept (a fused ReLU keeps those from z_y up).
      subtract: A SUB (a − b) rather than an ADD.

    Returns:
      An `AddRounding`, or None when no sum lands inside.
    """
    levels_a, levels_b = np.asarray(levels_a), np.asarray(levels_b)
    (scale_a, zero_a), (scale_b, zero_b), (scale_y, zero_y) = (
        (float(np.float32(scale)), int(zero)) for scale, zero in (grid_a, grid_b, grid_y)
    )
    a, b = levels_a[:, None], levels_b[None, :]
    sign = -1.0 if subtract else 1.0
    steps = ((a - zero_a) * scale_a + sign * (b - zero_b) * scale_b) / scale_y
    # A sum between levels k and k + 1 (of the output, zero point included) is rounded apart
    # only if both survive the clamp: low <= k and k + 1 <= high.
    below = np.floor(steps) + zero_y
    inside = (below >= low) & (below + 1 <= high)
    if not inside.any():
        return None
    distance = np.where(inside, np.abs(steps - np.floor(steps) - 0.5), np.inf)
    exact = np.clip(np.floor(steps + 0.5) + zero_y, low, high)
    kernel = xnnpack_subtract if subtract else xnnpack_add
    apart = inside & (kernel(a, b, grid_a, grid_b, grid_y, low, high) != exact)
    i, j = np.unravel_index(
        np.argmin(np.where(apart, distance, np.inf) if apart.any() else distance), distance.shape
    )
    return AddRounding(
        (int(levels_a[i]), int(levels_b[j])), float(steps[i, j]), float(distance[i, j]),
        int(apart.sum()),
    )  # fmt: skip
