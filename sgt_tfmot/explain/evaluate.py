"""The interpretability evaluation of a set of models on the same test images, in memory.

`evaluate_models({"float": m1, "qat": m2}, x_test, y_test)` runs every measure of
`sgt_tfmot.explain` on each model and returns an `Evaluation` that `sgt_tfmot.explain.report`
turns into figures, JSON, CSV and markdown. Three image sets are used, all from the given
test images; the curve and agreement images are the first of the test images' stratified
order (`sgt_tfmot.data.stratified_order`, seeded; `stratify=False`: the first as given), so
any count of them holds every class in its share, also when the images arrive sorted by
class:

* curve images, `curve_images` of them: accuracy, accuracy-drop curves (top, bottom,
  random order; ranked by `curve_method`, the vanilla gradient by default, computed for the
  whole set by `input_gradients`) and the count of all-zero saliency maps;
* agreement images, `agreement_images` of them: per method, the concentration of each
  model's maps, the randomisation sanity check, and the agreement (Spearman ρ, top-10 %
  IoU) of every pair of models (i < j, in the order given);
* map images, `map_indices` or `num_images` drawn at random (seeded): the maps of the
  figure and each model's prediction.

Example:

    evaluation = evaluate_models({"float": float_model, "pact": qat_model}, x_test, y_test)
    for model in evaluation.models:
        print(model.name, model.accuracy, model.curves.areas())
"""

from __future__ import annotations

import dataclasses
import itertools
from collections.abc import Callable, Mapping, Sequence

import numpy as np

from sgt_tfmot import masking
from sgt_tfmot._checks import InputError, check_bool
from sgt_tfmot.data.subsets import describe_choice, stratified_order
from sgt_tfmot.explain import _validation as checks, attributions, protocols as removal
from sgt_tfmot.explain.attributions import (
    AttributionOptions,
    attribution_maps,
    input_gradients,
    penultimate_layer,
)
from sgt_tfmot.explain.curves import (
    DEFAULT_FRACTIONS,
    DropCurves,
    _check_fractions,
    drop_curves,
    predict,
)
from sgt_tfmot.explain.measures import (
    DEFAULT_SANITY_THRESHOLD,
    DEFAULT_TOP_FRACTION,
    Agreement,
    SanityCheck,
    _mean_std,
    agreement,
    concentration,
    sanity_check,
)
from sgt_tfmot.keras import keras

# The trainer's per-pixel rule first (the curves of earlier reports), then ROAD, the
# protocol the field accepts for faithfulness (docs/protocols.md).
DEFAULT_PROTOCOLS = ("pixel", "road")

__all__ = [
    "DEFAULT_PROTOCOLS",
    "default_methods",
    "Evaluation",
    "EvaluationOptions",
    "ModelEvaluation",
    "check_settings",
    "evaluate_models",
]


@dataclasses.dataclass(frozen=True)
class ModelEvaluation:
    """The measures of one model.

    Attributes:
      name: The model's name.
      accuracy: Its accuracy on the curve images.
      curves: Its removal curves under the first protocol, on the curve images
        (`curves.zero_saliency_images` counts the all-zero saliency maps).
      concentration: Method -> {"mean", "std": share of the saliency in the top
        `top_fraction` of the pixels, over the maps that are not all zero; "zero_maps"}.
      sanity: Method -> `SanityCheck`.
      penultimate_layer: The Grad-CAM layer, when a CAM method was run.
      protocols: Protocol name -> its removal curves (the first one is `curves`).
    """

    name: str
    accuracy: float
    curves: DropCurves
    concentration: dict[str, dict]
    sanity: dict[str, SanityCheck]
    penultimate_layer: str | None = None
    protocols: dict[str, DropCurves] = dataclasses.field(default_factory=dict)

    def sanity_failed(self, method: str) -> bool:
        """True when `method`'s sanity check ran on this model and failed."""
        check = self.sanity.get(method)
        return check is not None and not check.passed

    def to_dict(self) -> dict:
        return {
            "name": self.name,
            "accuracy": self.accuracy,
            "curves": self.curves.to_dict(),
            "concentration": self.concentration,
            "sanity": {method: check.to_dict() for method, check in self.sanity.items()},
            "penultimate_layer": self.penultimate_layer,
            "protocols": {name: curves.to_dict() for name, curves in self.protocols.items()},
        }


