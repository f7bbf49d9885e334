"""Keras 3 models as tf_keras models: translated from their config, weights copied.

Since TensorFlow 2.16, `import keras` (and `tf.keras` without `TF_USE_LEGACY_KERAS`) is
Keras 3, so that is what a user's `model.save("my.keras")` or `.h5` writes, and what a
Keras 3 model object is. TFMOT, and so this package, needs tf_keras (Keras 2). A Keras 3
Functional or Sequential model of the layers in `LAYERS` becomes the equivalent tf_keras
Functional model:

* the architecture is read from the stored config as data (json, and h5py for the weights):
  no Keras 3 import, no code from the file runs, and only the classes of `LAYERS` (plus
  nested Functional/Sequential models) reach tf_keras's `from_config`;
* each layer's weights are copied by position (the order both Keras versions give a layer's
  variables), and their shapes are checked against the tf_keras layer;
* Keras 3's hard activations (`hard_silu`, `hard_swish`, `hard_sigmoid`, whose tf_keras
  namesake computes 0.2 x + 0.5) become MobileNetV3's layers (`HARD_ACTIVATIONS`); a model
  output that ends in one is then named after its last layer (`NAME_hard_silu`);
* a layer without a tf_keras counterpart (a class outside `LAYERS`, an activation outside
  `ACTIVATIONS` and `HARD_ACTIVATIONS` such as `celu`, an option tf_keras lacks) is named;
  all of them in one message.

Example:
    >>> model = sgt_tfmot.load_model("my.keras")        # written by Keras 3: translated
    >>> model = sgt_tfmot.from_keras3(keras3_model)     # a Keras 3 object in memory
"""

from __future__ import annotations

import inspect
import io
import json
import re
import zipfile
from pathlib import Path

import numpy as np

from sgt_tfmot._checks import InputError
from sgt_tfmot._graph import AUGMENTATION_LAYERS
from sgt_tfmot._stored import check_zip_member, read_dataset
from sgt_tfmot.keras import keras

__all__ = ["LAYERS", "Keras3Error", "from_keras3", "is_keras3_file", "is_keras3_model", "load"]

# Keras 3 layer class -> tf_keras layer class, and the config keys renamed on the way.
LAYERS: dict[str, tuple[str, dict[str, str]]] = {
    name: (name, {})
    for name in (
        "InputLayer", "Conv2D", "DepthwiseConv2D", "SeparableConv2D", "Dense",
        "BatchNormalization", "MaxPooling2D", "AveragePooling2D", "GlobalAveragePooling2D",
        "GlobalMaxPooling2D", "Activation", "ReLU", "Add", "Concatenate", "Multiply",
        "Dropout", "SpatialDropout2D", "Flatten", "Reshape", "Rescaling", "Normalization",
        "ZeroPadding2D", "Softmax",
    )
}  # fmt: skip
LAYERS["LeakyReLU"] = ("LeakyReLU", {"negative_slope": "alpha"})
# Augmentation layers come through (the identity at inference; a model file's are taken out
# before training, `sgt_tfmot.models.without_augmentation`), their Keras 3-only options dropped.
LAYERS.update({name: (name, {}) for name in AUGMENTATION_LAYERS})

# Keras 3 activation name -> the tf_keras activation with the same formula (tests compare
# them numerically). Not here: the hard activations below, which tf_keras has not (its
# "hard_sigmoid" is clip(0.2 x + 0.5, 0, 1), Keras 3's relu6(x + 3) / 6).
ACTIVATIONS = {
    name: name
    for name in (
        "linear", "relu", "relu6", "sigmoid", "softmax", "tanh", "elu", "selu", "softplus",
        "softsign", "exponential", "swish", "mish", "leaky_relu", "log_softmax", "gelu",
    )
}  # fmt: skip
ACTIVATIONS["silu"] = "swish"
# Keras 3's hard activations -> whether the gate multiplies the input (hard_silu = x *
# hard_sigmoid(x)). A layer with one becomes the layer with a linear activation followed by
# the layers MobileNetV3 writes them with: Rescaling(offset 3), ReLU(6), Rescaling(1 / 6)
# (and a Multiply with the layer's own output), which quantize exactly (docs/COMPATIBILITY.md).
HARD_ACTIVATIONS = {"hard_sigmoid": False, "hard_silu": True, "hard_swish": True}

_MODELS = ("Functional", "Sequential")
_OBJECT_NAMESPACES = ("initializers", "regularizers", "constraints")
_CALL_KWARGS = ("training", "mask")  # call arguments a functional graph rebuilds by itself


