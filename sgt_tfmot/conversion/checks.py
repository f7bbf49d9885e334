"""Release checks of an integer model against the Keras model it came from.

* `compare_accuracy`: top-1 accuracy of each model and their top-1 agreement (the share of
  images on which both predict the same class).
* `ulp_agreement`: what rounding alone costs: the Keras model's agreement with itself after
  every weight moved by one float32 ulp. A 4-bit network amplifies rounding differences
  layer after layer; when this number is low, no integer model (and no other runtime) can
  be expected to agree with the Keras model much better.
* `gate`: the numbers against `Thresholds`, one line per failed check. Deployment targets
  (`sgt_tfmot.tflite.targets`) add their own verdicts.
* `CheckOptions`: what `convert_and_check` checks the integer model on, and how.

The saliency-fidelity check is `sgt_tfmot.explain.fidelity`.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass

import numpy as np

from sgt_tfmot import _checks
from sgt_tfmot.explain import attributions, protocols
from sgt_tfmot.explain.fidelity import DEFAULT_PROTOCOL, FidelityResult
from sgt_tfmot.keras import keras
from sgt_tfmot.tflite import targets as deployment_targets

__all__ = [
    "AccuracyComparison",
    "CheckOptions",
    "Thresholds",
    "compare_accuracy",
    "gate",
    "ulp_agreement",
]

PredictFn = Callable[[np.ndarray], np.ndarray]
TFLM_IMAGES = 1000  # test images TFLite Micro runs by default (`TargetContext.test_images`)


def _check_number(value, name: str, low: float, high: float) -> float:
    return _checks.check_number(value, name, low, high)


@dataclass(frozen=True)
class Thresholds:
    """What an integer model must meet to pass the deployment gate.

    The defaults are the project's release targets for the integer model (see the issue
    "python -m sgt_tfmot.convert --int8"): at most 0.3 percentage points of test accuracy
    lost and at least 99.5 % top-1 agreement with the Keras model. Agreement bounds the
    accuracy change (|Δacc| <= 1 − agreement), so the two are consistent.

    Attributes:
      max_accuracy_drop: Largest allowed Keras − TFLite test accuracy, in percentage points
        (0.3 = 0.3 %). A TFLite model that is more accurate always passes.
      min_agreement: Smallest allowed share of test images on which both models predict
        the same class, in [0, 1].
      max_fidelity_gap: Largest allowed distance between the Keras and TFLite accuracy-drop
        curves, in percentage points (see the module docstring). Default 5: masked images
        are far from the calibration data, so the integer model rounds them more coarsely
        than clean images; with a few hundred fidelity images one point is a handful of
        images, and a model whose integer version ignores the salient pixels misses by tens
        of points.
      require_edgetpu: Fail the gate when the Edge TPU checker finds an op that would run
        on the CPU. Off by default: the verdict is reported either way, and mobile CPUs run
        models the Edge TPU cannot.
      require: Names of registered deployment targets (`sgt_tfmot.tflite.targets`) whose
        verdict must be "compatible" (`require_edgetpu` adds "edgetpu").
    """

    max_accuracy_drop: float = 0.3
    min_agreement: float = 0.995
    max_fidelity_gap: float = 5.0
    require_edgetpu: bool = False
    require: tuple[str, ...] = ()

    def __post_init__(self):
        _check_number(self.max_accuracy_drop, "max_accuracy_drop", 0.0, 100.0)
        _check_number(self.min_agreement, "min_agreement", 0.0, 1.0)
        _check_number(self.max_fidelity_gap, "max_fidelity_gap", 0.0, 100.0)
        _checks.check_bool(self.require_edgetpu, "require_edgetpu")
        required = tuple(self.require) + (("edgetpu",) if self.require_edgetpu else ())
        for name in required:
            deployment_targets.get(name, "require")
        object.__setattr__(self, "require", tuple(dict.fromkeys(required)))

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass(frozen=True)
class CheckOptions:
    """What `convert_and_check` checks the integer model on, and how; checked when made.

    What the checks must reach is `Thresholds`; what the file looks like, `Delivery`.

    Attributes:
      num_test: Check on N test images only, stratified by class (`convert_and_check`'s
        `seed`); None: the whole test split. The fidelity, occlusion, target and figure
        images are the first of these, in the same stratified order
        (`sgt_tfmot.data.stratified_order`).
      fidelity_images: Test images of the saliency fidelity check
        (`sgt_tfmot.explain.fidelity`); 0 skips it.
      saliency: The gradient attribution method that ranks the features of the fidelity
        check (`attributions.feature_methods()`: "vanilla", "smoothgrad").
      smooth_samples: Noisy samples per image for SmoothGrad.
      fidelity_protocol: Removal protocol of the fidelity check (`sgt_tfmot.explain.
        protocols`); default ROAD, whose perturbed images stay near the data.
      fidelity_fill: Fill of the removed units, one of the protocol's fills; None: its
        default (the pixel protocol: "mean", "zero" or "random", seeded).
      occlusion_images: Test images whose occlusion maps of the integer model (in LiteRT)
        are compared with the Keras model's (`integer_model_maps`); 0 skips it.
      tflm_images: Test images TFLite Micro runs, each output compared with LiteRT's
        reference kernels (at most the checked ones).
      profile: Time the integer and the float32 model and the integer model per op
        (the report's `deployment.latency`); a few seconds.

    Raises:
      InputError: Naming the first bad setting and what it accepts.
    """

    num_test: int | None = None
    fidelity_images: int = 500
    saliency: str = "vanilla"
    smooth_samples: int = 20
    fidelity_protocol: str = DEFAULT_PROTOCOL
    fidelity_fill: str | None = None
    occlusion_images: int = 16
    tflm_images: int = TFLM_IMAGES
    profile: bool = False

    def __post_init__(self):
        clean = {
            "num_test": _checks.check_int(self.num_test, "num_test", 1, allow_none=True),
            "fidelity_images": _checks.check_int(self.fidelity_images, "fidelity_images", 0),
            "smooth_samples": _checks.check_int(self.smooth_samples, "smooth_samples", 1),
        }
        _checks.check_choice(self.saliency, attributions.feature_methods(), "saliency")
        removal = protocols.get(self.fidelity_protocol, "fidelity_protocol")
        if self.fidelity_fill is not None:
            _checks.check_choice(self.fidelity_fill, removal.fills, "fidelity_fill")
        clean["tflm_images"] = _checks.check_int(self.tflm_images, "tflm_images", 1)
        clean["occlusion_images"] = _checks.check_int(self.occlusion_images, "occlusion_images", 0)
        clean["profile"] = _checks.check_bool(self.profile, "profile")
        for name, value in clean.items():
            object.__setattr__(self, name, value)


@dataclass(frozen=True)
class AccuracyComparison:
    """Top-1 accuracy of the Keras and TFLite models on the same images.

    Attributes:
      keras_accuracy: Share of images the Keras model classifies correctly, in [0, 1].
      tflite_accuracy: The same for the TFLite model.
      agreement: Share of images on which both predict the same class.
      num_images: Number of test images.
      ulp_agreement: The Keras model's agreement with itself after a one-ulp change of its
        weights (`ulp_agreement`), when measured: what rounding alone costs in `agreement`.
      tied_disagreements: Images the two models classify differently on which the TFLite
        model's top score is shared by two or more classes (the same output level; its
        argmax takes the first of them): classes the Keras model separates by less than one
        output step, as the probabilities of a model near chance are.
    """

    keras_accuracy: float
    tflite_accuracy: float
    agreement: float
    num_images: int
    ulp_agreement: float | None = None
    tied_disagreements: int = 0

    @property
    def disagreements(self) -> int:
        """Images the two models classify differently."""
        return round((1.0 - self.agreement) * self.num_images)

    @property
    def accuracy_drop_pp(self) -> float:
        """Keras − TFLite accuracy in percentage points (negative: TFLite is better)."""
        return 100.0 * (self.keras_accuracy - self.tflite_accuracy)

    def to_dict(self) -> dict:
        return {**asdict(self), "accuracy_drop_pp": self.accuracy_drop_pp}


def _scores(predict_fn: PredictFn, images: np.ndarray, who: str) -> np.ndarray:
    scores = np.asarray(predict_fn(images))
    if scores.ndim != 2 or len(scores) != len(images):
        raise ValueError(
            f"The {who} model must return class scores of shape ({len(images)}, num_classes). "
            f"Received: {scores.shape}"
        )
    return scores


def compare_accuracy(
    keras_predict: PredictFn,
    tflite_predict: PredictFn,
    images: np.ndarray,
    labels: np.ndarray,
) -> AccuracyComparison:
    """Accuracy of both models and their top-1 agreement on `images`.

    Args:
      keras_predict: Float images -> class scores of the Keras model (`model.predict`).
      tflite_predict: The same for the TFLite model (`TFLiteModel.predict`).
      images: (N, ...) test images in the models' input range, N >= 1.
      labels: (N,) integer class ids.

    Returns:
      An `AccuracyComparison`.

    Raises:
      ValueError: On empty or mismatched inputs, or predictions of the wrong shape.
    """
    images = np.asarray(images, dtype=np.float32)
    labels = np.asarray(labels)
    if len(images) == 0 or labels.shape != (len(images),):
        raise ValueError(
            "`images` and `labels` must be non-empty with one label per image. Received: "
            f"{len(images)} images, labels of shape {labels.shape}"
        )
    keras_classes = _scores(keras_predict, images, "Keras").argmax(axis=-1)
    tflite_scores = _scores(tflite_predict, images, "TFLite")
    tflite_classes = tflite_scores.argmax(axis=-1)
    tied = (tflite_scores == tflite_scores.max(axis=-1, keepdims=True)).sum(axis=-1) > 1
    return AccuracyComparison(
        keras_accuracy=float(np.mean(keras_classes == labels)),
        tflite_accuracy=float(np.mean(tflite_classes == labels)),
        agreement=float(np.mean(keras_classes == tflite_classes)),
        num_images=len(images),
        tied_disagreements=int(np.sum(tied & (keras_classes != tflite_classes))),
    )


ULP_DRAWS = 3
"""Draws of the one-ulp change `ulp_agreement` takes the least agreement of: on a near-chance
EfficientNetB0 two draws gave 97 % and 92 % (docs/COMPATIBILITY.md), so one draw can be
optimistic."""


def ulp_agreement(
    model: keras.Model,
    images: np.ndarray,
    seed: int = 0,
    batch_size: int = 128,
    scores: np.ndarray | None = None,
    draws: int = ULP_DRAWS,
) -> float:
    """Top-1 agreement of `model` with itself after every float weight moved by one ulp.

    Each float32 weight (kernels, BN statistics, α, ranges) is moved to its next float32
    value up or down, at random (seeded), which is the size of the differences between two
    correct implementations of the same model (the integer model stores its scales in
    float32, a runtime sums in another order). The share of images whose class survives is
    what such differences alone cost: a correct integer model lands near it or above, a
    wrong one far below. A well-conditioned model gives ~100 %; a 4-bit network that
    amplifies rounding flips layer after layer can give less than the 99.5 % release
    target, and then no runtime can be expected to meet that target reliably. The least
    agreement of `draws` changes (seeds `seed`, `seed` + 1, ...) is returned: a model that
    sensitive gives a different share with each draw. The model's weights are restored
    afterwards.

    Args:
      model: A Keras classifier.
      images: (N, ...) images in the model's input range, N >= 1.
      seed: Seed of the first draw's directions.
      batch_size: Batch size of the predictions.
      scores: The model's class scores on `images` when already computed (saves a pass).
      draws: How many one-ulp changes to measure (>= 1), one prediction pass each.

    Returns:
      The least agreement, a share in [0, 1].
    """
    images = np.asarray(images, dtype=np.float32)
    if len(images) == 0:
        raise ValueError("`images` must hold at least one image. Received: 0 images")
    if isinstance(draws, bool) or not isinstance(draws, int) or draws < 1:
        raise ValueError(f"`draws` must be an integer >= 1. Received: draws={draws!r}")
    weights = model.get_weights()
    if scores is None:
        scores = model.predict(images, batch_size=batch_size, verbose=0)
    base = _scores(lambda _: scores, images, "Keras").argmax(axis=-1)  # checks the shape
    agreements = []
    try:
        for draw in range(draws):
            rng = np.random.default_rng(seed + draw)
            moved = []
            for weight in weights:
                if weight.dtype.kind == "f":
                    direction = np.where(rng.random(weight.shape) < 0.5, -np.inf, np.inf)
                    weight = np.nextafter(weight, direction.astype(weight.dtype))
                moved.append(weight)
            model.set_weights(moved)
            perturbed = model.predict(images, batch_size=batch_size, verbose=0)
            agreements.append(float(np.mean(base == np.asarray(perturbed).argmax(axis=-1))))
    finally:
        model.set_weights(weights)
    return min(agreements)


def _resolution_hint(accuracy: AccuracyComparison, thresholds: Thresholds) -> str:
    """Where one image moves the accuracy by more than the allowed drop, says so: such a
    check fails on any single image the two models classify differently."""
    one_image = 100.0 / accuracy.num_images
    if thresholds.max_accuracy_drop <= 0 or one_image <= thresholds.max_accuracy_drop:
        return ""
    enough = math.ceil(100.0 / thresholds.max_accuracy_drop - 1e-9)
    return (
        f" (one image is {one_image:.2f} pp of these {accuracy.num_images}: test on "
        f"--num_test {enough} or more images, or allow a larger drop)"
    )


FLOOR_MARGIN = 0.01
"""How far below the ulp floor an agreement may lie and still be put down to rounding: the
floor is the least of `ULP_DRAWS` draws of a one-ulp perturbation (1 pp: 20 of 2,000 images)."""


def _floor_hint(accuracy: AccuracyComparison, thresholds: Thresholds) -> str:
    """What the ulp floor says of a failed agreement: rounding alone (the model is too
    sensitive), or maybe more than rounding. The floor is the least of a few draws of a
    one-ulp change (`ULP_DRAWS`); on a model as sensitive as a near-chance EfficientNetB0
    (two draws: 97 % and 92 %, docs/COMPATIBILITY.md) even that can be optimistic, so an
    agreement below it is not proof of an inexact layer."""
    floor = accuracy.ulp_agreement
    if floor is None or (
        floor >= thresholds.min_agreement and accuracy.agreement >= floor - FLOOR_MARGIN
    ):
        return ""
    said = (
        f"the Keras model agrees with itself after a one-ulp change of its weights on "
        f"{'only ' if floor < thresholds.min_agreement else ''}{100 * floor:.2f} %"
    )
    if accuracy.agreement >= floor - FLOOR_MARGIN:
        return (
            f" ({said}: it is too sensitive to rounding for any integer model to agree "
            "better; see the report's ulp_agreement)"
        )
    return (
        f" (below what rounding alone costs: {said}; either a layer the integer model does not "
        "compute exactly, or a model so sensitive to rounding that these draws of the floor "
        "are optimistic: see the report's ulp_agreement)"
    )


def _tied_top_hint(accuracy: AccuracyComparison) -> str:
    """When most disagreements are ties at the top of the integer model's scores, says so:
    the model does not separate those classes by one output step, whatever its layers."""
    differ = accuracy.disagreements
    if not differ or 2 * accuracy.tied_disagreements < differ:
        return ""
    return (
        f"; on {accuracy.tied_disagreements} of the {differ} images the models classify "
        "differently, the integer model's top score is shared by two or more classes (closer "
        "than one output step: a model that barely separates its classes, as one near chance "
        "does; train it further)"
    )


def _tie_hint(ties: Sequence) -> str:
    """The failed agreement's likely cause when the file has an ADD or SUB near a rounding tie: one
    that XNNPACK rounds apart from the Keras model first, then the closest."""
    if not ties:
        return ""
    tie = min(ties, key=lambda found: (not found.apart, found.distance))
    return f"; a likely cause: {tie.describe()} (see the report's rounding_ties)"


def gate(
    thresholds: Thresholds,
    accuracy: AccuracyComparison,
    fidelity: FidelityResult | None = None,
    targets: Sequence = (),
    ties: Sequence = (),
) -> list[str]:
    """The checks that failed, one readable line each; an empty list is a pass.

    Args:
      thresholds: What to require.
      accuracy: From `compare_accuracy`.
      fidelity: From `fidelity_check`, or None when it was not run (not a failure).
      targets: `sgt_tfmot.tflite.targets.TargetReport`s; one fails the gate only when its
        name is in `thresholds.require` and it is not compatible.
      ties: `sgt_tfmot.tflite.requantize.RoundingTie`s of the file: a failed agreement
        names the closest one as a likely cause (never a failure by itself).

    Returns:
      Failure messages, in the order accuracy, agreement, fidelity, targets.
    """
    failures = []
    if accuracy.accuracy_drop_pp > thresholds.max_accuracy_drop + 1e-9:
        failures.append(
            f"accuracy drop {accuracy.accuracy_drop_pp:.2f} pp (Keras "
            f"{100 * accuracy.keras_accuracy:.2f} % -> TFLite "
            f"{100 * accuracy.tflite_accuracy:.2f} %) exceeds --max_accuracy_drop "
            f"{thresholds.max_accuracy_drop:g} pp" + _resolution_hint(accuracy, thresholds)
        )
    if accuracy.agreement < thresholds.min_agreement - 1e-9:
        failures.append(
            f"top-1 agreement {100 * accuracy.agreement:.2f} % is below --min_agreement "
            f"{100 * thresholds.min_agreement:g} %"
            # Ties at the integer model's top explain most disagreements, or the ulp floor
            # says what rounding costs.
            + (_tied_top_hint(accuracy) or _floor_hint(accuracy, thresholds))
            + _tie_hint(ties)
        )
    if fidelity is not None and fidelity.gap_pp > thresholds.max_fidelity_gap + 1e-9:
        failures.append(
            f"saliency fidelity gap {fidelity.gap_pp:.2f} pp exceeds --max_fidelity_gap "
            f"{thresholds.max_fidelity_gap:g} pp: the integer model does not lose accuracy "
            "like the Keras model when salient features are removed"
        )
    for target in targets:
        if target.name in thresholds.require and target.compatible is not True:
            failures.append(f"{target.failure or 'not ' + target.title + ' compatible'}"
                            f" and --require {target.name} is set")  # fmt: skip
    return failures