@dataclasses.dataclass(frozen=True)
class Evaluation:
    """What `evaluate_models` measured.

    Attributes:
      models: One `ModelEvaluation` per model, in the order given.
      agreements: One `Agreement` per pair of models (i < j) and method.
      methods: The attribution methods of the maps, agreement, concentration and sanity.
      map_indices: Indices (into the given images) of the figure's images.
      map_images: Those images; `map_labels` their labels.
      maps: (model name, method) -> (N, H, W) maps of the map images.
      predictions: Model name -> predicted class of each map image.
      settings: The arguments that shaped the numbers (sizes, fill, seed, ...).
      class_names: The dataset's class names, for the figures (None: ids).
    """

    models: list[ModelEvaluation]
    agreements: list[Agreement]
    methods: tuple[str, ...]
    map_indices: tuple[int, ...]
    map_images: np.ndarray
    map_labels: np.ndarray
    maps: dict[tuple[str, str], np.ndarray]
    predictions: dict[str, np.ndarray]
    settings: dict
    class_names: tuple[str, ...] | None = None

    def to_dict(self) -> dict:
        """Everything but the images and maps, JSON-ready."""
        return {
            "settings": self.settings,
            "methods": list(self.methods),
            "map_indices": list(self.map_indices),
            "map_labels": [int(label) for label in self.map_labels],
            "predictions": {
                name: [int(p) for p in predicted] for name, predicted in self.predictions.items()
            },
            "models": [model.to_dict() for model in self.models],
            "agreements": [item.to_dict() for item in self.agreements],
        }


def default_methods() -> tuple[str, ...]:
    """The registered methods that need gradients (occlusion only on request)."""
    return attributions.names(gradient_free=False)


def _check_methods(methods: Sequence[str] | None) -> tuple[str, ...]:
    if methods is None:
        return default_methods()
    if isinstance(methods, str):
        methods = [methods]
    methods = list(methods)
    for method in methods:
        if not attributions.supports(method):
            raise InputError(
                f"must each be one of {', '.join(map(repr, attributions.names()))}", "methods",
                methods,
            )  # fmt: skip
    if not methods or len(set(methods)) != len(methods):
        raise InputError(
            f"must name each of {', '.join(map(repr, attributions.names()))} at most once, and "
            "at least one",
            "methods",
            methods,
        )
    return tuple(methods)


def _map_indices(indices, num_images: int, count: int, seed: int) -> tuple[int, ...]:
    """The figure's images: `indices` checked against the `count` images, or `num_images`
    drawn at random (seeded)."""
    if indices is None:
        chosen = np.random.default_rng(seed).choice(count, min(num_images, count), replace=False)
        return tuple(int(i) for i in sorted(chosen))
    indices = list(indices)
    bad = [
        i
        for i in indices
        if isinstance(i, bool) or not isinstance(i, int | np.integer) or not 0 <= i < count
    ]
    if not indices or bad:
        raise ValueError(
            f"`map_indices` must be a non-empty list of test image indices in [0, {count}). "
            f"Received: {indices!r}"
        )
    return tuple(int(i) for i in indices)


def _curve_saliency(model, images, labels, method, options, seed) -> np.ndarray | None:
    """Scores shaped like the images for ranking the curves (None: `input_gradients`)."""
    if method == "vanilla":
        return None  # drop_curves' own fast path
    settings = AttributionOptions(seed=seed, **options)
    return attributions.get(method, "curve_method").features(model, images, labels, settings)


