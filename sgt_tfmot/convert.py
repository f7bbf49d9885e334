"""Integer TFLite export with release checks: `python -m sgt_tfmot.convert --int8 MODEL ...`.

Converts a trained classifier (a QAT model from `sgt_tfmot.quantize_model`, or a float model
quantized after training on calibration images) to a full-integer .tflite with a fixed
batch of 1, then checks the result in LiteRT on the test split of its dataset
(`sgt_tfmot.conversion.checks`): test accuracy against the Keras model, top-1 agreement (shown
beside what rounding alone costs: the Keras model's agreement with itself after a one-ulp
change of its weights, since a 4-bit model can be too sensitive to rounding for any runtime
to agree with it much better), and saliency fidelity (the integer model must lose accuracy
like the Keras model when the features the Keras model's saliency ranks highest, or lowest,
are removed). It also runs every registered deployment target on the file
(`sgt_tfmot.tflite.targets`: the Edge TPU, MediaPipe, TensorFlow Lite Micro) and converts a
float32 TFLite of the same network as the size baseline.

Usage:

    python -m sgt_tfmot.convert --int8 MODEL --output model.tflite [--uint8]
        [--dataset NAME --data_dir DIR] [--calibration_samples 500] [--num_test N]
        [--fidelity_images 500] [--saliency METHOD] [--report report.json]
        [--fidelity_protocol PROTOCOL] [--fidelity_fill FILL]
        [--figure saliency.png] [--max_accuracy_drop 0.3] [--min_agreement 0.995]
        [--max_fidelity_gap 5] [--require_edgetpu] [--require TARGET,...] [--profile]
        [--tflm_images 1000] [--c_array model_data.c] [--pack_int4] [--overwrite]

MODEL is a saved model file (.h5 / .keras) or the output directory of
`python -m sgt_tfmot.train` (its `model.h5`; the dataset then defaults to the one in its
`metrics.json`; a model from elsewhere needs --dataset). A model saved under a mixed
precision policy (`train --mixed_precision`) is rebuilt with float32 layers and the same
weights first: the converter rejects bfloat16 ops, and the checks then run on that float32
Keras model.

Calibration uses `--calibration_samples` training images (a QAT model needs none:
`--calibration_samples 0`); the checks use the test split, or `--num_test` of its images.
Both are taken in a stratified order of their split (seeded by `--seed`): any N of them hold
every class in its share, also for data that arrives sorted by class (an image folder); the
report says how the images were chosen. The library behind this command
is `sgt_tfmot.conversion` (`convert_and_check`, the typed `ConversionReport`). A short
summary goes to stdout; with `--report`, a JSON report and (beside it, or at `--figure`) a
PNG of test images with their saliency maps and the integer model's predictions are
written too.

Exit status: 0 when every check passes, 1 when a check fails (the files are written, so
the report says why), 2 on bad input (one line on stderr, nothing written). Existing
files are only replaced with `--overwrite`; every file is written to a temporary name in
its directory and renamed at the end, so an error never leaves a partial file.
"""

from __future__ import annotations

import sys

from absl import flags

from sgt_tfmot import _cli  # first: starts TensorFlow quietly
from sgt_tfmot._checks import check_choice
from sgt_tfmot.conversion.checks import CheckOptions, Thresholds
from sgt_tfmot.conversion.report import format_summary
from sgt_tfmot.conversion.stages import PROGRAM, Conversion, Delivery, convert_and_check
from sgt_tfmot.explain import attributions, protocols
from sgt_tfmot.masking import FILLS
from sgt_tfmot.tflite import targets as deployment_targets

__all__ = ["Conversion", "convert_and_check", "format_summary", "main"]

METRICS_FILE = _cli.METRICS_FILE
EXIT_OK, EXIT_CHECK_FAILED, EXIT_BAD_INPUT = (
    _cli.EXIT_OK, _cli.EXIT_CHECK_FAILED, _cli.EXIT_BAD_INPUT,
)  # fmt: skip
_CHECKS = CheckOptions()  # the defaults of the check flags (and of `convert_and_check`)

