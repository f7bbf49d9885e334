"""`convert_and_check`: a saved classifier to an integer .tflite, checked, in small stages.

    outputs = check_outputs(...)      the files to write: writable, replaced only if ours
    loaded  = load(...)               the Keras model (safely), float32, checked a classifier
    data    = load_data(...)          the test split (and calibration images) of its dataset
    files   = convert(...)            the integer .tflite and the float32 baseline
    packed  = pack_weights(...)       with `pack_int4`: kernels of <= 4 bits as INT4
    found   = run_checks(...)         accuracy, agreement, ulp floor, export model, fidelity
    targets = check_targets(...)      every deployment target of `sgt_tfmot.tflite.targets`
    c_array = c_array_section(...)    with `c_array`: the file as a C source and header pair
    latency = latency_section(...)    with `checks.profile`: where the batch-1 time goes, per op
    report  = ConversionReport(...)   typed; `to_dict()` is the JSON report
    write(...)                        the .tflite, report and figure, atomically

Each stage is a function of the previous stages' results, so each can be tested alone.
What to check and how is a `CheckOptions`, what the checks must reach `Thresholds`, what
the delivered file looks like `Delivery`: each checked when made, before any slow work.
"""

from __future__ import annotations

import dataclasses
import importlib.util
import io
import json
import os
from collections.abc import Callable
from pathlib import Path

import numpy as np

from sgt_tfmot import _cli, data, heads, saving
from sgt_tfmot._checks import InputError, check_choice, check_int
from sgt_tfmot._files import check_output_file, write_outputs
from sgt_tfmot.conversion.checks import (
    TFLM_IMAGES,
    AccuracyComparison,
    CheckOptions,
    Thresholds,
    compare_accuracy,
    gate,
    ulp_agreement,
)
from sgt_tfmot.conversion.report import ConversionReport, format_summary
from sgt_tfmot.explain import attributions
from sgt_tfmot.explain.fidelity import fidelity_check, save_saliency_figure
from sgt_tfmot.explain.measures import agreement
from sgt_tfmot.export import biases_aligned, export_model, is_quantized
from sgt_tfmot.keras import keras
from sgt_tfmot.models import check_classifier, with_channel_axis
from sgt_tfmot.quantize import check_input_fits
from sgt_tfmot.tflite import targets as deployment_targets
from sgt_tfmot.tflite.c_array import SOURCE_SUFFIXES, c_array_files, c_identifier
from sgt_tfmot.tflite.converter import (
    float_tflite,
    grey_to_rgb,
    to_integer_tflite,
    with_softmax,
)
from sgt_tfmot.tflite.int4 import pack_int4
from sgt_tfmot.tflite.layout import LayoutError
from sgt_tfmot.tflite.metadata import add_image_classifier_metadata, read_image_classifier_metadata
from sgt_tfmot.tflite.profile import compare_latency, profile as profile_ops
from sgt_tfmot.tflite.requantize import add_rounding_ties
from sgt_tfmot.tflite.runtime import TFLiteModel
from sgt_tfmot.tflite.tflm import INSTALL_COMMAND as TFLM_INSTALL_COMMAND

__all__ = ["Conversion", "Delivery", "convert_and_check"]

PROGRAM = "sgt_tfmot.convert"
FIGURE_IMAGES = 8
PREDICT_BATCH = 256
TARGET_IMAGES = 32  # test images a target that runs the model gets
PROFILE_ROUNDS, PROFILE_INVOKES = 10, 10  # interleaved timing of `latency_section`


@dataclasses.dataclass(frozen=True)
class Conversion:
    """What `convert_and_check` did: the typed report and the CLI's summary."""

    result: ConversionReport
    summary: str

    @property
    def report(self) -> dict:
        """The JSON report (`ConversionReport.to_dict()`)."""
        return self.result.to_dict()

    @property
    def passed(self) -> bool:
        return self.result.passed


