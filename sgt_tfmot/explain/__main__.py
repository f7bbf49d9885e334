"""Saliency maps, accuracy-drop curves and a report for saved models: `python -m sgt_tfmot.explain`.

Usage:

    python -m sgt_tfmot.explain --model PATH [--model PATH ...] --out_dir DIR
        [--dataset NAME] [--data_dir DIR] [--methods METHOD,...]
        [--num_images 8 | --images 3,17,42] [--curve_images 500] [--agreement_images 64]
        [--curve_method METHOD] [--protocol PROTOCOL,...]
        [--fill mean] [--patch 4] [--region_fill uniform] [--road_noise 0.01]
        [--blur_sigma 2] [--smooth_samples 20]
        [--penultimate_layer NAME] [--sanity_threshold 0.5] [--seed 0]
        [--report DIR/report.md] [--overwrite]

PATH is what the converter takes: a saved model file (.h5 / .keras), float or QAT, or the
output directory of `python -m sgt_tfmot.train` (its model.h5), or `zoo:NAME`; or an integer
`.tflite` file, explained as deployed (run in LiteRT) with the gradient-free methods
(occlusion). The dataset defaults to the
one in the training runs' metrics.json. A model saved under a mixed precision policy is
rebuilt with float32 layers first (as `sgt_tfmot.convert` does): gradients and tf-keras-vis
work in float32. Models are named after their run directory or file name.

Writes into --out_dir:

* maps.png: rows are test images (--images, or --num_images drawn with --seed), columns
  models x methods, with the label and each model's prediction;
* drop_curves.png, drop_curves.json, drop_curves.csv: accuracy (and true-class
  probability) after removing the most relevant (MoRF), least relevant (LeRF) or random
  x % of the units (x = 0, 10, ..., 90) of --curve_images test images, ranked by
  --curve_method saliency, under each removal protocol of --protocol (the first one's
  figure is drop_curves.png, the others' curves_NAME.png): `pixel` (the trainer's masking
  rule and --fill), `road` (ROAD, noisy linear imputation), `deletion` / `insertion`
  (RISE, blurred image), `region` (patches of --patch pixels, --region_fill); the area
  under each curve and whether MoRF falls below random order. Protocols only evaluate the
  model, so they work on a .tflite too;
* summary.json: every number, including concentration, the randomisation sanity check and
  the agreement of every pair of models (Spearman rho, top-10 % IoU) per method, on
  --agreement_images test images;
* report.md (or --report): the tables and figures together.

The curve and agreement images are taken in a stratified order of the test split (seeded by
--seed; --nostratify: its first N): any N of them hold every class in its share, also for
images that arrive sorted by class (an image folder); the report says how they were chosen.

Exit status: 0 when the files are written (a failed sanity check is a finding, reported in
the files and the summary), 2 on bad input (one line on stderr, nothing written). Existing
files are only replaced with --overwrite.
"""

from __future__ import annotations

import dataclasses
import json
import os
import sys
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
from absl import flags

from sgt_tfmot import (
    _cli,  # first: starts TensorFlow quietly
    data,
    saving,
)
from sgt_tfmot._checks import InputError
from sgt_tfmot._files import check_output_dir, check_output_file, write_outputs
from sgt_tfmot.explain import attributions, protocols, report as reports
from sgt_tfmot.explain.evaluate import (
    Evaluation,
    EvaluationOptions,
    default_methods,
    evaluate_models,
)
from sgt_tfmot.masking import FILLS
from sgt_tfmot.models import check_classifier, with_channel_axis
from sgt_tfmot.quantize import check_input_fits
from sgt_tfmot.quantizers import FixedRangeQuantizer

__all__ = ["Explanation", "explain_saved_models", "format_summary", "main"]

PROGRAM = "sgt_tfmot.explain"
_D = EvaluationOptions()  # the defaults of the flags and of `explain_saved_models`
METRICS_FILE = _cli.METRICS_FILE
FILES = {
    "maps": "maps.png",
    "curves": "drop_curves.png",
    "curves_json": "drop_curves.json",
    "curves_csv": "drop_curves.csv",
    "summary": "summary.json",
}
REPORT_FILE = "report.md"
EXIT_OK, EXIT_BAD_INPUT = _cli.EXIT_OK, _cli.EXIT_BAD_INPUT