@dataclasses.dataclass(frozen=True)
class EvaluationOptions:
    """The settings of `evaluate_models`, checked (and made clean) once, when made.

    Make them before any slow work, so that a bad setting fails first; the CLI does.

    Attributes:
      methods: Attribution methods of the maps, agreement, concentration and sanity check:
        any of `attributions.names()` (the registry's, read when made; a tuple once checked);
        None: `default_methods()`.
      num_images: Map images drawn at random (seeded) when `map_indices` is None, >= 1.
      map_indices: Indices of the map images in the images (checked against them in
        `evaluate_models`).
      curve_images: This many images (at most N) give the curves, >= 1.
      agreement_images: This many images (at most N) give agreement, concentration and the
        sanity check, >= 1.
      stratify: True: the curve and agreement images are the first of the images'
        stratified order (`sgt_tfmot.data.stratified_order` with `seed`), each class in its
        share; False: the first images as given.
      curve_method: The method that ranks the features of the curves (one of `attributions.names()`;
        Grad-CAM maps rank pixels). Its sanity check runs too, methods or not.
      fractions: Shares removed, each in [0, 1] (see `accuracy_drop_curve`).
      fill: The per-pixel protocol's fill: "mean", "zero" or "random", the trainer's rules.
      protocols: Removal protocols of the curves, names of `sgt_tfmot.explain.protocols`
        (the first gives `ModelEvaluation.curves`).
      patch: Patch side of the region protocol, in pixels.
      region_fill: The region protocol's fill (see `protocols.region`).
      road_noise: ROAD's imputation noise, a share of the value range.
      blur_sigma: The deletion/insertion blur, in pixels.
      top_fraction: Share of the pixels in the top sets of the IoU and the concentration.
      smooth_samples, noise: SmoothGrad's settings (noise > 0).
      penultimate_layer: Grad-CAM layer name for every model; None finds each model's last
        convolution.
      sanity_threshold: The sanity check fails from this mean Spearman ρ on, in (0, 1).
      seed: Seed of the stratified order, the map images, random order, random fill,
        SmoothGrad and the weights of the sanity check.
      batch_size: Images per gradient or tf-keras-vis call, >= 1.

    Raises:
      ValueError: Naming the first bad setting and what it accepts.
    """

    methods: Sequence[str] | None = None
    num_images: int = 8
    map_indices: Sequence[int] | None = None
    curve_images: int = 500
    agreement_images: int = 64
    stratify: bool = True
    curve_method: str = "vanilla"
    fractions: Sequence[float] = DEFAULT_FRACTIONS
    fill: str = "mean"
    protocols: Sequence[str] = DEFAULT_PROTOCOLS
    patch: int = removal.ProtocolOptions.patch
    region_fill: str = "uniform"
    road_noise: float = removal.ProtocolOptions.noise
    blur_sigma: float = removal.ProtocolOptions.blur_sigma
    top_fraction: float = DEFAULT_TOP_FRACTION
    smooth_samples: int = AttributionOptions.smooth_samples
    noise: float = AttributionOptions.noise
    penultimate_layer: str | None = None
    sanity_threshold: float = DEFAULT_SANITY_THRESHOLD
    seed: int = 0
    batch_size: int = AttributionOptions.batch_size

    def __post_init__(self):
        clean = {"methods": _check_methods(self.methods)}
        checks.check_choice(self.curve_method, attributions.names(), "curve_method")
        checks.check_choice(self.fill, masking.FILLS, "fill")
        if self.map_indices is None:
            clean["num_images"] = checks.check_positive_int(self.num_images, "num_images")
        else:
            clean["map_indices"] = tuple(self.map_indices)
        noise = self.noise
        if isinstance(noise, bool) or not isinstance(noise, int | float) or not noise > 0:
            raise ValueError(f"`noise` must be a number > 0. Received: noise={noise!r}")
        positive, fraction = checks.check_positive_int, checks.check_open_fraction
        clean["curve_images"] = positive(self.curve_images, "curve_images")
        clean["agreement_images"] = positive(self.agreement_images, "agreement_images")
        clean["stratify"] = check_bool(self.stratify, "stratify")
        clean["fractions"] = tuple(_check_fractions(self.fractions))
        clean["top_fraction"] = fraction(self.top_fraction, "top_fraction")
        clean["smooth_samples"] = positive(self.smooth_samples, "smooth_samples")
        clean["noise"] = float(noise)
        clean["sanity_threshold"] = fraction(self.sanity_threshold, "sanity_threshold")
        clean["batch_size"] = positive(self.batch_size, "batch_size")
        clean["protocols"] = removal.parse(self.protocols, "protocols")
        checks.check_choice(self.region_fill, removal.get("region").fills, "region_fill")
        settings = removal.ProtocolOptions(
            patch=self.patch, noise=self.road_noise, blur_sigma=self.blur_sigma
        )
        for name in clean["protocols"]:
            self.protocol_options(name, settings)  # checks each protocol's fill
            if removal.get(name).fill(settings) == "imputation" and max(clean["fractions"]) >= 1:
                raise InputError(
                    f"must be < 1 with protocol {name!r} (its imputation needs a kept pixel)",
                    "fractions",
                    list(clean["fractions"]),
                )
        for name, value in clean.items():
            object.__setattr__(self, name, value)

    def protocol_options(
        self, name: str, base: removal.ProtocolOptions | None = None
    ) -> removal.ProtocolOptions:
        """The settings of protocol `name` (its fill checked): `fill` for the per-pixel one,
        `region_fill` for the region one, the default fill for the others."""
        base = base or removal.ProtocolOptions(
            patch=self.patch, noise=self.road_noise, blur_sigma=self.blur_sigma, seed=self.seed
        )
        fill = {"pixel": self.fill, "region": self.region_fill}.get(name)
        options = dataclasses.replace(base, fill=fill)
        removal.get(name).fill(options)
        return options

    @property
    def sanity_methods(self) -> tuple[str, ...]:
        """The methods whose sanity check runs: `methods` and the curves' `curve_method`."""
        return tuple(dict.fromkeys((*self.methods, self.curve_method)))

    @property
    def needs_cam(self) -> bool:
        """True when a Grad-CAM method is asked for (maps or curves): a layer is needed."""
        return bool({*self.methods, self.curve_method} & set(attributions.layer_methods()))

    def attribution(self, penultimate_layer: str | None) -> dict:
        """The keyword settings of `attribution_maps` for a model with that Grad-CAM layer."""
        return {
            "smooth_samples": self.smooth_samples,
            "noise": self.noise,
            "penultimate_layer": penultimate_layer,
            "batch_size": self.batch_size,
        }