@dataclasses.dataclass(frozen=True)
class Delivery:
    """What the delivered file looks like to an app; checked when made.

    Attributes:
      io_dtype: "int8" or "uint8" input and output tensors.
      softmax: End in a softmax, so the scores are probabilities (False: logits).
      rgb_input: A one-channel model takes RGB images (a luma conversion in front; needed by
        MediaPipe's ImageClassifier, which refuses one channel).
      metadata: Write TFLite image-classifier metadata (name, input spec, labels) when the
        class names are known (`sgt_tfmot.tflite.metadata`).
      labels: A label file (one class name per line) instead of the dataset's class names.
      space_to_depth: Store the full-resolution stage as 2x2 pixel blocks (same outputs,
        faster on x86 CPUs, larger file; `sgt_tfmot.tflite.layout`).
      pack_int4: Store the kernels whose values fit 4 bits as INT4, two per byte (same
        outputs in LiteRT's builtin and reference kernels and in TFLite Micro; not for the
        Edge TPU; `sgt_tfmot.tflite.int4`).
    """

    io_dtype: str = "int8"
    softmax: bool = True
    rgb_input: bool = False
    metadata: bool = True
    labels: str | os.PathLike | None = None
    space_to_depth: bool = False
    pack_int4: bool = False

    def __post_init__(self):
        check_choice(self.io_dtype, ("int8", "uint8"), "io_dtype")


class _AppModel:
    """The delivered .tflite, fed with the dataset's images (repeated to RGB if needed)."""

    def __init__(self, flatbuffer: bytes, rgb_input: bool):
        self.runtime = TFLiteModel(flatbuffer)
        self.rgb_input = rgb_input
        self.input, self.output = self.runtime.input, self.runtime.output

    def images(self, images: np.ndarray) -> np.ndarray:
        return grey_to_rgb(images) if self.rgb_input else images

    def predict(self, images: np.ndarray) -> np.ndarray:
        return self.runtime.predict(self.images(images))


def class_labels(delivery: Delivery, samples, loaded) -> tuple[str, ...] | None:
    """The class names written into the file: --labels, the dataset's, or the run's
    labels.txt; None when none is known.

    Raises:
      InputError: for a label file that is empty, not UTF-8, or of another length than the
        model's classes.
    """
    if delivery.labels is not None:
        names = data.read_labels_file(Path(delivery.labels))
        where = f"--labels {delivery.labels}"
    elif samples.class_names is not None:
        return samples.class_names
    elif (loaded.file.parent / "labels.txt").is_file():
        names = data.read_labels_file(loaded.file.parent / "labels.txt")
        where = str(loaded.file.parent / "labels.txt")
    else:
        return None
    if len(names) != loaded.num_classes:
        raise InputError(
            f"{where} has {len(names)} class names but the model has {loaded.num_classes} "
            "classes; give one name per class, one per line."
        )
    return names


@dataclasses.dataclass(frozen=True)
class _Loaded:
    file: Path
    model: keras.Model
    compute_dtype: str
    quantized: bool
    image_shape: tuple[int, ...]
    num_classes: int


@dataclasses.dataclass(frozen=True)
class _Data:
    dataset: str
    data_dir: str | None
    source: str
    x_test: np.ndarray
    y_test: np.ndarray
    calibration: np.ndarray | None
    class_names: tuple[str, ...] | None
    test_images: str = ""  # how the test images were chosen (`data.describe_choice`)
    calibration_images: str | None = None


@dataclasses.dataclass(frozen=True)
class _Checks:
    accuracy: AccuracyComparison
    export_model: dict | None
    fidelity: object
    maps: np.ndarray | None
    integer_maps: dict | None = None


