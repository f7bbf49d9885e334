"""How alike two saliency maps are, how concentrated a map is, and whether it tests the model.

All measures take per-pixel maps (N, ...) of non-negative values (`attribution_maps`) and
compare image by image, over the flattened features of each image:

* `spearman_per_image(a, b)`: Spearman's ρ between the two maps of an image, the Pearson
  correlation of their ranks (ties get their average rank). ρ = 1 for the same ranking,
  −1 for the reversed one; undefined (NaN) when either map is constant, e.g. all zero.
* `top_fraction_iou(a, b, 0.1)`: |T_a ∩ T_b| / |T_a ∪ T_b| for the sets T of the
  k = ⌊0.1 · n⌋ most salient features (ties to the lower index, as in the masking rule).
* `concentration(m, 0.1)`: Σ of the k largest values / Σ of all values, the share of the
  total saliency held by the top 10 % of the features (k / n for a flat map, 1 for a map
  that puts everything on k features); NaN for an all-zero map.
* `agreement(a, b)`: the mean and standard deviation of ρ and of the IoU over the images,
  to answer "how much does quantization change the maps" (the maps of a float model and of
  its QAT version on the same images).
* `sanity_check(model, images, labels)`: the model-randomisation test of Adebayo et al.
  (NeurIPS 2018, "Sanity checks for saliency maps"): a map that explains the model must
  change when the learned weights are replaced by fresh random ones. `randomize_weights`
  re-initialises every kernel, bias and BatchNormalization scale/offset with the layer's own
  initializer (quantizer ranges and BatchNormalization statistics are kept, so a QAT model
  keeps working ranges); the check passes when the mean ρ between the maps of the trained
  and the randomised model is below a threshold (0.5 by default).

Example:

    a = attribution_maps(float_model, x, y)
    b = attribution_maps(qat_model, x, y)
    print(agreement(a, b, model_a="float", model_b="qat").to_dict())
    print(sanity_check(qat_model, x, y).verdict)
"""

from __future__ import annotations

import dataclasses
import math

import numpy as np

from sgt_tfmot import masking
from sgt_tfmot.explain import _validation as checks, attributions
from sgt_tfmot.explain.attributions import attribution_maps
from sgt_tfmot.keras import keras
from sgt_tfmot.quantize import quantize_scope

__all__ = [
    "Agreement",
    "SanityCheck",
    "agreement",
    "concentration",
    "randomize_weights",
    "sanity_check",
    "spearman_per_image",
    "top_fraction_iou",
]

DEFAULT_TOP_FRACTION = 0.1
DEFAULT_SANITY_THRESHOLD = 0.5

# Weight name -> the attribute holding its initializer, on the (wrapped) layer.
_INITIALIZERS = {
    "kernel": "kernel_initializer",
    "depthwise_kernel": "depthwise_initializer",
    "pointwise_kernel": "pointwise_initializer",
    "bias": "bias_initializer",
    "gamma": "gamma_initializer",
    "beta": "beta_initializer",
    "embeddings": "embeddings_initializer",
}


def _flat_pair(maps_a, maps_b) -> tuple[np.ndarray, np.ndarray]:
    a = np.asarray(maps_a, dtype=np.float64)
    b = np.asarray(maps_b, dtype=np.float64)
    if a.shape != b.shape or a.ndim < 2:
        raise ValueError(
            "The two maps must have the same shape (N, features...). Received: "
            f"{a.shape} and {b.shape}"
        )
    features = math.prod(a.shape[1:])
    return a.reshape(len(a), features), b.reshape(len(b), features)


