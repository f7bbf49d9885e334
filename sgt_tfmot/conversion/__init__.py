"""Conversion to a checked, full-integer TFLite model (the library of `sgt_tfmot.convert`).

| module   | what it holds                                                              |
|----------|----------------------------------------------------------------------------|
| `stages` | `convert_and_check` and its stages (outputs, load, data, convert, checks)    |
| `checks` | accuracy and agreement, the one-ulp floor, `Thresholds` and the gate         |
| `report` | `ConversionReport`, its JSON schema (`to_dict`) and the human summary       |
"""

from sgt_tfmot.conversion.checks import (
    AccuracyComparison,
    Thresholds,
    compare_accuracy,
    gate,
    ulp_agreement,
)
from sgt_tfmot.conversion.report import ConversionReport, format_summary
from sgt_tfmot.conversion.stages import Conversion, Delivery, convert_and_check

__all__ = [
    "AccuracyComparison",
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
