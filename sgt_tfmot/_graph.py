"""Two facts about a Functional graph that quantization and export must agree on.

* `consumers(config)`: who takes each layer's output (from the model config);
* `bn_folds_into(producer, bn)`: whether a BatchNormalization folds into the convolution
  before it. `quantize_model` then leaves the convolution's output unquantized (the
  integer model has no tensor there), and `export_model` folds it, on the k-bit kernel.
  One rule in one place, so the training graph and the exported graph cannot drift apart.
"""

from __future__ import annotations

from sgt_tfmot.keras import keras

OUTPUT = "<output>"  # the consumer name of a model output

__all__ = ["OUTPUT", "bn_folds_into", "consumers"]


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


def _output_rank(layer) -> int | None:
    """Rank of the output of a layer of the graph (the wrapper's, for a wrapped layer: its
    inner layer has no node of its own in a rebuilt model)."""
    try:
        return len(layer.output_shape)
    except (AttributeError, RuntimeError, TypeError):
        return None


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
