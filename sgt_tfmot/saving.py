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

import json
import os
import re
import warnings
import zipfile
from pathlib import Path

from sgt_tfmot import keras3
from sgt_tfmot._checks import InputError
from sgt_tfmot._stored import check_stored_weights, check_zip_member
from sgt_tfmot.decompose import ARITHMETIC_FUNCTIONS
from sgt_tfmot.keras import keras
from sgt_tfmot.quantize import quantize_scope

RUN_MODEL_FILE = "model.h5"
MODEL_SUFFIXES = (".h5", ".keras")


class ModelFileError(ValueError):
    """A model path that does not exist or does not hold a Keras model."""


def resolve_model_path(path: str | os.PathLike) -> Path:
    """The model file behind `path`: the file itself, `path/model.h5` for a run directory,
    or a zoo entry's for `zoo:NAME` (`sgt_tfmot.zoo`)."""
    if isinstance(path, str) and path.startswith("zoo:"):
        from sgt_tfmot import zoo

        path = zoo.resolve(path)
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


_CODE_LAYERS = frozenset({"Lambda", "TFOpLambda", "SlicingOpLambda"})
_KERAS_NAMESPACES = ("layers", "initializers", "regularizers", "constraints", "mixed_precision")
_MODEL_CLASSES = frozenset({"Functional", "Sequential", "Model", "Policy", "DTypePolicy"})


def _stored_config(file: Path) -> dict:
    """The model config stored in an .h5 or .keras file, read without deserializing it."""
    try:
        archive = _open_model_file(file)
        with archive:
            if file.suffix == ".keras":
                check_zip_member(archive, "config.json", file)
                return json.loads(archive.read("config.json"))
            text = archive.attrs.get("model_config")
        if text is None:
            raise ValueError("the file holds no model_config (weights only?)")
        return json.loads(text.decode() if isinstance(text, bytes) else text)
    except ModelFileError:
        raise
    except InputError as error:
        raise ModelFileError(str(error)) from None
    except (OSError, ValueError, KeyError, RecursionError, zipfile.BadZipFile) as error:
        reason = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        raise ModelFileError(f"Could not load a Keras model from {file}: {reason}") from None


def _open_model_file(file: Path):
    """The opened zip (.keras) or HDF5 file (.h5).

    Raises:
      ModelFileError: "truncated or not a Keras model file" when the container cannot be
        opened (HDF5's and zipfile's own wording only in parentheses, shortened).
    """
    import h5py

    try:
        if file.suffix == ".keras":
            return zipfile.ZipFile(file)
        return h5py.File(file, "r")
    except (OSError, zipfile.BadZipFile) as error:
        text = str(error)
        found = re.search(r"eof = (\d+).*stored_eof = (\d+)", text)
        if found:
            reason = f"it ends at byte {int(found[1]):,} of {int(found[2]):,}"
        elif isinstance(error, zipfile.BadZipFile):
            reason = "not a complete zip archive"
        else:
            reason = "HDF5 cannot read it"
        raise ModelFileError(
            f"{file} is truncated or not a Keras model file ({reason}); save the model "
            f"again (model.save('{file.name}'))."
        ) from None


def _known_class(name: str, scope_objects: dict) -> bool:
    if name in _MODEL_CLASSES or name in scope_objects:
        return True
    if keras.utils.get_registered_object(name) is not None:
        return True
    return any(
        isinstance(getattr(getattr(keras, namespace), name, None), type)
        for namespace in _KERAS_NAMESPACES
    )


def _serialized_objects(config, owner: str = "?"):
    """(owning layer name, entry) of every serialized Keras object (a dict with a
    "class_name": a class with its config, or a function by name) inside `config`."""
    if isinstance(config, dict):
        inner = config.get("config")
        if "class_name" in config and isinstance(inner, dict | str | type(None)):
            name = inner.get("name", owner) if isinstance(inner, dict) else owner
            yield name, config
            owner = name
        for value in config.values():
            yield from _serialized_objects(value, owner)
    elif isinstance(config, list):
        for value in config:
            yield from _serialized_objects(value, owner)


_KERAS_MODULES = ("keras", "tf_keras")
_BUILTIN_FUNCTIONS = ("activations", "constraints", "initializers", "losses", "metrics",
                      "regularizers")  # fmt: skip