# Own FlagValues, not absl's global FLAGS (which holds --dataset of sgt_tfmot.train), so the
# package's CLIs can be imported together in one process.
FLAGS = flags.FlagValues()
_IN = {"flag_values": FLAGS}
flags.DEFINE_multi_string("model", [], "A saved model or training run directory; repeat.", **_IN)
flags.DEFINE_string("out_dir", None, "Folder of the output files (created if missing).", **_IN)
flags.DEFINE_list("methods", None, "", **_IN)
_cli.live_help(FLAGS, "methods", lambda: (
    f"Attribution methods of the maps: any of {', '.join(attributions.names())} (default: "
    f"{','.join(default_methods())}; occlusion for a .tflite model)."
))  # fmt: skip
flags.DEFINE_integer(
    "num_images", _D.num_images, "Test images in maps.png, drawn with --seed.", **_IN
)
flags.DEFINE_list("images", None, "Indices of the test images in maps.png (not random).", **_IN)
flags.DEFINE_integer("curve_images", _D.curve_images, "Test images of the drop curves.", **_IN)
flags.DEFINE_bool(
    "stratify", _D.stratify, "Take the curve and agreement images in a stratified order of "
    "the test split (seeded by --seed); --nostratify: its first N.", **_IN,
)  # fmt: skip
flags.DEFINE_integer(
    "agreement_images",
    _D.agreement_images,
    "Test images of agreement, concentration, sanity.",
    **_IN,
)
flags.DEFINE_string(
    "curve_method", None, f"Saliency ranking the drop curves (default: {_D.curve_method}; "
    "occlusion for a .tflite model).", **_IN,
)  # fmt: skip
flags.DEFINE_list("protocol", list(_D.protocols), "", **_IN)
_cli.live_help(FLAGS, "protocol", lambda: (
    "Removal protocols of the curves, any of: " + "; ".join(
        f"{p.name} = {p.title}, {p.unit}s, fills {'/'.join(p.fills)}, {p.measure} ({p.reference})"
        for p in protocols.REGISTRY
    ) + ". The first gives drop_curves.png; each other one curves_NAME.png."
))  # fmt: skip
flags.DEFINE_string(
    "fill", _D.fill, f"Fill of the pixel protocol (the trainer's): {', '.join(FILLS)}.", **_IN
)
flags.DEFINE_integer("patch", _D.patch, "Patch side of the region protocol, pixels.", **_IN)
flags.DEFINE_string(
    "region_fill", _D.region_fill,
    f"Fill of the region protocol: {', '.join(protocols.get('region').fills)}.", **_IN,
)  # fmt: skip
flags.DEFINE_float(
    "road_noise", _D.road_noise, "ROAD's imputation noise, share of the value range.", **_IN
)
flags.DEFINE_float(
    "blur_sigma", _D.blur_sigma, "Blur of the deletion/insertion fill, pixels.", **_IN
)
flags.DEFINE_integer(
    "smooth_samples", _D.smooth_samples, "Noisy samples per image for SmoothGrad.", **_IN
)
flags.DEFINE_string(
    "penultimate_layer", None, "Grad-CAM layer name (default: the last conv layer).", **_IN
)
flags.DEFINE_float(
    "sanity_threshold",
    _D.sanity_threshold,
    "The sanity check fails from this mean Spearman rho on.",
    **_IN,
)
flags.DEFINE_integer("seed", _D.seed, "Seed of image choice, random order and fill, noise.", **_IN)
flags.DEFINE_string("report", None, f"Markdown report path; default OUT_DIR/{REPORT_FILE}.", **_IN)
flags.DEFINE_bool(
    "overwrite", False, "Replace output files this tool wrote before (never others).", **_IN
)
_cli.define_shared_flags(FLAGS)  # --dataset, --data_dir, --zoo_dir, --help, ...