class Keras3Error(InputError):
    """A Keras 3 model that cannot be translated (its layers are named in the message)."""


# ----------------------------------------------------------------------------- recognising
def is_keras3_model(model) -> bool:
    """True for a Keras 3 model object (`import keras` under Keras 3), without importing it."""
    module = type(model).__module__
    return (
        not isinstance(model, keras.Model)
        and (module == "keras" or module.startswith("keras."))
        and callable(getattr(model, "get_config", None))
    )


def _file_version(file: Path) -> str | None:
    """The Keras version that wrote a .keras / .h5 model file, as the file records it."""
    try:
        if file.suffix == ".keras":
            with zipfile.ZipFile(file) as archive:
                return str(json.loads(archive.read("metadata.json")).get("keras_version"))
        import h5py

        with h5py.File(file, "r") as handle:
            version = handle.attrs.get("keras_version")
        return version.decode() if isinstance(version, bytes) else version
    except (OSError, KeyError, ValueError, zipfile.BadZipFile):
        return None


def is_keras3_file(file: str | Path) -> bool:
    """True when a .keras or .h5 model file was written by Keras 3."""
    version = _file_version(Path(file))
    return isinstance(version, str) and version.startswith("3.")


# ----------------------------------------------------------------------------- configs
class _Problems:
    """Everything untranslatable in a model, named once per layer."""

    def __init__(self):
        self.items: dict[str, list[str]] = {}

    def add(self, layer: str, what: str) -> None:
        self.items.setdefault(layer, []).append(what)

    def raise_if_any(self, what: str) -> None:
        if not self.items:
            return
        named = "; ".join(f"{layer!r} ({', '.join(why)})" for layer, why in self.items.items())
        count = len(self.items)
        raise Keras3Error(
            f"{what} is a Keras 3 model with {count} layer{'s' if count > 1 else ''} that "
            f"tf_keras has no counterpart for: {named}. Supported layers: "
            f"{', '.join(sorted(LAYERS))} and nested Functional/Sequential models; "
            f"activations: {', '.join(sorted([*ACTIVATIONS, *HARD_ACTIVATIONS]))}. Rebuild "
            "those layers with supported ones (or build the model with tf_keras: `from "
            "sgt_tfmot.keras import keras`)."
        )


def _accepted(cls) -> set[str]:
    """The constructor arguments of a tf_keras class, its base classes' included."""
    names = set()
    for klass in cls.__mro__:
        if "__init__" in klass.__dict__:
            names |= set(inspect.signature(klass.__init__).parameters)
    if issubclass(cls, keras.layers.Layer):
        names |= {"name", "trainable", "dtype", "batch_input_shape", "activity_regularizer"}
    return names - {"self", "args", "kwargs"}


def _policy(value, layer: str, problems: _Problems):
    """A Keras 3 dtype entry (a DTypePolicy dict or a name) as a tf_keras policy name."""
    if isinstance(value, dict):
        if value.get("class_name") not in ("DTypePolicy", "Policy"):
            problems.add(layer, f"dtype policy {value.get('class_name')}")
            return None
        value = value.get("config", {}).get("name")
    return value


def _object(value: dict, namespace: str, layer: str, key: str, problems: _Problems):
    """A serialized initializer / regularizer / constraint as tf_keras's serialization."""
    name = value.get("class_name")
    cls = getattr(getattr(keras, namespace), str(name), None)
    if not isinstance(cls, type):
        problems.add(layer, f"{key} {name}")
        return None
    config = _kept(value.get("config") or {}, _accepted(cls), layer, f"{key} {name}", problems)
    return {"class_name": name, "config": config}


def _kept(config: dict, accepted: set[str], layer: str, what: str, problems: _Problems):
    """The entries of `config` tf_keras accepts; a Keras 3-only option is dropped when it
    is unset (None), and named otherwise."""
    kept = {}
    for key, value in config.items():
        if key in accepted:
            kept[key] = value
        elif value is not None:
            problems.add(layer, f"{what} option {key}={value!r}")
    return kept


