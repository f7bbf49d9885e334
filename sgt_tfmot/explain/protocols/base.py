"""The interface of a removal protocol, and the one loop that measures any of them.

A removal protocol says how faithfulness is measured: what is removed (the units an
attribution ranks: pixels, or patches), replaced by what (the fill), and in which order (the
most relevant units first, the least relevant first, or at random). For growing shares x of
the units, `removal_curves` removes the first ⌊x · n⌋ units of each image in that order and
records the model's accuracy and its mean probability of the true class:

    for order in ("top", "bottom", "random"):          # MoRF, LeRF, random
        for x in fractions:
            x̃ = protocol.apply(images, unit scores, x, order)
            accuracy[order][x] = mean(argmax f(x̃) == y);  probability[order][x] = mean p_y(x̃)

A protocol is a `Protocol` subclass with a `name`, a `title`, its `unit`, its `measure` (the
curve its tables lead with), its fills, and `rank` + `perturb` (the defaults serve most).
Adding one is one module and one line in `sgt_tfmot.explain.protocols`; the explain CLI,
`convert`'s fidelity check, `examples/bitwidth_sweep.py` and the reports read that registry.

The protocols only evaluate the model (`predict_fn`), so an integer `.tflite` model works:
its attributions come from the Keras model.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping, Sequence

import numpy as np

from sgt_tfmot import imputation, masking
from sgt_tfmot._checks import InputError, check_choice

__all__ = [
    "ORDERS",
    "ORDER_TITLES",
    "Protocol",
    "ProtocolOptions",
    "probabilities",
    "removal_curves",
    "true_class_probability",
]

ORDERS = ("top", "bottom", "random")
ORDER_TITLES = {"top": "MoRF", "bottom": "LeRF", "random": "random"}  # the field's names
PredictFn = Callable[[np.ndarray], np.ndarray]


@dataclasses.dataclass(frozen=True)
class ProtocolOptions:
    """Settings shared by the protocols (each reads the ones it uses).

    Attributes:
      fill: The fill of the removed units; None: the protocol's default (`Protocol.fills[0]`).
      patch: Side of the square patches of the patch protocols, in pixels, >= 1.
      noise: ROAD's imputation noise, as a share of `value_range` (ROAD: 0.01), >= 0.
      blur_sigma: Standard deviation of the blur fill, in pixels, > 0.
      value_range: The images' value range (255 for 0..255 pixels); None: max − min of the
        images measured.
      reduce_channels: How a pixel's channels are ranked together: "mean" of |S| (SGT's
        rule) or "max"; None ranks every feature alone (the per-pixel protocol only).
      seed: Seed of random orders and random fills.
    """

    fill: str | None = None
    patch: int = 4
    noise: float = imputation.DEFAULT_NOISE
    blur_sigma: float = 2.0
    value_range: float | None = None
    reduce_channels: str | None = "mean"
    seed: int = 0

    def __post_init__(self):
        if isinstance(self.patch, bool) or not isinstance(self.patch, int | np.integer):
            raise InputError("must be an integer >= 1 (pixels)", "patch", self.patch)
        if self.patch < 1:
            raise InputError("must be an integer >= 1 (pixels)", "patch", self.patch)
        for name, low, strict in (("noise", 0.0, False), ("blur_sigma", 0.0, True)):
            value = getattr(self, name)
            ok = isinstance(value, int | float) and not isinstance(value, bool)
            if not ok or not (value > low if strict else value >= low):
                raise InputError(f"must be a number {'>' if strict else '>='} {low:g}", name, value)
        if self.value_range is not None and not (
            isinstance(self.value_range, int | float) and self.value_range > 0
        ):
            raise InputError("must be a number > 0 or None", "value_range", self.value_range)
        check_choice(self.reduce_channels, masking.CHANNEL_REDUCTIONS, "reduce_channels")


class Protocol:
    """Base class of the removal protocols.

    Class attributes:
      name: The registry name ("road", ...), used by flags, JSON keys and reports.
      title: How reports name it ("ROAD").
      unit: "pixel" or "patch": what one rank removes.
      measure: "accuracy" or "probability": the curve its tables lead with.
      fills: The fills it accepts, its default first.
      insertion: True when the curve starts from the filled image and the ranked units are
        put back (RISE's insertion): at x, only the first ⌊x · n⌋ units are the image's own.
      reference: The paper.
    """

    name: str = ""
    title: str = ""
    unit: str = "pixel"
    measure: str = "accuracy"
    fills: tuple[str, ...] = ()
    insertion: bool = False
    reference: str = ""

    # ------------------------------------------------------------------ what a report shows
    def fill(self, options: ProtocolOptions) -> str:
        """The fill these options select (checked against `fills`)."""
        fill = self.fills[0] if options.fill is None else options.fill
        check_choice(fill, self.fills, f"fill of protocol {self.name!r}")
        return fill

    def fill_title(self, options: ProtocolOptions) -> str:
        """The fill with its parameters, as tables, figures and JSON name it."""
        fill = self.fill(options)
        if fill == "imputation":
            return f"noisy linear imputation (noise {options.noise:g})"
        if fill == "blur":
            return f"blur (sigma {options.blur_sigma:g} px)"
        return fill

    def unit_title(self, options: ProtocolOptions) -> str:
        return f"{options.patch}x{options.patch} patches" if self.unit == "patch" else "pixels"

    # ------------------------------------------------------------------ the removal
    def unit_scores(self, saliency: np.ndarray, options: ProtocolOptions) -> np.ndarray:
        """(N, units) relevance of each unit: the channel reduction of |S| per pixel, summed
        over each patch for patch units."""
        score = np.abs(np.asarray(saliency, np.float64))
        if options.reduce_channels is None:
            raise InputError(
                f"must be 'mean' or 'max' for protocol {self.name!r}, which removes whole pixels",
                "reduce_channels",
                None,
            )
        if score.ndim == 4:
            score = score.mean(axis=-1) if options.reduce_channels == "mean" else score.max(-1)
        if self.unit == "patch":
            score = _patch_sums(score, options.patch)
        return score.reshape(len(score), -1)

    def rank(self, saliency: np.ndarray, order: str, options: ProtocolOptions) -> np.ndarray:
        """(N, n) unit indices of each image, first removed first: highest score first
        ("top"), lowest first ("bottom"; equal scores lower index first in both), or one
        permutation per image drawn from `options.seed` ("random"), so that the removed sets
        grow with the fraction."""
        return unit_order(self.unit_scores(saliency, options), order, options.seed)

    def perturb(
        self,
        images: np.ndarray,
        ranked: np.ndarray,
        fraction: float,
        order: str,
        options: ProtocolOptions,
        seed: int,
    ) -> np.ndarray:
        """The images with the first ⌊fraction · n⌋ units of `ranked` removed (inserted, for
        an insertion protocol), filled by this protocol's fill; `seed` seeds the fill."""
        count, n = ranked.shape
        k = n if fraction >= 1.0 else masking.masked_count(fraction, n) if fraction > 0 else 0
        chosen = np.zeros((count, n), bool)
        np.put_along_axis(chosen, ranked[:, :k], True, axis=1)
        removed = ~chosen if self.insertion else chosen
        if self.unit == "patch":
            removed = _patch_pixels(removed, options.patch, images.shape[1:3])
        else:
            removed = removed.reshape(images.shape[:3])
        if not removed.any():
            return images
        return fill_pixels(images, removed, self.fill(options), options, seed)

    def apply(self, images, saliency, fraction, order, options: ProtocolOptions, seed: int):
        """`perturb` of `rank`: the images at one point of one curve."""
        ranked = self.rank(saliency, order, options)
        return self.perturb(images, ranked, fraction, order, options, seed)

    def __repr__(self) -> str:
        return f"{type(self).__name__}()"


# ---------------------------------------------------------------------- units and orders
def unit_order(scores: np.ndarray, order: str, seed: int) -> np.ndarray:
    """(N, n) unit indices in removal order (see `Protocol.rank`)."""
    check_choice(order, ORDERS, "order")
    if order == "random":
        return np.random.default_rng(seed).random(scores.shape).argsort(axis=1)
    return np.argsort(-scores if order == "top" else scores, axis=1, kind="stable")


def first_units(scores: np.ndarray, fraction: float, order: str, seed: int) -> np.ndarray:
    """(N, n) mask of the first k = ⌊fraction · n⌋ units of each image in `order`."""
    count, n = scores.shape
    k = n if fraction >= 1.0 else masking.masked_count(fraction, n) if fraction > 0 else 0
    chosen = np.zeros((count, n), bool)
    np.put_along_axis(chosen, unit_order(scores, order, seed)[:, :k], True, axis=1)
    return chosen


def _grid(size: int, patch: int) -> int:
    return -(-size // patch)  # patches along an axis, the last one possibly cut


def _patch_sums(score: np.ndarray, patch: int) -> np.ndarray:
    """(N, gh, gw) sums of an (N, H, W) score over the patches of a grid from the top-left
    corner (edge patches cut by the border, as Quantus's zero padding does)."""
    n, h, w = score.shape
    gh, gw = _grid(h, patch), _grid(w, patch)
    padded = np.zeros((n, gh * patch, gw * patch))
    padded[:, :h, :w] = score
    return padded.reshape(n, gh, patch, gw, patch).sum(axis=(2, 4))


def _patch_pixels(removed: np.ndarray, patch: int, size: tuple[int, int]) -> np.ndarray:
    """(N, H, W) pixel mask of an (N, gh · gw) patch mask."""
    h, w = size
    grid = removed.reshape(len(removed), _grid(h, patch), _grid(w, patch))
    pixels = grid.repeat(patch, axis=1).repeat(patch, axis=2)
    return pixels[:, :h, :w]


# ---------------------------------------------------------------------- fills
FILL_TITLES = {
    "mean": "the image's mean per channel",
    "black": "the image's minimum (Quantus's 'black')",
    "uniform": "uniform noise in the image's range per channel (the trainer's random fill)",
    "blur": "the blurred image (RISE)",
    "imputation": "ROAD's noisy linear imputation",
}


def fill_pixels(
    images: np.ndarray,
    removed: np.ndarray,
    fill: str,
    options: ProtocolOptions,
    seed: int,
) -> np.ndarray:
    """`images` with the pixels of the (N, H, W) mask `removed` (all channels) replaced.

    Fills: "mean" and "uniform" are the trainer's ("mean" and "random" of
    `sgt_tfmot.masking.fill_values`), "black" the image's minimum over all its values,
    "blur" `imputation.blur`, "imputation" `imputation.noisy_linear_imputation`.
    """
    check_choice(fill, tuple(FILL_TITLES), "fill")
    images = np.asarray(images, np.float32)
    if fill == "imputation":
        return imputation.noisy_linear_imputation(
            images, removed, options.noise, _value_range(images, options), seed
        )
    if fill == "blur":
        values = imputation.blur(images, options.blur_sigma)
    elif fill == "black":
        values = images.min(axis=tuple(range(1, images.ndim)), keepdims=True)
    else:
        from sgt_tfmot.keras import tf

        rule = {"mean": "mean", "uniform": "random"}[fill]
        seeds = tf.constant([seed, 1], tf.int64)
        values = masking.fill_values(tf.constant(images), rule, seed=seeds).numpy()
    mask = removed[..., None] if images.ndim == 4 else removed
    return np.where(mask, values, images).astype(np.float32)


def _value_range(images: np.ndarray, options: ProtocolOptions) -> float:
    if options.value_range is not None:
        return float(options.value_range)
    return float(images.max() - images.min()) or 1.0


# ---------------------------------------------------------------------- the measuring loop
def probabilities(scores: np.ndarray) -> np.ndarray:
    """Class probabilities of a model's outputs: the outputs themselves when every row is
    non-negative and sums to 1 (within 1e-3), else their softmax (logits)."""
    scores = np.asarray(scores, np.float64)
    if np.all(scores >= 0) and np.allclose(scores.sum(axis=-1), 1.0, atol=1e-3):
        return scores
    shifted = np.exp(scores - scores.max(axis=-1, keepdims=True))
    return shifted / shifted.sum(axis=-1, keepdims=True)


def true_class_probability(scores: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """p_y of each image, from `probabilities(scores)`."""
    return probabilities(scores)[np.arange(len(labels)), labels]


@dataclasses.dataclass(frozen=True)
class Measured:
    """The raw curves of one protocol: order -> per-fraction accuracy and probability."""

    accuracy: dict[str, tuple[float, ...]]
    probability: dict[str, tuple[float, ...]]


def removal_curves(
    protocol: Protocol,
    predict_fn: PredictFn | Mapping[str, PredictFn],
    images: np.ndarray,
    labels: np.ndarray,
    saliency: np.ndarray,
    fractions: Sequence[float],
    orders: Sequence[str] = ORDERS,
    options: ProtocolOptions | None = None,
) -> Measured | dict[str, Measured]:
    """Accuracy and mean true-class probability after each removal of each order.

    Every (order, fraction) is one batch of perturbed images through `predict_fn`. The random
    order is one permutation of the units per image (from `options.seed`); the seed of the
    fill's randomness is derived from `options.seed`, the fraction's index and the order's,
    so curves are repeatable and their noise independent.

    Args:
      protocol: The protocol.
      predict_fn: Float images -> class scores (logits or probabilities; see
        `probabilities`), e.g. a Keras model's `predict` or a `.tflite` model's; or a
        mapping name -> such function, to measure several models on the same perturbed
        images (each perturbed batch is made once).
      images: (N, H, W, C) images in the model's input range.
      labels: (N,) class ids.
      saliency: Attributions shaped like the images, or (N, H, W) per-pixel maps.
      fractions: Shares of the units removed, each in [0, 1].
      orders: Any of "top", "bottom", "random".
      options: The protocol's settings.

    Returns:
      A `Measured`; for a mapping of functions, name -> `Measured`.
    """
    options = options or ProtocolOptions()
    fill = protocol.fill(options)  # checked before any work
    images = np.asarray(images, np.float32)
    if fill == "imputation":
        if any(fraction >= 1.0 for fraction in fractions):
            raise InputError(
                f"must be < 1 for the imputation fill of protocol {protocol.name!r} (a removed "
                "pixel takes its value from kept neighbours)",
                "fractions",
                list(fractions),
            )
        if options.value_range is None:  # one range for every batch of the curves
            options = dataclasses.replace(options, value_range=_value_range(images, options))
    functions = dict(predict_fn) if isinstance(predict_fn, Mapping) else {"": predict_fn}
    accuracy = {name: {} for name in functions}
    probability = {name: {} for name in functions}
    for o, order in enumerate(orders):
        points = {name: ([], []) for name in functions}
        ranked = protocol.rank(saliency, order, options)  # once per order
        for f, fraction in enumerate(fractions):
            seed = options.seed * 1_000_003 + 1000 * f + o
            perturbed = protocol.perturb(images, ranked, fraction, order, options, seed)
            for name, function in functions.items():
                scores = np.asarray(function(perturbed))
                if scores.ndim != 2 or len(scores) != len(images):
                    raise ValueError(
                        f"`predict_fn` must return class scores of shape ({len(images)}, "
                        f"num_classes). Received: {scores.shape}"
                    )
                hits = scores.argmax(-1) == labels
                points[name][0].append(float(np.mean(hits)) if len(labels) else 0.0)
                points[name][1].append(float(np.mean(true_class_probability(scores, labels))))
        for name, (acc, prob) in points.items():
            accuracy[name][order], probability[name][order] = tuple(acc), tuple(prob)
    measured = {name: Measured(accuracy[name], probability[name]) for name in functions}
    return measured if isinstance(predict_fn, Mapping) else measured[""]
