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

import sys

from absl import flags

from sgt_tfmot import _cli  # first: starts TensorFlow quietly
from sgt_tfmot._checks import InputError
from sgt_tfmot.explain import attributions, protocols
from sgt_tfmot.explain.evaluate import EvaluationOptions, default_methods
from sgt_tfmot.explanation import PROGRAM, REPORT_FILE, explain_models
from sgt_tfmot.masking import FILLS

__all__ = ["main"]

_D = EvaluationOptions()  # the defaults of the flags (and of `explain_models`)

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


def main(argv: list[str]) -> int:
    """Parses the command line, runs `sgt_tfmot.explanation.explain_models`, prints the
    summary.

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
    # Without --methods or --curve_method, the models' defaults (occlusion for a .tflite).
    chosen = {"methods": FLAGS.methods, "curve_method": FLAGS.curve_method}
    with _cli.progress(PROGRAM) as say:
        map_indices = _parse_indices(FLAGS.images)
        protocol = protocols.parse(FLAGS.protocol, "protocol")
        explanation = explain_models(
            FLAGS.model,
            FLAGS.out_dir,
            **_cli.model_inputs(FLAGS),
            report=FLAGS.report,
            overwrite=FLAGS.overwrite,
            progress=say,
            num_images=FLAGS.num_images,
            map_indices=map_indices,
            curve_images=FLAGS.curve_images,
            agreement_images=FLAGS.agreement_images,
            stratify=FLAGS.stratify,
            fill=FLAGS.fill,
            protocols=protocol,
            patch=FLAGS.patch,
            region_fill=FLAGS.region_fill,
            road_noise=FLAGS.road_noise,
            blur_sigma=FLAGS.blur_sigma,
            smooth_samples=FLAGS.smooth_samples,
            penultimate_layer=FLAGS.penultimate_layer,
            sanity_threshold=FLAGS.sanity_threshold,
            seed=FLAGS.seed,
            **{name: value for name, value in chosen.items() if value is not None},
        )
    print(explanation.summary)
    return _cli.EXIT_OK


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


if __name__ == "__main__":
    sys.exit(main(sys.argv))
