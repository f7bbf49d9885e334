"""Float-equivalent rewrites of a Keras model into the layers its integer model computes.

TFLite computes some Keras layers as several int8 ops, each rounding its output onto its own
grid. A QAT model can only be bit-exact with the integer model when it has a quantizer where
the integer model rounds, so `quantize_model` first rewrites such layers into the layers of
those ops (the float function is unchanged, up to float rounding):

| a layer of the model                              | becomes                                |
|---------------------------------------------------|----------------------------------------|
| Conv/Dense with an activation other than ReLU and | the same layer, linear, then           |
| ReLU6 (`activation="softmax"`, ...)               | `Activation(...)`, `<name>_<activation>` |
| `SeparableConv2D` (as TFMOT does)                 | `DepthwiseConv2D` (`<name>_depthwise`, |
|                                                   | no bias), then a 1x1 `Conv2D` `<name>` |
|                                                   | with the pointwise kernel and the bias |
| swish (`Activation("swish")`, `activation=`)      | `Activation("sigmoid")`                |
|                                                   | (`<name>_sigmoid`), then `Multiply`    |
|                                                   | of the input and the gate              |
| `x + c`, `x - c`, `c - x`, `x * c`, `x / c` with a | `Rescaling(scale, offset)` (MobileNetV3's |
| number c (TFOpLambda, e.g. MobileNetV3's hard     | hard sigmoid becomes Rescaling, ReLU6, |
| sigmoid `ReLU6(x + 3) * (1 / 6)`)                 | Rescaling)                             |
| `Normalization` (last axis)                       | `Rescaling(1 / √var, −mean / √var)`    |
| `Add` or `Multiply` of more than two tensors      | a chain of two-input layers, the last  |
|                                                   | keeping the name (`<name>_1`, ...)     |
| `Average` of n tensors                            | that chain of `Add` layers, then       |
|                                                   | `Rescaling(1 / n)` `<name>`            |
| activation layers (`ReLU`, `Activation`,          | the first of them, read by all their   |
| `LeakyReLU`) computing one function of one tensor | consumers (`twin_activations`)         |

TFLite computes swish as LOGISTIC and MUL, each rounding onto its own grid (the sigmoid's is
fixed, 1/256); a separable convolution as DEPTHWISE_CONV_2D then CONV_2D with an int8
tensor between; arithmetic with a number and `Normalization` as a per-channel affine map,
which the export computes in one convolution (`sgt_tfmot.export`); a sum or product of n
tensors as n − 1 ADD or MUL ops in Keras's order ((a + b) + c), each rounding (an average:
those ADD ops, then a MUL by 1 / n). The converter merges identical ops on one tensor into
one op, which has one output grid: twin activations (NASNet applies five ReLUs to its stem's
output, one per path) would each train a range (a PACT α) of their own, and the file would
compute the merged RELU in float between DEQUANTIZE and QUANTIZE ops, off the Edge TPU and
off the Keras model's values.

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

import numpy as np

from sgt_tfmot.keras import keras, tf

__all__ = [
    "ARITHMETIC_FUNCTIONS",
    "activation_of",
    "decompose_model",
    "inner_layer",
    "rewrite_model",
    "twin_activations",
]

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


_SWISH = ("swish", "silu")


def _activation(activation, x, base: str, new_name):
    """`x` through `activation` (a name or a serialized activation) as separate layers:
    swish as its sigmoid gate times `x`, any other as an `Activation` layer."""
    name = activation if isinstance(activation, str) else activation_of(L.Activation(activation))
    if name in _SWISH:
        gate = L.Activation("sigmoid", name=new_name(f"{base}_sigmoid"))(x)
        return L.Multiply(name=new_name(f"{base}_swish"))([x, gate])
    return L.Activation(activation, name=new_name(f"{base}_{name}"))(x)


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
        return _activation(activation, x, layer.name, new_name)

    return build


def split_swish(layer: L.Layer):
    """An `Activation` layer computing swish: its sigmoid gate, then `Multiply`; the
    `Multiply` keeps the layer's name."""
    if type(layer) is not L.Activation or activation_of(layer) not in _SWISH:
        return None

    def build(new_name, args, kwargs):
        (x,) = tf.nest.flatten((args, kwargs))
        gate = L.Activation("sigmoid", name=new_name(f"{layer.name}_sigmoid"))(x)
        return L.Multiply(name=layer.name)([x, gate])

    return build


