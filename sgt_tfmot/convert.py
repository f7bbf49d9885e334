"""Integer TFLite export with release checks: `python -m sgt_tfmot.convert --int8 MODEL ...`.

Converts a trained classifier (a QAT model from `sgt_tfmot.quantize_model`, or a float model
quantized after training on calibration images) to a full-integer .tflite with a fixed
batch of 1, then checks the result in LiteRT on the test split of its dataset
(`sgt_tfmot.tflite.checks`): test accuracy against the Keras model, top-1 agreement (shown
beside what rounding alone costs: the Keras model's agreement with itself after a one-ulp
change of its weights, since a 4-bit model can be too sensitive to rounding for any runtime
to agree with it much better), and saliency fidelity (the integer model must lose accuracy
like the Keras model when the features the Keras model's saliency ranks highest, or lowest,
are removed). It also reads the flatbuffer for the Edge TPU verdict and converts a float32
TFLite of the same network as the size baseline.

Usage:

    python -m sgt_tfmot.convert --int8 MODEL --output model.tflite [--uint8]
        [--dataset NAME --data_dir DIR] [--calibration_samples 500] [--num_test N]
        [--fidelity_images 500] [--saliency vanilla|smoothgrad] [--report report.json]
        [--figure saliency.png] [--max_accuracy_drop 0.3] [--min_agreement 0.995]
        [--max_fidelity_gap 5] [--require_edgetpu] [--overwrite]

MODEL is a saved model file (.h5 / .keras) or the output directory of
`python -m sgt_tfmot.train` (its `model.h5`; the dataset then defaults to the one in its
`metrics.json`). A model saved under a mixed precision policy (`train --mixed_precision`) is
rebuilt with float32 layers and the same weights first: the converter rejects bfloat16 ops,
and the checks then run on that float32 Keras model.

Calibration uses the first `--calibration_samples` training images; the checks use the
test split. A short summary goes to stdout; with `--report`, a JSON report and (beside it,
or at `--figure`) a PNG of test images with their saliency maps and the integer model's
predictions are written too.

Exit status: 0 when every check passes, 1 when a check fails (the files are written, so
the report says why), 2 on bad input (one line on stderr, nothing written). Existing
files are only replaced with `--overwrite`; every file is written to a temporary name in
its directory and renamed at the end, so an error never leaves a partial file.
"""

from __future__ import annotations

import dataclasses
import json
import os
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path

import numpy as np
from absl import flags

from sgt_tfmot import (
    _cli,  # first: starts TensorFlow quietly
    data,
    explain,
    saving,
)
from sgt_tfmot._checks import InputError, check_choice, check_int
from sgt_tfmot._files import check_output_file, write_outputs
from sgt_tfmot.export import biases_aligned, export_model, is_quantized
from sgt_tfmot.keras import keras
from sgt_tfmot.masking import FILLS
from sgt_tfmot.tflite import checks
from sgt_tfmot.tflite.converter import float_tflite, to_integer_tflite
from sgt_tfmot.tflite.edgetpu import check_edgetpu, format_table
from sgt_tfmot.tflite.runtime import TFLiteModel

__all__ = ["ConvertError", "Conversion", "convert_and_check", "format_summary", "main"]

