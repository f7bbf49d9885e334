"""sgt-tfmot: PACT quantization-aware training and Saliency-Guided Training for tf_keras.

Importing this package makes sure TensorFlow runs with Keras 2 (`tf_keras`), which TFMOT and
tf-keras-vis need; see `sgt_tfmot._keras`.
"""

from sgt_tfmot import _keras  # noqa: F401  (must come first: sets TF_USE_LEGACY_KERAS)

__version__ = "0.1.0"

__all__ = ["__version__"]
