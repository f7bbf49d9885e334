"""The outcome of a conversion: `ConversionReport`, its JSON schema and its summary.

`ConversionReport.to_dict()` is the JSON report `python -m sgt_tfmot.convert --report` writes.
Its keys, in one place:

| key | meaning |
|---|---|
| model, output, report, figure | the paths read and written |
| quantization | "qat" (learned ranges) or "post_training" (calibrated float model) |
| keras_compute_dtype | the Keras model of the checks: "float32", or rebuilt from bf16 |
| io_dtype, batch_size | the integer model's input/output type and fixed batch |
| dataset, dataset_source, data_dir, class_names | the data, and where its name came from |
| calibration_samples | training images that calibrated ranges (0 for a QAT model) |
| test_images, calibration_images | how the checked test images and the calibration images |
| | were chosen: all of the split, or N stratified by class with the seed |
| size_bytes, float_size_bytes, size_ratio | the .tflite against a float32 .tflite of it |
| num_test, keras_accuracy, tflite_accuracy, accuracy_drop_pp, agreement, ulp_agreement, | |
| tied_disagreements | `AccuracyComparison`, on the test split |
| biases_aligned | a QAT model's biases are on the int32 grid (`align_biases`) |
| rounding_ties | ADDs and SUBs that XNNPACK rounds apart from the Keras model on a pair of input |
| | levels, or with a pair within `NEAR_TIE` of a rounding tie |
| | (`sgt_tfmot.tflite.requantize.RoundingTie`): op, kind, levels, steps, distance, xnnpack_apart |
| export_model | for k < 8 bits: the 8-bit export model's accuracy and agreement with TFLite |
| fidelity, fidelity_gap_pp | `sgt_tfmot.explain.fidelity.FidelityResult`, or null when skipped |
| integer_model_maps | occlusion maps of the .tflite (LiteRT) vs the Keras model's (ρ, IoU) |
| targets | deployment target name -> its section (`sgt_tfmot.tflite.targets`) |
| edgetpu_compatible, internal_quantize_ops, op_names, edgetpu | the Edge TPU target, flat |
| deployment | what an app needs: I/O tensors' types and quantization; `weights` (container |
| | "int8", or "int4" with the packed tensors, their ops, bytes saved, those skipped); |
| | `layout` |
| | ("default", or "space_to_depth" with `--space_to_depth`); `latency` (with |
| | `--profile`, else null): batch-1 integer vs float32 time, min and median, their ratio, |
| | the delegate partitions, the integer time per op type (`by_type`) and per op (`ops`) |
| c_array | with `--c_array`: the C source and header written (source, header, name, length, |
| | arena_bytes: the header's arena, op_count, written), else null |
| thresholds, failures, checks_passed | the gate |
"""

from __future__ import annotations

import dataclasses

from sgt_tfmot.conversion.checks import AccuracyComparison, Thresholds
from sgt_tfmot.explain.fidelity import FidelityResult
from sgt_tfmot.ties import NEAR_TIE

__all__ = ["ConversionReport", "format_summary"]


@dataclasses.dataclass(frozen=True)
class ConversionReport:
    """What `convert_and_check` did and found (see the module docstring for the JSON keys)."""

    model: str
    output: str
    quantization: str
    keras_compute_dtype: str
    io_dtype: str
    dataset: str
    dataset_source: str
    data_dir: str | None
    calibration_samples: int
    size_bytes: int
    float_size_bytes: int
    accuracy: AccuracyComparison
    biases_aligned: bool | None
    export_model: dict | None
    fidelity: FidelityResult | None
    targets: dict
    deployment: dict
    thresholds: Thresholds
    failures: tuple[str, ...]
    report: str | None = None
    figure: str | None = None
    class_names: tuple[str, ...] | None = None
    batch_size: int = 1
    integer_maps: dict | None = None
    c_array: dict | None = None
    test_images: str = ""
    calibration_images: str | None = None
    rounding_ties: tuple = ()

    @property
    def passed(self) -> bool:
        return not self.failures

    @property
    def size_ratio(self) -> float:
        return self.size_bytes / self.float_size_bytes

    def to_dict(self) -> dict:
        """The JSON report."""
        accuracy = self.accuracy
        edgetpu = self.targets.get("edgetpu")
        flat_edgetpu = {}
        if edgetpu is not None:
            section = edgetpu.section
            flat_edgetpu = {
                "edgetpu_compatible": edgetpu.compatible,
                "internal_quantize_ops": section.get("internal_quantize_ops"),
                "op_names": section.get("op_names"),
                "edgetpu": {k: v for k, v in section.items() if k != "op_names"},
            }
        return {
            "model": self.model,
            "output": self.output,
            "quantization": self.quantization,
            "keras_compute_dtype": self.keras_compute_dtype,
            "io_dtype": self.io_dtype,
            "batch_size": self.batch_size,
            "dataset": self.dataset,
            "dataset_source": self.dataset_source,
            "data_dir": self.data_dir,
            "class_names": None if self.class_names is None else list(self.class_names),
            "calibration_samples": self.calibration_samples,
            "test_images": self.test_images,
            "calibration_images": self.calibration_images,
            "size_bytes": self.size_bytes,
            "float_size_bytes": self.float_size_bytes,
            "size_ratio": self.size_ratio,
            "num_test": accuracy.num_images,
            "keras_accuracy": accuracy.keras_accuracy,
            "tflite_accuracy": accuracy.tflite_accuracy,
            "accuracy_drop_pp": accuracy.accuracy_drop_pp,
            "agreement": accuracy.agreement,
            "ulp_agreement": accuracy.ulp_agreement,
            "tied_disagreements": accuracy.tied_disagreements,
            "biases_aligned": self.biases_aligned,
            "rounding_ties": [tie.to_dict() for tie in self.rounding_ties],
            "export_model": self.export_model,
            "fidelity": None if self.fidelity is None else self.fidelity.to_dict(),
            "fidelity_gap_pp": None if self.fidelity is None else self.fidelity.gap_pp,
            "integer_model_maps": self.integer_maps,
            "targets": {name: target.to_dict() for name, target in self.targets.items()},
            **flat_edgetpu,
            "deployment": self.deployment,
            "c_array": self.c_array,
            "thresholds": self.thresholds.to_dict(),
            "failures": list(self.failures),
            "checks_passed": self.passed,
            "report": self.report,
            "figure": self.figure,
        }


