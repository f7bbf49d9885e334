"""`explain_models`: the work of `python -m sgt_tfmot.explain`, callable from Python.

The library behind the explain tool, as `sgt_tfmot.training` is `train`'s and
`sgt_tfmot.conversion` is `convert`'s: models (saved files, training run directories,
`zoo:NAME`, integer `.tflite` files, or Keras models in memory) and a dataset's test split in,
the tool's files out (maps.png, drop_curves.png/.json/.csv, curves_NAME.png, summary.json,
report.md), the same bytes as the command line writes for the same settings.

    paths      = _output_paths(...)        the files to write: writable, replaced only if ours
    loaded     = _load_models(...)         Keras models in float32 (files loaded safely);
                                           .tflite files run in LiteRT
    dataset    = _cli.resolve_dataset(...) `dataset`, else the training runs' metrics.json
    evaluation = evaluate_models(...)      `sgt_tfmot.explain.evaluate`
    write_outputs(_output_contents(...))   figures, curves, summary and report, atomically

Example:

    from sgt_tfmot.explain import EvaluationOptions
    from sgt_tfmot.explanation import explain_models

    explanation = explain_models(
        ["zoo:mnist-w8a8-sgt-1ep", my_keras_model], "explain", dataset="mnist_subset",
        options=EvaluationOptions(curve_images=200, protocols=("pixel", "road")),
    )
    print(explanation.summary)                      # what the command line prints
    explanation.evaluation.models[0].curves.areas()  # the numbers, typed
"""

from __future__ import annotations

import dataclasses
import json
import os
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np

from sgt_tfmot import _cli, data, keras3, saving
from sgt_tfmot._checks import InputError
from sgt_tfmot._files import check_output_dir, check_output_file, write_outputs
from sgt_tfmot.explain import attributions, report as reports
from sgt_tfmot.explain.evaluate import Evaluation, EvaluationOptions, evaluate_models
from sgt_tfmot.keras import keras
from sgt_tfmot.models import check_classifier, with_channel_axis
from sgt_tfmot.quantize import check_input_fits
from sgt_tfmot.quantizers import FixedRangeQuantizer

__all__ = ["Explanation", "default_options", "explain_models", "format_summary"]

PROGRAM = "sgt_tfmot.explain"
FILES = {
    "maps": "maps.png",
    "curves": "drop_curves.png",
    "curves_json": "drop_curves.json",
    "curves_csv": "drop_curves.csv",
    "summary": "summary.json",
}
REPORT_FILE = "report.md"


@dataclasses.dataclass(frozen=True)
class Explanation:
    """What `explain_models` did.

    Attributes:
      evaluation: The measures (`sgt_tfmot.explain.evaluate.Evaluation`).
      files: Kind ("maps", "curves", "curves_json", "curves_csv", "summary", "report") ->
        the path written.
      summary: The human summary printed by the CLI.
    """

    evaluation: Evaluation
    files: dict[str, Path]
    summary: str


