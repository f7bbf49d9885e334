"""Full-integer TFLite export and deployment checks (LiteRT, Edge TPU rules)."""

from sgt_tfmot.tflite.converter import export_model, to_integer_tflite

__all__ = ["export_model", "to_integer_tflite"]
