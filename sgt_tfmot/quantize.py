"""The entry point: `quantize_model` turns a tf_keras model into a PACT QAT model.

It annotates every layer with the config of `sgt_tfmot.quantize_configs`, decided on the
whole graph (a producer's output quantizer is left out when its only consumer quantizes the
tensor anyway), then calls TFMOT's `quantize_apply` with a scheme whose only layout change is
an input quantizer. TFMOT's default Conv/BN/ReLU patterns are not used: they drop the kernel
quantizer of a Conv2D followed by a separate ReLU layer and put an 8-bit fake-quant between
BatchNormalization and the activation.
"""

from __future__ import annotations

import weakref
from collections.abc import Mapping

import numpy as np

from sgt_tfmot import _checks, _graph, keras3, quantize_configs as configs
from sgt_tfmot.decompose import activation_of, decompose_model
from sgt_tfmot.int8_kernels import (
    average_pool_int8,
    leaky_relu_int8,
    pool_window_counts,
    relu_int8,
    requantize_int8,
)
from sgt_tfmot.keras import keras, tf, tfmot
from sgt_tfmot.quantizers import (
    QUANTIZERS,
    FixedRangeQuantizer,
    PACTQuantizer,
    RangeQuantizer,
    check_alpha_init,
    check_alpha_l2,
    check_bits,
    check_weight_range,
)

_tfq = tfmot.quantization.keras


# TFMOT's extension points (layout transforms, schemes, registries, its wrapper) are only
# importable from its `python` tree; this module and `quantizers` (TFMOT's quant_ops for the
# moving-average ranges) are the ones that reach into it.
from tensorflow_model_optimization.python.core.quantization.keras import (  # noqa: E402
    quantize_annotate as _annotate_mod,
    quantize_layer as _layer_mod,
    quantize_layout_transform as _layout_mod,
    quantize_registry as _registry_mod,
    quantize_scheme as _scheme_mod,
    quantize_wrapper as _wrapper_mod,
)
from tensorflow_model_optimization.python.core.quantization.keras.graph_transformations import (  # noqa: E402,E501
    model_transformer as _model_transformer,
    transforms as _transforms,
)