class _IntegerModel:
    """A .tflite classifier as the explain tool sees it: a name, predictions (in LiteRT)."""

    def __init__(self, path: Path):
        from sgt_tfmot.tflite.runtime import TFLiteModel

        if not path.is_file():
            raise InputError(f"No model at {path}: the path does not exist.")
        try:
            self.runtime = TFLiteModel(path)
        except (ValueError, RuntimeError) as error:
            first = str(error).strip().splitlines()[0] if str(error).strip() else type(error)
            raise InputError(f"{path} is not a runnable .tflite classifier: {first}") from None
        self.path, self.name = path, path.stem
        self.feed = None  # how the data's images go in: set by `check_fits`
        shape = tuple(int(d) for d in self.runtime.output["shape"])
        if len(shape) != 2 or shape[-1] < 2:
            raise InputError(
                f"{path}: expected a classifier with output (batch, classes); it gives {shape}."
            )
        self.num_classes = shape[-1]

    def check_fits(self, info) -> None:
        """Checks the file against the data. One-channel images go into a file converted
        with --rgb_input (RGB input in front of a one-channel model) repeated into three
        channels, as convert feeds it (`sgt_tfmot.tflite.converter.grey_to_rgb`), and into
        a file whose input has no channel axis (H, W) without theirs."""
        shape, taken = tuple(info.image_shape), self.runtime.input_shape
        if shape[-1] == 1 and taken == (*shape[:-1], 3):
            self.feed = "rgb"
        elif shape[-1] == 1 and taken == shape[:-1]:
            self.feed = "no channel axis"
        if taken != shape and self.feed is None:
            raise InputError(
                f"{self.path}: the model's input shape {self.runtime.input_shape} does not fit "
                f"the images {tuple(info.image_shape)} of the data."
            )
        if self.num_classes != info.num_classes:
            raise InputError(
                f"{self.path}: the model has {self.num_classes} outputs but the data has "
                f"{info.num_classes} classes."
            )

    def check_images(self, images, what: str) -> None:
        """Refuses images that the file's input quantization would binarise or clip (the
        rule of `FixedRangeQuantizer.fits`: a file converted on [0, 1] images, fed pixels)."""
        scale, zero_point = self.runtime.input["quantization"]
        if not scale:
            return  # a float input
        bounds = np.iinfo(self.runtime.input["dtype"])
        grid = FixedRangeQuantizer(
            scale * (bounds.min - zero_point), scale * (bounds.max - zero_point)
        )
        fits, smallest, largest = grid.fits(np.asarray(images, np.float32))
        if not bool(fits):
            advice = "explain feeds the dataset's 0..255 pixels, as an app does: convert on those"
            raise InputError(
                f"{self.path}: " + grid.misfit(what, (float(smallest), float(largest)), advice)
            )

    def predict(self, images):
        if self.feed == "rgb":
            from sgt_tfmot.tflite.converter import grey_to_rgb

            images = grey_to_rgb(images)
        elif self.feed == "no channel axis":
            images = images[..., 0]
        return self.runtime.predict(images)


@dataclasses.dataclass(frozen=True)
class _Loaded:
    """A model ready for the evaluation, and where it came from.

    Attributes:
      model: A float32 tf_keras classifier, or an `_IntegerModel`.
      file: The model file (a run directory's model.h5), or None for a model in memory.
      path: What the reports name: the run directory, the file, or None (in memory).
      base_name: Its name before it is made unique: the run directory's or file's, or the
        Keras model's `name`.
    """

    model: object
    file: Path | None
    path: Path | None
    base_name: str

    @property
    def what(self) -> str:
        """How messages name it."""
        return str(self.path) if self.path is not None else f"model {self.base_name!r}"


def _is_tflite(model) -> bool:
    return isinstance(model, str | os.PathLike) and str(model).endswith(".tflite")


def _is_keras_model(model) -> bool:
    return isinstance(model, keras.Model) or keras3.is_keras3_model(model)


def default_options(models: Sequence) -> EvaluationOptions:
    """The default settings for `models`: `EvaluationOptions()`, or, when one of them is an
    integer .tflite (no gradients), occlusion as the maps' method and the curves' ranking."""
    if any(_is_tflite(model) for model in models):
        return EvaluationOptions(methods=("occlusion",), curve_method="occlusion")
    return EvaluationOptions()


