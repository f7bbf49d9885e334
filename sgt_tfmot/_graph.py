"""Facts about a Functional graph that quantization, export and loading must agree on.

* `consumers(config)`: who takes each layer's output (from the model config);
* `bn_folds_into(producer, bn)`: whether a BatchNormalization folds into the convolution
  before it. `quantize_model` then leaves the convolution's output unquantized (the
  integer model has no tensor there), and `export_model` folds it, on the k-bit kernel.
  One rule in one place, so the training graph and the exported graph cannot drift apart.
* `AUGMENTATION_LAYERS`: the layers that change images only while training and are the
  identity at inference (a model file's are taken out: `sgt_tfmot.models.without_augmentation`;
  Keras 3 files keep them through the translation for that).
"""

from __future__ import annotations

from sgt_tfmot.keras import keras

OUTPUT = "<output>"  # the consumer name of a model output

# Keras layers that change images only while training (data augmentation, noise) and are the
# identity at inference; the Keras tutorials put RandomFlip and RandomRotation first in the
# model. The names are the same in tf_keras and Keras 3.
AUGMENTATION_LAYERS = (
    "RandomFlip", "RandomRotation", "RandomZoom", "RandomTranslation", "RandomContrast",
    "RandomBrightness", "GaussianNoise", "GaussianDropout",
)  # fmt: skip

__all__ = [
    "AUGMENTATION_LAYERS",
    "OUTPUT",
    "bn_folds_into",
    "channel_axis",
    "consumers",
    "inbound_layer",
]


def _entries(node) -> list:
    """The [layer name, node index, tensor index, ...] entries of one inbound node."""
    inbound = node if isinstance(node, list) else node.get("args", [])
    found = []
    for entry in inbound:
        if isinstance(entry, list) and entry and isinstance(entry[0], str):
            found.append(entry)
        elif isinstance(entry, list):  # a list of entries (e.g. the inputs of Add)
            found.extend(e for e in entry if isinstance(e, list) and e and isinstance(e[0], str))
    return found


def consumers(config: dict) -> dict[str, list[str]]:
    """Layer name -> names of the layers (and `OUTPUT`) that take its output.

    Args:
      config: `model.get_config()` of a Functional model.
    """
    found: dict[str, list[str]] = {layer["name"]: [] for layer in config["layers"]}
    for layer in config["layers"]:
        for node in layer.get("inbound_nodes", []):
            for entry in _entries(node):
                found.setdefault(entry[0], []).append(layer["name"])
    outputs = config["output_layers"]
    if outputs and isinstance(outputs[0], str):  # a single [name, node, tensor]
        outputs = [outputs]
    for entry in outputs:
        found.setdefault(entry[0], []).append(OUTPUT)
    return found


def inbound_layer(layer):
    """The one layer feeding `layer` in its graph, or None (several inputs, a shared layer,
    or none)."""
    nodes = layer.inbound_nodes
    if len(nodes) != 1:
        return None
    inbound = nodes[0].inbound_layers
    inbound = inbound if isinstance(inbound, list) else [inbound]
    return inbound[0] if len(inbound) == 1 else None


def _output_rank(layer) -> int | None:
    """Rank of the output of a layer of the graph (the wrapper's, for a wrapped layer: its
    inner layer has no node of its own in a rebuilt model)."""
    try:
        return len(layer.output_shape)
    except (AttributeError, RuntimeError, TypeError):
        return None


def channel_axis(bn, rank: int | None) -> bool:
    """True when a BatchNormalization on tensors of `rank` normalizes over the last (channel)
    axis only."""
    axis = [bn.axis] if isinstance(bn.axis, int) else list(bn.axis)
    return rank is not None and axis in ([rank - 1], [-1])


def bn_folds_into(producer, bn) -> bool:
    """True when `bn` is a BatchNormalization that folds into the convolution `producer`.

    Conv1D, Conv2D or DepthwiseConv2D with a linear activation, followed by a (non-renorm)
    BatchNormalization over the channel axis; TFMOT wrappers are looked through.
    """
    conv, norm = getattr(producer, "layer", producer), getattr(bn, "layer", bn)
    if not isinstance(
        conv, keras.layers.Conv1D | keras.layers.Conv2D | keras.layers.DepthwiseConv2D
    ):
        return False
    if conv.get_config().get("activation") != "linear":
        return False
    if not isinstance(norm, keras.layers.BatchNormalization) or norm.get_config().get("renorm"):
        return False
    rank = _output_rank(producer)
    axis = [norm.axis] if isinstance(norm.axis, int) else list(norm.axis)
    return rank is not None and axis in ([rank - 1], [-1])


def flatten_model(model: keras.Model) -> keras.Model:
    """The same network with every nested Functional model inlined into one Functional model.

    The Keras transfer-learning pattern (`base = MobileNetV2(include_top=False)`, then
    `head(base(inputs))`) nests a model inside a model, which TFMOT cannot quantize. Each
    layer of the nested models is copied (same class, config and weights) into the new
    graph; layer names are kept, and a name that would clash is prefixed with its nested
    model's name. Before quantization the outputs are identical.

    Args:
      model: A built Functional or Sequential tf_keras model.

    Returns:
      A new Functional model without nested models (`model` itself when it has none).
    """
    if not any(isinstance(layer, keras.Model) for layer in model.layers):
        return model
    used: set[str] = set()
    copies: list[tuple[keras.layers.Layer, keras.layers.Layer]] = []
    inputs = [
        keras.Input(batch_shape=tuple(t.shape), dtype=t.dtype, name=t.name.split(":")[0])
        for t in model.inputs
    ]
    outputs = _inline(model, inputs, used, copies, prefix="")
    flat = keras.Model(inputs, outputs, name=model.name)
    for original, copy in copies:
        copy.set_weights(original.get_weights())
    return flat


def _inline(model, inputs, used, copies, prefix):
    """Calls copies of `model`'s layers on `inputs`, depth by depth; returns the outputs."""
    import tensorflow as tf

    tensors = {id(t): x for t, x in zip(model.inputs, inputs, strict=True)}
    for depth in sorted(model._nodes_by_depth, reverse=True):
        for node in model._nodes_by_depth[depth]:
            layer = node.layer
            if isinstance(layer, keras.layers.InputLayer):
                continue
            args, kwargs = tf.nest.map_structure(
                lambda t: tensors.get(id(t), t), (node.call_args, node.call_kwargs)
            )
            if isinstance(layer, keras.Model):
                flat_inputs = tf.nest.flatten((args, kwargs))
                flat_inputs = [t for t in flat_inputs if tf.is_tensor(t)]
                result = _inline(layer, flat_inputs, used, copies, f"{layer.name}_")
            else:
                config = layer.get_config()
                name = config["name"]
                if name in used:
                    name = f"{prefix}{name}"
                used.add(name)
                config["name"] = name
                copy = type(layer).from_config(config)
                result = copy(*args, **kwargs)
                copies.append((layer, copy))
            for original, new in zip(
                tf.nest.flatten(node.outputs), tf.nest.flatten(result), strict=True
            ):
                tensors[id(original)] = new
    return tf.nest.map_structure(lambda t: tensors[id(t)], model.outputs)