class QuantizeWrapperV2(_wrapper_mod.QuantizeWrapperV2):
    """TFMOT's `QuantizeWrapperV2` with a weight order that does not depend on build timing.

    TFMOT's wrapper lists its trainable weights as the inner layer's weights *known when the
    wrapper is built*, then its own (the kernel again, PACT's α, ...), then the rest of the
    inner layer's. `quantize_model` wraps layers that are already built, giving
    [kernel, bias, α]; a model rebuilt from a file builds the inner layer inside the
    wrapper's `build`, giving [kernel, α, bias]. HDF5 files store weights by position, so a
    Conv2D or Dense with a bias and a fused `activation="relu"` (α trainable beside the bias)
    could be saved but not loaded ("Shape mismatch ... output_alpha"). Building the inner
    layer first makes a loaded wrapper list its weights like the wrapper that was saved.

    The class keeps TFMOT's name, so files stay readable by TFMOT's own `quantize_scope`;
    `quantize_scope` below maps that name to this class.
    """

    def build(self, input_shape):
        if not self.layer.built:
            self.layer.build(input_shape)
        super().build(input_shape)

    # TFLite kernels that keep or move grids (config `integer_kernel`): an AveragePooling2D
    # rounds onto its input's grid, a Concatenate requantizes an input that keeps its own
    # grid. The grids belong to the layers that made the inputs: found when the graph is
    # built (a Keras tensor knows its layer), read at every call.
    def __call__(self, inputs, *args, **kwargs):
        if getattr(self.quantize_config, "integer_kernel", None) is not None:
            histories = [getattr(t, "_keras_history", None) for t in tf.nest.flatten(inputs)]
            if all(history is not None for history in histories):
                # Weak references: a Layer attribute would make the sources sub-layers of
                # this one (their weights listed, saved and set twice).
                self._grid_sources = [weakref.ref(history.layer) for history in histories]
        return super().__call__(inputs, *args, **kwargs)

    def call(self, inputs, training=None, **kwargs):
        kernel = getattr(self.quantize_config, "integer_kernel", None)
        if kernel == configs.CONCATENATION:
            inputs = self._requantized(inputs)
        outputs = super().call(inputs, training=training, **kwargs)
        if kernel not in configs.INPUT_GRID_KERNELS:
            return outputs
        grid = input_grid(self._grid_source(0), self.name)
        if kernel in (configs.LEAKY_RELU, configs.RELU):
            quantizer = self.quantize_config.output_quantizer
            output_grid = quantizer.integer_grid(self._output_quantizer_vars)
            if kernel == configs.RELU:
                return relu_int8(inputs, outputs, grid, output_grid, 2**quantizer.num_bits - 1)
            return leaky_relu_int8(inputs, outputs, self.layer.alpha, grid, output_grid)
        pool = self.layer
        counts = pool_window_counts(inputs.shape[1:3], pool.pool_size, pool.strides, pool.padding)
        return average_pool_int8(outputs, *grid, counts)

    def _grid_source(self, index: int):
        """The layer that made input `index` when the graph was built."""
        sources = getattr(self, "_grid_sources", None)
        layer = sources[index]() if sources is not None and index < len(sources) else None
        if layer is None:
            raise RuntimeError(
                f"Layer {self.name!r} reads the integer grid of the layer that makes its input "
                f"{index}, but that layer is gone (its model was deleted) or was never "
                "connected: call the layer on a Keras tensor of the model it runs in."
            )
        return layer

    def _requantized(self, inputs):
        """The inputs of a Concatenate, those on a grid of their own moved onto the output's
        grid as TFLite's QUANTIZE op does; the others (made by a layer that feeds only this
        one) are rounded by the output quantizer, as in the integer model."""
        quantizer = self.quantize_config.output_quantizer
        if quantizer is None:
            return inputs
        output = quantizer.integer_grid(self._output_quantizer_vars)
        moved = []
        for index, tensor in enumerate(inputs):
            grid = input_grid(self._grid_source(index), self.name, required=False)
            moved.append(tensor if grid is None else requantize_int8(tensor, grid, output))
        return moved


def grid_quantizer(layer):
    """(quantizer, its variables) that sets the grid of `layer`'s output in a QAT graph: its
    own output quantizer, or, for a layer that keeps its input's grid (max pooling, padding,
    reshapes, dropout, average pooling), that of the layer before it; None when the tensor
    has no range (a layer without an output quantizer)."""
    while layer is not None:
        quantizer = getattr(layer, "quantizer", None)  # the model input's QuantizeLayer
        if hasattr(quantizer, "integer_grid"):
            return quantizer, getattr(layer, "quantizer_vars", None)
        config = getattr(layer, "quantize_config", None)
        output_quantizer = getattr(config, "output_quantizer", None)
        if hasattr(output_quantizer, "integer_grid"):
            return output_quantizer, layer._output_quantizer_vars
        inner = getattr(layer, "layer", layer) if config is not None else layer
        same_grid = isinstance(inner, configs.SAME_GRID_LAYERS)
        if output_quantizer is not None or not (configs.is_pass_through(inner) or same_grid):
            return None
        layer = _graph.inbound_layer(layer)
    return None


def input_grid(layer, reader: str, required: bool = True):
    """(scale, int8 zero point) of the output of `layer` in a QAT graph (`grid_quantizer`).

    Raises:
      ValueError: naming `reader` when the tensor has no quantization range, unless not
        `required` (then None).
    """
    found = grid_quantizer(layer)
    if found is not None:
        quantizer, variables = found
        return quantizer.integer_grid(variables)
    if not required:
        return None
    raise ValueError(
        f"Layer {reader!r} keeps the grid of its input, but the tensor it reads (from layer "
        f"{layer.name!r}) has no 8-bit range: give that layer an output quantizer."
    )