def explain_models(
    models: Sequence[str | os.PathLike | keras.Model],
    out_dir: str | os.PathLike,
    options: EvaluationOptions | None = None,
    *,
    dataset: str | None = None,
    data_dir: str | os.PathLike | None = None,
    data_options: dict | None = None,
    report: str | os.PathLike | None = None,
    overwrite: bool = False,
    trust_model_code: bool = False,
    progress: Callable[[str], None] | None = None,
    **settings,
) -> Explanation:
    """Evaluates models on a dataset's test split and writes the explain tool's files.

    Example:

        explain_models(["runs/sgt", "model.tflite"], "out", curve_images=200)
        explain_models([keras_model], "out", EvaluationOptions(methods=["vanilla"]),
                       dataset="mnist_subset")

    Args:
      models: At least one of: a saved model file (.h5 / .keras, float or QAT, tf_keras or
        Keras 3), a `python -m sgt_tfmot.train` run directory (its model.h5), `zoo:NAME`,
        an integer .tflite file (run in LiteRT: gradient-free methods only), or a Keras
        model object (tf_keras or Keras 3). A model saved or built under a mixed precision
        policy is rebuilt with float32 layers first. Named after the run directory, the
        file, or the Keras model's `name`, made unique with "-2", "-3", ...
      out_dir: Folder of the output files (created if missing).
      options: The settings of the evaluation (`EvaluationOptions`: methods, image counts,
        protocols and their fills, seed, ...); None: `default_options(models)`.
      dataset: Dataset reference (`sgt_tfmot.data`); None reads it from the training runs'
        metrics.json (a model in memory or from elsewhere needs it).
      data_dir: Folder with DATASET.npz; None: the run's, then `sgt_tfmot.data`'s default.
      data_options: How an image-folder dataset is read (image_size, color_mode,
        validation_split; `sgt_tfmot.data.options`); default: the training run's.
      report: Path of the markdown report; default OUT_DIR/report.md.
      overwrite: Replace output files this tool wrote before (`sgt_tfmot._files`).
      trust_model_code: Load models whose layers carry Python code.
      progress: Called with a short message before each slow step.
      **settings: Any field of `EvaluationOptions` by name, replacing that of `options`
        (as in `evaluate_models`).

    Returns:
      An `Explanation`: the evaluation, the files written and the CLI's summary.

    Raises:
      InputError (a ValueError): On a missing or non-Keras model, a model that does not fit
        the dataset, an unknown dataset, bad settings, a Grad-CAM request for a model
        without a convolution, or output files that exist without `overwrite`; before any
        file is written.
      TypeError: On a keyword that is no setting.
    """
    if not models:
        raise InputError("Pass at least one --model PATH (a model file or run directory).")
    options = dataclasses.replace(options or default_options(models), **settings)
    paths = _output_paths(out_dir, report, overwrite, options.protocols)
    loaded = _load_models(models, trust_model_code)
    files = [entry.file for entry in loaded if entry.file is not None]
    dataset, data_dir, _, opening = _cli.resolve_dataset(dataset, data_dir, files, data_options)
    info, arrays = data.open_dataset(dataset, data_dir, **opening)
    _check_models_fit(loaded, info, options.needs_cam, options.penultimate_layer)
    x_test, y_test = arrays.split("test")
    for entry in loaded:
        what = f"the {dataset} images of {entry.what}"
        if isinstance(entry.model, _IntegerModel):
            entry.model.check_images(x_test, what)
        else:
            check_input_fits(entry.model, x_test, what)
    names = _model_names([entry.base_name for entry in loaded])
    evaluation = evaluate_models(
        dict(zip(names, [entry.model for entry in loaded], strict=True)),
        x_test.astype(np.float32),
        y_test,
        options,
        progress=progress,
        class_names=info.class_names,
    )
    (progress or (lambda message: None))("writing the figures and the report")
    sources = {
        "dataset": dataset,
        "data_dir": data_dir,
        "num_test_images": len(x_test),
        "model_paths": {
            name: None if entry.path is None else str(entry.path)
            for name, entry in zip(names, loaded, strict=True)
        },
    }
    write_outputs(_output_contents(evaluation, paths, sources), PROGRAM)
    return Explanation(evaluation, paths, format_summary(evaluation, paths))


def _model_names(bases: Sequence[str]) -> list[str]:
    """The names made unique with "-2", "-3", ..."""
    names = []
    for base in bases:
        name, count = base, 1
        while name in names:
            count += 1
            name = f"{base}-{count}"
        names.append(name)
    return names


def _output_paths(out_dir, report, overwrite: bool, names=()) -> dict[str, Path]:
    """The output files, checked before any work: writable, and replaced only if ours. The
    curves of the protocols after the first go to curves_NAME.png."""
    out_dir = check_output_dir(out_dir, "out_dir")
    paths = {kind: out_dir / name for kind, name in FILES.items()}
    paths |= {f"curves_{name}": out_dir / f"curves_{name}.png" for name in names[1:]}
    paths["report"] = out_dir / REPORT_FILE if report is None else Path(report)
    for kind, path in paths.items():
        check_output_file(path, "report" if kind == "report" else "out_dir", overwrite)
    return paths


def _load_models(models, trust_model_code: bool) -> list[_Loaded]:
    """The models: float32 Keras models (a model taking (H, W) images rebuilt with a channel
    axis), an `_IntegerModel` for a .tflite."""
    loaded = []
    for model in models:  # no progress messages before the input is checked
        if _is_keras_model(model):
            if keras3.is_keras3_model(model):
                model = keras3.from_keras3(model)
            what = f"model {model.name!r}"
            keras_model = with_channel_axis(saving.float32_model(model), what)
            loaded.append(_Loaded(keras_model, None, None, model.name))
            continue
        path = str(model)
        if path.endswith(".tflite"):
            with _cli.native_output_captured():  # LiteRT's delegate notice
                integer = _IntegerModel(Path(path))
            loaded.append(_Loaded(integer, Path(path), Path(path), Path(path).stem))
            continue
        keras_model = saving.load_model(path, trust_code=trust_model_code)
        file = saving.resolve_model_path(path)
        keras_model = with_channel_axis(saving.float32_model(keras_model), path)
        shown = file.parent if file.name == saving.RUN_MODEL_FILE else file
        base = shown.name if shown.is_dir() else file.stem
        loaded.append(_Loaded(keras_model, file, shown, base))
    return loaded


