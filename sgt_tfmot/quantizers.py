"""Quantizers: PACT for activations, symmetric k-bit for weights, 8-bit range quantizers.

Each quantizer is a small pure function carrying `@tf.custom_gradient` (the formula, its
gradient and a fake-quant op the TFLite converter understands), plus a thin serializable
TFMOT `Quantizer` class around it that owns the state (α, ranges).

All quantizers compute in float32, so models under the `mixed_bfloat16` policy work: the
fake-quant kernels of TensorFlow only exist for float32.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from sgt_tfmot import _checks
from sgt_tfmot.int8_kernels import _to_float32, nudged_grid
from sgt_tfmot.keras import keras, tf, tfmot

_Quantizer = tfmot.quantization.keras.quantizers.Quantizer
_EPSILON = 1e-3  # smallest clipping level α we allow; keeps the fake-quant range non-empty

MIN_BITS, MAX_BITS = 2, 8


def check_bits(value, name: str) -> int:
    """`value` as an int if it is an integer (Python or numpy) in [2, 8]."""
    return _checks.check_int(value, name, MIN_BITS, MAX_BITS)


def pact(x: tf.Tensor, alpha: tf.Tensor, num_bits: int) -> tf.Tensor:
    """PACT activation quantization (Choi et al. 2018), k = `num_bits`.

    Forward:
        y   = clip(x, 0, α)
        y_q = round(y · (2^k − 1) / α) · α / (2^k − 1)
    (round half up, as TensorFlow's fake-quant op does; y ≥ 0 so this is round half away from
    zero.)

    Backward (straight-through estimator inside the clipping range):
        ∂y_q/∂x = 1 if 0 ≤ x ≤ α else 0
        ∂y_q/∂α = 1 if x ≥ α else 0      (summed over all elements: α is a scalar)

    The forward pass emits `fake_quant_with_min_max_vars(x, 0, α, k)`, which the TFLite
    converter turns into an int8 scale α/(2^k − 1) and zero point at the lower end.

    Args:
      x: Activations, any shape and float dtype (computed in float32, returned in x's dtype).
      alpha: Scalar clipping level α > 0.
      num_bits: k, in [2, 8].

    Returns:
      The quantized activations, shaped and typed like `x`.
    """

    @tf.custom_gradient
    def _pact(x, alpha):
        y = tf.quantization.fake_quant_with_min_max_vars(x, 0.0, alpha, num_bits=num_bits)

        def grad(dy):
            inside = tf.logical_and(x >= 0.0, x <= alpha)
            dx = dy * tf.cast(inside, dy.dtype)
            dalpha = tf.reduce_sum(dy * tf.cast(x >= alpha, dy.dtype))
            return dx, dalpha

        return y, grad

    y = _pact(_to_float32(x), tf.maximum(_to_float32(alpha), _EPSILON))
    return tf.cast(y, x.dtype)


def pact_integer(x: tf.Tensor, alpha: tf.Tensor, num_bits: int) -> tf.Tensor:
    """The k-bit PACT forward written with ops an 8-bit integer model can run exactly.

        y = min(fake_quant_8bit(x, 0, α · 255 / (2^k − 1)), α)

    The 8-bit range [0, α·255/(2^k − 1)] has step α/(2^k − 1), the k-bit step, so the
    requantization of the producer's accumulator rounds to the k-bit grid, and the MINIMUM
    restores the clip at α. The result equals `pact(x, α, k)` value for value; for k = 8 the
    MINIMUM is not needed and not emitted. The TFLite converter turns this into the
    producer's int8 output (scale α/(2^k − 1)) followed by one int8 MINIMUM, which
    `sgt_tfmot.tflite.rewrite.fold_minimums` then folds into the producer's zero point (the
    same values, no op). Used for export only (see `sgt_tfmot.export`).
    """
    x32, alpha32 = _to_float32(x), tf.maximum(_to_float32(alpha), _EPSILON)
    levels = 2**num_bits - 1
    high = alpha32 * (255.0 / levels)
    y = tf.quantization.fake_quant_with_min_max_vars(x32, 0.0, high, 8)
    if num_bits < 8:
        # α is the grid point 2^k − 1, so the second fake-quant changes no value; it gives
        # the MINIMUM's output a range of its own. Without it the converter lets a
        # Concatenate that reads the tensor set its range, and every other reader then
        # reads the tensor requantized onto the Concatenate's grid.
        y = tf.quantization.fake_quant_with_min_max_vars(tf.minimum(y, alpha32), 0.0, high, 8)
    return tf.cast(y, x.dtype)


def _weight_levels(num_bits: int) -> int:
    """Largest level L of a symmetric narrow-range k-bit grid {−L, ..., L}: 2^(k−1) − 1."""
    return 2 ** (num_bits - 1) - 1


CONTAINER_BITS = (4, 8)
"""The integer types a k-bit kernel can be stored in: INT4 (k ≤ 4) or INT8."""


def default_container_bits(num_bits: int) -> int:
    """The container of a `num_bits` kernel unless told otherwise: 4 bits for k ≤ 4 (the
    file's kernels then pack two per byte, `sgt_tfmot.tflite.int4`), else 8."""
    return 4 if num_bits <= 4 else 8


def export_range_scale(grid_bits: int, num_bits: int = 8, container_bits: int = 8) -> float:
    """Range factor that makes a `num_bits` weight grid contain the `grid_bits` grid, on the
    finest grid whose values fit `container_bits`.

    A k-bit symmetric grid over [−m, m] has step s = m / L_k. A `num_bits` grid over
    [−c·m, c·m] has step c·m / L_n; it holds every multiple of s when c·m / L_n = s / r for an
    integer r, i.e. c = L_n / (r · L_k). The integer kernel then holds r·q for each k-bit
    level q, so r·L_k must fit the container's levels L_c: r = ⌊L_c / L_k⌋, the largest.
    For k = 4 in an 8-bit container: L = 7, r = 18, c = 127 / 126; in a 4-bit container:
    r = 1 (the int8 values are the 4-bit levels themselves), c = 127 / 7. For k = 2 in a 4-bit
    container: r = 7 (values −7, 0, 7).
    """
    levels_k, levels_n = _weight_levels(grid_bits), _weight_levels(num_bits)
    ratio = _weight_levels(container_bits) // levels_k
    return levels_n / (ratio * levels_k)


WEIGHT_RANGES = ("max", "mse")
"""How a weight quantizer picks its range m_c (`weight_range`)."""

# Candidate clips of the "mse" range, as fractions of max |w_c|: 0.10, 0.12, ..., 1.00.
_MSE_FRACTIONS = tuple(round(0.1 + 0.02 * i, 2) for i in range(46))


def check_weight_range(value) -> str:
    """`value` if it names a weight range rule (`WEIGHT_RANGES`)."""
    return _checks.check_choice(value, WEIGHT_RANGES, "weight_range")


def weight_range(
    w: tf.Tensor, num_bits: int, per_channel: bool = True, method: str = "max"
) -> tf.Tensor:
    """The clip m_c of a symmetric k-bit weight grid, per output channel (last axis) or one.

    * "max": m_c = max |w_c|, the grid spans the kernel and nothing is clipped;
    * "mse": m_c = f* · max |w_c| with f* the fraction in {0.10, 0.12, ..., 1.00} that
      minimises the quantization error Σ (w − Q(w; f · max |w_c|))² of the channel (the first
      such fraction on a tie). At 2 bits the grid is {−1, 0, 1} · m_c and "max" rounds about
      90 % of a trained ResNet-20's weights to 0; the "mse" clip keeps 2.5-3.8x less error
      (1.2-1.5x at 4 bits) on the same kernels.

    The range carries no gradient (it is a statistic of the weights, as in TFMOT's default
    8-bit scheme).

    Args:
      w: The kernel, float32.
      num_bits: k, in [2, 8].
      per_channel: One range per output channel (last axis) instead of one per tensor.
      method: One of `WEIGHT_RANGES`.

    Returns:
      m, shaped (channels,) or () and never below 1e-8.
    """
    method = check_weight_range(method)
    w = tf.stop_gradient(_to_float32(w))
    axes = list(range(w.shape.rank - 1)) if per_channel else None
    peak = tf.maximum(tf.reduce_max(tf.abs(w), axis=axes), 1e-8)
    if method == "max":
        return peak
    levels = float(_weight_levels(num_bits))

    def error(fraction):
        step = peak * fraction / levels
        quantized = tf.clip_by_value(tf.round(w / step), -levels, levels) * step
        return tf.reduce_sum(tf.square(quantized - w), axis=axes)

    fractions = tf.constant(_MSE_FRACTIONS, tf.float32)

    def body(i, best_fraction, best_error):
        fraction = fractions[i]
        current = error(fraction)
        better = current < best_error
        return (
            i + 1,
            tf.where(better, fraction, best_fraction),
            tf.where(better, current, best_error),
        )

    start = tf.fill(tf.shape(peak), fractions[0])
    _, best, _ = tf.while_loop(
        lambda i, *_: i < len(_MSE_FRACTIONS),
        body,
        (tf.constant(1), start, error(fractions[0])),
    )
    return tf.maximum(peak * best, 1e-8)


def quantize_weights(
    w: tf.Tensor,
    num_bits: int,
    per_channel: bool = True,
    range_scale: float = 1.0,
    method: str = "max",
) -> tf.Tensor:
    """Symmetric k-bit weight quantization with a straight-through gradient.

    Forward, per output channel c (the last axis) or per tensor:
        m_c = range_scale · weight_range(w_c),    s_c = m_c / L,    L = 2^(k−1) − 1
        w_q = clip(round(w / s_c), −L, L) · s_c
    Backward: ∂w_q/∂w = 1 (straight through, also for the weights the "mse" range clips:
    clipping their gradient would freeze the largest weights of every channel).

    Symmetric with a zero level, because TFLite's int8 weights are symmetric with zero point 0
    (per channel for convolutions): this grid converts to integers exactly, where DoReFa's
    grid (levels ±1, ±(1 − 2/(2^k − 1)), ..., no zero) would need a zero point.

    Args:
      w: The kernel.
      num_bits: k, in [2, 8].
      per_channel: One range per output channel (last axis) instead of one per tensor.
      range_scale: Widens the range by this factor (≥ 1); see `export_range_scale`.
      method: How the range is chosen, one of `WEIGHT_RANGES` (see `weight_range`).

    Returns:
      The quantized kernel, shaped and typed like `w`.
    """

    @tf.custom_gradient
    def _quantize(w):
        m = weight_range(w, num_bits, per_channel, method) * range_scale
        if per_channel:
            y = tf.quantization.fake_quant_with_min_max_vars_per_channel(
                w, -m, m, num_bits=num_bits, narrow_range=True
            )
        else:
            y = tf.quantization.fake_quant_with_min_max_vars(
                w, -m, m, num_bits=num_bits, narrow_range=True
            )
        return y, lambda dy: dy

    return tf.cast(_quantize(_to_float32(w)), w.dtype)


@tf.custom_gradient
def _straight_through(x, y):
    """Returns `y` (a quantized `x`) with the gradient of the identity in `x`.

    Unlike `x + stop_gradient(y - x)` this leaves no arithmetic in the inference graph, so the
    TFLite converter sees the plain fake-quant op.
    """
    return tf.identity(y), lambda dy: (dy, tf.zeros_like(dy))


class _Serializable(_Quantizer):
    """`get_config`-driven equality and `from_config` for our quantizers."""

    def get_config(self) -> dict:
        raise NotImplementedError

    @classmethod
    def from_config(cls, config: dict):
        return cls(**config)

    def __eq__(self, other) -> bool:
        return type(self) is type(other) and self.get_config() == other.get_config()

    def __hash__(self) -> int:
        return hash((type(self).__name__, tuple(sorted(self.get_config().items()))))


@keras.utils.register_keras_serializable(package="sgt_tfmot")
class PACTQuantizer(_Serializable):
    """PACT quantizer: clips to a trainable α and quantizes to `num_bits` (see `pact`).

    Owns one trainable scalar α per quantized tensor, created in `build` with an L2 penalty
    `alpha_l2 · α²` (it shows up in `model.losses`) and a constraint keeping it ≥ 1e-3 after
    each optimizer step (and ≤ `max_alpha`, when given).

    A ReLU6 gets `max_alpha=6`: clip(x, 0, α) with α ≤ 6 is exactly PACT on relu6(x), so the
    float model's cap is kept and α starts at min(α₀, 6); above 6, ∂L/∂α = Σ[x ≥ α] would be
    zero for every ReLU6 input and α could never come down.

    Args:
      num_bits: k, in [2, 8].
      alpha_init: Initial α, > 0 (PACT paper: 10).
      alpha_l2: L2 penalty on α, ≥ 0 (PACT paper: 2e-4).
      export: Compute the same values with 8-bit ops (`pact_integer`), for conversion.
      max_alpha: Upper bound of α (6 for ReLU6), or None.
    """

    def __init__(
        self,
        num_bits: int = 4,
        alpha_init: float = 10.0,
        alpha_l2: float = 2e-4,
        export: bool = False,
        max_alpha: float | None = None,
    ):
        self.num_bits = check_bits(num_bits, "num_bits")
        self.alpha_init = check_alpha_init(alpha_init)
        self.alpha_l2 = check_alpha_l2(alpha_l2)
        self.export = bool(export)
        self.max_alpha = _checks.check_number(max_alpha, "max_alpha", _EPSILON, allow_none=True)

    @property
    def levels(self) -> int:
        """2^k − 1, the number of steps of the activation grid [0, α]."""
        return 2**self.num_bits - 1

    def step(self, alpha: float) -> float:
        """The grid step α / (2^k − 1) of this quantizer at clipping level `alpha`."""
        return float(alpha) / self.levels

    def integer_grid(self, weights: dict):
        """(scale, int8 zero point) of the output: α / (2^k − 1) and −128 (0 is the lowest
        level, also in the 8-bit export range [0, α·255/(2^k − 1)])."""
        alpha = tf.maximum(_to_float32(tf.convert_to_tensor(weights["alpha"])), _EPSILON)
        return alpha / self.levels, tf.constant(-128.0)

    def export_range(self, weights: dict) -> tuple[float, float]:
        """(low, high) of the 8-bit fake-quant `pact_integer` emits, as the same float32
        numbers (the converter reads a scale from them; another rounding of the same grid
        is another scale to it)."""
        alpha = np.maximum(np.float32(weights["alpha"].numpy()), np.float32(_EPSILON))
        return 0.0, float(alpha * np.float32(255.0 / self.levels))

    def build(self, tensor_shape, name: str, layer) -> dict:
        alpha = layer.add_weight(
            f"{name}_alpha",
            shape=(),
            dtype=tf.float32,
            initializer=keras.initializers.Constant(
                self.alpha_init if self.max_alpha is None else min(self.alpha_init, self.max_alpha)
            ),
            regularizer=keras.regularizers.L2(self.alpha_l2) if self.alpha_l2 else None,
            constraint=_MinValue(_EPSILON, self.max_alpha),
            trainable=True,
            experimental_autocast=False,  # stays float32 under mixed precision
        )
        return {"alpha": alpha}

    def __call__(self, inputs, training, weights, **kwargs):
        quantize = pact_integer if self.export else pact
        return quantize(inputs, tf.convert_to_tensor(weights["alpha"]), self.num_bits)

    def get_config(self) -> dict:
        config = {
            "num_bits": self.num_bits,
            "alpha_init": self.alpha_init,
            "alpha_l2": self.alpha_l2,
            "export": self.export,
        }
        if self.max_alpha is not None:
            config["max_alpha"] = self.max_alpha
        return config


@keras.utils.register_keras_serializable(package="sgt_tfmot")
class WeightQuantizer(_Serializable):
    """Symmetric k-bit weight quantizer with a straight-through gradient (`quantize_weights`).

    Args:
      num_bits: k, in [2, 8].
      per_channel: One range per output channel (Conv2D) or one per tensor (Dense,
        DepthwiseConv2D, whose TFLite channel axis is not the Keras kernel's last axis).
      range_scale: Range widening used at export; 1.0 for training.
      weight_range: How the range is chosen: "max" (max |w|, the default) or "mse" (the clip
        with the least quantization error; see `weight_range`).
      container_bits: The integer type the exported kernel is stored in, 4 or 8 (≥ k): its
        int8 values are r·q with r = ⌊L_c / L_k⌋ (`export_range_scale`), and the integer
        model's biases sit on the int32 grid of that step. With 4, a k ≤ 4 kernel holds values
        in [−7, 7] and can be stored two per byte; with 8, its biases are finer. Default
        `default_container_bits(k)`; a model saved before this setting existed gets 8, the
        grid its biases were aligned to.
    """

    def __init__(
        self,
        num_bits: int = 4,
        per_channel: bool = True,
        range_scale: float = 1.0,
        weight_range: str = "max",
        container_bits: int | None = None,
    ):
        self.num_bits = check_bits(num_bits, "num_bits")
        self.per_channel = bool(per_channel)
        self.range_scale = float(range_scale)
        self.weight_range = check_weight_range(weight_range)
        if container_bits is None:
            container_bits = default_container_bits(self.num_bits)
        _checks.check_choice(container_bits, CONTAINER_BITS, "container_bits")
        if container_bits < self.num_bits:
            raise _checks.InputError(
                f"must hold num_bits={self.num_bits}: one of "
                f"{[c for c in CONTAINER_BITS if c >= self.num_bits]}",
                "container_bits",
                container_bits,
            )
        self.container_bits = int(container_bits)

    def build(self, tensor_shape, name: str, layer) -> dict:
        return {}

    def __call__(self, inputs, training, weights, **kwargs):
        return quantize_weights(
            inputs, self.num_bits, self.per_channel, self.range_scale, self.weight_range
        )

    @property
    def levels(self) -> int:
        """L = 2^(k−1) − 1: the grid is {−L, ..., L} · step."""
        return _weight_levels(self.num_bits)

    def ranges(self, kernel) -> np.ndarray:
        """m_c of `kernel` (per output channel, or one) as `quantize_weights` takes it."""
        kernel = np.asarray(kernel, np.float32)  # float32 like the converter's scales
        m = weight_range(kernel, self.num_bits, self.per_channel, self.weight_range).numpy()
        return m * np.float32(self.range_scale)

    def steps(self, kernel) -> np.ndarray:
        """The grid step of `kernel` (per output channel, or one), as `quantize_weights`."""
        return (self.ranges(kernel) / np.float32(self.levels)).astype(np.float64)

    def get_config(self) -> dict:
        config = {
            "num_bits": self.num_bits,
            "per_channel": self.per_channel,
            "range_scale": self.range_scale,
            "container_bits": self.container_bits,
        }
        if self.weight_range != "max":  # files saved before the option load unchanged
            config["weight_range"] = self.weight_range
        return config

    @classmethod
    def from_config(cls, config: dict):
        # Saved before `container_bits` existed: the 8-bit container its biases were aligned to.
        return cls(**{"container_bits": 8, **config})


@keras.utils.register_keras_serializable(package="sgt_tfmot")
class RangeQuantizer(_Serializable):
    """Asymmetric 8-bit quantizer over a range tracked as a moving average of batch min/max.

    Used for tensors that are not PACT outputs: the normalized input, residual sums before a
    PACT activation's other consumers, pooled features, logits. Same rule as TFMOT's
    `MovingAverageQuantizer` (EMA decay 0.999 while training, stored range at inference), with
    float32 computation so it works under mixed precision.

    Args:
      num_bits: Bits, 2 to 8 (8 for every use in this package).
      straight_through: Pass the gradient through unchanged, also outside the range. Used for
        the model's output (the logits): a fake-quant's zero gradient above its range would
        otherwise give an all-zero input saliency for every sample whose class score exceeds
        the moving range, the very samples the model is surest about.
    """

    def __init__(self, num_bits: int = 8, straight_through: bool = False):
        self.num_bits = check_bits(num_bits, "num_bits")
        self.straight_through = bool(straight_through)

    def build(self, tensor_shape, name: str, layer) -> dict:
        def add(suffix, value):
            return layer.add_weight(
                f"{name}_{suffix}",
                shape=(),
                dtype=tf.float32,
                initializer=keras.initializers.Constant(value),
                trainable=False,
                experimental_autocast=False,  # stays float32 under mixed precision
            )

        return {"min_var": add("min", -6.0), "max_var": add("max", 6.0)}

    def __call__(self, inputs, training, weights, **kwargs):
        from tensorflow_model_optimization.python.core.quantization.keras import quant_ops

        x = _to_float32(inputs)
        y = quant_ops.MovingAvgQuantize(
            x,
            weights["min_var"],
            weights["max_var"],
            ema_decay=0.999,
            is_training=training,
            num_bits=self.num_bits,
            per_channel=False,
            symmetric=False,
            narrow_range=False,
        )
        if self.straight_through:
            y = _straight_through(x, y)
        return tf.cast(y, inputs.dtype)

    def step(self, low: float, high: float) -> float:
        """The grid step (high − low) / (2^k − 1) over a range [low, high]."""
        return (float(high) - float(low)) / (2**self.num_bits - 1)

    def integer_grid(self, weights: dict):
        """(scale, int8 zero point) of the output over the stored range (`nudged_grid`)."""
        return nudged_grid(
            tf.convert_to_tensor(weights["min_var"]),
            tf.convert_to_tensor(weights["max_var"]),
            self.num_bits,
        )

    def export_range(self, weights: dict) -> tuple[float, float]:
        """(low, high) of the fake-quant at inference: the stored range."""
        return float(weights["min_var"].numpy()), float(weights["max_var"].numpy())

    def get_config(self) -> dict:
        return {"num_bits": self.num_bits, "straight_through": self.straight_through}


@keras.utils.register_keras_serializable(package="sgt_tfmot")
class FixedRangeQuantizer(_Serializable):
    """8-bit quantizer over a fixed range [low, high], used for the model input.

    With the default [0, 255] the step is exactly 1: raw camera pixels go through losslessly
    and the integer model's input scale is 1.
    """

    def __init__(self, low: float = 0.0, high: float = 255.0, num_bits: int = 8):
        if not float(low) < float(high):
            raise ValueError(
                f"`input_range` must be (low, high) with low < high. Received: ({low}, {high})"
            )
        self.low, self.high = float(low), float(high)
        self.num_bits = check_bits(num_bits, "num_bits")

    def build(self, tensor_shape, name: str, layer) -> dict:
        return {}

    def __call__(self, inputs, training, weights, **kwargs):
        x = _to_float32(inputs)
        if training:  # never silently binarised: training images must fit the range
            fits, smallest, largest = self.fits(x)
            check = tf.debugging.Assert(fits, [self.misfit("the training images"), smallest,
                                               largest], summarize=2)  # fmt: skip
            with tf.control_dependencies([check]):
                x = tf.identity(x)
        y = tf.quantization.fake_quant_with_min_max_args(
            x, min=self.low, max=self.high, num_bits=self.num_bits
        )
        return tf.cast(y, inputs.dtype)

    def step(self) -> float:
        """The grid step (high − low) / (2^k − 1); 1 for the default [0, 255]."""
        return (self.high - self.low) / (2**self.num_bits - 1)

    def fits(self, images) -> tuple[tf.Tensor, tf.Tensor, tf.Tensor]:
        """(whether `images` fit the range, their smallest and largest value), as tensors.

        They do not fit when all lie within two grid steps of zero without all being zero
        (images scaled to [0, 1] on the default 0..255 grid: at most three values, the
        image binarised), or when they reach beyond the range by more than its width (0..255
        pixels on a [0, 1] range: clipped to its ends).
        """
        x = _to_float32(images)
        smallest, largest = tf.reduce_min(x), tf.reduce_max(x)
        peak = tf.maximum(-smallest, largest)
        width = self.high - self.low
        resolved = tf.logical_or(peak > 2 * self.step(), tf.equal(peak, 0.0))
        inside = tf.logical_and(smallest >= self.low - width, largest <= self.high + width)
        return tf.logical_and(resolved, inside), smallest, largest

    def misfit(self, what: str, span: tuple[float, float] | None = None, advice: str = "") -> str:
        """The message for `what` (images) that do not fit the range (`fits`); `span`: their
        smallest and largest value, else the message ends where a graph assertion prints
        them; `advice`: what to do (default: the API's)."""
        advice = advice or (
            "pass their range to sgt_tfmot.quantize_model (input_range=(0, 1) for images "
            "scaled to [0, 1]) or feed them in that range (0..255 pixels by default)"
        )
        found = f"[{span[0]:g}, {span[1]:g}]." if span else "(smallest, largest):"
        return (
            f"The model's input is quantized over input_range ({self.low:g}, {self.high:g}) in "
            f"steps of {self.step():.4g}, which would binarise or clip {what}: {advice}. They "
            f"span {found}"
        )

    def integer_grid(self, weights: dict | None = None):
        """(scale, int8 zero point) of the output (`nudged_grid`); (1, −128) for [0, 255]."""
        return nudged_grid(self.low, self.high, self.num_bits)

    def export_range(self, weights: dict | None = None) -> tuple[float, float]:
        """(low, high) of the fake-quant: the fixed range."""
        return self.low, self.high

    def get_config(self) -> dict:
        return {"low": self.low, "high": self.high, "num_bits": self.num_bits}


@keras.utils.register_keras_serializable(package="sgt_tfmot")
class ChannelRangeQuantizer(_Serializable):
    """Symmetric 8-bit weights over fixed per-output-channel ranges (export only).

    The export model needs it where a per-tensor k-bit kernel meets a per-channel factor:
    a DepthwiseConv2D with BatchNormalization folded into it holds w_q · f_c, whose channel
    c lies on the grid (m / L_k) · |f_c| (m: the per-tensor k-bit range). With
    `ranges[c] = m · |f_c| · export_range_scale(k)` the 8-bit grid of each channel contains
    that grid, so the integer kernel holds the folded values exactly.

    Output channel o of a depthwise kernel (kh, kw, C, M) is c·M + m; the fake-quant runs on
    the kernel reshaped to (kh, kw, 1, C·M), the layout of TFLite's per-channel depthwise
    weights.

    Args:
      ranges: One positive range per output channel.
      num_bits: Bits (8 for export).
      depthwise: The kernel is a depthwise kernel (kh, kw, C, M).
    """

    def __init__(self, ranges, num_bits: int = 8, depthwise: bool = False):
        self.ranges = [float(r) for r in ranges]
        self.num_bits = check_bits(num_bits, "num_bits")
        self.depthwise = bool(depthwise)

    def build(self, tensor_shape, name: str, layer) -> dict:
        return {}

    def __call__(self, inputs, training, weights, **kwargs):
        w = _to_float32(inputs)
        shape = w.shape
        if self.depthwise:
            w = tf.reshape(w, [shape[0], shape[1], 1, shape[2] * shape[3]])
        m = tf.constant(self.ranges, tf.float32)
        y = tf.quantization.fake_quant_with_min_max_vars_per_channel(
            w, -m, m, num_bits=self.num_bits, narrow_range=True
        )
        return tf.cast(tf.reshape(y, shape), inputs.dtype)

    @property
    def levels(self) -> int:
        return _weight_levels(self.num_bits)

    def steps(self, kernel=None) -> np.ndarray:
        """The grid step of each output channel."""
        return np.asarray(self.ranges, np.float64) / self.levels

    def get_config(self) -> dict:
        return {"ranges": self.ranges, "num_bits": self.num_bits, "depthwise": self.depthwise}

    def __hash__(self) -> int:
        return hash((type(self).__name__, tuple(self.ranges), self.num_bits, self.depthwise))


@keras.utils.register_keras_serializable(package="sgt_tfmot")
class _MinValue(keras.constraints.Constraint):
    """Keeps a variable ≥ `min_value` (and ≤ `max_value`) after each optimizer step."""

    def __init__(self, min_value: float, max_value: float | None = None):
        self.min_value = float(min_value)
        self.max_value = None if max_value is None else float(max_value)

    def __call__(self, w):
        w = tf.maximum(w, self.min_value)
        return w if self.max_value is None else tf.minimum(w, self.max_value)

    def get_config(self) -> dict:
        config = {"min_value": self.min_value}
        if self.max_value is not None:
            config["max_value"] = self.max_value
        return config


def check_alpha_init(value) -> float:
    """`value` as a float if it is a number > 0."""
    return _checks.check_number(value, "alpha_init", 0.0, low_open=True)


def check_alpha_l2(value) -> float:
    """`value` as a float if it is a number >= 0."""
    return _checks.check_number(value, "alpha_l2", 0.0)


QUANTIZERS: Sequence[type] = (
    PACTQuantizer,
    WeightQuantizer,
    RangeQuantizer,
    FixedRangeQuantizer,
    ChannelRangeQuantizer,
)