class UnsupportedLayersError(_checks.InputError):
    """The layers of a model that `quantize_model` has no config for, all in one message,
    each with its class (and activation or TensorFlow function), grouped by kind, and what
    to do: in API words (`layer_configs`), and for the command line (`for_flags`), which
    has no `layer_configs`.

    Attributes:
      layers: (name, kind) of each unsupported layer, in model order.
    """

    _HINTS = {
        "TFOpLambda": "a TensorFlow function applied to a Keras tensor: only adding, "
        "subtracting, multiplying or dividing by a number is rewritten (as Rescaling)",
        "Lambda": "Lambda layers cannot be quantized (they hide their ops from TFMOT)",
        **{
            name: "data augmentation, the identity at inference: augment the training data "
            "instead, or take it out with sgt_tfmot.models.without_augmentation(model), as "
            "`train --model` does"
            for name in _graph.AUGMENTATION_LAYERS
        },
    }

    def __init__(self, layers):
        self.layers = [(layer.name, _kind(layer)) for layer in layers]
        found = self._found()
        one = len(self.layers) == 1
        super().__init__(
            found + ("Replace it with a supported layer, or annotate it" if one else
                     "Replace them with supported layers, or annotate each")
            + f" by hand with `layer_configs={{{self.layers[0][0]!r}: a tfmot QuantizeConfig"
            + ("}`." if one else ", ...}`."),
            cli=found + ("Replace it with a supported layer" if one else
                         "Replace them with supported layers")
            + " in the model file, or train without quantization (--float), or quantize in "
            "Python with a QuantizeConfig per layer (sgt_tfmot.quantize_model(model, "
            "layer_configs=...)).",
        )  # fmt: skip

    def _found(self) -> str:
        groups: dict[str, list[str]] = {}
        for name, kind in self.layers:
            groups.setdefault(kind, []).append(name)
        parts = []
        for kind, names in groups.items():
            shown = ", ".join(repr(name) for name in names[:4])
            more = f" and {len(names) - 4} more" if len(names) > 4 else ""
            hint = self._HINTS.get(kind.split("(")[0])
            parts.append(f"{kind}: {shown}{more}" + (f" ({hint})" if hint else ""))
        count = len(self.layers)
        return (
            f"{count} layer{'s' if count > 1 else ''} of the model cannot be quantized: "
            f"{'; '.join(parts)}. Supported: {', '.join(configs.supported_layer_names())}. "
        )


def _kind(layer) -> str:
    """A layer's class, with its activation or TensorFlow function where that decides."""
    kind = type(layer).__name__
    if kind in ("TFOpLambda", "SlicingOpLambda"):
        return f"{kind}({layer.get_config().get('function')})"
    if isinstance(layer, keras.layers.Activation):
        return f"Activation({activation_of(layer) or 'linear'})"
    return kind


def quantize_scope(*custom_objects: Mapping[str, object]):
    """Scope for loading saved QAT models: TFMOT's wrappers plus this package's quantizers.

    Works for `.h5` and `.keras` files; see `sgt_tfmot.saving`.

    Example:
        >>> with sgt_tfmot.quantize_scope():
        ...     model = keras.models.load_model("model.h5")
    """
    objects = {cls.__name__: cls for cls in QUANTIZERS}
    objects["LayerQuantizeConfig"] = configs.LayerQuantizeConfig
    objects["QuantizeWrapperV2"] = QuantizeWrapperV2
    tfmot_objects = _tfq.quantize_scope().custom_objects  # later dicts win
    return keras.utils.custom_object_scope(*tfmot_objects, objects, *custom_objects)


class _InputQuantize(_transforms.Transform):
    """InputLayer => InputLayer -> QuantizeLayer(input quantizer)."""

    def __init__(self, quantizer):
        self._quantizer = quantizer

    def pattern(self):
        return _transforms.LayerPattern("InputLayer")

    def replacement(self, match_layer):
        layer = _layer_mod.QuantizeLayer(self._quantizer, dtype="float32")
        config = keras.layers.serialize(layer)
        config["name"] = layer.name
        return _transforms.LayerNode(config, input_layers=[match_layer])

    def custom_objects(self):
        return {"QuantizeLayer": _layer_mod.QuantizeLayer}


