"""The one place that imports TensorFlow, Keras 2 (`tf_keras`) and TFMOT.

TFMOT and tf-keras-vis 0.8.7 only work with Keras 2. TensorFlow picks the Keras behind
`tf.keras` when it is first imported, from the environment variable `TF_USE_LEGACY_KERAS`,
so this module sets it before importing TensorFlow. If TensorFlow was already imported with
Keras 3 behind `tf.keras`, nothing can be fixed any more: we raise an `ImportError` that says
what to do instead of letting a confusing error surface later inside TFMOT.

TFMOT 0.8.1 probes for Keras 2 internals with `from keras.engine import base_layer`
(`prune_registry`); with Keras 3 installed beside tf_keras, as TensorFlow installs it, the probe
imports all of Keras 3 (scikit-learn, SciPy, Matplotlib, IPython: about 1.3 s of every
command's start) and then fails, leaving `base_layer` None. `_import_tfmot` makes the probe
fail at once instead, with the same outcome; when Keras 3 is already imported (a user's own
`import keras`), TFMOT is imported as it is.

Every other module of the package does `from sgt_tfmot.keras import keras, tf`.
"""

import importlib.abc
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


class _NoKeras3(importlib.abc.MetaPathFinder):
    """Answers an import of the `keras` package (Keras 3) with ModuleNotFoundError."""

    def find_spec(self, name, path=None, target=None):
        if name == "keras":
            raise ModuleNotFoundError("skipped while importing TFMOT", name=name)
        return None


def _import_tfmot():
    if "keras" in sys.modules or "tensorflow_model_optimization" in sys.modules:
        import tensorflow_model_optimization

        return tensorflow_model_optimization
    finder = _NoKeras3()
    sys.meta_path.insert(0, finder)
    try:
        import tensorflow_model_optimization
    finally:
        sys.meta_path.remove(finder)
    return tensorflow_model_optimization


tfmot = _import_tfmot()
import tf_keras as keras  # noqa: E402

__all__ = ["keras", "tf", "tfmot"]