def integer_model_maps(model, app, images, labels, gradient_maps, options, softmax) -> dict:
    """What the deployed file itself attends to: occlusion maps of the integer model (run in
    LiteRT) against occlusion maps of the Keras model (the same method on the same scores,
    probabilities when the file ends in a softmax: like for like) and against the Keras
    model's gradient maps (Spearman ρ and top-10 % IoU per image)."""
    occlusion = attributions.get("occlusion")
    integer = occlusion(app, images, labels, options)
    keras_maps = occlusion(with_softmax(model) if softmax else model, images, labels, options)
    found = {
        "images": len(images), "method": "occlusion", "patch": options.patch,
        "stride": options.stride, "scores": "probabilities" if softmax else "logits",
        "vs_keras_occlusion": agreement(integer, keras_maps, model_a="integer",
                                        model_b="keras", method="occlusion").to_dict(),
    }  # fmt: skip
    if gradient_maps is not None:
        gradient = np.asarray(gradient_maps[: len(images)], np.float32).mean(axis=-1)
        found["vs_keras_gradient"] = agreement(
            integer, gradient, model_a="integer", model_b="keras", method="vanilla vs occlusion"
        ).to_dict()
    return found


def check_outputs(output, report, figure, overwrite: bool, c_array=None) -> dict[str, Path]:
    """Flag -> path of every file to write, each checked before any slow work (`c_array`:
    the C source, and "c_header" its header beside it)."""
    output = Path(output)
    report_path = None if report is None else Path(report)
    figure_path = Path(figure) if figure is not None else None
    if figure_path is None and report_path is not None:
        figure_path = report_path.with_suffix(".png")
    source = header = None
    if c_array is not None:
        source = Path(c_array)
        if source.suffix not in SOURCE_SUFFIXES:
            raise InputError(
                f"--c_array {source} must name the C source to write, ending in "
                f"{', '.join(SOURCE_SUFFIXES)} (its header goes beside it, ending in .h)."
            )
        if importlib.util.find_spec("tflite_micro") is None:
            raise InputError(
                "--c_array needs tflite-micro, whose allocator measures the arena the header "
                f"gives: {TFLM_INSTALL_COMMAND}"
            )
        header = source.with_suffix(".h")
    targets = {"output": output, "report": report_path, "figure": figure_path,
               "c_array": source, "c_header": header}  # fmt: skip
    targets = {flag: path for flag, path in targets.items() if path is not None}
    resolved = [path.resolve() for path in targets.values()]
    if len(set(resolved)) != len(resolved):
        raise InputError(
            "--output, --report, --figure and --c_array (and its .h) must be different files. "
            "Received: " + ", ".join(f"--{flag} {path}" for flag, path in targets.items())
        )
    for flag, path in targets.items():
        check_output_file(path, "c_array" if flag == "c_header" else flag, overwrite)
    return targets


def load(model, calibration_samples: int, trust_model_code: bool) -> _Loaded:
    """The saved model, rebuilt in float32 if it was trained under mixed precision, and with
    a channel axis if it takes (H, W) images (`with_channel_axis`)."""
    file = saving.resolve_model_path(model)
    keras_model = saving.load_model(file, trust_code=trust_model_code)
    rebuilt = saving.float32_model(keras_model)
    dtype = "float32" if rebuilt is keras_model else "float32 (rebuilt from mixed precision)"
    rebuilt = with_channel_axis(rebuilt, str(file))
    image_shape, num_classes = check_classifier(rebuilt, str(file))
    quantized = is_quantized(rebuilt)
    if not quantized and calibration_samples == 0:
        raise InputError(
            f"{file} is a float model: post-training quantization needs calibration "
            "images; pass --calibration_samples N with N >= 1 (for example 500)."
        )
    return _Loaded(file, rebuilt, dtype, quantized, image_shape, num_classes)


def delivered_scores(loaded: _Loaded, delivery: Delivery) -> _Loaded:
    """The loaded model with the scores the file delivers: a model with its own softmax
    loses it for `--logits` (the checks then compare logits with logits); otherwise the
    model as it is (`to_integer_tflite` adds a softmax only to a model with logits)."""
    if delivery.softmax or heads.output_head(loaded.model) == heads.LOGITS:
        return loaded
    return dataclasses.replace(loaded, model=heads.logits_model(loaded.model))