class _PACTLayoutTransform(_layout_mod.QuantizeLayoutTransform):
    def __init__(self, input_quantizer):
        self._input_quantizer = input_quantizer

    def apply(self, model, layer_quantize_map):
        transformer = _model_transformer.ModelTransformer(
            model, [_InputQuantize(self._input_quantizer)], None, layer_quantize_map
        )
        return transformer.transform()


class _NoRegistry(_registry_mod.QuantizeRegistry):
    """Every layer arrives annotated with its config; nothing is looked up."""

    def get_quantize_config(self, layer):
        return None

    def supports(self, layer):
        return False


class _PACTScheme(_scheme_mod.QuantizeScheme):
    def __init__(self, input_quantizer):
        self._input_quantizer = input_quantizer

    def get_layout_transformer(self):
        return _PACTLayoutTransform(self._input_quantizer)

    def get_quantize_registry(self):
        return _NoRegistry()


def _check_model(model) -> None:
    if not isinstance(model, keras.Model):
        raise ValueError(
            f"`model` must be a tf_keras Functional or Sequential model. Received: {model!r}"
        )
    if not isinstance(model, keras.Sequential) and not getattr(model, "_is_graph_network", False):
        raise ValueError(
            f"`model` ({type(model).__name__} {model.name!r}) is a subclassed model; "
            "quantize_model needs a Functional or Sequential model (TFMOT cannot trace "
            "subclassed models). Rebuild it with the Functional API."
        )
    if not model.built:
        raise ValueError(f"`model` {model.name!r} is not built: call it once or build it first.")
    quantized = (
        _wrapper_mod.QuantizeWrapper,
        _layer_mod.QuantizeLayer,
        _annotate_mod.QuantizeAnnotate,
    )
    for layer in model.layers:
        if isinstance(layer, quantized):
            raise ValueError(
                f"`model` {model.name!r} is already quantized (layer {layer.name!r} is a "
                f"{type(layer).__name__}); pass the float model to quantize_model."
            )


def pact_alphas(model: keras.Model) -> dict:
    """Layer name -> the α variable of every PACT activation of a QAT model (in layer order).

    Asks each quantize wrapper for the variables its output quantizer built, instead of
    matching variable names.
    """
    found = {}
    for layer in model.layers:
        config = getattr(layer, "quantize_config", None)
        if isinstance(getattr(config, "output_quantizer", None), PACTQuantizer):
            found[layer.name] = layer._output_quantizer_vars["alpha"]
    return found


def input_quantizer(model: keras.Model) -> FixedRangeQuantizer | None:
    """The fixed-range quantizer of a QAT model's input (its `QuantizeLayer`), or None: a
    float model, or an input range learned from the data (`input_range=None`)."""
    for layer in model.layers:
        quantizer = getattr(layer, "quantizer", None)
        if isinstance(quantizer, FixedRangeQuantizer):
            return quantizer
    return None


def check_input_fits(model: keras.Model, images, what: str) -> None:
    """Refuses `images` that a QAT model's input range would binarise or clip.

    The range is the model's fixed `input_range`, or the one it learned (`input_range=None`);
    the rule is `FixedRangeQuantizer.fits`. A float model takes any images.

    Args:
      model: A Keras model.
      images: The images the model is to be fed.
      what: The images, as the message names them.

    Raises:
      InputError (a ValueError): naming the range, the images' span and what to do (on the
        command line, `for_flags()`: the tools feed 0..255 pixels).
    """
    quantizer = input_quantizer(model)
    for layer in model.layers if quantizer is None else ():
        if isinstance(getattr(layer, "quantizer", None), RangeQuantizer):  # learned
            low, high = (float(layer.quantizer_vars[k].numpy()) for k in ("min_var", "max_var"))
            quantizer = FixedRangeQuantizer(low, high) if low < high else None
    if quantizer is None:
        return
    fits, smallest, largest = quantizer.fits(np.asarray(images, np.float32))
    if not bool(fits):
        span = (float(smallest), float(largest))
        tools = (
            "the command-line tools feed 0..255 pixels, so quantize the model over them "
            "(input_range=(0, 255), with a Rescaling(1/255) first layer if it was trained on "
            "[0, 1] images)"
        )
        raise _checks.InputError(
            quantizer.misfit(what, span), cli=quantizer.misfit(what, span, tools)
        )


