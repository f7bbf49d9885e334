"""sgt-tfmot: PACT quantization-aware training and Saliency-Guided Training for tf_keras.

Importing this package sets `TF_USE_LEGACY_KERAS=1`, so that TensorFlow, when it is
imported, runs with Keras 2 (`tf_keras`), which TFMOT and tf-keras-vis need (see
`sgt_tfmot.keras`). TensorFlow itself is imported on first use of the API below, so the
command-line tools can start it quietly.

The supported API:

* `quantize_model`, `quantize_scope`: PACT quantization-aware training (`sgt_tfmot.quantize`).
* `PACTQuantizer`, `WeightQuantizer`, `RangeQuantizer`, `FixedRangeQuantizer`, `pact`,
  `quantize_weights`: the quantizers (for `layer_configs` and custom QuantizeConfigs).
* `SaliencyGuidedModel`: Saliency-Guided Training through `model.fit`.
* `saliency_mask`, `mask_input`: the masking rule of SGT (`sgt_tfmot.masking`).
* `save_model`, `load_model`: saving and (safe) loading of float and QAT models.
* `align_biases`, `export_model`: the Keras-level export rewrite (`sgt_tfmot.export`).
* `flatten_model`: inlines nested Functional models (`quantize_model` does it itself).
* `from_keras3`: a Keras 3 model as the equivalent tf_keras model (`quantize_model`,
  `SaliencyGuidedModel` and `load_model` translate Keras 3 models and files themselves).
* `sgt_tfmot.tflite.to_integer_tflite`: full-integer TFLite export; `sgt_tfmot.explain`:
  attribution maps and accuracy-drop curves; `sgt_tfmot.data`, `sgt_tfmot.models`.
"""

import importlib
import os
import sys

if "tensorflow" not in sys.modules:
    os.environ["TF_USE_LEGACY_KERAS"] = "1"

__version__ = "0.2.0"  # the one place the version is written (setup.cfg reads it)

_API = {
    "quantize_model": "sgt_tfmot.quantize",
    "quantize_scope": "sgt_tfmot.quantize",
    "PACTQuantizer": "sgt_tfmot.quantizers",
    "WeightQuantizer": "sgt_tfmot.quantizers",
    "RangeQuantizer": "sgt_tfmot.quantizers",
    "FixedRangeQuantizer": "sgt_tfmot.quantizers",
    "pact": "sgt_tfmot.quantizers",
    "quantize_weights": "sgt_tfmot.quantizers",
    "SaliencyGuidedModel": "sgt_tfmot.trainers",
    "saliency_mask": "sgt_tfmot.masking",
    "mask_input": "sgt_tfmot.masking",
    "save_model": "sgt_tfmot.saving",
    "load_model": "sgt_tfmot.saving",
    "align_biases": "sgt_tfmot.export",
    "export_model": "sgt_tfmot.export",
    "flatten_model": "sgt_tfmot._graph",
    "from_keras3": "sgt_tfmot.keras3",
}

__all__ = sorted([*_API, "__version__"])


def __getattr__(name: str):
    if name in _API:
        value = getattr(importlib.import_module(_API[name]), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'sgt_tfmot' has no attribute {name!r}")


def __dir__():
    return sorted(set(globals()) | set(_API))