def _layer_config(class_name: str, config: dict, problems: _Problems) -> dict:
    """A Keras 3 layer config as the config of its tf_keras counterpart."""
    target, renamed = LAYERS[class_name]
    cls = getattr(keras.layers, target)
    layer = config.get("name", class_name)
    config = {renamed.get(key, key): value for key, value in config.items()}
    if class_name == "InputLayer":
        config = _input_config(config, layer, problems)
    if "dtype" in config:
        config["dtype"] = _policy(config["dtype"], layer, problems)
    for key, value in list(config.items()):
        if key == "activation":
            if isinstance(value, str) and value in ACTIVATIONS:
                config[key] = ACTIVATIONS[value]
            elif isinstance(value, str) and value in HARD_ACTIVATIONS:
                pass  # expanded into layers by `_expand_hard_activations`
            else:
                shown = value if isinstance(value, str) else (value or {}).get("config", value)
                problems.add(layer, f"activation {shown!r}")
        elif isinstance(value, dict) and "class_name" in value:
            namespace = next((n for n in _OBJECT_NAMESPACES if n[:-1] in key), None)
            if namespace is None:
                problems.add(layer, f"option {key}={value.get('class_name')}")
            else:
                config[key] = _object(value, namespace, layer, key, problems)
    if class_name in AUGMENTATION_LAYERS:  # taken out before use: its options do not matter
        return {key: value for key, value in config.items() if key in _accepted(cls)}
    return _kept(config, _accepted(cls), layer, class_name, problems)


def _input_config(config: dict, layer: str, problems: _Problems) -> dict:
    config = dict(config)
    if "batch_shape" in config:
        config["batch_input_shape"] = config.pop("batch_shape")
    if config.pop("optional", False):
        problems.add(layer, "an optional input")
    return config


def _history(tensor, layer: str, problems: _Problems):
    """[producer, node index, tensor index, {}] of one Keras 3 `__keras_tensor__`."""
    if isinstance(tensor, dict) and tensor.get("class_name") == "__keras_tensor__":
        producer, node, index = tensor["config"]["keras_history"]
        return [producer, node, index, {}]
    if isinstance(tensor, list) and len(tensor) >= 3 and isinstance(tensor[0], str):
        return [tensor[0], tensor[1], tensor[2], {}]  # the older list form
    problems.add(layer, f"an input that is not a tensor ({type(tensor).__name__})")
    return None


def _inbound_node(node, layer: str, problems: _Problems) -> list:
    """A Keras 3 inbound node ({"args": [...], "kwargs": {...}}) in tf_keras's list form."""
    if isinstance(node, list):  # already tf_keras-like
        return [_history(entry, layer, problems) for entry in node]
    args, kwargs = node.get("args", []), node.get("kwargs", {}) or {}
    extra = sorted(k for k, v in kwargs.items() if k not in _CALL_KWARGS and v is not None)
    if len(args) != 1 or extra:
        problems.add(layer, f"a call with arguments {extra or len(args)} besides its input")
        return []
    tensors = args[0] if isinstance(args[0], list) else [args[0]]
    return [_history(tensor, layer, problems) for tensor in tensors]


def _endpoints(value) -> list:
    """input_layers / output_layers as a list of [name, node, tensor]."""
    if value and isinstance(value[0], str):
        return [list(value)]
    return [list(entry) for entry in value]


def _functional_config(config: dict, problems: _Problems) -> dict:
    classes = {entry.get("name") or entry["config"].get("name"): entry.get("class_name")
               for entry in config["layers"]}  # fmt: skip
    layers = []
    for entry in config["layers"]:
        name = entry.get("name") or entry["config"].get("name")
        nodes = [_inbound_node(node, name, problems) for node in entry.get("inbound_nodes", [])]
        for node in nodes:
            for reference in node:
                # Keras 3 records the index of the call among the nested model's calls (0
                # for the first); a tf_keras Functional model's node 0 links its own input
                # to its output, so its first call is node 1.
                if reference is not None and classes.get(reference[0]) in _MODELS:
                    reference[1] += 1
        layers.append({**_translated_layer(entry, problems), "name": name,
                       "inbound_nodes": nodes})  # fmt: skip
    translated = {
        "name": config.get("name", "model"),
        "trainable": config.get("trainable", True),
        "layers": layers,
        "input_layers": _endpoints(config["input_layers"]),
        "output_layers": _endpoints(config["output_layers"]),
    }
    for entry in translated["output_layers"]:
        if classes.get(entry[0]) == "Sequential":  # renumbered by Keras 3 from 0, not 1
            entry[1] += 1
    _check_references(translated, problems)
    return _expand_hard_activations(translated, problems)