def check_settings(**settings) -> dict:
    """The former check of `evaluate_models`' settings (use `EvaluationOptions`): the clean
    settings as a dict.

    Raises:
      ValueError: Naming the first bad setting and what it accepts.
    """
    options = EvaluationOptions(**settings)
    names = ("methods", "curve_method", "fill", "num_images", "curve_images")
    names += ("agreement_images", "fractions", "top_fraction", "smooth_samples", "noise")
    return {name: getattr(options, name) for name in (*names, "sanity_threshold", "batch_size")}


def evaluate_models(
    models: Mapping[str, keras.Model],
    images: np.ndarray,
    labels: np.ndarray,
    options: EvaluationOptions | None = None,
    *,
    progress: Callable[[str], None] | None = None,
    class_names: Sequence[str] | None = None,
    **settings,
) -> Evaluation:
    """Maps, accuracy-drop curves, agreement, concentration and sanity checks of models.

    Example:

        evaluate_models(models, x, y, methods=["vanilla"], curve_images=200)
        evaluate_models(models, x, y, EvaluationOptions(methods=["vanilla"], curve_images=200))

    Args:
      models: Name -> tf_keras classifier (float or QAT, float32 compute), at least one,
        all taking the `images`.
      images: (N, H, W, C) test images in the models' input range, N >= 1.
      labels: (N,) integer class ids.
      options: The settings (`EvaluationOptions`: methods, num_images, map_indices,
        curve_images, agreement_images, stratify, curve_method, fractions, fill, top_fraction,
        smooth_samples, noise, penultimate_layer, sanity_threshold, seed, batch_size);
        None: the defaults.
      progress: Called with a short message before each slow step.
      class_names: The dataset's class names, for the figures.
      **settings: Any field of `EvaluationOptions` by name, replacing that of `options`.

    Returns:
      An `Evaluation`.

    Raises:
      ValueError: On no model, an unknown method, bad sizes, images that do not fit a model,
        or a Grad-CAM request for a model without a convolution (naming the model).
      TypeError: On a keyword that is no setting.
    """
    if not models:
        raise ValueError("`models` must hold at least one model. Received: none")
    options = dataclasses.replace(options or EvaluationOptions(), **settings)
    images = np.asarray(images, dtype=np.float32)
    labels = checks.check_labels(images, labels)
    if images.ndim != 4 or not len(images):
        raise ValueError(
            f"`images` must be (N, height, width, channels) with N >= 1. Received: {images.shape}"
        )
    indices = _map_indices(options.map_indices, options.num_images, len(images), options.seed)
    layers = _check_models(models, images, labels, options)
    order = stratified_order(labels, options.seed) if options.stratify else np.arange(len(labels))
    curve, agree = order[: options.curve_images], order[: options.agreement_images]
    run = _Run(
        options,
        curve=(images[curve], labels[curve]),
        agree=(images[agree], labels[agree]),
        shown=(images[list(indices)], labels[list(indices)]),
        say=progress or (lambda message: None),
    )
    measured = {
        name: _evaluate_model(run, name, model, layers.get(name)) for name, model in models.items()
    }
    agreements = [
        agreement(
            measured[a].agreement_maps[method],
            measured[b].agreement_maps[method],
            options.top_fraction,
            model_a=a,
            model_b=b,
            method=method,
        )
        for method in options.methods
        for a, b in itertools.combinations(models, 2)
    ]
    return Evaluation(
        models=[m.evaluation for m in measured.values()],
        agreements=agreements,
        methods=options.methods,
        map_indices=indices,
        map_images=run.shown[0],
        map_labels=run.shown[1],
        maps={
            (name, method): maps for name, m in measured.items() for method, maps in m.maps.items()
        },
        predictions={name: m.predictions for name, m in measured.items()},
        settings=run.settings(len(images)),
        class_names=None if class_names is None else tuple(class_names),
    )