def spearman_per_image(maps_a: np.ndarray, maps_b: np.ndarray) -> np.ndarray:
    """Spearman's rank correlation between the maps of each image.

    ρ = Pearson(rank(a), rank(b)) over the n features of an image, ties at their average
    rank (`scipy.stats.rankdata`); with distinct values ρ = 1 − 6 Σ d² / (n (n² − 1)).

    Args:
      maps_a, maps_b: Maps of the same shape (N, features...).

    Returns:
      float64 array (N,) in [−1, 1]; NaN for an image where either map is constant.

    Raises:
      ValueError: When the shapes differ or have no image axis.
    """
    from scipy.stats import rankdata  # on first use: scipy.stats takes ~1 s to import

    a, b = _flat_pair(maps_a, maps_b)
    if not len(a):
        return np.zeros(0)
    ra = rankdata(a, axis=1)
    rb = rankdata(b, axis=1)
    ra -= ra.mean(axis=1, keepdims=True)
    rb -= rb.mean(axis=1, keepdims=True)
    norm = np.sqrt((ra**2).sum(axis=1) * (rb**2).sum(axis=1))
    with np.errstate(invalid="ignore", divide="ignore"):
        rho = (ra * rb).sum(axis=1) / norm
    rho[norm == 0] = np.nan
    return np.clip(rho, -1.0, 1.0)


def _top_k(flat: np.ndarray, fraction: float) -> tuple[np.ndarray, int]:
    """(indices of the k largest values per row, lower index first among ties; k)."""
    fraction = checks.check_open_fraction(fraction, "fraction")
    n = flat.shape[1]
    k = masking.masked_count(fraction, n)
    if k < 1:
        raise ValueError(
            f"`fraction` selects no feature: ⌊{fraction} · {n}⌋ = 0 for maps of {n} features. "
            f"Received: fraction={fraction!r}"
        )
    return np.argsort(-flat, axis=1, kind="stable")[:, :k], k


def top_fraction_iou(
    maps_a: np.ndarray, maps_b: np.ndarray, fraction: float = DEFAULT_TOP_FRACTION
) -> np.ndarray:
    """Intersection over union of the top-`fraction` features of the two maps of each image.

    Args:
      maps_a, maps_b: Maps of the same shape (N, features...).
      fraction: Share of the features in each top set, in (0, 1); k = ⌊fraction · n⌋ >= 1.

    Returns:
      float64 array (N,) in [0, 1].

    Raises:
      ValueError: When the shapes differ, or `fraction` is outside (0, 1) or selects nothing.
    """
    a, b = _flat_pair(maps_a, maps_b)
    top_a, k = _top_k(a, fraction)
    top_b, _ = _top_k(b, fraction)
    ious = []
    for row_a, row_b in zip(top_a, top_b, strict=True):
        common = np.intersect1d(row_a, row_b, assume_unique=True).size
        ious.append(common / (2 * k - common))
    return np.asarray(ious, dtype=np.float64)


