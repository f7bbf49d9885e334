"""Conversion to a checked, full-integer TFLite model (the library of `sgt_tfmot.convert`).

| module   | what it holds                                                              |
|----------|----------------------------------------------------------------------------|
| `stages` | `convert_and_check` and its stages (outputs, load, data, convert, checks);  |
|          | `Delivery`, what the delivered file looks like (I/O type, softmax, ...)      |
| `checks` | accuracy and agreement, the one-ulp floor, `Thresholds` and the gate;        |
|          | `CheckOptions`, what is checked and how (test images, fidelity, TFLM, ...)   |
| `report` | `ConversionReport`, its JSON schema (`to_dict`) and the human summary       |

Example:

    from sgt_tfmot.conversion import CheckOptions, Delivery, Thresholds, convert_and_check

    conversion = convert_and_check(
        "runs/mnist", "model.tflite", calibration_samples=0,
        checks=CheckOptions(num_test=1000), thresholds=Thresholds(require=("tflm",)),
        delivery=Delivery(io_dtype="uint8"), report="report.json",
    )
"""

from sgt_tfmot.conversion.checks import (
    AccuracyComparison,
    CheckOptions,
    Thresholds,
    compare_accuracy,
    gate,
    ulp_agreement,
)
from sgt_tfmot.conversion.report import ConversionReport, format_summary
from sgt_tfmot.conversion.stages import Conversion, Delivery, convert_and_check

__all__ = [
    "AccuracyComparison",
    "CheckOptions",
    "Conversion",
    "ConversionReport",
    "Delivery",
    "Thresholds",
    "compare_accuracy",
    "convert_and_check",
    "format_summary",
    "gate",
    "ulp_agreement",
]