def _percent(value: float) -> str:
    return f"{100 * value:.2f} %"


def _accuracy_lines(report: ConversionReport) -> list[str]:
    accuracy, thresholds = report.accuracy, report.thresholds
    lines = [
        f"Accuracy on {report.test_images or f'{accuracy.num_images} test images'}: Keras "
        f"{_percent(accuracy.keras_accuracy)}, TFLite {_percent(accuracy.tflite_accuracy)} "
        f"(drop {accuracy.accuracy_drop_pp:.2f} pp; max {thresholds.max_accuracy_drop:g})",
        f"Top-1 agreement: {_percent(accuracy.agreement)} "
        f"(min {100 * thresholds.min_agreement:g} %)",
        f"  (rounding alone: the Keras model agrees with itself after a one-ulp change of its "
        f"weights on {_percent(accuracy.ulp_agreement)})",
    ]
    if accuracy.tied_disagreements:
        lines.append(
            f"  (ties at the top: on {accuracy.tied_disagreements} of the "
            f"{accuracy.disagreements} images the models classify differently, the integer "
            "model's top score is shared by two or more classes)"
        )
    if report.biases_aligned is False:
        lines.append(
            "  (the Keras model's biases are not on the integer model's int32 grid: "
            "sgt_tfmot.align_biases(model) makes the Keras model compute the integer "
            "model; python -m sgt_tfmot.train does it at the end of a run)"
        )
    lines.extend(_tie_lines(report.rounding_ties))
    export = report.export_model
    if export is not None:
        lines.append(
            f"  ({export['lowest_bits']}-bit QAT model: the integer model computes its 8-bit "
            f"export model (BN folded, biases on the int32 grid), accuracy "
            f"{_percent(export['keras_accuracy'])}, agreement with "
            f"TFLite {_percent(export['agreement_with_tflite'])})"
        )
    return lines


def _ops(ties) -> str:
    """The kinds of op `ties` hold, in words: ADDs, SUBs, or ADDs and SUBs."""
    kinds = sorted({tie.kind for tie in ties})
    return " and ".join(f"{kind}s" for kind in kinds)


def _tie_lines(ties) -> list[str]:
    """One line for the file's ADDs (and SUBs) near a rounding tie: how many XNNPACK rounds
    apart from the Keras model, and on how many pairs of input levels; a single one in full.
    The top-1 agreement says whether they matter (a failed check names the telling one)."""
    if not ties:
        return []
    if len(ties) == 1:
        return [f"  ({ties[0].describe()})"]
    apart = [tie for tie in ties if tie.apart]
    said = []
    if apart:
        pairs = sum(tie.apart for tie in apart)
        said.append(
            f"{len(apart)} {_ops(apart)} that XNNPACK rounds apart from the Keras model on "
            f"{pairs} pairs of input levels in all"
        )
    if len(ties) > len(apart):
        said.append(f"{len(ties) - len(apart)} with a pair within {NEAR_TIE:g} of a step of a tie")
    return [f"  (rounding ties: {'; '.join(said)}; the report's rounding_ties lists them)"]