def _expand_hard_activations(config: dict, problems: _Problems) -> dict:
    """The translated Functional config with each layer of a hard activation
    (`HARD_ACTIVATIONS`) made linear and followed by its formula in layers; the tensors
    that took the layer's output take the formula's."""
    names = {layer["name"] for layer in config["layers"]}
    replaced, layers = {}, []

    def unique(name: str) -> str:
        while name in names:
            name += "_"
        names.add(name)
        return name

    def follow(reference):
        if reference is not None and reference[0] in replaced and reference[1] == 0:
            reference[0] = replaced[reference[0]]

    for layer in config["layers"]:
        for node in layer["inbound_nodes"]:
            for reference in node:
                follow(reference)
        layers.append(layer)
        kind = layer["config"].get("activation")
        if kind not in HARD_ACTIVATIONS:
            continue
        name = layer["name"]
        if len(layer["inbound_nodes"]) != 1:
            problems.add(name, f"activation {kind!r} in a layer called more than once")
            continue
        layer["config"]["activation"] = "linear"
        dtype = layer["config"].get("dtype", "float32")
        chain = [("Rescaling", {"scale": 1.0, "offset": 3.0}, "shift"),
                 ("ReLU", {"max_value": 6.0}, "relu6"),
                 ("Rescaling", {"scale": 1.0 / 6.0, "offset": 0.0}, "hard_sigmoid")]  # fmt: skip
        previous = [name, 0, 0, {}]
        for class_name, options, suffix in chain:
            made = unique(f"{name}_{suffix}")
            layers.append({"class_name": class_name, "name": made, "inbound_nodes": [[previous]],
                           "config": {"name": made, "dtype": dtype, **options}})  # fmt: skip
            previous = [made, 0, 0, {}]
        if HARD_ACTIVATIONS[kind]:
            made = unique(f"{name}_{kind}")
            inbound = [[[name, 0, 0, {}], previous]]
            options = {"name": made, "dtype": dtype}
            layers.append({"class_name": "Multiply", "name": made, "config": options,
                           "inbound_nodes": inbound})  # fmt: skip
            previous = [made, 0, 0, {}]
        replaced[name] = previous[0]
    for reference in config["output_layers"]:
        follow(reference)
    return {**config, "layers": layers}


def _check_references(config: dict, problems: _Problems) -> None:
    """Every tensor a layer takes is one a layer of the model makes (tf_keras's
    `from_config` would wait forever for a node that never comes)."""
    made = {}
    for layer in config["layers"]:
        first = 1 if layer["class_name"] == "Functional" else 0
        count = 1 if layer["class_name"] == "InputLayer" else len(layer["inbound_nodes"])
        made[layer["name"]] = range(first, first + count)
    references = [(layer["name"], ref) for layer in config["layers"]
                  for node in layer["inbound_nodes"] for ref in node]  # fmt: skip
    references += [("the outputs", ref) for ref in config["output_layers"]]
    references += [("the inputs", ref) for ref in config["input_layers"]]
    for owner, reference in references:
        if reference is not None and reference[1] not in made.get(reference[0], ()):
            problems.add(owner, f"an input from {reference[0]!r} (node {reference[1]}) that the "
                         "model does not make")  # fmt: skip


def _sequential_config(config: dict, problems: _Problems) -> dict:
    """A Keras 3 Sequential config as the config of the equivalent Functional chain."""
    entries = list(config["layers"])
    if not entries or entries[0]["class_name"] != "InputLayer":
        shape = config.get("build_input_shape")
        if shape is None:
            problems.add(config.get("name", "sequential"), "a Sequential model never built")
            return {"name": config.get("name"), "layers": [], "input_layers": [],
                    "output_layers": []}  # fmt: skip
        name = f"{config.get('name', 'sequential')}_input"
        entries.insert(
            0,
            {
                "class_name": "InputLayer",
                "config": {"batch_shape": shape, "dtype": "float32", "name": name},
            },
        )
    layers, previous = [], None
    for entry in entries:
        name = entry["config"]["name"]
        nodes = [] if previous is None else [[[previous, 0, 0, {}]]]
        layers.append({**_translated_layer(entry, problems), "name": name,
                       "inbound_nodes": nodes})  # fmt: skip
        previous = name
    translated = {
        "name": config.get("name", "sequential"),
        "trainable": config.get("trainable", True),
        "layers": layers,
        "input_layers": [[layers[0]["name"], 0, 0]],
        "output_layers": [[previous, 0, 0]],
    }
    return _expand_hard_activations(translated, problems)