def _outside_code(entry: dict, objects: dict) -> str | None:
    """What in a serialized object of a .keras config Keras would import from a module
    outside Keras (it imports any module an unregistered object names), or None."""
    module = entry.get("module")
    if not isinstance(module, str):
        return None  # an .h5 config: classes are looked up by name only
    keras_module = module.split(".")[0] in _KERAS_MODULES
    if entry.get("class_name") == "function":
        name = entry.get("config")
        if keras.utils.get_registered_object(name, custom_objects=objects) is not None:
            return None
        builtin = module == "builtins" and any(
            callable(getattr(getattr(keras, place), str(name), None))
            for place in _BUILTIN_FUNCTIONS
        )
        return None if keras_module or builtin else f"names the function {module}.{name}"
    registered = entry.get("registered_name")
    if keras_module or keras.utils.get_registered_object(registered, objects) is not None:
        return None
    return f"has class {entry.get('class_name')!r} (module {module})"


def _arithmetic(entry: dict) -> bool:
    """True for a TFOpLambda adding, subtracting, multiplying or dividing (`x + 3.0`, as
    MobileNetV3 writes its hard swish): it names a TensorFlow arithmetic function, no code,
    and `quantize_model` rewrites it as a Rescaling (`decompose.ARITHMETIC_FUNCTIONS`)."""
    config = entry.get("config")
    return (
        entry.get("class_name") == "TFOpLambda"
        and isinstance(config, dict)
        and config.get("function") in ARITHMETIC_FUNCTIONS
    )


def check_model_file(path: str | os.PathLike) -> Path:
    """Refuses a model file whose layers carry Python code or unknown custom classes.

    Reads the stored config without deserializing anything: a `Lambda` (or `TFOpLambda`,
    but for arithmetic with a number) layer, whose function would run while the model is
    rebuilt, and any class that is not a Keras, TFMOT or sgt_tfmot class nor registered by
    the caller (`keras.utils.register_keras_serializable`) is refused.

    Raises:
      ModelFileError: naming the first such layer, its class, and the way out.
    """
    file = resolve_model_path(path)
    with quantize_scope() as scope:
        objects = {}
        for mapping in scope.custom_objects:
            objects.update(mapping)
    for layer, entry in _serialized_objects(_stored_config(file)):
        class_name = entry["class_name"]
        if _arithmetic(entry):
            continue  # a Keras layer naming a TensorFlow function, no code
        if class_name in _CODE_LAYERS:
            raise ModelFileError(
                f"{file}: layer {layer!r} is a {class_name} layer, which runs Python code "
                "stored in the file; nothing was loaded. Pass --trust_model_code "
                "(trust_code=True) only for files you trust."
            )
        outside = _outside_code(entry, objects)
        if outside is not None and outside.startswith("names"):
            raise ModelFileError(
                f"{file}: layer {layer!r} {outside}, code from outside Keras; nothing was "
                "loaded. Register it with keras.utils.register_keras_serializable (its code "
                "then comes from you, not from the file) or pass --trust_model_code."
            )
        if outside is not None:
            raise ModelFileError(
                f"{file}: layer {layer!r} {outside}, which is neither a Keras, TFMOT or "
                "sgt_tfmot class nor registered with keras.utils.register_keras_serializable; "
                "nothing was loaded. Register it (its code then comes from you, not from the "
                "file) or pass --trust_model_code."
            )
        if not isinstance(entry.get("config"), str) and not _known_class(class_name, objects):
            raise ModelFileError(
                f"{file}: layer {layer!r} has class {class_name!r}, which is neither a Keras, "
                "TFMOT or sgt_tfmot class nor registered with "
                "keras.utils.register_keras_serializable; register it (its code then comes "
                "from you, not from the file) or pass --trust_model_code."
            )
    return file


def load_model(
    path: str | os.PathLike, compile: bool = False, trust_code: bool = False
) -> keras.Model:
    """Loads a float or QAT model from a file or a training run's directory, safely.

    Opening a model must not run code hidden in it: unless `trust_code`, the file's config is
    checked first (`check_model_file`) and `.keras` files load with Keras's `safe_mode`. A
    file written by Keras 3 is read as data and translated into the equivalent tf_keras
    model (`sgt_tfmot.keras3.load`).

    Args:
      path: A `.h5` / `.keras` file, or a directory holding `model.h5`.
      compile: Restore the training configuration too.
      trust_code: Allow layers that carry Python code (`Lambda`) and unregistered classes.

    Raises:
      ModelFileError (a ValueError): when the path is missing, is not a Keras model, or
        (without `trust_code`) holds code; `keras3.Keras3Error` (a ValueError) for a Keras 3
        model with layers that have no tf_keras counterpart (all named).
    """
    file = resolve_model_path(path)
    if keras3.is_keras3_file(file):  # read as data and translated: no code runs either way
        return keras3.load(file)
    file = file if trust_code else check_model_file(file)
    options = {"safe_mode": not trust_code} if file.suffix == ".keras" else {}
    # An .h5 file's Lambda is refused by tf_keras's safe mode too, which its HDF5 loader
    # takes from the scope only.
    safe_mode = keras.src.saving.serialization_lib.SafeModeScope(not trust_code)
    try:
        with quantize_scope(), warnings.catch_warnings(), safe_mode:
            warnings.simplefilter("ignore")
            model = _model_from_config(file, _stored_config(file), trust_code)
            check_stored_weights(file, model)
            if compile or _has_assets(file):  # Keras's own loader restores these too
                model = keras.models.load_model(file, compile=compile, **options)
            else:
                model.load_weights(file)
    except ModelFileError:
        raise
    except InputError as error:
        raise ModelFileError(str(error)) from None
    except (OSError, ValueError, TypeError, KeyError) as error:
        first_line = str(error).strip().splitlines()[0] if str(error).strip() else type(error)
        raise ModelFileError(f"Could not load a Keras model from {file}: {first_line}") from None
    if not isinstance(model, keras.Model):
        raise ModelFileError(f"{file} does not hold a Keras model.")
    return model