def split_merge(layer: L.Layer):
    """`Add` or `Multiply` of n > 2 tensors: n − 1 layers of two inputs, in the order Keras
    computes them ((a + b) + c); TFLite rounds each ADD or MUL onto its own grid. `Average`
    of n tensors: that chain of `Add` layers, then `Rescaling(1 / n)` (TFLite computes it as
    ADD ops and a MUL by 1 / n, which round apart)."""
    average = type(layer) is L.Average
    if type(layer) not in (L.Add, L.Multiply, L.Average) or len(layer.inbound_nodes) != 1:
        return None
    count = len(tf.nest.flatten(layer.inbound_nodes[0].call_args))
    if count <= 2 and not average:
        return None

    def build(new_name, args, kwargs):
        tensors = [t for t in tf.nest.flatten((args, kwargs)) if _is_keras_tensor(t)]
        merge = L.Add if average else type(layer)
        total = tensors[0]
        for index, tensor in enumerate(tensors[1:], start=1):
            last = index == len(tensors) - 1 and not average
            name = layer.name if last else new_name(f"{layer.name}_{index}")
            total = merge(name=name)([total, tensor])
        return L.Rescaling(1.0 / len(tensors), name=layer.name)(total) if average else total

    return build


def split_separable(layer: L.Layer):
    """`SeparableConv2D`: its depthwise conv (no bias, no activation), then a 1x1 `Conv2D`
    with the pointwise kernel, the bias and the activation (split off as by
    `split_activation` when TFLite does not fuse it). Regularizers and constraints go with
    their kernels."""
    if type(layer) is not L.SeparableConv2D:
        return None
    config = layer.get_config()

    def build(new_name, args, kwargs):
        depthwise = L.DepthwiseConv2D(
            config["kernel_size"],
            strides=config["strides"],
            padding=config["padding"],
            depth_multiplier=config["depth_multiplier"],
            data_format=config["data_format"],
            dilation_rate=config["dilation_rate"],
            use_bias=False,
            depthwise_regularizer=config["depthwise_regularizer"],
            depthwise_constraint=config["depthwise_constraint"],
            name=new_name(f"{layer.name}_depthwise"),
        )
        weights = layer.get_weights()
        x = _call_with_weights(depthwise, weights[:1], args, kwargs)
        name = activation_of(layer)
        fused = name is None or name in _FUSED_ACTIVATIONS
        pointwise = L.Conv2D(
            config["filters"],
            1,
            data_format=config["data_format"],
            activation=config["activation"] if fused else "linear",
            use_bias=config["use_bias"],
            kernel_regularizer=config["pointwise_regularizer"],
            bias_regularizer=config["bias_regularizer"],
            activity_regularizer=config["activity_regularizer"],
            kernel_constraint=config["pointwise_constraint"],
            bias_constraint=config["bias_constraint"],
            name=layer.name,
        )
        x = _call_with_weights(pointwise, weights[1:], [x], {})
        return x if fused else _activation(config["activation"], x, layer.name, new_name)

    return build


# TFOpLambda functions of a tensor and a number that are a `Rescaling`, as
# (scale, offset) of the number c with the tensor first, and with the tensor second.
_ARITHMETIC = {
    "__operators__.add": (lambda c: (1.0, c), lambda c: (1.0, c)),
    "math.add": (lambda c: (1.0, c), lambda c: (1.0, c)),
    "math.subtract": (lambda c: (1.0, -c), lambda c: (-1.0, c)),
    "math.multiply": (lambda c: (c, 0.0), lambda c: (c, 0.0)),
    "math.truediv": (lambda c: (1.0 / c, 0.0), None),
    "math.divide": (lambda c: (1.0 / c, 0.0), None),
}
ARITHMETIC_FUNCTIONS = frozenset(_ARITHMETIC)
"""The TensorFlow functions of a TFOpLambda that `scalar_arithmetic` rewrites (and that a
model file may name without running code from it, `sgt_tfmot.saving.check_model_file`)."""


def _is_keras_tensor(value) -> bool:
    return getattr(value, "_keras_history", None) is not None


def _number(value) -> float | None:
    """`value` as a float when it is a number (a Python, numpy or one-element constant)."""
    if isinstance(value, bool) or _is_keras_tensor(value):
        return None
    try:
        array = np.asarray(value, dtype=np.float64)
    except (TypeError, ValueError):
        return None
    return float(array) if array.size == 1 and array.ndim == 0 else None


def scalar_arithmetic(layer: L.Layer):
    """A TFOpLambda adding, subtracting, multiplying or dividing a tensor by a number (as
    MobileNetV3 builds its hard sigmoid, `x + 3.0` and `x * (1 / 6)`): a `Rescaling` of the
    same name (a TFOpLambda cannot be quantized)."""
    if type(layer).__name__ != "TFOpLambda" or len(layer.inbound_nodes) != 1:
        return None
    forms = _ARITHMETIC.get(layer.get_config().get("function"))
    node = layer.inbound_nodes[0]
    operands = [*node.call_args, *(v for k, v in node.call_kwargs.items() if k != "name")]
    if forms is None or len(operands) != 2:
        return None
    tensor_first = _is_keras_tensor(operands[0])
    tensor, number = operands if tensor_first else operands[::-1]
    number, form = _number(number), forms[0 if tensor_first else 1]
    if not _is_keras_tensor(tensor) or number is None or form is None:
        return None
    if form is forms[0] and forms[1] is None and number == 0.0:  # x / 0
        return None
    scale, offset = form(number)

    def build(new_name, args, kwargs):
        tensors = [t for t in tf.nest.flatten((args, kwargs)) if _is_keras_tensor(t)]
        return L.Rescaling(scale, offset, name=layer.name)(tensors[0])

    return build