def load_data(
    loaded: _Loaded, dataset, data_dir, num_test, calibration_samples, data_options=None,
    seed: int = 0,
) -> _Data:  # fmt: skip
    """The test images (`num_test` of the split, or all) and calibration images of the
    model's dataset, each the first N of the split's stratified order
    (`sgt_tfmot.data.stratified_order`, seeded): every check, the figure and the targets take
    prefixes of the same order, so each is stratified by class too."""
    dataset, data_dir, source, options = _cli.resolve_dataset(
        dataset, data_dir, [loaded.file], data_options
    )
    info, arrays = data.open_dataset(dataset, data_dir, **options)
    check_classifier(loaded.model, str(loaded.file), info.image_shape, info.num_classes)
    x_test, y_test = arrays.split("test")
    chosen = data.stratified_order(y_test, seed)[:num_test]
    test_images = data.describe_choice(len(chosen), len(y_test), f"{dataset} test", seed)
    x_test, y_test = x_test[chosen], y_test[chosen]
    check_input_fits(loaded.model, x_test, f"the {dataset} images of {loaded.file}")
    calibration, calibration_images = None, None
    if calibration_samples:  # a QAT model's converter uses them only for range-less tensors
        x_train, y_train = arrays.split("train")
        order = data.stratified_order(y_train, seed)[:calibration_samples]
        calibration = x_train[order].astype(np.float32)
        calibration_images = data.describe_choice(
            len(order), len(y_train), f"{dataset} training", seed
        )
    return _Data(dataset, data_dir, source, x_test.astype(np.float32), y_test, calibration,
                 info.class_names, test_images, calibration_images)  # fmt: skip


def convert(
    loaded: _Loaded, samples: _Data, io_dtype: str, delivery: Delivery, labels, say
) -> tuple[bytes, bytes]:
    """(integer .tflite, with metadata when asked for and labels are known; the float32
    .tflite of the same network)."""
    say(f"converting to an integer TFLite model ({io_dtype} I/O)")
    calibration = samples.calibration
    if calibration is not None and delivery.rgb_input:
        calibration = grey_to_rgb(calibration)
    try:
        flatbuffer = to_integer_tflite(
            loaded.model, calibration, io_dtype=io_dtype,
            calibration_samples=len(calibration) if calibration is not None else 0,
            softmax=delivery.softmax, rgb_input=delivery.rgb_input,
            space_to_depth=delivery.space_to_depth,
        )  # fmt: skip
        if delivery.metadata and labels is not None:
            flatbuffer = add_image_classifier_metadata(
                flatbuffer, labels, name=loaded.file.parent.name if loaded.file.name ==
                "model.h5" else loaded.file.stem,
                description=f"sgt-tfmot {'QAT' if loaded.quantized else 'post-training'} "
                f"integer image classifier ({samples.dataset}); raw 0..255 pixels in, "
                f"{'probabilities' if delivery.softmax else 'logits'} out.",
            )  # fmt: skip
        say("converting the float32 TFLite baseline")
        return flatbuffer, float_tflite(loaded.model)
    except LayoutError as error:
        raise InputError(f"--space_to_depth does not apply to {loaded.file}: {error}") from None
    except Exception as error:  # the converter's ConverterError, not exported by tf.lite
        if type(error).__name__ != "ConverterError":
            raise
        first_line = str(error).strip().splitlines()[0] if str(error).strip() else "unknown"
        raise InputError(f"TFLite conversion of {loaded.file} failed: {first_line}") from None


