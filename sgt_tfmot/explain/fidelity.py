"""Saliency fidelity: does an integer model lose accuracy like its Keras model when the
features the Keras model's saliency ranks highest (or lowest) are removed?

The saliency of each image is taken once, on the Keras model (`sgt_tfmot.explain`); then the
top x % and, separately, the bottom x % of the units by that saliency are removed under a
removal protocol (`sgt_tfmot.explain.protocols`: ROAD's noisy linear imputation by default,
the field's faithfulness protocol, whose images stay close to the data; "pixel" is the
trainer's masking rule) and both models classify the same perturbed images. If the integer
model relies on the features the Keras model relies on, the two accuracy curves coincide;
the fidelity gap is the largest distance between them,

    gap = max over x in fractions, order in {top, bottom} of |acc_keras(x) − acc_int(x)|.

The integer model is any object with a `predict(images) -> scores` method (or a function):
`sgt_tfmot.tflite.TFLiteModel`, so this module needs no TFLite itself.
`save_saliency_figure` draws test images, their maps and the integer model's predictions.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Sequence
from dataclasses import asdict, dataclass

import numpy as np

from sgt_tfmot._checks import check_choice
from sgt_tfmot.explain import attributions, protocols
from sgt_tfmot.explain.curves import DEFAULT_FRACTIONS, _check_fractions, curve_area
from sgt_tfmot.explain.figures import class_name, new_figure, overlay
from sgt_tfmot.keras import keras

__all__ = ["DEFAULT_PROTOCOL", "FidelityResult", "fidelity_check", "save_saliency_figure"]

# ROAD: the integer model is judged on perturbed images that stay near the data (the
# per-pixel mean fill makes scattered constant pixels no deployed model sees).
DEFAULT_PROTOCOL = "road"


@dataclass(frozen=True)
class FidelityResult:
    """Accuracy-drop curves of the Keras and TFLite models on the same masked images.

    Attributes:
      fractions: Shares of the features removed, one per curve point.
      keras_top, tflite_top: Accuracy with the most salient features removed.
      keras_bottom, tflite_bottom: Accuracy with the least salient features removed.
      gap: max |keras − tflite| over both curves, as a share in [0, 1].
      method: Saliency method ("vanilla" or "smoothgrad").
      fill: The fill of the removed units, with its parameters.
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
      protocol: The removal protocol (`sgt_tfmot.explain.protocols`).
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
    protocol: str = "pixel"

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
        return {name: curve_area(self.fractions, curve) for name, curve in self.curves().items()}

    def to_dict(self) -> dict:
        return {
            **asdict(self),
            "gap_pp": self.gap_pp,
            "export_gap_pp": self.export_gap_pp,
            "areas": self.areas(),
        }