PROGRAM = "sgt_tfmot.convert"
METRICS_FILE = _cli.METRICS_FILE
DEFAULT_DATASET_28X28X1 = "mnist_subset"
FIGURE_IMAGES = 8
PREDICT_BATCH = 256
EXIT_OK, EXIT_CHECK_FAILED, EXIT_BAD_INPUT = _cli.EXIT_OK, 1, _cli.EXIT_BAD_INPUT

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
flags.DEFINE_bool(
    "trust_model_code", False, "Load models whose layers carry Python code (Lambda).", **_IN
)
flags.DEFINE_bool("verbose", False, "Show TensorFlow's own log lines too.", **_IN)
flags.DEFINE_string(
    "dataset",
    None,
    "Dataset of the calibration and test images (see sgt_tfmot.data, e.g. mnist, cifar10). "
    f"Default: the training run's {METRICS_FILE}, else {DEFAULT_DATASET_28X28X1} for 28x28x1 "
    "models.",
    **_IN,
)
flags.DEFINE_string("data_dir", None, "Folder with DATASET.npz (see sgt_tfmot.data).", **_IN)
flags.DEFINE_integer(
    "calibration_samples",
    500,
    "First N training images calibrate the ranges.",
    lower_bound=0,
    **_IN,
)
flags.DEFINE_integer("num_test", None, "Use only the first N test images.", lower_bound=1, **_IN)
flags.DEFINE_integer(
    "fidelity_images", 500, "Test images of the fidelity check (0: skip).", lower_bound=0, **_IN
)
flags.DEFINE_enum("saliency", "vanilla", list(explain.METHODS), "Saliency method.", **_IN)
flags.DEFINE_integer(
    "smooth_samples", 20, "Samples per image for SmoothGrad.", lower_bound=1, **_IN
)
flags.DEFINE_enum("fidelity_fill", "mean", list(FILLS), "Fill of removed features.", **_IN)
_DEFAULT_THRESHOLDS = checks.Thresholds()
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
flags.DEFINE_bool("help", False, "Show this help.", short_name="h", **_IN)


ConvertError = InputError  # the former name of bad input to the conversion


@dataclasses.dataclass(frozen=True)
class Conversion:
    """What `convert_and_check` did.

    Attributes:
      report: The JSON report (also written to `--report` when given).
      summary: The human summary printed by the CLI.
    """

    report: dict
    summary: str

    @property
    def passed(self) -> bool:
        return bool(self.report["checks_passed"])


def _check_classifier(model: keras.Model, path: Path) -> tuple[tuple[int, ...], int]:
    """(image shape, number of classes) of an image classifier, else a ConvertError."""
    if len(model.inputs) != 1 or len(model.outputs) != 1:
        raise ConvertError(
            f"{path}: expected a classifier with one input and one output; the model has "
            f"{len(model.inputs)} inputs and {len(model.outputs)} outputs."
        )
    image_shape = tuple(model.inputs[0].shape[1:])
    output_shape = tuple(model.outputs[0].shape)
    if len(image_shape) != 3 or None in image_shape:
        raise ConvertError(
            f"{path}: expected an image classifier with input (batch, height, width, "
            f"channels); the model's input is {tuple(model.inputs[0].shape)}."
        )
    if len(output_shape) != 2 or output_shape[-1] is None or output_shape[-1] < 2:
        raise ConvertError(
            f"{path}: the model is not a classifier: its output has shape {output_shape}, "
            "expected (batch, num_classes) with num_classes >= 2."
        )
    return image_shape, int(output_shape[-1])


def _resolve_dataset(
    dataset: str | None, data_dir: str | None, model_file: Path, image_shape: tuple[int, ...]
) -> tuple[str, str | None, str]:
    """(dataset, data_dir, where the dataset name came from)."""
    source = "--dataset"
    if dataset is None:
        run_flags = _cli.run_flags(model_file)
        if run_flags.get("dataset"):
            dataset, source = str(run_flags["dataset"]), f"{model_file.parent / METRICS_FILE}"
            if data_dir is None and run_flags.get("data_dir"):
                data_dir = str(run_flags["data_dir"])
        elif image_shape == data.info(DEFAULT_DATASET_28X28X1).image_shape:
            dataset, source = DEFAULT_DATASET_28X28X1, "default for 28x28x1 models"
        else:
            raise ConvertError(
                f"No dataset for a model with input {image_shape}: the model has no training "
                f"run {METRICS_FILE} beside it; pass --dataset NAME (a dataset of "
                "sgt_tfmot.data, e.g. mnist or cifar10)."
            )
    try:
        data.info(dataset)
    except ValueError as error:
        raise ConvertError(str(error)) from None
    return dataset, data_dir, source


def _lowest_bits(model: keras.Model) -> int:
    """The fewest bits of any quantizer of a QAT model (8 when none says otherwise)."""
    bits = [8]
    for layer in model.layers:
        config = getattr(layer, "quantize_config", None)
        for quantizer in (
            getattr(config, "weight_quantizer", None),
            getattr(config, "output_quantizer", None),
        ):
            if isinstance(getattr(quantizer, "num_bits", None), int):
                bits.append(quantizer.num_bits)
    return min(bits)