def _translated_layer(entry: dict, problems: _Problems) -> dict:
    """{"class_name", "config"} of a layer entry of a Keras 3 model config, in tf_keras."""
    class_name, config = entry.get("class_name"), entry.get("config") or {}
    if class_name in _MODELS:
        return {"class_name": "Functional", "config": _model_config(entry, problems)}
    if class_name not in LAYERS:
        problems.add(config.get("name", entry.get("name", "?")), f"class {class_name}")
        return {"class_name": class_name, "config": {}}
    return {"class_name": LAYERS[class_name][0], "config": _layer_config(class_name, config,
                                                                        problems)}  # fmt: skip


def _model_config(entry: dict, problems: _Problems) -> dict:
    if entry.get("class_name") == "Sequential":
        return _sequential_config(entry["config"], problems)
    return _functional_config(entry["config"], problems)


# ----------------------------------------------------------------------------- weights
def _snake_case(name: str) -> str:
    """Keras 3's `naming.to_snake_case`: the weight file's group name of a layer class."""
    name = re.sub(r"\W+", "", name)
    name = re.sub("(.)([A-Z][a-z]+)", r"\1_\2", name)
    return re.sub("([a-z])([A-Z])", r"\1_\2", name).lower()


def _stored_layers(config: dict) -> list[tuple[str, dict]]:
    """(weight-file group, layer entry) of a model config's layers, in Keras 3's order: the
    snake-case class name, `_1`, `_2`, ... for repeats (`saving_lib._save_container_state`).
    A Sequential model does not list its input layer among its layers."""
    entries = config["config"]["layers"]
    if config.get("class_name") == "Sequential":
        entries = [e for e in entries if e.get("class_name") != "InputLayer"]
    used: dict[str, int] = {}
    groups = []
    for entry in entries:
        base = _snake_case(entry["class_name"])
        count = used.get(base, 0)
        used[base] = count + 1
        groups.append((base if count == 0 else f"{base}_{count}", entry))
    return groups


def _keras_file_weights(group, config: dict, prefix: tuple = ()) -> dict[tuple, list]:
    """Layer path -> its arrays, from a .keras archive's model.weights.h5 (`layers/<group>/
    vars/<i>`, nested models under `layers/<group>/layers/...`)."""
    found = {}
    layers = group.get("layers")
    for key, entry in _stored_layers(config):
        name = entry.get("name") or entry["config"]["name"]
        stored = layers.get(key) if layers is not None else None
        if stored is None:
            continue
        variables = stored.get("vars")
        if variables is not None:
            recorded = variables.attrs.get("name")
            if recorded is not None and str(recorded) != name:
                raise Keras3Error(
                    f"the weights of layer {name!r} are not where Keras 3 puts them "
                    f"(layers/{key} holds {recorded!r}): the file's layout is not understood."
                )
            found[(*prefix, name)] = [read_dataset(variables[str(i)], f"layer {name!r} weight {i}")
                                      for i in range(len(variables))]  # fmt: skip
        if entry.get("class_name") in _MODELS:
            found.update(_keras_file_weights(stored, entry, (*prefix, name)))
    return found


def _h5_weights(handle) -> dict[tuple, list]:
    """Layer name -> its arrays, from a Keras 3 legacy .h5 (`model_weights/<layer>`, in the
    order of its `weight_names`; a nested model's: all of them, trainable ones first)."""
    root = handle["model_weights"]
    found = {}
    for name in root.attrs.get("layer_names", []):
        name = name.decode() if isinstance(name, bytes) else str(name)
        group = root[name]
        names = [n.decode() if isinstance(n, bytes) else str(n)
                 for n in group.attrs.get("weight_names", [])]  # fmt: skip
        found[(name,)] = [read_dataset(group[n], f"layer {name!r} weight {n}") for n in names]
    return found


def _object_weights(model, prefix: tuple = ()) -> dict[tuple, list]:
    """Layer path -> its arrays, from a Keras 3 model object (`layer.get_weights()`)."""
    found = {}
    for layer in model.layers:
        path = (*prefix, layer.name)
        found[path] = list(layer.get_weights())
        if type(layer).__name__ in _MODELS:
            found.update(_object_weights(layer, path))
    return found