# The flags live in this module's own FlagValues rather than absl's global FLAGS, so that
# importing several of the package's CLIs in one process (tests) cannot clash on names
# such as --dataset.
FLAGS = flags.FlagValues()
_IN = {"flag_values": FLAGS}
flags.DEFINE_bool("int8", False, "Full-integer conversion (required: the only mode).", **_IN)
flags.DEFINE_bool("uint8", False, "uint8 instead of int8 input and output tensors.", **_IN)
flags.DEFINE_string("output", None, "Path of the .tflite file to write.", **_IN)
flags.DEFINE_string("report", None, "Path of the JSON report to write (optional).", **_IN)
flags.DEFINE_string(
    "figure", None, "Path of the saliency PNG; default: the --report path with .png.", **_IN
)
flags.DEFINE_bool(
    "overwrite", False, "Replace output files this tool wrote before (never others).", **_IN
)
flags.DEFINE_integer(
    "calibration_samples",
    500,
    "N training images (stratified by class, --seed) calibrate the ranges.",
    lower_bound=0,
    **_IN,
)
flags.DEFINE_integer(
    "num_test", _CHECKS.num_test,
    "Check on N test images, stratified by class (--seed); default all.", lower_bound=1, **_IN,
)  # fmt: skip
flags.DEFINE_integer(
    "seed", 0, "Seed of the stratified order the test and calibration images are taken in.",
    lower_bound=0, **_IN,
)  # fmt: skip
flags.DEFINE_integer(
    "fidelity_images", _CHECKS.fidelity_images, "Test images of the fidelity check (0: skip).",
    lower_bound=0, **_IN,
)  # fmt: skip
flags.DEFINE_string("saliency", _CHECKS.saliency, "", **_IN)
_cli.live_help(FLAGS, "saliency", lambda: (
    f"Saliency method of the fidelity check: any of {', '.join(attributions.feature_methods())}."
))  # fmt: skip
flags.DEFINE_integer(
    "smooth_samples", _CHECKS.smooth_samples, "Samples per image for SmoothGrad.", lower_bound=1,
    **_IN,
)  # fmt: skip
flags.DEFINE_string("fidelity_protocol", _CHECKS.fidelity_protocol, "", **_IN)
_cli.live_help(FLAGS, "fidelity_protocol", lambda: (
    f"Removal protocol of the fidelity check: any of {', '.join(protocols.names())} (see "
    "python -m sgt_tfmot.explain --help)."
))  # fmt: skip
flags.DEFINE_string(
    "fidelity_fill", _CHECKS.fidelity_fill, "Fill of the removed units (default: the "
    f"protocol's; the pixel protocol takes {', '.join(FILLS)}).", **_IN,
)  # fmt: skip
_DEFAULT_THRESHOLDS = Thresholds()
flags.DEFINE_float(
    "max_accuracy_drop",
    _DEFAULT_THRESHOLDS.max_accuracy_drop,
    "Largest allowed Keras - TFLite test accuracy, in percentage points.",
    **_IN,
)
flags.DEFINE_float(
    "min_agreement",
    _DEFAULT_THRESHOLDS.min_agreement,
    "Smallest allowed top-1 agreement, a share in [0, 1].",
    **_IN,
)
flags.DEFINE_float(
    "max_fidelity_gap",
    _DEFAULT_THRESHOLDS.max_fidelity_gap,
    "Largest allowed gap between the Keras and TFLite accuracy-drop curves, in pp.",
    **_IN,
)
flags.DEFINE_bool("require_edgetpu", False, "Fail when an op would not run on the Edge TPU.", **_IN)
flags.DEFINE_list("require", [], "", **_IN)
_cli.live_help(FLAGS, "require", lambda: (
    "Deployment targets whose verdict must be 'compatible' for the checks to pass: "
    + ", ".join(f"{target.name} ({target.title})" for target in deployment_targets.REGISTRY)
    + "."
))  # fmt: skip
flags.DEFINE_bool(
    "pack_int4", False,
    "Store the kernels whose values fit 4 bits (weights of 4 bits or fewer) as INT4, two per "
    "byte: CONV_2D, DEPTHWISE_CONV_2D and per-tensor FULLY_CONNECTED, whose INT4 filters "
    "LiteRT and TFLite Micro both take, with the same outputs; the Edge TPU takes none.", **_IN,
)  # fmt: skip
flags.DEFINE_integer(
    "tflm_images", _CHECKS.tflm_images,
    "Test images run in TensorFlow Lite Micro, every output compared with LiteRT's reference "
    "kernels (at most the checked test images).", lower_bound=1, **_IN,
)  # fmt: skip
flags.DEFINE_string(
    "c_array", None,
    "Also write the .tflite as a C source (this path, .c/.cc/.cpp) and header (beside it, .h) "
    "for a firmware project: the aligned array, its length, the TFLite Micro arena and "
    "MicroMutableOpResolver ops (needs tflite-micro).", **_IN,
)  # fmt: skip
flags.DEFINE_bool(
    "logits",
    False,
    "End in the logits: no softmax is added, and a model's own softmax is cut off (without "
    "the flag the scores are probabilities: a softmax is added to a model with logits).",
    **_IN,
)
flags.DEFINE_bool(
    "rgb_input", False,
    "For a one-channel model: take RGB images (a luma conversion inside; MediaPipe needs 3).",
    **_IN,
)  # fmt: skip
flags.DEFINE_bool(
    "metadata", True,
    "Write TFLite image-classifier metadata (MediaPipe, LiteRT support library) when the class "
    "names are known (the dataset's, the run's labels.txt, or --labels).", **_IN,
)  # fmt: skip
flags.DEFINE_integer(
    "occlusion_images", _CHECKS.occlusion_images,
    "Test images whose occlusion maps of the .tflite itself are compared with the Keras "
    "model's (0: skip).", lower_bound=0, **_IN,
)  # fmt: skip
flags.DEFINE_string("labels", None, "Label file: one class name per line, in class order.", **_IN)
flags.DEFINE_bool(
    "profile", _CHECKS.profile,
    "Time the integer and the float32 model (batch 1, 1 thread, interleaved) and the integer "
    "model per op: the report's deployment.latency and a summary line (a few seconds).", **_IN,
)  # fmt: skip
flags.DEFINE_bool(
    "space_to_depth", False,
    "Store the full-resolution stage as 2x2 pixel blocks: the same int8 outputs, about half the "
    "batch-1 time on x86 CPUs (XNNPACK), ~16x that stage's weight bytes and 4x its "
    "multiply-adds (off by default: not measured on ARM CPUs or the Edge TPU).", **_IN,
)  # fmt: skip
_cli.define_shared_flags(  # --dataset, --data_dir, --zoo_dir, --help, ...
    FLAGS,
    verbose="Show TensorFlow's own log lines, and the full Edge TPU op table (the summary "
    "counts the ops; --report has the table too).",
)