def output_range_variables(layer) -> dict:
    """The variables of a wrapped layer's output quantizer by role ("alpha", "min_var", ...)."""
    return dict(getattr(layer, "_output_quantizer_vars", None) or {})


def calibrate_ranges(
    qat: keras.Model,
    float_model: keras.Model,
    images,
    percentile: float = 99.9,
    batch_size: int = 128,
    alphas: bool = True,
) -> dict[str, float]:
    """Starts a QAT model's ranges from its float model's activations on `images`.

    For each wrapped layer of `qat` with an output quantizer, the float model's layer of
    the same name gives the activations (inference mode):

        PACT α        = the `percentile`-th percentile of the activations (capped at
                        `max_alpha`, 6 for ReLU6; at least 1e-3)
        8-bit ranges  = [min(0, min activation), max(0, max activation)]

    so that QAT fine-tuning from a trained float model starts from the float model's own
    function instead of α₀ = 10 and the moving ranges' initial [−6, 6].

    Args:
      qat: A QAT model from `quantize_model` of `float_model` (same layer names).
      float_model: The float model, with trained weights.
      images: (N, H, W, C) inputs, e.g. a few training batches.
      percentile: In (0, 100].
      batch_size: Images per forward pass.
      alphas: Set the PACT α too (else only the 8-bit ranges).

    Returns:
      Layer name -> the α it was given, for the PACT layers.
    """
    percentile = _checks.check_number(percentile, "alpha_percentile", 0.0, 100.0, low_open=True)
    float_model = _flat_functional(float_model)  # the layers (and names) `qat` was made of
    targets = {}
    for layer in qat.layers:
        config = getattr(layer, "quantize_config", None)
        quantizer = getattr(config, "output_quantizer", None)
        if isinstance(quantizer, RangeQuantizer) or (
            alphas and isinstance(quantizer, PACTQuantizer)
        ):
            targets[layer.name] = (layer, quantizer, float_model.get_layer(layer.layer.name))
    if not targets:
        return {}
    probe = keras.Model(float_model.inputs, [t[2].output for t in targets.values()])
    outputs = probe.predict(images, batch_size=batch_size, verbose=0)
    outputs = outputs if isinstance(outputs, list) else [outputs]
    found = {}
    for (name, (layer, quantizer, _)), values in zip(targets.items(), outputs, strict=True):
        variables = output_range_variables(layer)
        values = values.astype(np.float64).ravel()
        if isinstance(quantizer, PACTQuantizer):
            alpha = max(float(np.percentile(values, percentile)), 1e-3)
            if quantizer.max_alpha is not None:
                alpha = min(alpha, quantizer.max_alpha)
            variables["alpha"].assign(alpha)
            found[name] = alpha
        else:
            low, high = _zero_on_grid(min(0.0, float(values.min())), max(0.0, float(values.max())))
            variables["min_var"].assign(low)
            variables["max_var"].assign(high)
    return found


def _zero_on_grid(low: float, high: float, levels: int = 255) -> tuple[float, float]:
    """[low, high] moved so that 0 is a grid point far from a rounding tie.

    Fake-quant ops and the TFLite converter both move a range until 0 is on its grid, each
    rounding the zero point by its own rule; a range such as [−1, 1] puts the zero point
    exactly half-way (127.5) and the two round it differently (one step apart everywhere).
    """
    if high - low <= 0:
        return low, high
    scale = (high - low) / levels
    zero_point = float(np.floor(-low / scale + 0.5))
    return -zero_point * scale, (levels - zero_point) * scale