def normalization_as_rescaling(layer: L.Layer):
    """`Normalization` over the last axis (not inverted): `Rescaling` by 1 / √var and
    −mean / √var per channel (tf_keras's formula, √var at least the backend epsilon)."""
    if type(layer) is not L.Normalization or layer.invert:
        return None
    if tuple(layer.axis) not in ((-1,), (len(layer.input_shape) - 1,)):
        return None
    mean = np.asarray(layer.mean).reshape(-1).astype(np.float64)
    std = np.maximum(np.sqrt(np.asarray(layer.variance).reshape(-1)), keras.backend.epsilon())

    def build(new_name, args, kwargs):
        (x,) = tf.nest.flatten((args, kwargs))
        scale, offset = (1.0 / std).tolist(), (-mean / std).tolist()
        return L.Rescaling(scale, offset, name=layer.name)(x)

    return build


RULES: tuple[Rule, ...] = (
    split_activation,
    split_swish,
    split_merge,
    split_separable,
    scalar_arithmetic,
    normalization_as_rescaling,
)


def _activation_key(layer) -> tuple | None:
    """What an activation layer computes, the same for layers the converter makes one op of
    (`ReLU()` and `Activation("relu")`, `ReLU(6.0)` and `Activation("relu6")`), or None for
    any other layer."""
    config = layer.get_config()
    if type(layer) is L.ReLU:
        max_value = config.get("max_value")
        max_value = None if max_value is None else float(max_value)
        return ("relu", max_value, float(config["negative_slope"]), float(config["threshold"]))
    if type(layer) is L.LeakyReLU:
        return ("leaky_relu", float(config["alpha"]))
    if type(layer) is L.Activation:
        name = activation_of(layer)
        return {"relu": ("relu", None, 0.0, 0.0), "relu6": ("relu", 6.0, 0.0, 0.0)}.get(
            name, ("activation", name)
        )
    return None


def _node_order(model: keras.Model):
    """The model's nodes in the order `rewrite_model` rebuilds them (inputs first)."""
    for depth in sorted(model._nodes_by_depth, reverse=True):
        yield from model._nodes_by_depth[depth]


def twin_activations(model: keras.Model) -> dict:
    """Activation layers (`ReLU`, `Activation`, `LeakyReLU`) that compute what another one
    computes: the same function (`ReLU()` and `Activation("relu")` alike) and dtype policy,
    called once, on the same tensor. Returns id(layer) -> the output tensor of the first of
    its twins (in `rewrite_model`'s order), which replaces it."""
    first: dict = {}
    twins = {}
    for node in _node_order(model):
        layer = node.layer
        function = _activation_key(layer)
        if function is None or len(layer.inbound_nodes) != 1:
            continue
        inputs = tf.nest.flatten((node.call_args, node.call_kwargs))
        if len(inputs) != 1 or not _is_keras_tensor(inputs[0]):
            continue
        key = (id(inputs[0]), function, layer.dtype_policy.name)
        if key in first:
            twins[id(layer)] = first[key]
        else:
            first[key] = node.outputs
    return twins


def decompose_model(model: keras.Model) -> keras.Model:
    """`model` with every layer of the table above rewritten (module docstring).

    Args:
      model: A flat Functional tf_keras model (see `sgt_tfmot.flatten_model`).

    Returns:
      A new Functional model, or `model` itself when no layer needed a rewrite.
    """
    return rewrite_model(model, RULES, aliases=twin_activations(model))


def rewrite_model(model: keras.Model, rules, aliases: dict | None = None) -> keras.Model:
    """`model` rebuilt node by node, each layer replaced by the first of `rules` that takes
    it, or copied (same class, config and weights; a shared layer stays shared). A layer in
    `aliases` (id(layer) -> an output tensor of the original model computed before it) is
    left out, its consumers reading that tensor's counterpart instead.

    Returns:
      A new Functional model, or `model` itself when no rule took a layer and no layer is
      aliased.
    """
    aliases = aliases or {}
    plan = {}
    for layer in model.layers:
        for rule in rules:
            build = rule(layer)
            if build is not None:
                plan[id(layer)] = build
                break
    if not plan and not aliases:
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
    for node in _node_order(model):
        layer = node.layer
        if isinstance(layer, L.InputLayer):
            continue
        args, kwargs = tf.nest.map_structure(
            lambda t: tensors.get(id(t), t), (node.call_args, node.call_kwargs)
        )
        if id(layer) in aliases:
            result = tf.nest.map_structure(lambda t: tensors[id(t)], aliases[id(layer)])
        elif id(layer) in plan:
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