def fidelity_check(
    keras_model: keras.Model,
    integer_model,
    images: np.ndarray,
    labels: np.ndarray,
    saliency: np.ndarray | None = None,
    method: str = "vanilla",
    smooth_samples: int = 20,
    fractions: Sequence[float] = DEFAULT_FRACTIONS,
    fill: str | None = None,
    reduce_channels: str | None = "mean",
    seed: int = 0,
    batch_size: int = 128,
    export_model: keras.Model | None = None,
    protocol: str = DEFAULT_PROTOCOL,
    protocol_options: protocols.ProtocolOptions | None = None,
) -> FidelityResult:
    """Do the integer and Keras models lose accuracy alike when salient features go?

    The saliency is taken once on the Keras model (vanilla gradient or SmoothGrad with
    tf-keras-vis, see `sgt_tfmot.explain.saliency_maps`) and ranks the features of both
    models' inputs: the curves measure whether the integer model still depends on the
    features that the Keras model's explanation points at. The perturbed images are made
    once and fed to every model; their randomness (ROAD's noise, random fills) is seeded, so
    the check is repeatable.

    Args:
      keras_model: The Keras classifier (QAT or float) the TFLite model was converted from.
      integer_model: Its integer version: an object with `predict(images) -> scores`
        (`sgt_tfmot.tflite.TFLiteModel`) or such a function.
      images: (N, ...) test images in the model's input range, N >= 1.
      labels: (N,) integer class ids.
      saliency: Precomputed saliency shaped like `images`; computed here when None.
      method: "vanilla" or "smoothgrad", when the saliency is computed here.
      smooth_samples: Noisy samples per image for SmoothGrad.
      fractions: Shares of units removed, each in [0, 1] (below 1 for ROAD).
      fill: The protocol's fill; None: its default (ROAD: noisy linear imputation; the
        per-pixel protocol: "mean", "zero" or "random").
      reduce_channels: How a pixel's channels are ranked together ("mean", "max"; None, every
        feature alone, for the per-pixel protocol only).
      seed: Seed of SmoothGrad's noise and of the protocol's randomness.
      batch_size: Batch size of the Keras model's predictions and gradients.
      export_model: For a k-bit QAT `keras_model`, its 8-bit export model: its curves are
        measured too, as a diagnosis (see `FidelityResult.export_gap`). Not judged.
      protocol: A name of `sgt_tfmot.explain.protocols` (default "road").
      protocol_options: Its further settings (patch, noise, blur_sigma, value_range).

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
    integer_predict = getattr(integer_model, "predict", integer_model)
    check_choice(method, attributions.feature_methods(), "method")
    if saliency is None:
        options = attributions.AttributionOptions(
            batch_size=batch_size, seed=seed, smooth_samples=smooth_samples
        )
        saliency = attributions.get(method).features(keras_model, images, labels, options)
    saliency = np.asarray(saliency, dtype=np.float32)
    if saliency.shape != images.shape:
        raise ValueError(
            f"`saliency` must be shaped like `images` {images.shape}. Received: {saliency.shape}"
        )

    removal = protocols.get(protocol)
    options = dataclasses.replace(
        protocol_options or protocols.ProtocolOptions(),
        fill=fill if fill is not None else (protocol_options.fill if protocol_options else None),
        seed=seed,
        reduce_channels=reduce_channels,
    )
    fill_title = removal.fill_title(options)  # checks the fill

    def predictor(model):
        return lambda x: model.predict(x, batch_size=batch_size, verbose=0)

    models = {"keras": predictor(keras_model), "tflite": integer_predict}
    if export_model is not None:
        models["export"] = predictor(export_model)
    measured = protocols.removal_curves(
        removal, models, images, labels, saliency, _check_fractions(fractions),
        ("top", "bottom"), options,
    )  # fmt: skip
    curves = {
        f"{name}_{order}": np.asarray(result.accuracy[order])
        for name, result in measured.items()
        for order in ("top", "bottom")
    }

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
        fill=fill_title,
        num_images=len(images),
        protocol=removal.name,
    )


def save_saliency_figure(
    path,
    images: np.ndarray,
    saliency: np.ndarray,
    labels: np.ndarray,
    scores: np.ndarray,
    max_images: int = 8,
    title: str = "integer model",
    class_names=None,
) -> None:
    """Writes a PNG: test images (top row), their saliency over them (bottom row), predictions.

    Each column shows one image with its label, and below it the channel mean of its
    saliency map drawn over the image (heat map with transparency, one colour scale for the
    row, colour bar on the right) with the class the integer model predicts ("ok" or
    "wrong"). Classes are named when `class_names` is given.

    Args:
      path: Where to write the PNG: a path or a binary file object.
      images: (N, H, W, C) images in 0..255.
      saliency: Saliency maps shaped like `images`.
      labels: (N,) class ids.
      scores: (N, num_classes) class scores of the integer model.
      max_images: At most this many columns, >= 1.
      title: Name of the predicting model in the figure's title.
      class_names: The dataset's class names, or None.

    Raises:
      ValueError: On shapes that do not match or a bad `max_images`.
    """
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
    heat = saliency[:count].mean(axis=-1)
    figure = new_figure(1.6 * count + 0.8, 3.8)
    axes = figure.subplots(2, count, squeeze=False)
    artist = None
    for i in range(count):
        top, bottom = axes[0, i], axes[1, i]
        overlay(top, images[i], np.zeros(images.shape[1:3]), alpha=0.0)
        top.set_title(f"label {class_name(labels[i], class_names)}", fontsize=8)
        artist = overlay(bottom, images[i], heat[i], vmax=float(heat.max()))
        verdict = "ok" if predicted[i] == labels[i] else "wrong"
        bottom.set_title(f"pred {class_name(predicted[i], class_names)} ({verdict})", fontsize=8)
    figure.colorbar(artist, ax=list(axes[1]), fraction=0.02, pad=0.02, label="|saliency|")
    figure.suptitle(f"Saliency (Keras model) over the images, and {title} predictions", fontsize=9)
    figure.savefig(path if hasattr(path, "write") else os.fspath(path), format="png")