def _figure_bytes(images, saliency, labels, scores, io_dtype: str) -> bytes:
    handle, name = tempfile.mkstemp(suffix=".png")
    os.close(handle)
    try:
        checks.save_saliency_figure(
            name, images, saliency, labels, scores, FIGURE_IMAGES, title=f"{io_dtype} TFLite"
        )
        return Path(name).read_bytes()
    finally:
        os.remove(name)


def convert_and_check(
    model: str | os.PathLike,
    output: str | os.PathLike,
    *,
    io_dtype: str = "int8",
    dataset: str | None = None,
    data_dir: str | os.PathLike | None = None,
    calibration_samples: int = 500,
    num_test: int | None = None,
    fidelity_images: int = 500,
    saliency: str = "vanilla",
    smooth_samples: int = 20,
    fidelity_fill: str = "mean",
    thresholds: checks.Thresholds | None = None,
    report: str | os.PathLike | None = None,
    figure: str | os.PathLike | None = None,
    overwrite: bool = False,
    trust_model_code: bool = False,
    progress: Callable[[str], None] | None = None,
) -> Conversion:
    """Converts a saved classifier to an integer .tflite, checks it, writes the files.

    Args:
      model: A .h5 / .keras file, or a `python -m sgt_tfmot.train` output directory.
      output: Where to write the .tflite file.
      io_dtype: "int8" or "uint8" input and output tensors.
      dataset: Dataset of the calibration and test images; None: the training run's
        `metrics.json` ("flags" -> "dataset", "data_dir"), else "mnist_subset" for a 28x28x1
        model.
      data_dir: Folder with DATASET.npz (see `sgt_tfmot.data.load_arrays`).
      calibration_samples: The first N training images calibrate the integer ranges; 0 is
        only allowed for a QAT model (its ranges were learned in training).
      num_test: Check on the first N test images only; None: the whole test split.
      fidelity_images: Test images of the saliency fidelity check; 0 skips it.
      saliency: "vanilla" or "smoothgrad" (tf-keras-vis, on the Keras model).
      smooth_samples: Noisy samples per image for SmoothGrad.
      fidelity_fill: Fill of the removed features: "mean", "zero" or "random" (seeded).
      thresholds: What the checks require; default `checks.Thresholds()`.
      report: Where to write the JSON report, or None.
      figure: Where to write the saliency PNG; None: beside `report` (same name, .png), or no
        figure without a report.
      overwrite: Replace output files this tool wrote before (`sgt_tfmot._files`).
      trust_model_code: Load a model whose layers carry Python code (see
        `sgt_tfmot.saving.load_model`).
      progress: Called with a short message before each slow stage.

    Returns:
      A `Conversion` with the report and the summary; `passed` is False when a check failed.

    Raises:
      ConvertError, ModelFileError, DataError (all ValueErrors): on bad input, before any file
        is written.
    """
    say = progress or (lambda message: None)
    io_dtype = check_choice(io_dtype, ("int8", "uint8"), "io_dtype")
    calibration_samples = check_int(calibration_samples, "calibration_samples", 0)
    num_test = check_int(num_test, "num_test", 1, allow_none=True)
    fidelity_images = check_int(fidelity_images, "fidelity_images", 0)
    smooth_samples = check_int(smooth_samples, "smooth_samples", 1)
    saliency = check_choice(saliency, explain.METHODS, "saliency")
    fidelity_fill = check_choice(fidelity_fill, FILLS, "fidelity_fill")
    thresholds = checks.Thresholds() if thresholds is None else thresholds

    output = Path(output)
    report_path = None if report is None else Path(report)
    figure_path = Path(figure) if figure is not None else None
    if figure_path is None and report_path is not None:
        figure_path = report_path.with_suffix(".png")
    targets = {"output": output, "report": report_path, "figure": figure_path}
    targets = {flag: path for flag, path in targets.items() if path is not None}
    resolved = [path.resolve() for path in targets.values()]
    if len(set(resolved)) != len(resolved):
        raise ConvertError(
            "--output, --report and --figure must be different files. Received: "
            + ", ".join(f"--{flag} {path}" for flag, path in targets.items())
        )
    for flag, path in targets.items():
        check_output_file(path, flag, overwrite)

    model_file = saving.resolve_model_path(model)
    keras_model = saving.load_model(model_file, trust_code=trust_model_code)
    image_shape, num_classes = _check_classifier(keras_model, model_file)
    rebuilt = saving.float32_model(keras_model)
    compute_dtype = (
        "float32" if rebuilt is keras_model else "float32 (rebuilt from mixed precision)"
    )
    keras_model = rebuilt
    quantized = is_quantized(keras_model)
    if not quantized and calibration_samples == 0:
        raise ConvertError(
            f"{model_file} is a float model: post-training quantization needs calibration "
            "images; pass --calibration_samples N with N >= 1 (for example 500)."
        )
    dataset, data_dir, dataset_source = _resolve_dataset(dataset, data_dir, model_file, image_shape)
    dataset_info = data.info(dataset)
    if dataset_info.image_shape != image_shape:
        raise ConvertError(
            f"Dataset {dataset!r} has images of shape {dataset_info.image_shape}, which do not "
            f"fit the model input {image_shape}; pass the --dataset the model was trained on."
        )
    if dataset_info.num_classes != num_classes:
        raise ConvertError(
            f"Dataset {dataset!r} has {dataset_info.num_classes} classes but the model has "
            f"{num_classes} outputs; pass the --dataset the model was trained on."
        )
    x_test, y_test = data.load_arrays(dataset, "test", data_dir)
    if num_test is not None:
        x_test, y_test = x_test[:num_test], y_test[:num_test]
    x_test = x_test.astype(np.float32)
    calibration = None
    if calibration_samples:
        x_train, _ = data.load_arrays(dataset, "train", data_dir)
        calibration = x_train[:calibration_samples].astype(np.float32)

    say(f"converting to an integer TFLite model ({io_dtype} I/O)")
    try:
        flatbuffer = to_integer_tflite(
            keras_model,
            calibration,
            io_dtype=io_dtype,
            calibration_samples=len(calibration) if calibration is not None else 0,
        )
        say("converting the float32 TFLite baseline")
        float_flatbuffer = float_tflite(keras_model)
    except Exception as error:  # the converter's ConverterError, not exported by tf.lite
        if type(error).__name__ != "ConverterError":
            raise
        first_line = str(error).strip().splitlines()[0] if str(error).strip() else "unknown"
        raise ConvertError(f"TFLite conversion of {model_file} failed: {first_line}") from None
    edgetpu = check_edgetpu(flatbuffer)
    tflite_model = TFLiteModel(flatbuffer)

    def predictor(model):
        return lambda images: model.predict(images, batch_size=PREDICT_BATCH, verbose=0)

    say(f"evaluating both models on {len(x_test)} test images")
    keras_scores = predictor(keras_model)(x_test)  # for the accuracy and the ulp check
    accuracy = checks.compare_accuracy(
        lambda images: keras_scores, tflite_model.predict, x_test, y_test
    )
    say("numerical sensitivity of the Keras model (one-ulp weight change)")
    accuracy = dataclasses.replace(
        accuracy,
        ulp_agreement=checks.ulp_agreement(
            keras_model, x_test, batch_size=PREDICT_BATCH, scores=keras_scores
        ),
    )
    # A k-bit QAT model (k < 8) converts through its 8-bit export model (8-bit activations
    # over the k-bit ranges): measuring that model too tells rounding from conversion error.
    exported = export_model(keras_model) if quantized and _lowest_bits(keras_model) < 8 else None
    export_accuracy = None
    if exported is not None:
        export_accuracy = checks.compare_accuracy(
            predictor(exported), tflite_model.predict, x_test, y_test
        )
    fidelity = None
    maps = None
    n_fidelity = min(fidelity_images, len(x_test))
    if n_fidelity:
        say(f"saliency fidelity on {n_fidelity} test images ({saliency})")
        maps = explain.saliency_maps(
            keras_model,
            x_test[:n_fidelity],
            y_test[:n_fidelity],
            method=saliency,
            smooth_samples=smooth_samples,
        )
        fidelity = checks.fidelity_check(
            keras_model,
            tflite_model,
            x_test[:n_fidelity],
            y_test[:n_fidelity],
            saliency=maps,
            method=saliency,
            fill=fidelity_fill,
            export_model=exported,
        )
    failures = checks.gate(thresholds, accuracy, fidelity, edgetpu)

    contents = {output: flatbuffer}
    if figure_path is not None:
        shown = min(FIGURE_IMAGES, len(x_test))
        if maps is None or len(maps) < shown:
            maps = explain.saliency_maps(
                keras_model, x_test[:shown], y_test[:shown], saliency, smooth_samples
            )
        contents[figure_path] = _figure_bytes(
            x_test[:shown],
            maps[:shown],
            y_test[:shown],
            tflite_model.predict(x_test[:shown]),
            io_dtype,
        )
    result = {
        "model": str(model_file),
        "output": str(output),
        "quantization": "qat" if quantized else "post_training",
        "keras_compute_dtype": compute_dtype,
        "io_dtype": io_dtype,
        "batch_size": 1,
        "dataset": dataset,
        "dataset_source": dataset_source,
        "data_dir": None if data_dir is None else str(data_dir),
        "calibration_samples": 0 if calibration is None else len(calibration),
        "size_bytes": len(flatbuffer),
        "float_size_bytes": len(float_flatbuffer),
        "size_ratio": len(flatbuffer) / len(float_flatbuffer),
        "num_test": accuracy.num_images,
        "keras_accuracy": accuracy.keras_accuracy,
        "tflite_accuracy": accuracy.tflite_accuracy,
        "accuracy_drop_pp": accuracy.accuracy_drop_pp,
        "agreement": accuracy.agreement,
        "ulp_agreement": accuracy.ulp_agreement,
        "biases_aligned": biases_aligned(keras_model) if quantized else None,
        "export_model": None
        if export_accuracy is None
        else {
            "lowest_bits": _lowest_bits(keras_model),
            "keras_accuracy": export_accuracy.keras_accuracy,
            "agreement_with_tflite": export_accuracy.agreement,
        },
        "fidelity": None if fidelity is None else fidelity.to_dict(),
        "fidelity_gap_pp": None if fidelity is None else fidelity.gap_pp,
        "edgetpu_compatible": edgetpu.compatible,
        "internal_quantize_ops": edgetpu.internal_quantize_ops,
        "op_names": [op.name for op in edgetpu.ops],
        "edgetpu": edgetpu.to_dict(),
        "thresholds": thresholds.to_dict(),
        "failures": failures,
        "checks_passed": not failures,
        "report": None if report_path is None else str(report_path),
        "figure": None if figure_path is None else str(figure_path),
    }
    if report_path is not None:
        contents[report_path] = (json.dumps(result, indent=2) + "\n").encode()
    write_outputs(contents, PROGRAM)
    return Conversion(result, format_summary(result, format_table(edgetpu)))


