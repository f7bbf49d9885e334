"""The one place that imports TensorFlow, Keras 2 (`tf_keras`) and TFMOT.

TFMOT and tf-keras-vis 0.8.7 only work with Keras 2. TensorFlow picks the Keras behind
`tf.keras` when it is first imported, from the environment variable `TF_USE_LEGACY_KERAS`,
so this module sets it before importing TensorFlow. If TensorFlow was already imported with
Keras 3 behind `tf.keras`, nothing can be fixed any more: we raise an `ImportError` that says
what to do instead of letting a confusing error surface later inside TFMOT.

Every other module of the package does `from sgt_tfmot.keras import keras, tf`.
"""

import os
import sys

_LEGACY_VALUES = ("1", "true", "True")

if "tensorflow" not in sys.modules:
    os.environ["TF_USE_LEGACY_KERAS"] = "1"

import tensorflow as tf  # noqa: E402


def _check_keras_2() -> None:
    version_fn = getattr(tf.keras, "version", None)
    version = version_fn() if version_fn else "2"
    if version.startswith("3."):
        raise ImportError(
            "sgt_tfmot needs Keras 2 (tf_keras) behind tf.keras, but TensorFlow was imported "
            f"before sgt_tfmot with Keras {version} active (TF_USE_LEGACY_KERAS="
            f"{os.environ.get('TF_USE_LEGACY_KERAS')!r}). Import sgt_tfmot before tensorflow, "
            "or set TF_USE_LEGACY_KERAS=1 in the environment before starting Python."
        )


_check_keras_2()

import tensorflow_model_optimization as tfmot  # noqa: E402
import tf_keras as keras  # noqa: E402

__all__ = ["keras", "tf", "tfmot"]
