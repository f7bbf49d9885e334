"""Deployment checks of an integer TFLite model against the Keras model it came from.

Three questions, each answered by running both models (the TFLite one in LiteRT) on the same
test images:

1. Does it still work? `compare_accuracy`: top-1 accuracy of each model and their top-1
   agreement (the share of images on which both predict the same class).
2. Does it still look at the right pixels? `fidelity_check`: the saliency of each image is
   taken once, on the Keras model (tf-keras-vis, `sgt_tfmot.explain.saliency_maps`); then the
   top x % and, separately, the bottom x % of the features by that saliency are replaced
   (the trainer's masking code) and both models classify the same masked images. If the
   integer model relies on the features the Keras model relies on, the two accuracy-drop
   curves coincide; the fidelity gap is the largest distance between them,

       gap = max over x in fractions, order in {top, bottom} of |acc_keras(x) − acc_tflite(x)|.

   `ulp_agreement` tells what rounding alone costs: the Keras model's agreement with itself
   after every weight moved by one float32 ulp. A 4-bit network amplifies rounding
   differences layer after layer; when this number is low, no integer model (and no other
   runtime) can be expected to agree with the Keras model much better.
3. Is it a release? `gate` compares the numbers with `Thresholds` and lists what failed;
   the Edge TPU verdict (`sgt_tfmot.tflite.edgetpu`) fails the gate only when asked for.

`save_saliency_figure` draws a few test images with their saliency maps and the integer
model's predictions, for the report.

Example:

    tflite = TFLiteModel(to_integer_tflite(qat, x_train[:500]))
    accuracy = compare_accuracy(qat.predict, tflite.predict, x_test, y_test)
    fidelity = fidelity_check(qat, tflite, x_test[:500], y_test[:500])
    failures = gate(Thresholds(), accuracy, fidelity, check_edgetpu(flatbuffer))
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass

import numpy as np

from sgt_tfmot import _checks, explain
from sgt_tfmot.keras import keras
from sgt_tfmot.tflite.edgetpu import EdgeTpuReport
from sgt_tfmot.tflite.runtime import TFLiteModel

__all__ = [
    "AccuracyComparison",
    "FidelityResult",
    "Thresholds",
    "compare_accuracy",
    "fidelity_check",
    "gate",
    "save_saliency_figure",
    "ulp_agreement",
]

PredictFn = Callable[[np.ndarray], np.ndarray]


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
    """

    max_accuracy_drop: float = 0.3
    min_agreement: float = 0.995
    max_fidelity_gap: float = 5.0
    require_edgetpu: bool = False

    def __post_init__(self):
        _check_number(self.max_accuracy_drop, "max_accuracy_drop", 0.0, 100.0)
        _check_number(self.min_agreement, "min_agreement", 0.0, 1.0)
        _check_number(self.max_fidelity_gap, "max_fidelity_gap", 0.0, 100.0)
        if not isinstance(self.require_edgetpu, bool):
            raise ValueError(
                f"`require_edgetpu` must be True or False. Received: {self.require_edgetpu!r}"
            )

    def to_dict(self) -> dict:
        return asdict(self)


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
    """

    keras_accuracy: float
    tflite_accuracy: float
    agreement: float
    num_images: int
    ulp_agreement: float | None = None

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
    tflite_classes = _scores(tflite_predict, images, "TFLite").argmax(axis=-1)
    return AccuracyComparison(
        keras_accuracy=float(np.mean(keras_classes == labels)),
        tflite_accuracy=float(np.mean(tflite_classes == labels)),
        agreement=float(np.mean(keras_classes == tflite_classes)),
        num_images=len(images),
    )


def ulp_agreement(
    model: keras.Model,
    images: np.ndarray,
    seed: int = 0,
    batch_size: int = 128,
    scores: np.ndarray | None = None,
) -> float:
    """Top-1 agreement of `model` with itself after every float weight moved by one ulp.

    Each float32 weight (kernels, BN statistics, α, ranges) is moved to its next float32
    value up or down, at random (seeded), which is the size of the differences between two
    correct implementations of the same model (the integer model stores its scales in
    float32, a runtime sums in another order). The share of images whose class survives is
    what such differences alone cost: a correct integer model lands near it or above, a
    wrong one far below. A well-conditioned model gives ~100 %; a 4-bit network that
    amplifies rounding flips layer after layer can give less than the 99.5 % release
    target, and then no runtime can be expected to meet that target reliably. The model's
    weights are restored afterwards.

    Args:
      model: A Keras classifier.
      images: (N, ...) images in the model's input range, N >= 1.
      seed: Seed of the directions.
      batch_size: Batch size of the predictions.
      scores: The model's class scores on `images` when already computed (saves a pass).

    Returns:
      The agreement, a share in [0, 1].
    """
    images = np.asarray(images, dtype=np.float32)
    if len(images) == 0:
        raise ValueError("`images` must hold at least one image. Received: 0 images")
    rng = np.random.default_rng(seed)
    weights = model.get_weights()
    if scores is None:
        scores = model.predict(images, batch_size=batch_size, verbose=0)
    base = _scores(lambda _: scores, images, "Keras")  # checks the shape
    moved = []
    for weight in weights:
        if weight.dtype.kind == "f":
            direction = np.where(rng.random(weight.shape) < 0.5, -np.inf, np.inf)
            weight = np.nextafter(weight, direction.astype(weight.dtype))
        moved.append(weight)
    try:
        model.set_weights(moved)
        perturbed = model.predict(images, batch_size=batch_size, verbose=0)
    finally:
        model.set_weights(weights)
    return float(np.mean(base.argmax(axis=-1) == np.asarray(perturbed).argmax(axis=-1)))


@dataclass(frozen=True)
class FidelityResult:
    """Accuracy-drop curves of the Keras and TFLite models on the same masked images.

    Attributes:
      fractions: Shares of the features removed, one per curve point.
      keras_top, tflite_top: Accuracy with the most salient features removed.
      keras_bottom, tflite_bottom: Accuracy with the least salient features removed.
      gap: max |keras − tflite| over both curves, as a share in [0, 1].
      method: Saliency method ("vanilla" or "smoothgrad").
      fill: The fill of the removed features.
      num_images: Images per curve point.
      export_top, export_bottom: The curves of the 8-bit export model of a k-bit QAT model
        (`sgt_tfmot.export.export_model`), when it was given, else None.
      export_gap: max |export − tflite| over both curves, else None. The TFLite model
        computes the export model, which rounds PACT activations to 8 bits over the k-bit
        ranges; a small `export_gap` beside a large `gap` says the difference is that
        rounding, not the conversion.
      zero_saliency_images: Images whose saliency map is all zero. Their features tie and
        are removed in index order. On a QAT model this happens when the true-class output
        lies outside the output quantizer's learned range, where the fake-quant passes no
        gradient.
    """

    fractions: tuple[float, ...]
    keras_top: tuple[float, ...]
    tflite_top: tuple[float, ...]
    keras_bottom: tuple[float, ...]
    tflite_bottom: tuple[float, ...]
    gap: float
    method: str
    fill: str
    num_images: int
    export_top: tuple[float, ...] | None = None
    export_bottom: tuple[float, ...] | None = None
    export_gap: float | None = None
    zero_saliency_images: int = 0

    @property
    def gap_pp(self) -> float:
        """The gap in percentage points."""
        return 100.0 * self.gap

    @property
    def export_gap_pp(self) -> float | None:
        """`export_gap` in percentage points, or None."""
        return None if self.export_gap is None else 100.0 * self.export_gap

    def curves(self) -> dict[str, tuple[float, ...]]:
        """The curves by name ("keras_top", ..., "export_bottom" when present)."""
        names = ["keras_top", "tflite_top", "keras_bottom", "tflite_bottom"]
        if self.export_top is not None:
            names += ["export_top", "export_bottom"]
        return {name: getattr(self, name) for name in names}

    def areas(self) -> dict[str, float]:
        """Trapezoid area of each curve (`sgt_tfmot.explain.curve_area`)."""
        if len(self.fractions) < 2:
            return {}
        return {
            name: explain.curve_area(self.fractions, curve) for name, curve in self.curves().items()
        }

    def to_dict(self) -> dict:
        return {
            **asdict(self),
            "gap_pp": self.gap_pp,
            "export_gap_pp": self.export_gap_pp,
            "areas": self.areas(),
        }


def fidelity_check(
    keras_model: keras.Model,
    tflite_model: TFLiteModel | bytes,
    images: np.ndarray,
    labels: np.ndarray,
    saliency: np.ndarray | None = None,
    method: str = "vanilla",
    smooth_samples: int = 20,
    fractions: Sequence[float] = explain.DEFAULT_FRACTIONS,
    fill: str = "mean",
    reduce_channels: str | None = "mean",
    seed: int = 0,
    batch_size: int = 128,
    export_model: keras.Model | None = None,
) -> FidelityResult:
    """Do the integer and Keras models lose accuracy alike when salient features go?

    The saliency is taken once on the Keras model (vanilla gradient or SmoothGrad with
    tf-keras-vis, see `sgt_tfmot.explain.saliency_maps`) and ranks the features of both
    models' inputs: the curves measure whether the integer model still depends on the
    features that the Keras model's explanation points at. The fill is deterministic
    ("mean" by default; "random" is seeded), so the check is repeatable.

    Args:
      keras_model: The Keras classifier (QAT or float) the TFLite model was converted from.
      tflite_model: Its TFLite version, as a `TFLiteModel` or flatbuffer bytes.
      images: (N, ...) test images in the model's input range, N >= 1.
      labels: (N,) integer class ids.
      saliency: Precomputed saliency shaped like `images`; computed here when None.
      method: "vanilla" or "smoothgrad", when the saliency is computed here.
      smooth_samples: Noisy samples per image for SmoothGrad.
      fractions: Shares of features removed, each in [0, 1].
      fill: "mean", "zero" or "random" (see `sgt_tfmot.masking.fill_values`).
      reduce_channels: How a pixel's channels are ranked together ("mean", "max", None).
      seed: Seed of SmoothGrad's noise and of the random fill.
      batch_size: Batch size of the Keras model's predictions and gradients.
      export_model: For a k-bit QAT `keras_model`, its 8-bit export model: its curves are
        measured too, as a diagnosis (see `FidelityResult.export_gap`). Not judged.

    Returns:
      A `FidelityResult`.

    Raises:
      ValueError: On empty or mismatched inputs, or the errors of `saliency_maps` and
        `accuracy_drop_curve`.
    """
    images = np.asarray(images, dtype=np.float32)
    labels = np.asarray(labels)
    if len(images) == 0:
        raise ValueError("`images` must hold at least one image. Received: 0 images")
    if isinstance(tflite_model, bytes | bytearray):
        tflite_model = TFLiteModel(tflite_model)
    if saliency is None:
        saliency = explain.saliency_maps(
            keras_model,
            images,
            labels,
            method=method,
            smooth_samples=smooth_samples,
            batch_size=batch_size,
            seed=seed,
        )
    else:  # `method` is only recorded, but must still name a method
        if method not in explain.METHODS:
            raise ValueError(
                f"`method` must be one of {', '.join(map(repr, explain.METHODS))}. "
                f"Received: method={method!r}"
            )
    saliency = np.asarray(saliency, dtype=np.float32)
    if saliency.shape != images.shape:
        raise ValueError(
            f"`saliency` must be shaped like `images` {images.shape}. Received: {saliency.shape}"
        )

    def predictor(model):
        return lambda x: model.predict(x, batch_size=batch_size, verbose=0)

    models = [("keras", predictor(keras_model)), ("tflite", tflite_model.predict)]
    if export_model is not None:
        models.append(("export", predictor(export_model)))
    curves = {}
    for name, predict_fn in models:
        for order in ("top", "bottom"):
            curves[f"{name}_{order}"] = explain.accuracy_drop_curve(
                predict_fn,
                images,
                labels,
                saliency,
                fractions=fractions,
                order=order,
                fill=fill,
                seed=seed,
                reduce_channels=reduce_channels,
            )

    def gap(name):
        return max(
            float(np.max(np.abs(curves[f"{name}_{order}"] - curves[f"tflite_{order}"])))
            for order in ("top", "bottom")
        )

    return FidelityResult(
        fractions=tuple(float(f) for f in fractions),
        **{name: tuple(float(a) for a in curve) for name, curve in curves.items()},
        gap=gap("keras"),
        export_gap=gap("export") if export_model is not None else None,
        zero_saliency_images=int(np.sum(~np.any(saliency.reshape(len(images), -1), axis=1))),
        method=method,
        fill=fill,
        num_images=len(images),
    )


def gate(
    thresholds: Thresholds,
    accuracy: AccuracyComparison,
    fidelity: FidelityResult | None = None,
    edgetpu: EdgeTpuReport | None = None,
) -> list[str]:
    """The checks that failed, one readable line each; an empty list is a pass.

    Args:
      thresholds: What to require.
      accuracy: From `compare_accuracy`.
      fidelity: From `fidelity_check`, or None when it was not run (not a failure).
      edgetpu: From `check_edgetpu`; judged only when `thresholds.require_edgetpu`.

    Returns:
      Failure messages, in the order accuracy, agreement, fidelity, Edge TPU.
    """
    failures = []
    if accuracy.accuracy_drop_pp > thresholds.max_accuracy_drop + 1e-9:
        failures.append(
            f"accuracy drop {accuracy.accuracy_drop_pp:.2f} pp (Keras "
            f"{100 * accuracy.keras_accuracy:.2f} % -> TFLite "
            f"{100 * accuracy.tflite_accuracy:.2f} %) exceeds --max_accuracy_drop "
            f"{thresholds.max_accuracy_drop:g} pp"
        )
    if accuracy.agreement < thresholds.min_agreement - 1e-9:
        floor = accuracy.ulp_agreement
        failures.append(
            f"top-1 agreement {100 * accuracy.agreement:.2f} % is below --min_agreement "
            f"{100 * thresholds.min_agreement:g} %"
            + (
                ""
                if floor is None or floor >= thresholds.min_agreement
                else f" (the Keras model agrees with itself after a one-ulp change of its "
                f"weights on only {100 * floor:.2f} %: it is too sensitive to rounding for "
                "any integer model to agree better; see the report's ulp_agreement)"
            )
        )
    if fidelity is not None and fidelity.gap_pp > thresholds.max_fidelity_gap + 1e-9:
        failures.append(
            f"saliency fidelity gap {fidelity.gap_pp:.2f} pp exceeds --max_fidelity_gap "
            f"{thresholds.max_fidelity_gap:g} pp: the integer model does not lose accuracy "
            "like the Keras model when salient features are removed"
        )
    if thresholds.require_edgetpu and edgetpu is not None and not edgetpu.compatible:
        first = edgetpu.ops[edgetpu.first_cpu_op] if edgetpu.first_cpu_op is not None else None
        where = f" (first CPU op: #{first.index} {first.name})" if first is not None else ""
        failures.append(f"not Edge TPU compatible{where} and --require_edgetpu is set")
    return failures


def save_saliency_figure(
    path: str | os.PathLike,
    images: np.ndarray,
    saliency: np.ndarray,
    labels: np.ndarray,
    scores: np.ndarray,
    max_images: int = 8,
    title: str = "integer model",
) -> None:
    """Writes a PNG: test images (top row), their saliency maps (bottom row), predictions.

    Each column shows one image with its label, and below it the channel mean of its
    saliency map with the class the integer model predicts ("ok" or "wrong").

    Args:
      path: Where to write the PNG.
      images: (N, H, W, C) images in 0..255.
      saliency: Saliency maps shaped like `images`.
      labels: (N,) class ids.
      scores: (N, num_classes) class scores of the integer model.
      max_images: At most this many columns, >= 1.
      title: Name of the predicting model in the figure's title.

    Raises:
      ValueError: On shapes that do not match or a bad `max_images`.
    """
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    images = np.asarray(images, dtype=np.float32)
    saliency = np.asarray(saliency, dtype=np.float32)
    if isinstance(max_images, bool) or not isinstance(max_images, int) or max_images < 1:
        raise ValueError(f"`max_images` must be an integer >= 1. Received: {max_images!r}")
    if images.ndim != 4 or saliency.shape != images.shape or len(images) == 0:
        raise ValueError(
            "`images` must be (N, H, W, C) with N >= 1 and `saliency` of the same shape. "
            f"Received: {images.shape} and {saliency.shape}"
        )
    count = min(len(images), max_images)
    predicted = np.asarray(scores)[:count].argmax(axis=-1)
    figure = Figure(figsize=(1.6 * count, 3.6), dpi=100)
    FigureCanvasAgg(figure)
    axes = figure.subplots(2, count, squeeze=False)
    for i in range(count):
        image = np.clip(images[i], 0, 255) / 255.0
        top, bottom = axes[0, i], axes[1, i]
        if image.shape[-1] == 1:
            top.imshow(image[..., 0], cmap="gray", vmin=0, vmax=1)
        else:
            top.imshow(image[..., :3])
        top.set_title(f"label {int(labels[i])}", fontsize=8)
        bottom.imshow(saliency[i].mean(axis=-1), cmap="jet")
        verdict = "ok" if predicted[i] == labels[i] else "wrong"
        bottom.set_title(f"pred {int(predicted[i])} ({verdict})", fontsize=8)
        for axis in (top, bottom):
            axis.set_xticks([])
            axis.set_yticks([])
    figure.suptitle(f"Saliency (Keras model) and {title} predictions", fontsize=9)
    figure.savefig(os.fspath(path), format="png")