def concentration(maps: np.ndarray, fraction: float = DEFAULT_TOP_FRACTION) -> np.ndarray:
    """Share of each map's total |saliency| held by its top-`fraction` features.

    Args:
      maps: (N, features...) maps; their absolute values are used.
      fraction: Share of the features counted as the top, in (0, 1); k = ⌊fraction · n⌋ >= 1.

    Returns:
      float64 array (N,) in [k / n, 1]; NaN for an all-zero map.

    Raises:
      ValueError: On maps without an image axis, or a bad `fraction`.
    """
    flat = np.abs(np.asarray(maps, dtype=np.float64))
    if flat.ndim < 2:
        raise ValueError(f"`maps` must have shape (N, features...). Received: {flat.shape}")
    flat = flat.reshape(len(flat), math.prod(flat.shape[1:]))
    top, _ = _top_k(flat, fraction)
    total = flat.sum(axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        share = np.take_along_axis(flat, top, axis=1).sum(axis=1) / total
    share[total == 0] = np.nan
    return share


def _mean_std(values: np.ndarray) -> tuple[float | None, float | None]:
    """(mean, standard deviation) of the finite values, (None, None) when there are none."""
    finite = np.asarray(values, dtype=np.float64)
    finite = finite[np.isfinite(finite)]
    if not finite.size:
        return None, None
    return float(finite.mean()), float(finite.std())


@dataclasses.dataclass(frozen=True)
class Agreement:
    """How alike the maps of two models are on the same images.

    Attributes:
      model_a, model_b: The two models' names.
      method: The attribution method of both maps.
      num_images: Images compared.
      fraction: Share of the features in the top sets of the IoU.
      spearman_mean, spearman_std: Spearman's ρ over the images with a defined ρ, or None.
      iou_mean, iou_std: Top-`fraction` IoU over all images.
      undefined: Images without a ρ (a constant map, e.g. all zero, in either model).
    """

    model_a: str
    model_b: str
    method: str
    num_images: int
    fraction: float
    spearman_mean: float | None
    spearman_std: float | None
    iou_mean: float | None
    iou_std: float | None
    undefined: int

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


def agreement(
    maps_a: np.ndarray,
    maps_b: np.ndarray,
    fraction: float = DEFAULT_TOP_FRACTION,
    model_a: str = "a",
    model_b: str = "b",
    method: str = "vanilla",
) -> Agreement:
    """Spearman's ρ and top-`fraction` IoU of two models' maps, averaged over the images.

    Args:
      maps_a, maps_b: Maps of the same images by the two models, same shape (N, ...), N >= 1.
      fraction: Share of the features in the IoU's top sets, in (0, 1).
      model_a, model_b, method: Names recorded in the result.

    Returns:
      An `Agreement`. A model compared with itself has ρ = 1 and IoU = 1.

    Raises:
      ValueError: On maps of different shapes, no image, or a bad `fraction`.
    """
    a, b = _flat_pair(maps_a, maps_b)
    if not len(a):
        raise ValueError("The maps must hold at least one image. Received: 0 images")
    rho = spearman_per_image(a, b)
    iou = top_fraction_iou(a, b, fraction)
    spearman_mean, spearman_std = _mean_std(rho)
    iou_mean, iou_std = _mean_std(iou)
    return Agreement(
        model_a=str(model_a),
        model_b=str(model_b),
        method=str(method),
        num_images=len(a),
        fraction=float(fraction),
        spearman_mean=spearman_mean,
        spearman_std=spearman_std,
        iou_mean=iou_mean,
        iou_std=iou_std,
        undefined=int(np.sum(np.isnan(rho))),
    )


def _layers(model: keras.Model):
    """The model's layers, those of nested models included."""
    for layer in model.layers:
        if isinstance(layer, keras.Model):
            yield from _layers(layer)
        else:
            yield layer


def _seeded(initializer, seed: int):
    """A copy of a Keras initializer with `seed`, or the initializer itself if it has none."""
    config = initializer.get_config() if hasattr(initializer, "get_config") else {}
    if "seed" in config:
        return type(initializer).from_config({**config, "seed": seed})
    return initializer


def _randomize(model: keras.Model, seed: int) -> tuple[keras.Model, list[str]]:
    """(the randomised copy, names of the re-initialised weights)."""
    try:
        with quantize_scope():
            clone = type(model).from_config(model.get_config())
    except (NotImplementedError, TypeError, ValueError) as error:
        raise ValueError(
            f"Cannot copy model {model.name!r} to randomise its weights: only Functional and "
            f"Sequential models can be rebuilt from their config ({error})"
        ) from None
    clone.set_weights(model.get_weights())
    names = []
    for index, layer in enumerate(_layers(clone)):
        inner = getattr(layer, "layer", layer)  # TFMOT wrappers hold the layer in `.layer`
        for number, weight in enumerate(layer.weights):
            attribute = weight.name.split("/")[-1].split(":")[0]
            initializer = getattr(inner, _INITIALIZERS.get(attribute, ""), None)
            if initializer is None:
                continue
            initializer = _seeded(initializer, seed * 1_000_003 + 1000 * index + number)
            weight.assign(initializer(tuple(weight.shape), dtype=weight.dtype))
            names.append(weight.name)
    return clone, names


def randomize_weights(model: keras.Model, seed: int = 0) -> keras.Model:
    """A copy of `model` whose learned weights are re-initialised, for the sanity check.

    The copy is rebuilt from the model's config (under `quantize_scope`, so QAT models
    work) with the model's weights; then every kernel (dense, conv, depthwise, pointwise),
    bias, embedding and BatchNormalization γ/β is drawn again from the initializer of its
    layer (inside TFMOT wrappers: the wrapped layer's), seeded from `seed`. Quantizer ranges
    (PACT α, moving-average min/max) and BatchNormalization moving statistics are kept, so
    the activations of a QAT model stay inside working ranges. `model` is not changed.

    Args:
      model: A Functional or Sequential tf_keras model, float or QAT.
      seed: Seed of the new weights.

    Returns:
      The randomised copy.

    Raises:
      ValueError: When the model cannot be rebuilt from its config (a subclassed model).
    """
    return _randomize(model, seed)[0]


@dataclasses.dataclass(frozen=True)
class SanityCheck:
    """The model-randomisation sanity check of one attribution method (Adebayo et al. 2018).

    Attributes:
      method: The attribution method.
      num_images: Images compared.
      similarity_mean, similarity_std: Spearman's ρ between the maps of the trained and the
        randomised model, over the images where it is defined; None when it is nowhere.
      undefined: Images without a ρ (a constant map in either model).
      threshold: The check passes when `similarity_mean` < threshold.
      reinitialized_weights: Number of weight tensors drawn again.
      passed: Whether the maps depend on the weights.
    """

    method: str
    num_images: int
    similarity_mean: float | None
    similarity_std: float | None
    undefined: int
    threshold: float
    reinitialized_weights: int
    passed: bool

    @property
    def verdict(self) -> str:
        """The verdict: "passed", or "FAILED: ..." with the reason."""
        if self.passed:
            return "passed"
        if self.similarity_mean is None:
            return "FAILED: no image has a non-constant map in both models"
        return (
            f"FAILED: maps do not depend on the weights (Spearman {self.similarity_mean:.2f} "
            f">= {self.threshold:g})"
        )

    def to_dict(self) -> dict:
        return {**dataclasses.asdict(self), "verdict": self.verdict}


def sanity_check(
    model: keras.Model,
    images: np.ndarray,
    labels: np.ndarray,
    method: str = "vanilla",
    threshold: float = DEFAULT_SANITY_THRESHOLD,
    seed: int = 0,
    maps: np.ndarray | None = None,
    **map_kwargs,
) -> SanityCheck:
    """Do the maps change when the model's weights are re-initialised?

    Computes `attribution_maps` of `model` (unless `maps` are given) and of
    `randomize_weights(model, seed)` for the true classes, and their Spearman ρ per image.
    A trustworthy method gives maps of the trained model that have little to do with those
    of a random one: the check passes when the mean ρ is below `threshold`, and fails with
    "maps do not depend on the weights" otherwise (e.g. an edge detector of the input).

    Args:
      model: A tf_keras classifier (float or QAT).
      images: (N, H, W, C) images, N >= 1.
      labels: (N,) integer class ids.
      method: A registered attribution method (`attributions.names()`).
      threshold: Largest mean ρ that fails the check, in (0, 1).
      seed: Seed of the new weights (and of SmoothGrad's noise).
      maps: The model's maps of these images and method, if already computed.
      **map_kwargs: Passed to `attribution_maps` (smooth_samples, noise, penultimate_layer,
        batch_size).

    Returns:
      A `SanityCheck`.

    Raises:
      ValueError: On an unknown `method`, a `threshold` outside (0, 1), no images, maps of
        the wrong shape, or the errors of `attribution_maps`.
    """
    checks.check_choice(method, attributions.names(), "method")
    threshold = checks.check_open_fraction(threshold, "threshold")
    if not len(images):
        raise ValueError("`images` must hold at least one image. Received: 0 images")
    if maps is None:
        maps = attribution_maps(model, images, labels, method, seed=seed, **map_kwargs)
    randomized, names = _randomize(model, seed)
    random_maps = attribution_maps(randomized, images, labels, method, seed=seed, **map_kwargs)
    if np.shape(maps) != random_maps.shape:
        raise ValueError(
            f"`maps` must be the {method} maps of the images, shaped {random_maps.shape}. "
            f"Received: {np.shape(maps)}"
        )
    rho = spearman_per_image(np.abs(maps), random_maps)
    mean, std = _mean_std(rho)
    return SanityCheck(
        method=method,
        num_images=len(rho),
        similarity_mean=mean,
        similarity_std=std,
        undefined=int(np.sum(np.isnan(rho))),
        threshold=threshold,
        reinitialized_weights=len(names),
        passed=mean is not None and mean < threshold,
    )