def _quantizes_its_input(producer, consumer) -> bool:
    """True when `consumer` makes `producer`'s own output quantizer redundant: a PACT
    activation (TFLite fuses the ReLU into the producer, whose output then has PACT's
    range), a BatchNormalization folding into it, or a Concatenate, whose range the TFLite
    converter gives to every input made by a layer that feeds nothing else (it overrides
    the producer's own range, so the QAT graph must not round there). A Concatenate keeps
    its range when a Concatenate reads it (the outer one requantizes it,
    `QuantizeWrapperV2`) and when a ReLU does: the converter fuses no ReLU into a
    CONCATENATION, which rounds onto a grid of its own (or, without a range, an input's)
    before a RELU op (NASNet's cells: 37 % of a RELU's outputs off by 1-2 steps)."""
    concatenate = keras.layers.Concatenate
    if configs.is_pact_activation(consumer) and not configs.is_kernel_layer(consumer):
        return not isinstance(producer, concatenate)
    if isinstance(consumer, concatenate) and not isinstance(producer, concatenate):
        return True
    return _graph.bn_folds_into(producer, consumer)


def _keeps_values(layer) -> bool:
    """Pass-through layers and average pooling: a ReLU output stays >= 0 through them."""
    return configs.is_pass_through(layer) or isinstance(layer, configs.SAME_GRID_LAYERS)


def _relu_inputs(layer) -> str | None:
    """ "relu" ("relu6") when every input of a Concatenate is a ReLU (ReLU6) output, looking
    through layers that keep their input's values (pooling by max, padding, reshapes) and
    through inner Concatenates; else None."""
    if not isinstance(layer, keras.layers.Concatenate):
        return None
    found = set()
    for source in layer.inbound_nodes[0].inbound_layers:
        while _keeps_values(source) and _graph.inbound_layer(source) is not None:
            source = _graph.inbound_layer(source)
        if configs.is_pact_activation(source):
            found.add("relu6" if configs.relu6(source) else "relu")
        else:
            found.add(_relu_inputs(source))
    if None in found or not found:
        return None
    return "relu6" if found == {"relu6"} else "relu"


def quantize_model(
    model: keras.Model,
    weight_bits: int = 4,
    activation_bits: int = 4,
    first_last_bits: int = 8,
    alpha_init: float = 10.0,
    alpha_l2: float = 2e-4,
    input_range: tuple[float, float] | None = (0.0, 255.0),
    layer_configs: Mapping[str, object] | None = None,
    weight_range: str = "max",
) -> keras.Model:
    """Returns a trainable PACT quantization-aware copy of `model`.

    Every Conv/Dense kernel is quantized to `weight_bits` (the first and the last one to
    `first_last_bits`), every ReLU output goes through PACT with a trainable clipping level α
    at `activation_bits`, and the remaining tensors the integer model needs ranges for get
    8-bit moving-average ranges (see `sgt_tfmot.quantize_configs`). The input is quantized to
    8 bits over `input_range`: the default [0, 255] passes raw pixels through exactly.

    Example:
        >>> model = sgt_tfmot.models.resnet20((32, 32, 3), 10)
        >>> qat = sgt_tfmot.quantize_model(model, weight_bits=4, activation_bits=4)
        >>> qat.compile("sgd", keras.losses.SparseCategoricalCrossentropy(from_logits=True))

    Args:
      model: A built tf_keras Functional or Sequential model, not quantized yet, or a Keras 3
        one (translated to tf_keras first: `sgt_tfmot.from_keras3`).
      weight_bits: Bits of the kernels, 2 to 8.
      activation_bits: Bits of the PACT activations, 2 to 8.
      first_last_bits: Bits of the first and the last Conv/Dense kernel, 2 to 8.
      alpha_init: Initial α of every PACT activation, > 0 (PACT paper: 10).
      alpha_l2: L2 penalty on each α, >= 0 (PACT paper: 2e-4).
      input_range: (low, high) of the model input, or None to learn it from the data seen in
        training (TFMOT's moving-average rule). A training batch that this range would
        binarise or clip (images scaled to [0, 1] on the default 0..255 grid) stops the
        training with a message (`FixedRangeQuantizer.fits`), never silently.
      layer_configs: Layer name -> `tfmot.quantization.keras.QuantizeConfig` for layers to
        annotate by hand (for example a layer type this package has no config for).
      weight_range: How each kernel's quantization range is chosen: "max" (max |w| per
        output channel, nothing clipped) or "mse" (the clip with the least quantization
        error, much better at 2 bits; see `sgt_tfmot.quantizers.weight_range`).

    Returns:
      A new Functional QAT model (the weights are copied; `model` is left unchanged).
      Nested Functional models (a Keras Applications base inside a classifier) are inlined
      first (`sgt_tfmot.flatten_model`).

    Raises:
      ValueError: On bits outside 2..8, α₀ <= 0, λ_α < 0, a subclassed or already
        quantized model, a Keras 3 layer without a tf_keras counterpart, or a layer type
        with no config.
    """
    weight_bits = check_bits(weight_bits, "weight_bits")
    activation_bits = check_bits(activation_bits, "activation_bits")
    first_last_bits = check_bits(first_last_bits, "first_last_bits")
    alpha_init = check_alpha_init(alpha_init)
    alpha_l2 = check_alpha_l2(alpha_l2)
    weight_range = check_weight_range(weight_range)
    input_quantizer = (
        RangeQuantizer(8) if input_range is None else FixedRangeQuantizer(*input_range)
    )
    layer_configs = dict(layer_configs or {})
    model = _flat_functional(model)
    unknown = set(layer_configs) - {layer.name for layer in model.layers}
    if unknown:
        raise ValueError(f"`layer_configs` names layers not in the model: {sorted(unknown)}")
    annotated = _layer_annotations(
        model,
        layer_configs,
        weight_bits=weight_bits,
        activation_bits=activation_bits,
        first_last_bits=first_last_bits,
        alpha_init=alpha_init,
        alpha_l2=alpha_l2,
        weight_range=weight_range,
    )
    return _quantize_annotated(model, annotated, input_quantizer)