def pack_weights(flatbuffer: bytes, loaded: _Loaded, delivery: Delivery, say):
    """(the file with its <= 4-bit kernels packed as INT4 when `delivery.pack_int4`, the
    `Packing` or None).

    Raises:
      InputError: when packing was asked for and no kernel fits 4 bits (nothing would change).
    """
    if not delivery.pack_int4:
        return flatbuffer, None
    say("packing the kernels of 4 bits or fewer as INT4")
    packed, found = pack_int4(flatbuffer)
    if not found.tensors:
        why = "; ".join(found.skipped) or "it has no CONV_2D, DEPTHWISE_CONV_2D or FULLY_CONNECTED"
        raise InputError(
            f"--pack_int4: no kernel of {loaded.file} fits INT4 ({why}); it applies to "
            "kernels of 4 bits or fewer (--weight_bits) exported into the 4-bit container "
            "(sgt_tfmot.quantizers.WeightQuantizer.container_bits)"
        )
    return packed, found


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


def run_checks(
    loaded, samples, tflite_model, fidelity_images, method, removal, options, say,
    occlusion_images: int = 0, softmax: bool = False,
):  # fmt: skip
    """Accuracy and agreement (with the ulp floor), the export model, saliency fidelity
    (`removal`: its (protocol, fill or None))."""
    model, x_test, y_test = loaded.model, samples.x_test, samples.y_test

    def predictor(keras_model):
        return lambda images: keras_model.predict(images, batch_size=PREDICT_BATCH, verbose=0)

    say(f"evaluating both models on {len(x_test)} test images")
    scores = predictor(model)(x_test)
    accuracy = compare_accuracy(lambda _: scores, tflite_model.predict, x_test, y_test)
    say("numerical sensitivity of the Keras model (one-ulp weight change)")
    floor = ulp_agreement(model, x_test, batch_size=PREDICT_BATCH, scores=scores)
    accuracy = dataclasses.replace(accuracy, ulp_agreement=floor)
    # A k-bit QAT model (k < 8) converts through its 8-bit export model: measuring that
    # model too tells rounding from conversion error.
    low = _lowest_bits(model) if loaded.quantized else 8
    exported = export_model(model) if low < 8 else None
    export = None
    if exported is not None:
        measured = compare_accuracy(predictor(exported), tflite_model.predict, x_test, y_test)
        export = {"lowest_bits": low, "keras_accuracy": measured.keras_accuracy,
                  "agreement_with_tflite": measured.agreement}  # fmt: skip
    count = min(fidelity_images, len(x_test))
    shown = min(occlusion_images, len(x_test))
    if not count:
        maps = None
        if shown:
            say(f"occlusion maps of the integer and the Keras model on {shown} images")
            maps = integer_model_maps(model, tflite_model, x_test[:shown], y_test[:shown],
                                      None, options, softmax)  # fmt: skip
        return _Checks(accuracy, export, None, None, maps)
    say(f"saliency fidelity on {count} test images ({method})")
    maps = attributions.get(method, "saliency").features(
        model, x_test[:count], y_test[:count], options
    )
    fidelity = fidelity_check(
        model, tflite_model, x_test[:count], y_test[:count], saliency=maps, method=method,
        protocol=removal[0], fill=removal[1], export_model=exported,
    )  # fmt: skip
    integer_maps = None
    if shown:
        say(f"occlusion maps of the integer and the Keras model on {shown} images")
        integer_maps = integer_model_maps(model, tflite_model, x_test[:shown], y_test[:shown],
                                          maps if shown <= count else None, options,
                                          softmax)  # fmt: skip
    return _Checks(accuracy, export, fidelity, maps, integer_maps)


def check_targets(
    flatbuffer: bytes, output: Path, samples: _Data, app, labels, say,
    tflm_images: int = TFLM_IMAGES,
) -> dict:  # fmt: skip
    """Name -> `TargetReport` of every registered deployment target. Targets that run a few
    images get the first `TARGET_IMAGES`; TFLite Micro, which checks every output value, the
    first `tflm_images` (`TargetContext.test_images`)."""
    context = deployment_targets.TargetContext(
        flatbuffer=flatbuffer, output=str(output),
        images=app.images(samples.x_test[:TARGET_IMAGES]), class_names=labels,
        integer_predict=app.runtime.predict,
        test_images=app.images(samples.x_test[:tflm_images]),
    )  # fmt: skip
    reports = {}
    for target in deployment_targets.REGISTRY:
        say(f"deployment target: {target.title}")
        reports[target.name] = target.check(context)
    return reports