@dataclasses.dataclass(frozen=True)
class Explanation:
    """What `explain_saved_models` did.

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


def _model_names(files: Sequence[Path], paths: Sequence[Path]) -> list[str]:
    """Run directory name or file stem per model, made unique with "-2", "-3", ..."""
    names = []
    for file, path in zip(files, paths, strict=True):
        base = path.name if path.is_dir() else file.stem
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


def _parse_indices(values) -> list[int] | None:
    if values is None:
        return None
    try:
        return [int(value) for value in values]
    except (TypeError, ValueError):
        raise InputError(
            f"--images must be a comma-separated list of test image indices. Received: "
            f"{','.join(map(str, values))}"
        ) from None


def explain_saved_models(
    models: Sequence[str | os.PathLike],
    out_dir: str | os.PathLike,
    *,
    dataset: str | None = None,
    data_dir: str | os.PathLike | None = None,
    methods: Sequence[str] | None = None,
    num_images: int = _D.num_images,
    images: Sequence[int] | None = None,
    curve_images: int = _D.curve_images,
    agreement_images: int = _D.agreement_images,
    curve_method: str | None = None,
    stratify: bool = _D.stratify,
    fill: str = _D.fill,
    protocol: Sequence[str] | str = _D.protocols,
    patch: int = _D.patch,
    region_fill: str = _D.region_fill,
    road_noise: float = _D.road_noise,
    blur_sigma: float = _D.blur_sigma,
    smooth_samples: int = _D.smooth_samples,
    penultimate_layer: str | None = None,
    sanity_threshold: float = _D.sanity_threshold,
    seed: int = _D.seed,
    report: str | os.PathLike | None = None,
    overwrite: bool = False,
    trust_model_code: bool = False,
    data_options: dict | None = None,
    progress: Callable[[str], None] | None = None,
) -> Explanation:
    """Loads saved models and a dataset's test split, evaluates, writes the files.

    Args:
      models: Saved model files or training run directories, at least one.
      out_dir: Folder of the output files (created if missing).
      dataset: Dataset name; None reads it from the runs' metrics.json.
      data_dir: Folder with DATASET.npz; None: the run's, then `sgt_tfmot.data`'s default.
      methods, num_images, curve_images, agreement_images, curve_method, fill,
      smooth_samples, penultimate_layer, sanity_threshold, seed: See `evaluate_models`.
      protocol, patch, region_fill, road_noise, blur_sigma: The removal protocols and their
        settings (`EvaluationOptions.protocols`, ...).
      images: Test image indices of the figure (instead of `num_images` random ones).
      stratify: Take the curve and agreement images in the test split's stratified order
        (`sgt_tfmot.data.stratified_order`, seeded); False: its first N.
      report: Path of the markdown report; default OUT_DIR/report.md.
      overwrite: Replace output files this tool wrote before (`sgt_tfmot._files`).
      trust_model_code: Load models whose layers carry Python code.
      progress: Called with a short message before each slow step.

    Returns:
      An `Explanation`.

    Raises:
      InputError (a ValueError): On a missing or non-Keras model, a model that does not fit
        the dataset, an unknown dataset, bad settings, a Grad-CAM request for a model
        without a convolution, or output files that exist without `overwrite`.
    """
    say = progress or (lambda message: None)
    if not models:
        raise InputError("Pass at least one --model PATH (a model file or run directory).")
    integer_only = any(str(path).endswith(".tflite") for path in models)
    if methods is None:  # gradient methods for Keras models; occlusion for a .tflite
        methods = ("occlusion",) if integer_only else default_methods()
    if curve_method is None:
        curve_method = "occlusion" if integer_only else _D.curve_method
    options = EvaluationOptions(
        methods=methods, num_images=num_images, map_indices=images, curve_images=curve_images,
        agreement_images=agreement_images, curve_method=curve_method, fill=fill,
        protocols=protocols.parse(protocol, "protocol"), patch=patch, region_fill=region_fill,
        road_noise=road_noise, blur_sigma=blur_sigma, smooth_samples=smooth_samples,
        penultimate_layer=penultimate_layer,
        sanity_threshold=sanity_threshold, seed=seed, stratify=stratify,
    )  # fmt: skip
    paths = _output_paths(out_dir, report, overwrite, options.protocols)
    loaded, files = _load_models(models, trust_model_code)
    paths_in = [file.parent if file.name == saving.RUN_MODEL_FILE else file for file in files]
    dataset, data_dir, _, opening = _cli.resolve_dataset(dataset, data_dir, files, data_options)
    info, arrays = data.open_dataset(dataset, data_dir, **opening)
    _check_models_fit(loaded, paths_in, info, options.needs_cam, penultimate_layer)
    x_test, y_test = arrays.split("test")
    for model, path in zip(loaded, paths_in, strict=True):
        what = f"the {dataset} images of {path}"
        if isinstance(model, _IntegerModel):
            model.check_images(x_test, what)
        else:
            check_input_fits(model, x_test, what)
    names = _model_names(files, paths_in)
    evaluation = evaluate_models(
        dict(zip(names, loaded, strict=True)),
        x_test.astype(np.float32),
        y_test,
        options,
        progress=progress,
        class_names=info.class_names,
    )
    say("writing the figures and the report")
    sources = {
        "dataset": dataset,
        "data_dir": data_dir,
        "num_test_images": len(x_test),
        "model_paths": {name: str(path) for name, path in zip(names, paths_in, strict=True)},
    }
    write_outputs(_output_contents(evaluation, paths, sources), PROGRAM)
    return Explanation(evaluation, paths, format_summary(evaluation, paths))


def _load_models(models, trust_model_code: bool) -> tuple[list, list[Path]]:
    """The models (float32 Keras models; `_IntegerModel` for a .tflite) and their files."""
    loaded, files = [], []
    for path in map(str, models):  # no progress messages before the input is checked
        if path.endswith(".tflite"):
            files.append(Path(path))
            with _cli.native_output_captured():  # LiteRT's delegate notice
                loaded.append(_IntegerModel(Path(path)))
            continue
        model = saving.load_model(path, trust_code=trust_model_code)
        files.append(saving.resolve_model_path(path))
        loaded.append(with_channel_axis(saving.float32_model(model), path))
    return loaded, files


def _check_models_fit(loaded, paths_in, info, cam: bool, penultimate_layer) -> None:
    """Each model takes the dataset's images and classes; with `cam` (a Grad-CAM method
    asked for) each Keras model has `penultimate_layer` (None: a last convolution)."""
    for model, path in zip(loaded, paths_in, strict=True):
        if isinstance(model, _IntegerModel):
            model.check_fits(info)
            continue
        check_classifier(model, str(path), info.image_shape, info.num_classes)
        if cam:
            try:
                attributions.penultimate_layer(model, penultimate_layer)
            except ValueError as error:
                raise InputError(f"{path}: {error}") from None


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
        "models": ", ".join(f"{name} = `{path}`" for name, path in sources["model_paths"].items()),
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
        areas = model.curves.areas()
        auc = ", ".join(f"{order} {area:.3f}" for order, area in areas.items())
        failed = [m for m, check in model.sanity.items() if not check.passed]
        sanity = "sanity passed" if not failed else f"sanity FAILED ({', '.join(failed)})"
        if not model.sanity:  # a .tflite: no weights to randomise
            sanity = "sanity n/a (integer model)"
        lines.append(
            f"{model.name}: accuracy {100 * model.accuracy:.2f} %, AUC {auc}, "
            f"{model.curves.zero_saliency_images} zero-saliency images, {sanity}"
        )
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


def main(argv: list[str]) -> int:
    """Parses the command line, runs `explain_saved_models`, prints the summary.

    Returns:
      The exit status: 0 files written, 2 bad input.
    """
    return _cli.run_main(argv, PROGRAM, FLAGS, __name__, _explain)


def _explain(positional: list[str]) -> int:
    if positional:
        raise _cli.UsageError(f"unexpected arguments: {' '.join(positional)} (use --model PATH).")
    if not FLAGS.model:
        raise _cli.UsageError("pass at least one --model PATH (a model file or a run directory).")
    if not FLAGS.out_dir:
        raise _cli.UsageError("pass --out_dir DIR for the output files.")
    with _cli.progress(PROGRAM) as say:
        explanation = _explain_with(say)
    print(explanation.summary)
    return EXIT_OK


def _explain_with(say) -> Explanation:
    return explain_saved_models(
        FLAGS.model,
        FLAGS.out_dir,
        dataset=FLAGS.dataset,
        data_dir=FLAGS.data_dir,
        methods=FLAGS.methods,
        num_images=FLAGS.num_images,
        images=_parse_indices(FLAGS.images),
        curve_images=FLAGS.curve_images,
        agreement_images=FLAGS.agreement_images,
        curve_method=FLAGS.curve_method,
        stratify=FLAGS.stratify,
        fill=FLAGS.fill,
        protocol=FLAGS.protocol,
        patch=FLAGS.patch,
        region_fill=FLAGS.region_fill,
        road_noise=FLAGS.road_noise,
        blur_sigma=FLAGS.blur_sigma,
        smooth_samples=FLAGS.smooth_samples,
        penultimate_layer=FLAGS.penultimate_layer,
        sanity_threshold=FLAGS.sanity_threshold,
        seed=FLAGS.seed,
        report=FLAGS.report,
        overwrite=FLAGS.overwrite,
        trust_model_code=FLAGS.trust_model_code,
        data_options={name: FLAGS[name].value for name in _cli.DATA_OPTIONS},
        progress=say,
    )


if __name__ == "__main__":
    sys.exit(main(sys.argv))