def _flat_functional(model) -> keras.Model:
    """The checked `model` as one flat Functional model (TFMOT cannot quantize nested ones),
    decomposed into the layers of its integer model (`sgt_tfmot.decompose`); a Keras 3 model
    is translated to tf_keras first (`sgt_tfmot.keras3`)."""
    if keras3.is_keras3_model(model):
        model = keras3.from_keras3(model)
    _check_model(model)
    if isinstance(model, keras.Sequential):
        model = keras.Model(model.inputs, model.outputs, name=model.name)
    return decompose_model(_graph.flatten_model(model))


def _output_layers(model: keras.Model) -> set[str]:
    """Names of the layers that make the model's output, the model's own softmax and the
    pass-through layers (Reshape, Flatten, ...) in front of the logits looked through: their
    8-bit ranges pass gradients straight through (`RangeQuantizer`)."""
    names = set()
    for tensor in model.outputs:
        layer = tensor._keras_history.layer
        while True:
            names.add(layer.name)
            if not configs.is_pass_through(layer):
                break
            inbound = layer._inbound_nodes[0].inbound_layers if layer._inbound_nodes else []
            inbound = inbound if isinstance(inbound, list) else [inbound]
            if len(inbound) != 1 or isinstance(inbound[0], keras.layers.InputLayer):
                break
            layer = inbound[0]
    return names