def _check_models_fit(loaded: Sequence[_Loaded], info, cam: bool, penultimate_layer) -> None:
    """Each model takes the dataset's images and classes; with `cam` (a Grad-CAM method
    asked for) each Keras model has `penultimate_layer` (None: a last convolution)."""
    for entry in loaded:
        if isinstance(entry.model, _IntegerModel):
            entry.model.check_fits(info)
            continue
        check_classifier(entry.model, entry.what, info.image_shape, info.num_classes)
        if cam:
            try:
                attributions.penultimate_layer(entry.model, penultimate_layer)
            except ValueError as error:
                raise InputError(f"{entry.what}: {error}") from None


def _output_contents(evaluation: Evaluation, paths: dict[str, Path], sources: dict) -> dict:
    """Output path -> bytes: the two figures, the curves (JSON, CSV), summary and report."""
    dataset, data_dir = sources["dataset"], sources["data_dir"]
    report_dir = paths["report"].resolve().parent
    links = {
        kind: os.path.relpath(path.resolve(), report_dir)
        for kind, path in paths.items()
        if kind != "report"
    }
    context = {
        "dataset": f"{dataset} (test split, {sources['num_test_images']} images"
        + (f", from {data_dir})" if data_dir else ")"),
        "models": ", ".join(
            f"{name} (a Keras model in memory)" if path is None else f"{name} = `{path}`"
            for name, path in sources["model_paths"].items()
        ),
    }
    summary = {
        "dataset": dataset,
        "data_dir": data_dir,
        "stratified": evaluation.settings["stratified"],
        "model_paths": sources["model_paths"],
        **evaluation.to_dict(),
    }
    return {
        paths["maps"]: reports.maps_figure(evaluation),
        paths["curves"]: reports.curves_figure(evaluation),
        **{
            paths[f"curves_{name}"]: reports.curves_figure(evaluation, name)
            for name in list(evaluation.settings["protocols"])[1:]
        },
        paths["curves_json"]: (
            json.dumps({"dataset": dataset, **reports.curves_json(evaluation)}, indent=2) + "\n"
        ).encode(),
        paths["curves_csv"]: reports.curves_csv(evaluation).encode(),
        paths["summary"]: (json.dumps(summary, indent=2) + "\n").encode(),
        paths["report"]: reports.markdown_report(evaluation, links, context=context).encode(),
    }


def format_summary(evaluation: Evaluation, files: dict[str, Path]) -> str:
    """The CLI's summary: one line per model, the agreements, the files written."""
    lines = []
    for model in evaluation.models:
        failed = [m for m, check in model.sanity.items() if not check.passed]
        sanity = "sanity passed" if not failed else f"sanity FAILED ({', '.join(failed)})"
        if not model.sanity:  # a .tflite: no weights to randomise
            sanity = "sanity n/a (integer model)"
        lines.append(
            f"{model.name}: accuracy {100 * model.accuracy:.2f} %, "
            f"{model.curves.zero_saliency_images} zero-saliency images, {sanity}"
        )  # the areas: one line per protocol below
        for curves in model.protocols.values():
            areas = curves.headline_areas()
            below = reports.top_below_random(curves)
            mark = " (ranking FAILED its sanity check)" if curves.method in failed else ""
            lines.append(
                f"  {reports.protocol_title(curves)}, {curves.measure} AUC: "
                + ", ".join(f"{reports.ORDER_TITLES[o]} {a:.3f}" for o, a in areas.items())
                + ("" if below is None else f"; MoRF below random: {'yes' if below else 'no'}")
                + mark
            )
    for item in evaluation.agreements:
        rho = "n/a" if item.spearman_mean is None else f"{item.spearman_mean:.2f}"
        iou = "n/a" if item.iou_mean is None else f"{item.iou_mean:.2f}"
        lines.append(
            f"agreement {item.model_a} vs {item.model_b} ({item.method}): Spearman {rho}, IoU {iou}"
        )
    lines.append("Wrote " + ", ".join(str(path) for path in files.values()))
    return "\n".join(lines)
