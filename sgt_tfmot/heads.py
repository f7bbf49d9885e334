"""What a classifier's output is: logits or softmax probabilities (its "head").

One rule, used by training (which loss), SGT (which KL), conversion (whether the file needs a
softmax of its own) and explanation:

| the model's output layer (quantize wrappers looked through)       | head        |
|--------------------------------------------------------------------|-------------|
| `Softmax`, `Activation("softmax")`, a layer with `activation="softmax"` | `"softmax"` |
| a layer with `activation="sigmoid"` or `Activation("sigmoid")`      | refused     |
| anything else (a linear `Dense`, a `Reshape` of a 1x1 conv, ...)    | `"logits"`  |

A softmax head stays in the model: Keras's `predict` keeps returning probabilities, before
and after training, in the saved run and in the converted file (which then gets no second
softmax). It is trained with `SparseCategoricalCrossentropy(from_logits=False)` (`loss`),
which tf_keras computes from the softmax's own input, so it is as stable as training on
logits. `quantize_model` gives the softmax its own layer (`sgt_tfmot.decompose`) so that the
logits before it get an 8-bit range, as TFLite's int8 SOFTMAX needs; `logits_model` cuts it
off again where logits are wanted (`convert --logits`).

A sigmoid output is a binary or multi-label head (independent probabilities); this package
trains and checks single-label classifiers (argmax over classes), so it is refused with what
to do instead.
"""

from __future__ import annotations

from sgt_tfmot._checks import InputError
from sgt_tfmot.decompose import activation_of, decompose_model, inner_layer as _inner
from sgt_tfmot.keras import keras

LOGITS, SOFTMAX = "logits", "softmax"
HEADS = (LOGITS, SOFTMAX)

__all__ = ["HEADS", "LOGITS", "SOFTMAX", "check_head", "logits_model", "loss", "output_head"]


def output_layer(model: keras.Model) -> keras.layers.Layer:
    """The layer that makes the model's (first) output."""
    return model.outputs[0]._keras_history.layer


def output_head(model: keras.Model) -> str:
    """`SOFTMAX` when the model's output layer ends in a softmax, else `LOGITS` (see the
    module docstring; a sigmoid output is not checked here, see `check_head`)."""
    return SOFTMAX if activation_of(output_layer(model)) == SOFTMAX else LOGITS


def check_head(model: keras.Model, what: str) -> str:
    """The head of a classifier `what` (`output_head`), refusing a sigmoid output.

    Raises:
      InputError: naming `what` when the output layer ends in a sigmoid.
    """
    layer = output_layer(model)
    if activation_of(layer) == "sigmoid":
        raise InputError(
            f"{what}: the output layer {_inner(layer).name!r} ends in a sigmoid (a binary or "
            "multi-label head); sgt_tfmot trains single-label classifiers. End the model in "
            "Dense(num_classes) with activation='softmax' or no activation (logits), one "
            "unit per class (2 for a binary task), and save it again."
        )
    return output_head(model)


def loss(model: keras.Model) -> keras.losses.Loss:
    """The cross-entropy that matches the model's head: on logits for `LOGITS`, on
    probabilities for `SOFTMAX` (tf_keras then reads the softmax's input, the logits)."""
    return keras.losses.SparseCategoricalCrossentropy(from_logits=output_head(model) == LOGITS)


def logits_model(model: keras.Model) -> keras.Model:
    """`model` without its final softmax: the same graph with the softmax's input as output.

    A model with logits comes back unchanged.

    Raises:
      ValueError: when the softmax is fused into a quantize-wrapped layer (a QAT model made
        before `quantize_model` split softmax heads off); a float model's fused softmax
        (`Dense(..., activation="softmax")`) is split off first (`sgt_tfmot.decompose`).
    """
    if output_head(model) == LOGITS:
        return model
    if not _separate_softmax(output_layer(model)):
        model = decompose_model(model)
    layer = output_layer(model)
    if not _separate_softmax(layer):
        raise ValueError(
            f"The softmax of {model.name!r} is fused into layer {_inner(layer).name!r} (a "
            "quantize wrapper); quantize the float model again with sgt_tfmot.quantize_model, "
            "which gives the softmax a layer of its own."
        )
    node = layer._inbound_nodes[model.outputs[0]._keras_history.node_index]
    (logits,) = node.keras_inputs
    return keras.Model(model.inputs, logits, name=model.name)


def _separate_softmax(layer) -> bool:
    inner = _inner(layer)
    return isinstance(inner, keras.layers.Softmax | keras.layers.Activation)