def _copy_weights(model: keras.Model, weights: dict, what: str, prefix: tuple = ()) -> None:
    """Sets every layer's weights from `weights` (layer path -> arrays), shapes checked.

    A nested model whose layers have entries of their own is filled layer by layer; one
    without (a legacy .h5 stores a nested model as one group) gets its stored list in the
    order that format uses: trainable weights first.

    Raises:
      Keras3Error: naming the first layer whose stored weights do not fit.
    """
    for layer in model.layers:
        path = (*prefix, layer.name)
        if type(layer).__name__ in AUGMENTATION_LAYERS:
            continue  # Keras 3 stores their random generator's state, tf_keras has none
        if isinstance(layer, keras.Model):
            if any(len(key) > len(path) and key[: len(path)] == path for key in weights):
                _copy_weights(layer, weights, what, path)
                continue
            targets = list(layer.trainable_weights) + list(layer.non_trainable_weights)
        else:
            targets = list(layer.weights)
        stored = weights.get(path, [])
        shapes = [tuple(np.shape(a)) for a in stored]
        wanted = [tuple(w.shape) for w in targets]
        if shapes != wanted:
            raise Keras3Error(
                f"{what}: layer {layer.name!r} has weights of shapes {shapes} in the Keras 3 "
                f"model, but its tf_keras counterpart has {wanted}; the model was not "
                "translated."
            )
        for variable, value in zip(targets, stored, strict=True):
            variable.assign(value)
        if stored and hasattr(layer, "finalize_state"):  # Normalization: mean from the weights
            layer.finalize_state()


# ----------------------------------------------------------------------------- entry points
def _translate(config: dict, weights: dict, what: str) -> keras.Model:
    """The tf_keras Functional model of a Keras 3 model config, with `weights` copied."""
    problems = _Problems()
    if config.get("class_name") not in _MODELS:
        raise Keras3Error(
            f"{what} holds a Keras 3 {config.get('class_name')} model; only Functional and "
            "Sequential models can be translated to tf_keras (a subclassed model's "
            "architecture is Python code, not data)."
        )
    translated = _model_config(config, problems)
    problems.raise_if_any(what)
    model = keras.Model.from_config(translated)  # only LAYERS' classes reach Keras here
    _copy_weights(model, weights, what)
    return model


def load(file: str | Path) -> keras.Model:
    """The tf_keras translation of a Keras 3 `.keras` or `.h5` model file.

    Reads config.json / the h5 `model_config` attribute and the weights as data (json and
    h5py); nothing of the file is executed.

    Raises:
      Keras3Error: naming every layer without a tf_keras counterpart, or a weight that does
        not fit; for a file that holds no model config.
    """
    import h5py

    file = Path(file)
    what = str(file)
    try:
        if file.suffix == ".keras":
            with zipfile.ZipFile(file) as archive:
                for member in ("config.json", "model.weights.h5"):  # sizes before reading
                    check_zip_member(archive, member, file)
                config = json.loads(archive.read("config.json"))
                with h5py.File(io.BytesIO(archive.read("model.weights.h5")), "r") as handle:
                    weights = _keras_file_weights(handle, config)
        else:
            with h5py.File(file, "r") as handle:
                text = handle.attrs.get("model_config")
                if text is None:
                    raise Keras3Error(f"{what} holds no model config (weights only?).")
                config = json.loads(text.decode() if isinstance(text, bytes) else text)
                weights = _h5_weights(handle)
    except (OSError, KeyError, ValueError, zipfile.BadZipFile) as error:
        if isinstance(error, Keras3Error):
            raise
        reason = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        raise Keras3Error(f"Could not read the Keras 3 model in {what}: {reason}") from None
    return _translate(config, weights, what)


def from_keras3(model) -> keras.Model:
    """The tf_keras Functional translation of a Keras 3 Functional or Sequential model.

    Uses the object's `get_config()` and its layers' `get_weights()`; the Keras 3 model is
    left as it is (training the translation does not train it).

    Example:
        >>> import keras                         # Keras 3
        >>> mine = keras.Sequential([keras.Input((28, 28, 1)), keras.layers.Flatten(),
        ...                          keras.layers.Dense(10)])
        >>> model = sgt_tfmot.from_keras3(mine)  # a tf_keras Functional model
        >>> qat = sgt_tfmot.quantize_model(model)  # (quantize_model translates by itself)

    Raises:
      Keras3Error: naming every layer without a tf_keras counterpart.
    """
    if not is_keras3_model(model):
        raise InputError(f"`model` is not a Keras 3 model. Received: {model!r}")
    config = {"class_name": type(model).__name__, "config": model.get_config()}
    return _translate(config, _object_weights(model), f"`model` {model.name!r}")
