"""Full-integer TFLite export and deployment checks (LiteRT, Edge TPU rules)."""

from sgt_tfmot.export import align_biases, export_model
from sgt_tfmot.tflite.converter import to_integer_tflite
from sgt_tfmot.tflite.edgetpu import check_edgetpu, format_table
from sgt_tfmot.tflite.flatbuffer import read_model
from sgt_tfmot.tflite.runtime import TFLiteModel

__all__ = [
    "TFLiteModel",
    "align_biases",
    "check_edgetpu",
    "export_model",
    "format_table",
    "read_model",
    "to_integer_tflite",
]