def _model_from_config(file: Path, config: dict, trust_code: bool) -> keras.Model:
    """The model a file's config describes, built without reading any weight (Keras's own
    first step of loading)."""
    serialization = keras.src.saving.serialization_lib
    if file.suffix == ".keras":
        config = {**config, "compile_config": None}
        with serialization.ObjectSharingScope():
            return keras.saving.deserialize_keras_object(config, safe_mode=not trust_code)
    with serialization.SafeModeScope(not trust_code):  # Keras's rule for Lambda functions
        return keras.models.model_from_config(config)


def _has_assets(file: Path) -> bool:
    """A .keras file that stores assets (a vocabulary, say) besides config and weights."""
    if file.suffix != ".keras":
        return False
    with zipfile.ZipFile(file) as archive:
        return any(name.startswith("assets/") for name in archive.namelist())


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
    with warnings.catch_warnings():  # Keras's advice against HDF5, about our own choice
        warnings.simplefilter("ignore")
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


def _policy_config(value, policy: str):
    """A model config with every layer's dtype policy set to `policy` (the input layers keep
    their input dtype: an InputLayer's `dtype` is the type of the tensor it takes)."""
    if isinstance(value, dict):
        inner = value.get("config")
        if (
            value.get("class_name") not in (None, "InputLayer")
            and isinstance(inner, dict)
            and "dtype" in inner
        ):
            value = {**value, "config": {**inner, "dtype": policy}}
        return {key: _policy_config(item, policy) for key, item in value.items()}
    if isinstance(value, list):
        return [_policy_config(item, policy) for item in value]
    return value


def with_policy(model: keras.Model, policy: str | None = None) -> keras.Model:
    """`model` with every layer under the precision policy `policy` (default: Keras's global
    policy), rebuilt from its config with the same weights; `model` itself when its layers
    already follow it.

    A model built under `keras.mixed_precision.set_global_policy("mixed_bfloat16")` gets that
    policy in every layer; a model *loaded from a file* keeps the policy its layers were
    saved with (float32). Quantize wrappers made under the global policy then cast their
    inputs to bfloat16 and the float32 layer inside fails ("Input 'filter' of 'Conv2D' Op has
    type float32 that does not match type bfloat16"). `sgt_tfmot.models.build` rebuilds a
    model file under the global policy, the way a built-in model is built.
    """
    policy = policy or keras.mixed_precision.global_policy().name
    config = model.get_config()
    rebuilt_config = _policy_config(config, policy)
    if all(layer.dtype_policy.name == policy for layer in _policy_layers(model)):
        return model
    return _rebuilt(model, rebuilt_config)


def from_own_config(model: keras.Model, config: dict) -> keras.Model:
    """A new model of `model`'s class from `config` (its own, changed), without weights. The
    model is already in memory, so a Lambda of it (trusted when it was loaded or built) is
    no file's code; quantize wrappers and this package's objects are known."""
    with quantize_scope(), keras.src.saving.serialization_lib.SafeModeScope(False):
        return type(model).from_config(config)


def _rebuilt(model: keras.Model, config: dict) -> keras.Model:
    """`model` rebuilt from `config` (its own, changed) with its weights."""
    rebuilt = from_own_config(model, config)
    rebuilt.set_weights(model.get_weights())
    return rebuilt


def _policy_layers(model: keras.Model):
    """The layers of `model` (nested models' too) that have a precision policy."""
    for layer in model.layers:
        if isinstance(layer, keras.Model):
            yield from _policy_layers(layer)
        elif not isinstance(layer, keras.layers.InputLayer):
            yield layer


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
    return _rebuilt(model, rebuilt_config)
