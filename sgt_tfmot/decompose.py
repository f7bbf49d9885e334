"""Float-equivalent rewrites of a Keras model into the layers its integer model computes.

TFLite computes some Keras layers as several int8 ops, each rounding its output onto its own
grid. A QAT model can only be bit-exact with the integer model when it has a quantizer where
the integer model rounds, so `quantize_model` first rewrites such layers into the layers of
those ops (the float function is unchanged, up to float rounding):

| a layer of the model                              | becomes                                |
|---------------------------------------------------|----------------------------------------|
| Conv/Dense with an activation other than ReLU and | the same layer, linear, then           |
| ReLU6 (`activation="softmax"`, ...)               | `Activation(...)`, `<name>_<activation>` |

Layer names are kept (a new layer is named after the one it comes from), so a decomposed
model's layers are found by the float model's names. A model with nothing to rewrite comes
back as it is.

Which activation a layer ends in (`activation_of`, quantize wrappers looked through) is read
here, for these rewrites and for `sgt_tfmot.heads` (logits or softmax).

Example:

    flat = decompose_model(model)   # Dense(10, activation="softmax") -> Dense + Activation
"""

from __future__ import annotations

from collections.abc import Callable

from sgt_tfmot.keras import keras, tf

__all__ = ["activation_of", "decompose_model", "inner_layer", "rewrite_model"]

L = keras.layers

# A rule looks at one layer and returns None (copy the layer as it is) or a function that
# builds the replacement: `build(new_name, args, kwargs) -> outputs`, `new_name(base)` giving
# a layer name not used yet.
Rule = Callable[[L.Layer], Callable | None]

_KERNEL_LAYERS = (L.Conv1D, L.Conv2D, L.DepthwiseConv2D, L.Dense)
_FUSED_ACTIVATIONS = ("relu", "relu6")  # fused into the producer by TFLite (PACT)


def _activation_name(layer) -> str | None:
    """The name of `layer`'s activation function (TFMOT's activation wrappers looked
    through), or None when it has none."""
    activation = getattr(layer, "activation", None)
    while activation is not None and hasattr(activation, "activation"):
        activation = activation.activation  # QuantizeAwareActivation, ...
    if activation is None:
        return None
    return getattr(activation, "__name__", None) or type(activation).__name__


def inner_layer(layer):
    """The layer under TFMOT quantize wrappers (and other wrappers with a `.layer`)."""
    while isinstance(getattr(layer, "layer", None), keras.layers.Layer):
        layer = layer.layer
    return layer


def activation_of(layer) -> str | None:
    """ "softmax", "sigmoid", ... when `layer` ends in that activation: a `Softmax` layer, an
    `Activation` layer, or a layer's `activation=` argument; None for none or "linear"."""
    layer = inner_layer(layer)
    if isinstance(layer, keras.layers.Softmax):
        return "softmax"
    name = _activation_name(layer)
    return None if name in (None, "linear") else name


def _copy(layer: L.Layer, **changes) -> L.Layer:
    return type(layer).from_config({**layer.get_config(), **changes})


def _call_with_weights(new: L.Layer, weights, args, kwargs):
    """`new(*args, **kwargs)`, then `weights` set (the layer is built by the call)."""
    outputs = new(*args, **kwargs)
    new.set_weights(weights)
    return outputs


def split_activation(layer: L.Layer):
    """Conv/Dense with an activation other than ReLU/ReLU6: the linear layer, then the
    activation as a layer of its own (TFLite quantizes the linear output first)."""
    if type(layer) not in _KERNEL_LAYERS:
        return None
    name = activation_of(layer)
    if name is None or name in _FUSED_ACTIVATIONS:
        return None
    activation = layer.get_config()["activation"]

    def build(new_name, args, kwargs):
        linear = _copy(layer, activation="linear")
        x = _call_with_weights(linear, layer.get_weights(), args, kwargs)
        return L.Activation(activation, name=new_name(f"{layer.name}_{name}"))(x)

    return build


RULES: tuple[Rule, ...] = (split_activation,)


def decompose_model(model: keras.Model) -> keras.Model:
    """`model` with every layer of the table above rewritten (module docstring).

    Args:
      model: A flat Functional tf_keras model (see `sgt_tfmot.flatten_model`).

    Returns:
      A new Functional model, or `model` itself when no layer needed a rewrite.
    """
    return rewrite_model(model, RULES)


def rewrite_model(model: keras.Model, rules) -> keras.Model:
    """`model` rebuilt node by node, each layer replaced by the first of `rules` that takes
    it, or copied (same class, config and weights; a shared layer stays shared).

    Returns:
      A new Functional model, or `model` itself when no rule took a layer.
    """
    plan = {}
    for layer in model.layers:
        for rule in rules:
            build = rule(layer)
            if build is not None:
                plan[id(layer)] = build
                break
    if not plan:
        return model
    used = {layer.name for layer in model.layers}

    def new_name(base: str) -> str:
        name, index = base, 1
        while name in used:
            name, index = f"{base}_{index}", index + 1
        used.add(name)
        return name

    inputs = [
        keras.Input(batch_shape=tuple(t.shape), dtype=t.dtype, name=t._keras_history.layer.name)
        for t in model.inputs
    ]
    tensors = {id(t): x for t, x in zip(model.inputs, inputs, strict=True)}
    copies: dict[int, L.Layer] = {}
    for depth in sorted(model._nodes_by_depth, reverse=True):
        for node in model._nodes_by_depth[depth]:
            layer = node.layer
            if isinstance(layer, L.InputLayer):
                continue
            args, kwargs = tf.nest.map_structure(
                lambda t: tensors.get(id(t), t), (node.call_args, node.call_kwargs)
            )
            if id(layer) in plan:
                result = plan[id(layer)](new_name, args, kwargs)
            else:
                first = id(layer) not in copies
                copy = copies.setdefault(id(layer), _copy(layer))
                result = copy(*args, **kwargs)
                if first:
                    copy.set_weights(layer.get_weights())
            for original, new in zip(
                tf.nest.flatten(node.outputs), tf.nest.flatten(result), strict=True
            ):
                tensors[id(original)] = new
    outputs = tf.nest.map_structure(lambda t: tensors[id(t)], model.outputs)
    return keras.Model(inputs, outputs, name=model.name)
