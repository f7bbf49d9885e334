"""sgt-tfmot: PACT quantization-aware training and Saliency-Guided Training for tf_keras.

Importing this package makes sure TensorFlow runs with Keras 2 (`tf_keras`), which TFMOT and
tf-keras-vis need; see `sgt_tfmot._keras`.

The supported API:

* `quantize_model`, `quantize_scope`: PACT quantization-aware training (`sgt_tfmot.quantize`).
* `PACTQuantizer`, `WeightQuantizer`, `pact`, `quantize_weights`: the quantizers.
* `sgt_tfmot.trainers.SaliencyGuidedModel`: Saliency-Guided Training through `model.fit`.
* `sgt_tfmot.saliency.saliency_mask`: the masking rule.
* `sgt_tfmot.tflite.to_integer_tflite`: full-integer TFLite export.
"""

from sgt_tfmot import _keras  # noqa: F401  (must come first: sets TF_USE_LEGACY_KERAS)
from sgt_tfmot.quantize import quantize_model, quantize_scope
from sgt_tfmot.quantizers import PACTQuantizer, WeightQuantizer, pact, quantize_weights

__version__ = "0.1.0"

__all__ = [
    "PACTQuantizer",
    "WeightQuantizer",
    "__version__",
    "pact",
    "quantize_model",
    "quantize_scope",
    "quantize_weights",
]