def c_array_section(
    flatbuffer: bytes, paths: dict[str, Path], tflm, description: str
) -> tuple[dict, dict[Path, bytes], str | None]:
    """The C source and header of `--c_array` (`sgt_tfmot.tflite.c_array`) from the TFLite
    Micro target's report (its resolver ops and measured arena): (the report's `c_array`
    section, the files' contents, the failure line when they cannot be written)."""
    source, header = paths["c_array"], paths["c_header"]
    section = tflm.section if tflm is not None else {}
    name = c_identifier(source.stem)
    found = {"source": str(source), "header": str(header), "name": name,
             "length": len(flatbuffer), "written": False}  # fmt: skip
    if section.get("arena_bytes") is None or tflm.compatible is not True:
        why = tflm.failure if tflm is not None and tflm.failure else section.get("reason")
        return found, {}, f"--c_array not written: TFLite Micro did not pass ({why})"
    header_text, source_text = c_array_files(
        flatbuffer, name, [tuple(pair) for pair in section["resolver_ops"]],
        section["arena_bytes"], section["arena_bytes_with_margin"], header_name=header.name,
        description=description,
    )  # fmt: skip
    found.update(written=True, arena_bytes=section["arena_bytes_with_margin"],
                 op_count=section["resolver_size"])  # fmt: skip
    return found, {source: source_text.encode(), header: header_text.encode()}, None


def latency_section(flatbuffer: bytes, float_flatbuffer: bytes, say) -> dict:
    """Where the batch-1 time of the integer model goes, in LiteRT as deployed (XNNPACK, one
    thread): both models timed interleaved (min and median of `PROFILE_ROUNDS` rounds of
    `PROFILE_INVOKES` invokes), then the integer model per op (`sgt_tfmot.tflite.profile`:
    timed prefix models). Times on a busy machine vary from run to run; the min is the
    steadiest."""
    say("timing the integer and the float32 model, and the integer model per op")
    timed = compare_latency({"float32": float_flatbuffer, "integer": flatbuffer},
                            PROFILE_ROUNDS, PROFILE_INVOKES, num_threads=1)  # fmt: skip
    found = profile_ops(flatbuffer, PROFILE_ROUNDS, PROFILE_INVOKES, num_threads=1)
    integer, baseline = timed["integer"], timed["float32"]
    return {
        "batch_size": 1, "num_threads": 1, "rounds": PROFILE_ROUNDS,
        "invokes": PROFILE_INVOKES, "runtime": "LiteRT, default delegates (XNNPACK)",
        "integer_ms": {"min": integer["min_ms"], "median": integer["median_ms"]},
        "float32_ms": {"min": baseline["min_ms"], "median": baseline["median_ms"]},
        "ratio": {"min": integer["min_ratio"], "median": integer["median_ratio"]},
        "delegate_partitions": found.partitions, "invoke_overhead_us": found.overhead_us,
        "by_type": [share._asdict() for share in found.by_type()],
        "ops": [op._asdict() for op in found.ops],
    }  # fmt: skip


def deployment_section(
    tflite_model, flatbuffer: bytes, delivery: Delivery, latency: dict | None = None,
    packing=None,
) -> dict:  # fmt: skip
    """What an app needs: the I/O tensors (shape, type, scale, zero point), the scores'
    meaning, the metadata written, how the kernels are stored (`weights`: "int8", or "int4"
    with what `pack_weights` packed); and where the time goes (`latency_section`), if
    measured."""

    def tensor(details):
        scale, zero_point = details["quantization"]
        return {"shape": [int(d) for d in details["shape"]], "dtype": details["dtype"].__name__,
                "scale": float(scale), "zero_point": int(zero_point)}  # fmt: skip

    return {
        "input": tensor(tflite_model.input),
        "output": tensor(tflite_model.output),
        "scores": "probabilities (softmax)" if delivery.softmax else "logits",
        "rgb_input": delivery.rgb_input,
        "layout": "space_to_depth" if delivery.space_to_depth else "default",
        "weights": (
            {"container": "int8"} if packing is None else {"container": "int4", **packing.to_dict()}
        ),  # fmt: skip
        "metadata": read_image_classifier_metadata(flatbuffer),
        "latency": latency,
    }