def _percent(value: float) -> str:
    return f"{100 * value:.2f} %"


def format_summary(report: dict, op_table: str) -> str:
    """The CLI's human summary of a report from `convert_and_check`.

    Args:
      report: The report dict.
      op_table: The op table of `sgt_tfmot.tflite.edgetpu.format_table`.

    Returns:
      Lines joined by newlines: size, op table and Edge TPU verdict, accuracy, agreement,
      fidelity, files, and "Checks passed." or "FAILED: ...".
    """
    thresholds = report["thresholds"]
    lines = [
        f"Integer TFLite model: {report['output']} ({report['io_dtype']} I/O, batch 1, "
        f"{report['quantization'].replace('_', '-')} ranges, "
        f"{report['calibration_samples']} calibration images)",
        f"Size: {report['size_bytes']:,} bytes vs {report['float_size_bytes']:,} bytes for the "
        f"float32 TFLite model ({report['size_ratio']:.2f}x)",
        "",
        op_table,
        "",
        f"Accuracy on {report['num_test']} {report['dataset']} test images: Keras "
        f"{_percent(report['keras_accuracy'])}, TFLite {_percent(report['tflite_accuracy'])} "
        f"(drop {report['accuracy_drop_pp']:.2f} pp; max {thresholds['max_accuracy_drop']:g})",
        f"Top-1 agreement: {_percent(report['agreement'])} "
        f"(min {100 * thresholds['min_agreement']:g} %)",
        f"  (rounding alone: the Keras model agrees with itself after a one-ulp change of its "
        f"weights on {_percent(report['ulp_agreement'])})",
    ]
    if report["biases_aligned"] is False:
        lines.append(
            "  (the Keras model's biases are not on the integer model's int32 grid: "
            "sgt_tfmot.tflite.align_biases(model) makes the Keras model compute the integer "
            "model; python -m sgt_tfmot.train does it at the end of a run)"
        )
    export = report["export_model"]
    if export is not None:
        lines.append(
            f"  ({export['lowest_bits']}-bit QAT model: the integer model computes its 8-bit "
            f"export model (BN folded, biases on the int32 grid), accuracy "
            f"{_percent(export['keras_accuracy'])}, agreement with "
            f"TFLite {_percent(export['agreement_with_tflite'])})"
        )
    fidelity = report["fidelity"]
    if fidelity is None:
        lines.append("Saliency fidelity: not run (--fidelity_images 0)")
    else:
        lines.append(
            f"Saliency fidelity ({fidelity['method']}, fill {fidelity['fill']}, "
            f"{fidelity['num_images']} images): gap {fidelity['gap_pp']:.2f} pp "
            f"(max {thresholds['max_fidelity_gap']:g})"
        )
        if fidelity["zero_saliency_images"]:
            lines.append(
                f"  ({fidelity['zero_saliency_images']} images have an all-zero saliency map: "
                "their true-class output is outside the output quantizer's range)"
            )
        if fidelity["export_gap_pp"] is not None:
            lines.append(
                f"  (gap between the 8-bit export model and TFLite: "
                f"{fidelity['export_gap_pp']:.2f} pp)"
            )
        lines.append(
            "  accuracy % with x % removed  "
            + " ".join(f"{100 * f:>5.0f}" for f in fidelity["fractions"])
        )
        for order in ("top", "bottom"):
            for model in ("keras", "tflite", "export"):
                curve = fidelity[f"{model}_{order}"]
                if curve is None:
                    continue
                label = f"  {model} ({'most' if order == 'top' else 'least'} salient first)"
                lines.append(f"{label:<30}" + " ".join(f"{100 * a:5.1f}" for a in curve))
    written = [f"model {report['output']}"]
    if report["report"]:
        written.append(f"report {report['report']}")
    if report["figure"]:
        written.append(f"figure {report['figure']}")
    lines.append("Wrote " + ", ".join(written))
    if report["checks_passed"]:
        lines.append("Checks passed.")
    else:
        lines.extend(f"FAILED: {failure}" for failure in report["failures"])
    return "\n".join(lines)


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
    thresholds = checks.Thresholds(
        max_accuracy_drop=FLAGS.max_accuracy_drop,
        min_agreement=FLAGS.min_agreement,
        max_fidelity_gap=FLAGS.max_fidelity_gap,
        require_edgetpu=FLAGS.require_edgetpu,
    )
    conversion = convert_and_check(
        positional[0],
        FLAGS.output,
        io_dtype="uint8" if FLAGS.uint8 else "int8",
        dataset=FLAGS.dataset,
        data_dir=FLAGS.data_dir,
        calibration_samples=FLAGS.calibration_samples,
        num_test=FLAGS.num_test,
        fidelity_images=FLAGS.fidelity_images,
        saliency=FLAGS.saliency,
        smooth_samples=FLAGS.smooth_samples,
        fidelity_fill=FLAGS.fidelity_fill,
        thresholds=thresholds,
        report=FLAGS.report,
        figure=FLAGS.figure,
        overwrite=FLAGS.overwrite,
        trust_model_code=FLAGS.trust_model_code,
        progress=_cli.progress(PROGRAM),
    )
    print(conversion.summary)
    return EXIT_OK if conversion.passed else EXIT_CHECK_FAILED


if __name__ == "__main__":
    sys.exit(main(sys.argv))
