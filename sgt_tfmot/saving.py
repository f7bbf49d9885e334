"""Saving and loading models, QAT or float, and the files of a training run's directory.

Float and QAT models round-trip through both formats, HDF5 (`.h5`, what training writes) and
the `.keras` zip format, with `save_model`/`load_model` here or with
`keras.models.load_model` inside `sgt_tfmot.quantize_scope()`. (TFMOT 0.8.1's own
`QuantizeWrapperV2` orders its weights by when its inner layer was built, which broke both
formats for some layers; `quantize_scope` loads wrappers through
`sgt_tfmot.quantize.QuantizeWrapperV2`, which does not.)

A training run's directory (`python -m sgt_tfmot.train --out_dir OUT`) holds the trained
model as `OUT/model.h5`; every command that takes a model accepts either that file or the
directory.
"""

from __future__ import annotations

import os
from pathlib import Path

from sgt_tfmot.keras import keras
from sgt_tfmot.quantize import quantize_scope

RUN_MODEL_FILE = "model.h5"
MODEL_SUFFIXES = (".h5", ".keras")


class ModelFileError(ValueError):
    """A model path that does not exist or does not hold a Keras model."""


def resolve_model_path(path: str | os.PathLike) -> Path:
    """The model file behind `path`: the file itself, or `path/model.h5` for a run directory."""
    path = Path(path)
    if path.is_dir():
        candidate = path / RUN_MODEL_FILE
        if not candidate.is_file():
            raise ModelFileError(
                f"{path} is a directory without {RUN_MODEL_FILE}: pass a saved model file "
                f"({', '.join(MODEL_SUFFIXES)}) or the output directory of a finished "
                "`python -m sgt_tfmot.train` run."
            )
        return candidate
    if not path.exists():
        raise ModelFileError(f"No model at {path}: the path does not exist.")
    if path.suffix not in MODEL_SUFFIXES:
        raise ModelFileError(
            f"{path} is not a Keras model file: expected one of {', '.join(MODEL_SUFFIXES)}."
        )
    return path


def load_model(path: str | os.PathLike, compile: bool = False) -> keras.Model:
    """Loads a float or QAT model from a file or a training run's directory.

    Args:
      path: A `.h5` / `.keras` file, or a directory holding `model.h5`.
      compile: Restore the training configuration too.

    Raises:
      ModelFileError (a ValueError): when the path is missing or is not a Keras model.
    """
    file = resolve_model_path(path)
    try:
        with quantize_scope():
            model = keras.models.load_model(file, compile=compile)
    except (OSError, ValueError, TypeError, KeyError) as error:
        first_line = str(error).strip().splitlines()[0] if str(error).strip() else type(error)
        raise ModelFileError(f"Could not load a Keras model from {file}: {first_line}") from None
    if not isinstance(model, keras.Model):
        raise ModelFileError(f"{file} does not hold a Keras model.")
    return model


def save_model(model: keras.Model, path: str | os.PathLike, overwrite: bool = False) -> Path:
    """Saves `model` without its optimizer, atomically, never overwriting by default.

    Models trained under a mixed precision policy are saved with float32 layers
    (`float32_model`), so the file converts and runs anywhere.

    Raises:
      FileExistsError: when `path` exists and `overwrite` is False.
      ValueError: for a suffix other than .h5 / .keras.
    """
    path = Path(path)
    if path.suffix not in MODEL_SUFFIXES:
        raise ValueError(f"Model files end in {' or '.join(MODEL_SUFFIXES)}. Received: {path}")
    if path.exists() and not overwrite:
        raise FileExistsError(f"{path} exists; pass overwrite=True to replace it.")
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.partial{path.suffix}")
    options = {"include_optimizer": False} if path.suffix == ".h5" else {}
    float32_model(model).save(tmp, **options)
    os.replace(tmp, path)
    return path


_LOW_PRECISION = frozenset({"mixed_bfloat16", "mixed_float16", "bfloat16", "float16"})


def _is_low_precision(dtype) -> bool:
    """True for a layer `dtype` entry that computes below float32 (a mixed policy)."""
    if isinstance(dtype, dict):
        dtype = dtype.get("config", {}).get("name")
    return isinstance(dtype, str) and dtype in _LOW_PRECISION


def _float32_config(value):
    """A model config with every low-precision layer dtype (policy) replaced by float32."""
    if isinstance(value, dict):
        return {
            key: "float32" if key == "dtype" and _is_low_precision(item) else _float32_config(item)
            for key, item in value.items()
        }
    if isinstance(value, list):
        return [_float32_config(item) for item in value]
    return value


def float32_model(model: keras.Model) -> keras.Model:
    """`model` with float32 layers: rebuilt if it was built under a mixed precision policy.

    A model built under `mixed_bfloat16` keeps that policy in every layer's config (bfloat16
    compute, float32 variables); the TFLite converter rejects its bfloat16 ops ("binary op
    operands have same element type"). The network is defined by its float32 variables, so
    it is rebuilt with float32 layers and the same weights. A float32 model comes back as is.
    """
    config = model.get_config()
    rebuilt_config = _float32_config(config)
    if rebuilt_config == config:
        return model
    with quantize_scope():
        rebuilt = type(model).from_config(rebuilt_config)
    rebuilt.set_weights(model.get_weights())
    return rebuilt