def main(argv: list[str]) -> int:
    """Parses the command line, runs `convert_and_check`, prints the summary.

    Returns:
      The exit status: 0 all checks passed, 1 a check failed, 2 bad input.
    """
    return _cli.run_main(argv, PROGRAM, FLAGS, __name__, _convert)


def _convert(positional: list[str]) -> int:
    if not FLAGS.int8:
        raise _cli.UsageError("pass --int8 (full-integer conversion, the only mode).")
    if len(positional) != 1:
        received = " ".join(positional) if positional else "none"
        raise _cli.UsageError(
            f"expected exactly one MODEL (file or run directory). Received: {received}"
        )
    if not FLAGS.output:
        raise _cli.UsageError("pass --output PATH for the .tflite file.")
    thresholds = _cli.options_from_flags(
        Thresholds, FLAGS,
        require=tuple(
            check_choice(name, deployment_targets.names(), "require") for name in FLAGS.require
        ),
    )  # fmt: skip
    with _cli.progress(PROGRAM) as say:
        conversion = convert_and_check(
            positional[0],
            FLAGS.output,
            **_cli.model_inputs(FLAGS),
            calibration_samples=FLAGS.calibration_samples,
            seed=FLAGS.seed,
            checks=_cli.options_from_flags(CheckOptions, FLAGS),
            thresholds=thresholds,
            delivery=_cli.options_from_flags(
                Delivery,
                FLAGS,
                io_dtype="uint8" if FLAGS.uint8 else "int8",
                softmax=not FLAGS.logits,
            ),
            report=FLAGS.report,
            figure=FLAGS.figure,
            c_array=FLAGS.c_array,
            overwrite=FLAGS.overwrite,
            progress=say,
        )
    print(format_summary(conversion.result, verbose=FLAGS.verbose))
    return _cli.EXIT_OK if conversion.passed else _cli.EXIT_CHECK_FAILED


if __name__ == "__main__":
    sys.exit(main(sys.argv))