def _figure(loaded, samples, found: _Checks, tflite_model, io_dtype, options, names) -> bytes:
    shown = min(FIGURE_IMAGES, len(samples.x_test))
    images, labels = samples.x_test[:shown], samples.y_test[:shown]
    maps = found.maps
    if maps is None or len(maps) < shown:
        maps = attributions.get("vanilla").features(loaded.model, images, labels, options)
    buffer = io.BytesIO()
    save_saliency_figure(
        buffer, images, maps[:shown], labels, tflite_model.predict(images), FIGURE_IMAGES,
        title=f"{io_dtype} TFLite", class_names=names,
    )  # fmt: skip
    return buffer.getvalue()


def convert_and_check(
    model: str | os.PathLike,
    output: str | os.PathLike,
    *,
    dataset: str | None = None,
    data_dir: str | os.PathLike | None = None,
    data_options: dict | None = None,
    calibration_samples: int = 500,
    seed: int = 0,
    checks: CheckOptions | None = None,
    thresholds: Thresholds | None = None,
    delivery: Delivery | None = None,
    report: str | os.PathLike | None = None,
    figure: str | os.PathLike | None = None,
    c_array: str | os.PathLike | None = None,
    overwrite: bool = False,
    trust_model_code: bool = False,
    progress: Callable[[str], None] | None = None,
) -> Conversion:
    """Converts a saved classifier to an integer .tflite, checks it, writes the files.

    Example:

        conversion = convert_and_check(
            "runs/mnist", "model.tflite", calibration_samples=0,
            checks=CheckOptions(num_test=1000, fidelity_images=200),
            thresholds=Thresholds(max_accuracy_drop=0.5, require=("tflm",)),
            delivery=Delivery(io_dtype="uint8", rgb_input=True), report="report.json",
        )
        print(conversion.summary)  # what the command line prints
        conversion.passed          # False when a check failed

    Args:
      model: A .h5 / .keras file, a `python -m sgt_tfmot.train` run directory, or
        `zoo:NAME`.
      output: Where to write the .tflite file.
      dataset: Dataset of the calibration and test images; None: the training run's.
      data_dir: Folder with DATASET.npz (see `sgt_tfmot.data.load_arrays`).
      data_options: How an image-folder dataset is read (`sgt_tfmot.data.options`);
        default: the training run's.
      calibration_samples: N training images, stratified by class (`seed`), calibrate a
        float model's ranges; a QAT model needs none (its ranges are learned) and uses none.
      seed: Seed of the stratified order the test and calibration images are taken in.
      checks: What the checks run on and how (`CheckOptions`: test images, saliency
        fidelity, occlusion maps, TFLite Micro images, profiling); default `CheckOptions()`.
      thresholds: What the checks require (`Thresholds`); default `Thresholds()`.
      delivery: The delivered file (`Delivery`: I/O type, softmax, RGB input, metadata,
        labels, layout, INT4 packing); default `Delivery()`.
      report: Where to write the JSON report, or None.
      figure: Where to write the saliency PNG; None: beside `report` (same name, .png).
      c_array: Also write the file as a C source (this path: .c, .cc or .cpp) and header
        (beside it, .h) for a firmware project (`c_array_section`); needs tflite-micro.
      overwrite: Replace output files this tool wrote before (`sgt_tfmot._files`).
      trust_model_code: Load a model whose layers carry Python code.
      progress: Called with a short message before each slow stage.

    Returns:
      A `Conversion`; `passed` is False when a check failed.

    Raises:
      InputError, ModelFileError, DataError (all ValueErrors): on bad input, before any
        file is written.
    """
    say = progress or (lambda message: None)
    calibration_samples = check_int(calibration_samples, "calibration_samples", 0)
    seed = check_int(seed, "seed", 0)
    checks = CheckOptions() if checks is None else checks
    thresholds = Thresholds() if thresholds is None else thresholds
    delivery = Delivery() if delivery is None else delivery
    options = attributions.AttributionOptions(smooth_samples=checks.smooth_samples)
    fidelity = (checks.fidelity_protocol, checks.fidelity_fill)
    io_dtype = delivery.io_dtype
    paths = check_outputs(output, report, figure, overwrite, c_array)
    loaded = load(model, calibration_samples, trust_model_code)
    loaded = delivered_scores(loaded, delivery)
    samples = load_data(
        loaded, dataset, data_dir, checks.num_test, calibration_samples, data_options, seed
    )
    labels = class_labels(delivery, samples, loaded)
    with _cli.native_output_captured():
        flatbuffer, float_flatbuffer = convert(loaded, samples, io_dtype, delivery, labels, say)
        flatbuffer, packing = pack_weights(flatbuffer, loaded, delivery, say)
        tflite_model = _AppModel(flatbuffer, delivery.rgb_input)
    found = run_checks(loaded, samples, tflite_model, checks.fidelity_images, checks.saliency,
                       fidelity, options, say, checks.occlusion_images,
                       delivery.softmax)  # fmt: skip
    with _cli.native_output_captured():  # the targets' and LiteRT's C++ notices
        reports = check_targets(flatbuffer, paths["output"], samples, tflite_model, labels, say,
                                checks.tflm_images)  # fmt: skip
        latency = latency_section(flatbuffer, float_flatbuffer, say) if checks.profile else None
    ties = add_rounding_ties(flatbuffer)
    failures = gate(thresholds, found.accuracy, found.fidelity, reports.values(), ties)
    c_files, c_section = {}, None
    if "c_array" in paths:
        c_section, c_files, c_failure = c_array_section(
            flatbuffer, paths, reports.get("tflm"),
            f"{loaded.file} ({samples.dataset}, {io_dtype} I/O)",
        )  # fmt: skip
        failures += [c_failure] if c_failure else []
    result = ConversionReport(
        model=str(loaded.file), output=str(paths["output"]),
        quantization="qat" if loaded.quantized else "post_training",
        keras_compute_dtype=loaded.compute_dtype, io_dtype=io_dtype, dataset=samples.dataset,
        dataset_source=samples.source, data_dir=samples.data_dir,
        calibration_samples=0 if samples.calibration is None else len(samples.calibration),
        test_images=samples.test_images, calibration_images=samples.calibration_images,
        size_bytes=len(flatbuffer), float_size_bytes=len(float_flatbuffer),
        accuracy=found.accuracy,
        biases_aligned=biases_aligned(loaded.model) if loaded.quantized else None,
        export_model=found.export_model, fidelity=found.fidelity, targets=reports,
        integer_maps=found.integer_maps,
        deployment=deployment_section(tflite_model, flatbuffer, delivery, latency, packing),
        thresholds=thresholds,
        failures=tuple(failures), report=str(paths["report"]) if "report" in paths else None,
        figure=str(paths["figure"]) if "figure" in paths else None, class_names=labels,
        c_array=c_section, rounding_ties=ties,
    )  # fmt: skip
    contents = {paths["output"]: flatbuffer, **c_files}
    if "figure" in paths:
        contents[paths["figure"]] = _figure(
            loaded, samples, found, tflite_model, io_dtype, options, labels
        )
    if "report" in paths:
        contents[paths["report"]] = (json.dumps(result.to_dict(), indent=2) + "\n").encode()
    write_outputs(contents, PROGRAM)
    return Conversion(result, format_summary(result))