def _check_models(models, images, labels, options: EvaluationOptions) -> dict[str, str]:
    """Checks that every model takes the images (an integer model: gradient-free methods
    only); returns the Grad-CAM layer of each Keras model when a CAM method is asked for."""
    requested = (*options.methods, options.curve_method)
    gradient_free = set(attributions.names(gradient_free=True))
    layers = {}
    for name, model in models.items():
        if not isinstance(model, keras.Model):  # e.g. an integer .tflite: predictions only
            needing = [m for m in requested if m not in gradient_free]
            if needing:
                raise InputError(
                    f"Model {name!r} has no gradients (an integer model): only gradient-free "
                    f"methods ({', '.join(sorted(gradient_free))}) apply, not "
                    f"{', '.join(dict.fromkeys(needing))}; pass --methods occlusion "
                    "--curve_method occlusion."
                )
            continue
        try:
            checks.check_model_inputs(model, images[:1], labels[:1])
            if options.needs_cam:
                layers[name] = penultimate_layer(model, options.penultimate_layer)
        except ValueError as error:
            raise ValueError(f"Model {name!r}: {error}") from None
    return layers


@dataclasses.dataclass(frozen=True)
class _Run:
    """The checked settings and the three image sets of one `evaluate_models` call."""

    options: EvaluationOptions
    curve: tuple[np.ndarray, np.ndarray]  # (images, labels)
    agree: tuple[np.ndarray, np.ndarray]
    shown: tuple[np.ndarray, np.ndarray]
    say: Callable[[str], None]

    def settings(self, num_test_images: int) -> dict:
        """`Evaluation.settings`: the sizes and the settings that shaped the numbers."""
        options = self.options
        chosen = {
            kind: describe_choice(
                len(images), num_test_images, "test", options.seed if options.stratify else None
            )
            for kind, (images, _) in (("curve", self.curve), ("agreement", self.agree))
        }
        return {
            "num_test_images": num_test_images,
            "curve_images": len(self.curve[0]),
            "curve_images_chosen": chosen["curve"],
            "agreement_images": len(self.agree[0]),
            "agreement_images_chosen": chosen["agreement"],
            "stratified": options.stratify,
            "map_images": len(self.shown[0]),
            "curve_method": options.curve_method,
            "fractions": [float(f) for f in options.fractions],
            "fill": options.fill,
            "protocols": {
                name: {
                    "title": removal.get(name).title,
                    "unit": removal.get(name).unit_title(options.protocol_options(name)),
                    "fill": removal.get(name).fill_title(options.protocol_options(name)),
                    "measure": removal.get(name).measure,
                }
                for name in options.protocols
            },
            "top_fraction": options.top_fraction,
            "smooth_samples": options.smooth_samples,
            "noise": options.noise,
            "sanity_threshold": float(options.sanity_threshold),
            "seed": options.seed,
        }