def _fidelity_lines(report: ConversionReport) -> list[str]:
    fidelity = report.fidelity
    if fidelity is None:
        return ["Saliency fidelity: not run (--fidelity_images 0)"]
    lines = [
        f"Saliency fidelity ({fidelity.method}, protocol {fidelity.protocol}, fill "
        f"{fidelity.fill}, "
        f"{fidelity.num_images} images): gap {fidelity.gap_pp:.2f} pp "
        f"(max {report.thresholds.max_fidelity_gap:g})"
    ]
    if fidelity.zero_saliency_images:
        lines.append(
            f"  ({fidelity.zero_saliency_images} images have an all-zero saliency map: "
            "their true-class output is outside the output quantizer's range)"
        )
    if fidelity.export_gap_pp is not None:
        lines.append(
            f"  (gap between the 8-bit export model and TFLite: {fidelity.export_gap_pp:.2f} pp)"
        )
    lines.append(
        "  accuracy % with x % removed  " + " ".join(f"{100 * f:>5.0f}" for f in fidelity.fractions)
    )
    for order in ("top", "bottom"):
        for model in ("keras", "tflite", "export"):
            curve = fidelity.curves().get(f"{model}_{order}")
            if curve is None:
                continue
            label = f"  {model} ({'most' if order == 'top' else 'least'} salient first)"
            lines.append(f"{label:<30} " + " ".join(f"{100 * a:5.1f}" for a in curve))
    return lines


def _integer_map_lines(report: ConversionReport) -> list[str]:
    found = report.integer_maps
    if not found:
        return []
    lines = []
    for key, what in (("vs_keras_occlusion", "Keras occlusion"),
                      ("vs_keras_gradient", "Keras vanilla gradient")):  # fmt: skip
        if key in found:
            item = found[key]
            rho = "n/a" if item["spearman_mean"] is None else f"{item['spearman_mean']:.3f}"
            lines.append(f"  vs {what}: Spearman {rho}, top-10 % IoU {item['iou_mean']:.3f}")
    head = (f"Maps of the integer model itself (occlusion in LiteRT, {found['images']} images, "
            f"patch {found['patch']}, stride {found['stride']}):")  # fmt: skip
    return [head, *lines]


_LAYOUTS = {"space_to_depth": ", full-resolution stage as 2x2 pixel blocks"}


def _latency_lines(report: ConversionReport) -> list[str]:
    latency = report.deployment.get("latency")
    if not latency:
        return []
    integer, baseline, ratio = latency["integer_ms"], latency["float32_ms"], latency["ratio"]
    shares = ", ".join(
        f"{share['name']} {100 * share['share']:.0f} % ({share['count']})"
        for share in latency["by_type"][:5]
    )
    return [
        f"Latency (batch 1, {latency['num_threads']} thread, min of {latency['rounds']}x"
        f"{latency['invokes']} interleaved invokes; a busy machine varies): integer "
        f"{integer['min']:.3f} ms, float32 {baseline['min']:.3f} ms ({ratio['min']:.2f}x; "
        f"median {ratio['median']:.2f}x), {latency['delegate_partitions']} delegate "
        "partition(s)",
        f"  integer time by op type: {shares}",
    ]


def _weights_lines(report: ConversionReport) -> list[str]:
    weights = report.deployment.get("weights") or {}
    if weights.get("container") != "int4":
        return []
    ops = sorted(set(weights["ops"]))
    return [
        f"  {weights['tensors']} kernels stored as INT4, two per byte ({', '.join(ops)}): "
        f"{weights['bytes_saved']:,} bytes saved, the same outputs in LiteRT's builtin and "
        "reference kernels and in TFLite Micro; the Edge TPU takes int8 kernels only",
        "  (XNNPACK leaves INT4 convolutions to LiteRT's builtin kernels, which requantize in "
        "fixed point as TFLite Micro does: the accuracy and agreement below are theirs)",
    ]


def format_summary(report: ConversionReport, verbose: bool = False) -> str:
    """The CLI's human summary: size, targets, accuracy, agreement, fidelity, files, verdict;
    `verbose` adds each target's details (the Edge TPU op table, also in the JSON report)."""
    lines = [
        f"Integer TFLite model: {report.output} ({report.io_dtype} I/O, batch "
        f"{report.batch_size}, {report.quantization.replace('_', '-')} ranges, "
        f"{report.calibration_samples} calibration images"
        f"{_LAYOUTS.get(report.deployment.get('layout'), '')})",
        f"Size: {report.size_bytes:,} bytes vs {report.float_size_bytes:,} bytes for the "
        f"float32 TFLite model ({report.size_ratio:.2f}x)",
        *_weights_lines(report),
        *_latency_lines(report),
    ]
    for target in report.targets.values():
        lines += ["", *target.lines, *(target.details if verbose else ())]
    lines += ["", *_accuracy_lines(report), *_fidelity_lines(report), *_integer_map_lines(report)]
    written = [f"model {report.output}"]
    if report.report:
        written.append(f"report {report.report}")
    if report.figure:
        written.append(f"figure {report.figure}")
    if report.c_array and report.c_array["written"]:
        found = report.c_array
        written.append(
            f"C array {found['source']} + {found['header']} ({found['name']}, "
            f"{found['length']:,} bytes; arena {found['arena_bytes']:,}, "
            f"MicroMutableOpResolver<{found['op_count']}>)"
        )
    lines.append("Wrote " + ", ".join(written))
    if report.passed:
        lines.append("Checks passed.")
    else:
        lines.extend(f"FAILED: {failure}" for failure in report.failures)
    return "\n".join(lines)