def _layer_annotations(
    model: keras.Model,
    layer_configs: dict,
    *,
    weight_bits: int,
    activation_bits: int,
    first_last_bits: int,
    alpha_init: float,
    alpha_l2: float,
    weight_range: str,
) -> dict[str, object]:
    """Layer name -> its quantize config: the hand-given one, else `configs.config_for`'s
    (the first and the last kernel at `first_last_bits`; no output quantizer where the only
    consumer quantizes the tensor anyway). Layers that need none are left out.

    Raises:
      ValueError: On a layer type with no config and none given by hand.
    """
    layer_by_name = {layer.name: layer for layer in model.layers}
    consumers = _graph.consumers(model.get_config())
    kernel_layers = [layer.name for layer in model.layers if configs.is_kernel_layer(layer)]
    first_last = {kernel_layers[0], kernel_layers[-1]} if kernel_layers else set()
    output_layers = _output_layers(model)
    unsupported = [
        layer
        for layer in model.layers
        if layer.name not in layer_configs and not configs.is_supported(layer)
    ]
    if unsupported:
        raise UnsupportedLayersError(unsupported)
    annotated: dict[str, object] = {}
    for layer in model.layers:
        if layer.name in layer_configs:
            annotated[layer.name] = layer_configs[layer.name]
            continue
        outs = [layer_by_name.get(name) for name in consumers[layer.name]]
        config = configs.config_for(
            layer,
            weight_bits=first_last_bits if layer.name in first_last else weight_bits,
            activation_bits=activation_bits,
            alpha_init=alpha_init,
            alpha_l2=alpha_l2,
            quantize_output=not (len(outs) == 1 and _quantizes_its_input(layer, outs[0])),
            model_output=layer.name in output_layers,
            weight_range=weight_range,
            relu_inputs=_relu_inputs(layer),
            reads_concatenate=isinstance(_graph.inbound_layer(layer), keras.layers.Concatenate),
        )
        if config is not None:
            annotated[layer.name] = config
    _check_same_grid_inputs(model, annotated)
    return annotated


def _check_same_grid_inputs(model: keras.Model, annotated: dict) -> None:
    """Every layer computed from its input's grid (AveragePooling2D, LeakyReLU:
    `configs.INPUT_GRID_KERNELS`) reads a tensor with a grid (`input_grid` on the QAT model):
    made by the input or by a layer with an output quantizer, looking through layers that
    keep their input's grid. Only a layer annotated by hand can break that.

    Raises:
      ValueError: naming the pooling layer and the layer without a range.
    """
    for layer in model.layers:
        kernel = getattr(annotated.get(layer.name), "integer_kernel", None)
        if kernel not in configs.INPUT_GRID_KERNELS:
            continue
        source = _graph.inbound_layer(layer)
        while source is not None and not isinstance(source, keras.layers.InputLayer):
            if getattr(annotated.get(source.name), "output_quantizer", None) is not None:
                break
            if not _keeps_values(source):
                raise ValueError(
                    f"Layer {layer.name!r} ({type(layer).__name__}) is computed on the grid of "
                    f"its input, but layer {source.name!r} before it has no output quantizer "
                    "(annotated by hand with `layer_configs`?): give it one."
                )
            source = _graph.inbound_layer(source)


def _quantize_annotated(model: keras.Model, annotated: dict, input_quantizer) -> keras.Model:
    """TFMOT's `quantize_apply` on a copy of `model` whose layers carry their `annotated`
    configs, with this package's scheme (an input quantizer, no pattern rewrites)."""

    def annotate(layer):
        config = annotated.get(layer.name)
        if config is None:
            return layer.__class__.from_config(layer.get_config())
        return _annotate_mod.QuantizeAnnotate(
            layer.__class__.from_config(layer.get_config()), quantize_config=config
        )

    with quantize_scope():
        annotated_model = keras.models.clone_model(model, clone_function=annotate)
        annotated_model.set_weights(model.get_weights())
        qat = _tfq.quantize_apply(annotated_model, scheme=_PACTScheme(input_quantizer))
        # TFMOT wraps with its own QuantizeWrapperV2 class; the copy has this module's (as a
        # model loaded from a file has), around the same built inner layers, so that weights
        # keep their order and names.
        ours = keras.models.clone_model(qat, clone_function=_with_this_wrapper)
    ours.set_weights(qat.get_weights())
    return ours


def _with_this_wrapper(layer):
    if isinstance(layer, _wrapper_mod.QuantizeWrapperV2):
        inner = layer.layer.__class__.from_config(layer.layer.get_config())
        with tf.name_scope(inner.name):  # TFMOT's weight names ("conv/kernel:0")
            inner.build(layer.input_shape)
        return QuantizeWrapperV2(inner, layer.quantize_config, name=layer.name)
    return layer.__class__.from_config(layer.get_config())