@dataclasses.dataclass(frozen=True)
class _Measured:
    evaluation: ModelEvaluation
    agreement_maps: dict[str, np.ndarray]  # method -> maps of the agreement images
    maps: dict[str, np.ndarray]  # method -> maps of the map images
    predictions: np.ndarray  # predicted class of each map image


def _evaluate_model(run: _Run, name: str, model, penultimate_layer) -> _Measured:
    """Curves under each protocol, concentration, sanity checks, maps and predictions."""
    (x_curve, y_curve), (x_agree, y_agree), (x_map, y_map) = run.curve, run.agree, run.shown
    settings, options = run.options, run.options.attribution(penultimate_layer)
    seed, batch_size = settings.seed, settings.batch_size
    run.say(f"{name}: ranking the features of {len(x_curve)} images ({settings.curve_method})")
    ranking = _curve_saliency(model, x_curve, y_curve, settings.curve_method, options, seed)
    if ranking is None:  # the vanilla gradient, once for every protocol
        ranking = input_gradients(model, x_curve, y_curve, batch_size=max(batch_size, 256))
    measured = {}
    for protocol in settings.protocols:
        run.say(f"{name}: {protocol} curves on {len(x_curve)} images ({settings.curve_method})")
        measured[protocol] = drop_curves(
            model, x_curve, y_curve, ranking, name=name, method=settings.curve_method,
            fractions=settings.fractions, seed=seed, batch_size=max(batch_size, 256),
            protocol=protocol, protocol_options=settings.protocol_options(protocol),
        )  # fmt: skip
    curves = measured[settings.protocols[0]]
    shares, sanity, agreement_maps, maps = {}, {}, {}, {}
    for method in settings.sanity_methods:
        shown = method in settings.methods
        run.say(
            f"{name}: {method} maps{', concentration' if shown else ''} and sanity check on "
            f"{len(x_agree)} images"
        )
        agree = attribution_maps(model, x_agree, y_agree, method, seed=seed, **options)
        if isinstance(model, keras.Model):  # the check randomizes the weights
            sanity[method] = sanity_check(
                model, x_agree, y_agree, method, settings.sanity_threshold, seed, maps=agree,
                **options,
            )  # fmt: skip
        if not shown:
            continue
        agreement_maps[method] = agree
        share = concentration(agree, settings.top_fraction)
        mean, std = _mean_std(share)
        shares[method] = {"mean": mean, "std": std, "zero_maps": int(np.isnan(share).sum())}
        maps[method] = attribution_maps(model, x_map, y_map, method, seed=seed, **options)
    accuracy = curves.accuracy
    if accuracy is None:  # no x = 0 point among the fractions
        scores = predict(model, x_curve, max(batch_size, 256))
        accuracy = float(np.mean(scores.argmax(-1) == y_curve))
    return _Measured(
        evaluation=ModelEvaluation(
            name, accuracy, curves, shares, sanity, penultimate_layer, protocols=measured
        ),
        agreement_maps=agreement_maps,
        maps=maps,
        predictions=predict(model, x_map, batch_size).argmax(-1),
    )
