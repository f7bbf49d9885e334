"""Accuracy-drop curves: how fast a model fails as its most (or least) salient features go.

`accuracy_drop_curve(predict_fn, images, labels, saliency)` measures the accuracy of a model
as a growing share x of each image's features is replaced, ranked by saliency: the most
salient first (`order="top"`), the least salient first (`"bottom"`), or in random order. This
is the interpretability evaluation of SGT (Ismail et al. 2021; Fig. 3 of Maleki et al., arXiv
2412.03915): a model that relies on its salient features loses accuracy fast when they go and
slowly when the others go. The ranking and the fill are the trainer's own masking code
(`sgt_tfmot.masking`), so "the lowest x %" means the same features here as in training.
`curve_area` summarises a curve by its trapezoid area.

`predict_fn` is any function from float images to class scores, so the same curve can be
measured on a Keras model (`model.predict`) and on its integer TFLite version
(`sgt_tfmot.tflite.runtime.TFLiteModel.predict`) with the same masked images.

`drop_curves(model, images, labels, protocol=...)` measures all three orders of one model
under a removal protocol of `sgt_tfmot.explain.protocols` ("pixel", this module's rule, by
default; "road", "deletion", "insertion", "region"), with the saliency of `input_gradients`
(one graph function over the batch) unless given, and returns a `DropCurves` with the
accuracy and true-class probability curves, their areas, the protocol, unit and fill, and
the number of all-zero saliency maps.

Example:

    curves = drop_curves(model, x_test[:500], y_test[:500], name="sgt-pact-4bit")
    print(curves.accuracy, curves.areas())
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence

import numpy as np

from sgt_tfmot import masking
from sgt_tfmot.explain import _validation as checks, protocols
from sgt_tfmot.explain.attributions import input_gradients
from sgt_tfmot.explain.protocols.pixel import ranking_mask as _ranking_mask
from sgt_tfmot.keras import keras, tf

__all__ = [
    "DEFAULT_FRACTIONS",
    "ORDERS",
    "DropCurves",
    "accuracy_drop_curve",
    "curve_area",
    "curves_csv",
    "drop_curves",
]

ORDERS = ("top", "bottom", "random")
DEFAULT_FRACTIONS = (0.0, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9)

PredictFn = Callable[[np.ndarray], np.ndarray]


def accuracy_drop_curve(
    predict_fn: PredictFn,
    images: np.ndarray,
    labels: np.ndarray,
    saliency: np.ndarray,
    fractions: Sequence[float] = DEFAULT_FRACTIONS,
    order: str = "top",
    fill: str = "mean",
    seed: int = 0,
    reduce_channels: str | None = "mean",
) -> np.ndarray:
    """Top-1 accuracy as a growing share of each image's features is replaced.

    For each fraction x: with n ranked positions per image (pixels, or features when
    `reduce_channels` is None), the k = ⌊x · n⌋ positions of highest saliency (`order="top"`),
    lowest saliency (`"bottom"`) or random ones (`"random"`, seeded) are marked by
    `sgt_tfmot.masking.saliency_mask` on |S| and replaced by `mask_input(x, mask, fill)`;
    the curve holds mean(argmax predict_fn(x̃) == label). x = 0 is the plain accuracy, x = 1
    replaces every feature (with a constant fill: the accuracy of the constant image).
    Ties in saliency go to the lower flat index first, for every order.

    Args:
      predict_fn: Float images (N, ...) -> class scores (N, num_classes); logits,
        probabilities or dequantized integer outputs all work, only the argmax is used.
      images: (N, ...) images in the model's input range.
      labels: (N,) integer class ids.
      saliency: Saliency shaped like `images` (from `saliency_maps`); only |S| is ranked.
      fractions: Shares to remove, each in [0, 1].
      order: "top" (most salient first), "bottom" (least salient first) or "random".
      fill: The replacement, as in training: "mean" (per image and channel), "zero" or
        "random" (uniform in the image's own per-channel range, seeded by `seed`).
      seed: Seed of the random order and of the random fill.
      reduce_channels: "mean" (one rank per pixel, as in SGT), "max", or None (every feature
        on its own).

    Returns:
      float64 array of accuracies in [0, 1], one per fraction.

    Raises:
      ValueError: On an unknown `order`, `fill` or `reduce_channels`, a fraction outside
        [0, 1], a saliency that is not shaped like the images, or labels that do not match.
    """
    checks.check_choice(order, ORDERS, "order")
    checks.check_choice(fill, masking.FILLS, "fill")
    checks.check_choice(reduce_channels, masking.CHANNEL_REDUCTIONS, "reduce_channels")
    fractions = _check_fractions(fractions)
    images = np.asarray(images, dtype=np.float32)
    labels = checks.check_labels(images, labels)
    saliency = np.asarray(saliency, dtype=np.float32)
    if saliency.shape != images.shape:
        raise ValueError(
            f"`saliency` must be shaped like `images` {images.shape}. Received: {saliency.shape}"
        )
    if images.ndim < 2:
        raise ValueError(f"`images` must have shape (N, features...). Received: {images.shape}")

    x = tf.constant(images)
    fill_seed = tf.constant([seed, 1], tf.int64)
    accuracies = []
    for fraction in fractions:
        if fraction == 0.0:
            masked = images
        else:
            if fraction == 1.0:
                mask = tf.ones_like(x, dtype=tf.bool)
            else:
                mask = _ranking_mask(saliency, fraction, order, reduce_channels, seed)
            masked = masking.mask_input(x, mask, fill, seed=fill_seed).numpy()
        scores = np.asarray(predict_fn(masked))
        if scores.ndim != 2 or len(scores) != len(images):
            raise ValueError(
                f"`predict_fn` must return class scores of shape ({len(images)}, num_classes). "
                f"Received: {scores.shape}"
            )
        accuracies.append(float(np.mean(scores.argmax(axis=-1) == labels)) if len(labels) else 0.0)
    return np.asarray(accuracies, dtype=np.float64)


def _check_fractions(fractions: Sequence[float]) -> list[float]:
    try:
        values = [float(f) for f in fractions]
    except (TypeError, ValueError):
        values = None
    if not values or any(isinstance(f, bool) for f in fractions):
        raise ValueError(
            "`fractions` must be a non-empty sequence of numbers in [0, 1]. "
            f"Received: {fractions!r}"
        )
    bad = [f for f in values if not 0.0 <= f <= 1.0]
    if bad:
        raise ValueError(f"`fractions` must lie in [0, 1]. Received: {fractions!r} ({bad[0]!r})")
    return values


def curve_area(fractions: Sequence[float], accuracies: Sequence[float]) -> float:
    """Trapezoid area under an accuracy-drop curve: Σ (x_{i+1} − x_i)(a_i + a_{i+1}) / 2.

    Over the default fractions 0 .. 0.9 a curve that stays at 1 has area 0.9; the smaller the
    area of the "top" curve, the faster the model fails without its salient features.

    Args:
      fractions: Increasing shares removed, as passed to `accuracy_drop_curve`.
      accuracies: The curve, one accuracy per fraction.

    Returns:
      The area, a float.

    Raises:
      ValueError: When the lengths differ, fewer than 2 points are given, or the fractions
        do not increase.
    """
    x = np.asarray(fractions, dtype=np.float64)
    y = np.asarray(accuracies, dtype=np.float64)
    if x.ndim != 1 or x.shape != y.shape or len(x) < 2:
        raise ValueError(
            "`fractions` and `accuracies` must be 1-D of the same length >= 2. Received: "
            f"{x.shape} and {y.shape}"
        )
    if np.any(np.diff(x) <= 0):
        raise ValueError(f"`fractions` must be strictly increasing. Received: {x.tolist()}")
    return float(np.sum(np.diff(x) * (y[1:] + y[:-1]) / 2.0))


@dataclasses.dataclass(frozen=True)
class DropCurves:
    """The removal curves of one model under one protocol, one per order, on the same images.

    Attributes:
      name: The model's name in tables and plots.
      fractions: Shares of the units removed, one per point.
      curves: Order ("top", "bottom", "random") -> accuracies in [0, 1], one per fraction.
      method: The saliency that ranked the units (e.g. "vanilla").
      fill: The fill of the removed units, with its parameters (e.g. "mean",
        "noisy linear imputation (noise 0.01)").
      num_images: Images per point.
      zero_saliency_images: Images whose saliency map is all zero. Their units tie and go
        in index order, so their "top" and "bottom" curves are the same arbitrary curve. On a
        QAT model this happens when the true-class output lies outside the output
        quantizer's range, where the fake-quant passes no gradient.
      protocol: The removal protocol (`sgt_tfmot.explain.protocols`), "pixel" for the
        trainer's masking rule.
      unit: What one rank removes ("pixels", "4x4 patches").
      measure: The curve the protocol's tables lead with, "accuracy" or "probability".
      probabilities: Order -> mean probability of the true class, one per fraction (softmax
        of logits; see `protocols.base.probabilities`), or None when not measured.
    """

    name: str
    fractions: tuple[float, ...]
    curves: dict[str, tuple[float, ...]]
    method: str
    fill: str
    num_images: int
    zero_saliency_images: int = 0
    protocol: str = "pixel"
    unit: str = "pixels"
    measure: str = "accuracy"
    probabilities: dict[str, tuple[float, ...]] | None = None

    @property
    def accuracy(self) -> float | None:
        """The plain accuracy (the curves' point at x = 0), or None without that point."""
        if not self.fractions or self.fractions[0] != 0.0 or not self.curves:
            return None
        return next(iter(self.curves.values()))[0]

    def areas(self) -> dict[str, float]:
        """Order -> `curve_area` of its accuracy curve ({} with fewer than 2 fractions)."""
        if len(self.fractions) < 2:
            return {}
        return {order: curve_area(self.fractions, c) for order, c in self.curves.items()}

    def probability_areas(self) -> dict[str, float]:
        """Order -> `curve_area` of its probability curve ({} when not measured)."""
        if len(self.fractions) < 2 or not self.probabilities:
            return {}
        return {order: curve_area(self.fractions, c) for order, c in self.probabilities.items()}

    def headline_areas(self) -> dict[str, float]:
        """The areas of the protocol's own measure (`measure`): what its tables show."""
        return self.probability_areas() if self.measure == "probability" else self.areas()

    def aopc(self) -> dict[str, float]:
        """Order -> AOPC (Samek et al. 2017): mean over the points after the first of
        p(first point) − p(point), the probability curve's mean drop ({} when not measured)."""
        if len(self.fractions) < 2 or not self.probabilities:
            return {}
        return {o: float(c[0] - np.mean(c[1:])) for o, c in self.probabilities.items()}

    def to_dict(self) -> dict:
        return {
            **dataclasses.asdict(self),
            "accuracy": self.accuracy,
            "areas": self.areas(),
            "probability_areas": self.probability_areas(),
            "aopc": self.aopc(),
        }


def drop_curves(
    model: keras.Model,
    images: np.ndarray,
    labels: np.ndarray,
    saliency: np.ndarray | None = None,
    *,
    name: str | None = None,
    method: str = "vanilla",
    predict_fn: PredictFn | None = None,
    fractions: Sequence[float] = DEFAULT_FRACTIONS,
    orders: Sequence[str] = ORDERS,
    fill: str | None = None,
    seed: int = 0,
    reduce_channels: str | None = "mean",
    batch_size: int = 256,
    protocol: str = "pixel",
    protocol_options: protocols.ProtocolOptions | None = None,
) -> DropCurves:
    """The removal curves of a classifier under one protocol, for several orders.

    Args:
      model: A tf_keras classifier (float or QAT), or anything with `predict(images)` (an
        integer `.tflite` model) when `saliency` is given.
      images: (N, ...) images in the model's input range.
      labels: (N,) integer class ids.
      saliency: Saliency shaped like `images` (or (N, H, W) per-pixel maps); None takes
        `input_gradients(model, ...)`, the vanilla gradient of the true class, in one graph
        function per batch.
      name: The model's name in the result (default: `model.name`).
      method: The name of the saliency method, recorded in the result.
      predict_fn: What is measured; default `model.predict` in batches of `batch_size`.
      fractions: Shares to remove, each in [0, 1] (below 1 for ROAD's imputation).
      orders: Any of "top", "bottom", "random", each once.
      fill: The protocol's fill (None: its default; the per-pixel protocol: "mean").
      seed: Seed of the random order and the random fills.
      reduce_channels: "mean", "max" or None (see `accuracy_drop_curve`; None only for the
        per-pixel protocol).
      batch_size: Batch size of the gradients and predictions, >= 1.
      protocol: A name of `sgt_tfmot.explain.protocols` ("pixel", "road", "deletion",
        "insertion", "region", ...).
      protocol_options: Further settings (patch, noise, blur_sigma, value_range); `fill`,
        `seed` and `reduce_channels` above replace theirs.

    Returns:
      A `DropCurves`.

    Raises:
      ValueError: On an unknown or repeated order, an unknown protocol or fill, or the errors
        of `input_gradients` and `accuracy_drop_curve`.
    """
    orders = list(orders)
    if not orders or len(set(orders)) != len(orders):
        raise ValueError(
            f"`orders` must hold each of {', '.join(map(repr, ORDERS))} at most once, and at "
            f"least one. Received: orders={orders!r}"
        )
    for order in orders:
        checks.check_choice(order, ORDERS, "order")
    removal = protocols.get(protocol)
    options = dataclasses.replace(
        protocol_options or protocols.ProtocolOptions(),
        fill=fill if fill is not None else (protocol_options.fill if protocol_options else None),
        seed=seed,
        reduce_channels=reduce_channels,
    )
    fill_title = removal.fill_title(options)  # checks the fill
    fractions = _check_fractions(fractions)
    batch_size = checks.check_positive_int(batch_size, "batch_size")
    if isinstance(model, keras.Model):
        images, labels = checks.check_model_inputs(model, images, labels)
    else:  # anything that predicts (an integer .tflite): the saliency must be given
        images = np.asarray(images, dtype=np.float32)
        labels = checks.check_labels(images, labels)
        if saliency is None:
            raise ValueError("`saliency` must be given for a model without gradients.")
    if not len(images):
        raise ValueError("`images` must hold at least one image. Received: 0 images")
    if saliency is None:
        saliency = input_gradients(model, images, labels, batch_size=batch_size)
    saliency = np.asarray(saliency, dtype=np.float32)
    if saliency.shape not in (images.shape, images.shape[:3]):
        raise ValueError(
            f"`saliency` must be shaped like `images` {images.shape} (or per pixel, "
            f"{images.shape[:3]}). Received: {saliency.shape}"
        )
    if predict_fn is None:

        def predict_fn(x):
            return predict(model, x, batch_size)

    measured = protocols.removal_curves(
        removal, predict_fn, images, labels, saliency, fractions, orders, options
    )
    flat = saliency.reshape(len(saliency), -1)
    return DropCurves(
        name=getattr(model, "name", "model") if name is None else str(name),
        fractions=tuple(float(f) for f in fractions),
        curves=measured.accuracy,
        method=method,
        fill=fill_title,
        num_images=len(images),
        zero_saliency_images=int(np.sum(~np.any(flat, axis=1))),
        protocol=removal.name,
        unit=removal.unit_title(options),
        measure=removal.measure,
        probabilities=measured.probability,
    )


def predict(model, images: np.ndarray, batch_size: int = 256) -> np.ndarray:
    """Scores of a Keras model (in batches) or of anything with `predict(images)`."""
    if isinstance(model, keras.Model):
        return model.predict(images, batch_size=batch_size, verbose=0)
    return np.asarray(model.predict(images))


def curves_csv(results: Sequence[DropCurves]) -> str:
    """The curves as CSV, one row per point:
    model,protocol,fill,order,fraction,accuracy,probability (probability empty when not
    measured).

    Args:
      results: `DropCurves` of the models (and protocols).

    Returns:
      The CSV text with a header line, "\\n" line ends.
    """

    def cell(text: str) -> str:
        text = text.replace('"', '""')
        return f'"{text}"' if any(c in text for c in ',"\n') else text

    lines = ["model,protocol,fill,order,fraction,accuracy,probability"]
    for result in results:
        head = f"{cell(result.name)},{result.protocol},{cell(result.fill)}"
        for order, curve in result.curves.items():
            probs = (result.probabilities or {}).get(order, [None] * len(curve))
            for fraction, accuracy, p in zip(result.fractions, curve, probs, strict=True):
                p = "" if p is None else f"{p:.6f}"
                lines.append(f"{head},{order},{fraction:g},{accuracy:.6f},{p}")
    return "\n".join(lines) + "\n"
