"""The export model: a QAT model rewritten so that TFLite converts it without changing a value.

The export rule, in one place (`export_model`): TensorFlow 2.21's converter only accepts 8-bit
fake-quant ops, so a k-bit QAT model is rebuilt with 8-bit quantizers over the same learned
ranges before conversion:

* BatchNormalization after a Conv or DepthwiseConv is folded into it here, on the k-bit
  kernel (`sgt_tfmot._graph.bn_folds_into` is the rule, shared with `quantize_model`):
  kernel' = w_q · γ/√(σ² + ε) and bias' = (b − μ) · γ/√(σ² + ε) + β per output channel. The
  folded kernel is again on a symmetric k-bit grid per channel (the grid's step times a
  per-channel factor), so the integer kernel holds it exactly; a depthwise kernel, quantized
  per tensor, gets per-channel export ranges that contain its scaled grid
  (`ChannelRangeQuantizer`). Left to the converter, the fold
  would happen after the fake-quant and be rounded again to 8 bits, moving the conv outputs by
  a fraction of a weight step, which at 4 bits flips ~4 % of CIFAR-10 predictions;
* weights: the kernels are set to their k-bit values, and the 8-bit weight quantizer's range
  is widened by `export_range_scale(k, 8, container)` so that its grid contains the k-bit
  grid: the integer kernels hold exactly the k-bit weights the QAT model used, as r·q for
  each k-bit level q. The quantizer's `container_bits` sets r: with 4 (the default for
  k ≤ 4) r = ⌊7 / L_k⌋ and every value lies in [−7, 7], so `sgt_tfmot.tflite.int4` can store
  the kernel as INT4, two per byte, without changing an output; with 8, r = ⌊127 / L_k⌋;
* PACT activations: an 8-bit range with the k-bit step α/(2^k − 1), [0, α·255/(2^k − 1)],
  followed by MINIMUM(α) (`sgt_tfmot.quantizers.pact_integer`): the integer model computes
  the k-bit activations exactly. The converter writes one int8 MINIMUM per activation for
  k < 8; `sgt_tfmot.tflite.rewrite.fold_minimums` then moves the producer's zero point so
  that the output range ends at α and int8 saturation does the clip (same values, no op);
* 8-bit ranges (input, residual sums, logits) are unchanged.

* the input normalization (`Rescaling`) becomes a 1x1 Conv2D with a diagonal kernel: its
  per-channel int8 weights hold each scale exactly (TFLite's MUL + ADD would round the
  product to a calibrated range first). It cannot fold into the first convolution, nor into
  the input's quantization: its output is rounded onto its own learned 8-bit grid, a
  per-channel affine map followed by rounding, which neither a linear fold nor one (scale,
  zero point) of the raw pixels holds. A 1x1 DepthwiseConv2D holds the same int8 weights,
  int32 biases and scales and is faster in XNNPACK, but LiteRT's builtin int8 kernels round
  a DEPTHWISE_CONV_2D's requantization differently from a CONV_2D's, so it would change the
  outputs there (CIFAR-10 W4A4 model: 10129 of 10200 images in the builtin kernels, 0 in
  XNNPACK);
* every bias is rounded to the int32 units TFLite stores it in (input step × weight step);
* the other per-channel affine layers on images (a BatchNormalization that folds into no
  convolution, after a Concatenate or a pooling; a `Rescaling` inside the network) become a
  1x1 DepthwiseConv2D with the scale as its per-channel int8 weight (127 · a / 127, exact) and
  the offset as its int32 bias: TFLite's MUL then ADD would round the product onto a range
  nobody learned;
* a tensor that keeps its input's grid (pooling, padding, reshapes) and is read by a
  Concatenate and by other layers gets a fake-quant over the grid it has anyway: without it
  the converter gives it the Concatenate's scale, and every reader reads it requantized.

The export model then computes the integer model, except the rounding of AVERAGE_POOL_2D and
of the QUANTIZE in front of a Concatenate, which the converter writes as the int8 kernels
themselves (the QAT model computes them: `sgt_tfmot.quantize_configs`): there it may be one
step off. The QAT model differs from the integer model only by the bias rounding, which
`align_biases` moves into the QAT model's own biases (by less than half an int32 unit),
after which the Keras model and the integer model agree (`tests/test_export.py`,
`tests/test_exact_layers.py` state the tolerances).
"""

from __future__ import annotations

import copy

import numpy as np

from sgt_tfmot import _graph
from sgt_tfmot.keras import keras
from sgt_tfmot.quantize import QuantizeWrapperV2, grid_quantizer, input_grid, quantize_scope
from sgt_tfmot.quantize_configs import (
    PASS_THROUGH_LAYERS,
    SAME_GRID_LAYERS,
    LayerQuantizeConfig,
)
from sgt_tfmot.quantizers import (
    ChannelRangeQuantizer,
    FixedRangeQuantizer,
    PACTQuantizer,
    WeightQuantizer,
    export_range_scale,
)

__all__ = ["align_biases", "biases_aligned", "export_model", "is_quantized"]

# `biases_aligned`: an aligned bias is this close to its grid value, in float32 ulps of its
# operands (at most 1 measured on a trained ResNet-20, whose int32 units are 460-120,000).
ALIGNED_ULPS = 4
ALIGNED_UNIT_SHARE = 1e-6  # of an int32 unit: a gap no integer accumulator can see


def is_quantized(model: keras.Model) -> bool:
    """True when `model` holds TFMOT quantize wrappers (a QAT model)."""
    return any(hasattr(layer, "quantize_config") for layer in model.layers)


def _export_quantizer(quantizer):
    """The 8-bit export version of one quantizer (see module docstring)."""
    if isinstance(quantizer, PACTQuantizer):
        return PACTQuantizer(**{**quantizer.get_config(), "export": True})
    if isinstance(quantizer, WeightQuantizer):
        scale = export_range_scale(quantizer.num_bits, 8, quantizer.container_bits)
        return WeightQuantizer(8, quantizer.per_channel, quantizer.range_scale * scale)
    return quantizer


def _export_config(config: LayerQuantizeConfig, output_quantizer) -> LayerQuantizeConfig:
    # No `integer_kernel`: the converter writes that rounding as the int8 kernel itself; the
    # wrapper's emulation would become float ops in the file.
    return LayerQuantizeConfig(
        config.weight_attr,
        config.weight_quantizer and _export_quantizer(config.weight_quantizer),
        output_quantizer and _export_quantizer(output_quantizer),
    )


def _batch_norm_folds(model: keras.Model, config: dict) -> dict[str, keras.layers.Layer]:
    """Wrapped convolutions whose only consumer is a BatchNormalization that folds into them
    (`sgt_tfmot._graph.bn_folds_into`), with no fake-quant between: conv wrapper name -> BN
    layer (plain or wrapped)."""
    consumers = _graph.consumers(config)
    folds = {}
    for layer in model.layers:
        quantize_config = getattr(layer, "quantize_config", None)
        after = consumers.get(layer.name, [])
        if (
            not isinstance(quantize_config, LayerQuantizeConfig)
            or quantize_config.weight_quantizer is None
            or quantize_config.output_quantizer is not None
            or len(after) != 1
            or after[0] == _graph.OUTPUT
        ):
            continue
        bn = model.get_layer(after[0])
        bn_config = getattr(bn, "quantize_config", None)
        if not _graph.bn_folds_into(layer, bn):
            continue
        if bn is not getattr(bn, "layer", bn) and not isinstance(bn_config, LayerQuantizeConfig):
            continue
        if bn_config is not None and bn_config.weight_quantizer is not None:
            continue
        folds[layer.name] = bn
    return folds


def _bn_factor(bn: keras.layers.Layer) -> np.ndarray:
    """γ / √(σ² + ε) of a BatchNormalization in inference mode, per channel."""
    bn = getattr(bn, "layer", bn)
    factor = 1.0 / np.sqrt(bn.moving_variance.numpy() + bn.epsilon)
    return factor * bn.gamma.numpy() if bn.scale else factor


def _fold(conv: keras.layers.Layer, bn: keras.layers.Layer, kernel: np.ndarray):
    """(kernel', bias') of Conv → BatchNormalization in inference mode, per output channel.

    A depthwise kernel (kh, kw, C, M) feeds output channel c·M + m, so its factor is laid
    out (1, 1, C, M).
    """
    factor = _bn_factor(bn)
    bn = getattr(bn, "layer", bn)
    mean = bn.moving_mean.numpy()
    bias = conv.bias.numpy() if conv.use_bias else np.zeros_like(mean)
    bias = (bias - mean) * factor
    if bn.center:
        bias = bias + bn.beta.numpy()
    if isinstance(conv, keras.layers.DepthwiseConv2D):
        factor = factor.reshape(1, 1, kernel.shape[2], kernel.shape[3])
    return (kernel * factor).astype(np.float32), bias.astype(np.float32)


def _depthwise_fold_quantizer(source, bn) -> ChannelRangeQuantizer:
    """The export weight quantizer of a DepthwiseConv2D with BN folded in: per-channel
    ranges m · |f_c| · export_range_scale(k, 8, container) around the per-tensor k-bit grid
    (m: the quantizer's range of the kernel)."""
    quantizer = source.quantize_config.weight_quantizer
    attr = f"{source.quantize_config.weight_attr}:0"
    kernel = next(w for w in source.weights if _short(w) == attr).numpy()
    m = float(quantizer.ranges(kernel))
    scale = export_range_scale(quantizer.num_bits, 8, quantizer.container_bits)
    ranges = np.maximum(m * np.abs(_bn_factor(bn)) * scale, 1e-8)
    return ChannelRangeQuantizer(ranges.tolist(), 8, depthwise=True)


def _reads_model_input(layer) -> bool:
    """True for a layer fed by the model input's QuantizeLayer."""
    source = _graph.inbound_layer(layer)
    return source is not None and hasattr(getattr(source, "quantizer", None), "integer_grid")


def _rescalings(model: keras.Model) -> set[str]:
    """Wrapped `Rescaling` layers on the model's input images (rank 4) with an 8-bit output
    range: the input normalization, exported as a 1x1 Conv2D."""
    found = set()
    for layer in model.layers:
        config = getattr(layer, "quantize_config", None)
        if (
            isinstance(getattr(layer, "layer", None), keras.layers.Rescaling)
            and isinstance(config, LayerQuantizeConfig)
            and config.output_quantizer is not None
            and len(layer.output_shape) == 4
            and _reads_model_input(layer)
        ):
            found.add(layer.name)
    return found


def _channel_affines(model: keras.Model, folded_bns) -> set[str]:
    """The other per-channel affine layers on images (rank 4, channels last), wrapped or
    not: `Rescaling` layers inside the network (the x + 3 and x / 6 of a hard sigmoid) and
    BatchNormalization that folds into no convolution (after a Concatenate, a pooling, the
    input). TFLite would compute y = x·a + b as MUL then ADD, rounding the product onto a
    range nobody learned; a 1x1 DepthwiseConv2D computes it in one op, each channel's a held
    exactly by its int8 weight (127 · a / 127), b in int32 (`align_biases` puts it there)."""
    found, inputs = set(), _rescalings(model)
    for layer in model.layers:
        inner = getattr(layer, "layer", layer) if hasattr(layer, "quantize_config") else layer
        if layer.name in folded_bns or len(getattr(layer, "output_shape", ())) != 4:
            continue
        if isinstance(inner, keras.layers.Rescaling) and layer.name not in inputs:
            found.add(layer.name)
        elif isinstance(inner, keras.layers.BatchNormalization) and _graph.channel_axis(inner, 4):
            found.add(layer.name)
    return found


def _shared_into_concatenations(model: keras.Model, config: dict) -> dict[str, tuple]:
    """Layer name -> (low, high) of the input grid of each layer that keeps its input's grid
    (max or average pooling, padding, reshapes) and feeds a Concatenate and other layers.

    Such a tensor has no fake-quant of its own, and the converter then gives it the
    Concatenate's scale, behind a requantizing QUANTIZE that every reader of the tensor
    reads (the QAT graph's other readers see the input's grid). An explicit fake-quant over
    the grid the tensor has anyway (a no-op on its values) keeps it on that grid: the
    QUANTIZE then sits on the Concatenate's edge alone, as the QAT graph computes it. The
    range is the one the grid's own fake-quant gets, the same float32 numbers: a range
    recomputed from the grid would differ in the last bit of the scale, and the converter
    refuses a max pooling whose input and output scales differ at all."""
    found = {}
    consumers = _graph.consumers(config)
    for layer in model.layers:
        readers = [name for name in consumers.get(layer.name, []) if name != _graph.OUTPUT]
        inner = getattr(layer, "layer", layer)
        if (
            len(readers) < 2
            or isinstance(layer, keras.layers.InputLayer)
            or not isinstance(inner, PASS_THROUGH_LAYERS + SAME_GRID_LAYERS)
            or not any(
                isinstance(getattr(r, "layer", r), keras.layers.Concatenate)
                for r in map(model.get_layer, readers)
            )
        ):
            continue
        owner = grid_quantizer(layer)
        if owner is not None:
            quantizer, variables = owner
            found[layer.name] = quantizer.export_range(variables)
    return found


def _with_output_range(layer, layer_config: dict, low: float, high: float) -> dict:
    """`layer` (wrapped or not) with a fixed output range."""
    inner = getattr(layer, "layer", layer) if hasattr(layer, "quantize_config") else layer
    wrapper = QuantizeWrapperV2(
        type(inner).from_config(inner.get_config()),
        LayerQuantizeConfig(output_quantizer=FixedRangeQuantizer(low, high)),
        name=layer.name,
    )
    return {
        **keras.utils.serialize_keras_object(wrapper),
        "name": layer.name,
        "inbound_nodes": layer_config["inbound_nodes"],
    }


def _affine(layer) -> tuple[np.ndarray, np.ndarray]:
    """(a, b) per channel of a channel-affine layer: y_c = x_c · a_c + b_c."""
    inner = getattr(layer, "layer", layer) if hasattr(layer, "quantize_config") else layer
    channels = layer.output_shape[-1]
    if isinstance(inner, keras.layers.Rescaling):
        return _rescaling_per_channel(inner, channels)
    factor = _bn_factor(inner).astype(np.float64)
    offset = -inner.moving_mean.numpy().astype(np.float64) * factor
    if inner.center:
        offset = offset + inner.beta.numpy()
    return factor, offset


def _affine_as_depthwise_config(layer, layer_config: dict) -> dict:
    inner = getattr(layer, "layer", layer) if hasattr(layer, "quantize_config") else layer
    config = getattr(layer, "quantize_config", None)
    output_quantizer = getattr(config, "output_quantizer", None)
    scale, _ = _affine(layer)
    conv = keras.layers.DepthwiseConv2D(1, use_bias=True, name=f"{inner.name}_affine")
    quantizer = ChannelRangeQuantizer(np.maximum(np.abs(scale), 1e-8).tolist(), 8, depthwise=True)
    export_config = LayerQuantizeConfig(
        "depthwise_kernel", quantizer, output_quantizer and _export_quantizer(output_quantizer)
    )
    wrapper = QuantizeWrapperV2(conv, export_config, name=layer.name)
    return {
        **keras.utils.serialize_keras_object(wrapper),
        "name": layer.name,
        "inbound_nodes": layer_config["inbound_nodes"],
    }


def _rescaling_per_channel(rescaling: keras.layers.Rescaling, channels: int):
    scale = np.broadcast_to(np.asarray(rescaling.scale, np.float64).reshape(-1), [channels])
    offset = np.broadcast_to(np.asarray(rescaling.offset, np.float64).reshape(-1), [channels])
    return scale, offset


def _rescaling_as_conv_config(layer, layer_config: dict) -> dict:
    channels = layer.output_shape[-1]
    conv = keras.layers.Conv2D(channels, 1, use_bias=True, name=layer.layer.name)
    wrapper = type(layer)(
        conv,
        LayerQuantizeConfig(
            "kernel", WeightQuantizer(8, per_channel=True), layer.quantize_config.output_quantizer
        ),
        name=layer.name,
    )
    return {
        **keras.utils.serialize_keras_object(wrapper),
        "name": layer.name,
        "inbound_nodes": layer_config["inbound_nodes"],
    }


def _rescaling_as_conv_weights(layer) -> tuple[np.ndarray, np.ndarray]:
    """Kernel diag(scale) (1, 1, C, C) and bias `offset` of the 1x1 conv that is `layer`'s
    Rescaling: y_c = x_c · scale_c + offset_c."""
    channels = layer.output_shape[-1]
    scale, offset = _rescaling_per_channel(layer.layer, channels)
    kernel = np.diag(scale).reshape(1, 1, channels, channels)
    return kernel.astype(np.float32), offset.astype(np.float32)


def _short(weight) -> str:
    """A variable's own name ("kernel:0", "output_min:0"), without its layer prefix."""
    return weight.name.split("/")[-1]


def rebuild_functional(config: dict, layers: list[dict], remap) -> keras.Model:
    """A Functional model from `config` with its layer list replaced by `layers`, every
    inbound, input and output entry ([layer name, node, tensor, kwargs]) passed through
    `remap` (to rewire around removed or renamed layers)."""
    for layer_config in layers:
        layer_config["inbound_nodes"] = [
            [remap(entry) for entry in node] for node in layer_config["inbound_nodes"]
        ]
    config = {
        **config,
        "layers": layers,
        "input_layers": [remap(entry) for entry in config["input_layers"]],
        "output_layers": [remap(entry) for entry in config["output_layers"]],
    }
    with quantize_scope():
        return keras.Model.from_config(config)


def export_model(model: keras.Model) -> keras.Model:
    """Rebuilds a k-bit QAT model with 8-bit quantizers over the same ranges, for conversion.

    Args:
      model: A QAT model from `sgt_tfmot.quantize_model` (any bits 2..8).

    Returns:
      A new model computing the QAT model's inference function: BatchNormalization folded into
      the per-channel Conv before it, kernels holding their (folded) k-bit values, and all
      fake-quant ops 8-bit (see the module docstring).
    """
    config = model.get_config()
    folds = _batch_norm_folds(model, config)
    folded_bns = {bn.name: conv for conv, bn in folds.items()}
    rescalings = _rescalings(model)
    affines = _channel_affines(model, folded_bns)
    shared = _shared_into_concatenations(model, config)
    layers = []
    for layer_config in config["layers"]:
        name = layer_config["name"]
        if name in folded_bns:
            continue
        layer = model.get_layer(name)
        quantize_config = getattr(layer, "quantize_config", None)
        if name in rescalings:
            layer_config = _rescaling_as_conv_config(layer, layer_config)
        elif name in affines:
            layer_config = _affine_as_depthwise_config(layer, layer_config)
        elif name in shared:
            layer_config = _with_output_range(layer, layer_config, *shared[name])
        elif isinstance(quantize_config, LayerQuantizeConfig):
            output_quantizer = quantize_config.output_quantizer
            layer_config = copy.deepcopy(layer_config)
            export_config = _export_config(quantize_config, None)
            if name in folds:
                layer_config["config"]["layer"]["config"]["use_bias"] = True
                bn_config = getattr(folds[name], "quantize_config", None)
                output_quantizer = bn_config and bn_config.output_quantizer
                if isinstance(layer.layer, keras.layers.DepthwiseConv2D):
                    export_config.weight_quantizer = _depthwise_fold_quantizer(layer, folds[name])
            export_config.output_quantizer = output_quantizer and _export_quantizer(
                output_quantizer
            )
            layer_config["config"]["quantize_config"] = keras.utils.serialize_keras_object(
                export_config
            )
        layers.append(layer_config)

    exported = rebuild_functional(
        config, layers, lambda entry: [folded_bns.get(entry[0], entry[0]), *entry[1:]]
    )

    for target in exported.layers:
        source = model.get_layer(target.name)
        quantize_config = getattr(source, "quantize_config", None)
        if target.name in shared:
            continue  # pooling or reshaping: no weights of its own
        if target.name in affines:
            values = {_short(w): w.numpy() for w in source.weights}
            scale, offset = _affine(source)
            values["depthwise_kernel:0"] = scale.reshape(1, 1, -1, 1).astype(np.float32)
            values["bias:0"] = offset.astype(np.float32)
            target.set_weights([values.get(_short(w), w.numpy()) for w in target.weights])
            continue
        if not isinstance(quantize_config, LayerQuantizeConfig):
            target.set_weights(source.get_weights())
            continue
        values = {_short(w): w.numpy() for w in source.weights}
        if target.name in rescalings:
            values["kernel:0"], values["bias:0"] = _rescaling_as_conv_weights(source)
            target.set_weights([values[_short(w)] for w in target.weights])
            continue
        quantizer = quantize_config.weight_quantizer
        if quantizer is not None:
            attr = f"{quantize_config.weight_attr}:0"
            values[attr] = quantizer(values[attr], training=False, weights={}).numpy()
        if target.name in folds:
            bn = folds[target.name]
            # The BN wrapper's output range (if any) moves to the conv; the rest is unused.
            values.update({_short(w): w.numpy() for w in bn.weights if _short(w) not in values})
            values[attr], values["bias:0"] = _fold(source.layer, bn, values[attr])
        target.set_weights([values[_short(w)] for w in target.weights])
    _round_biases(exported)
    return exported


def _output_step(layer) -> float | None:
    """The int8 step of `layer`'s output tensor in the export model, or None if unknown.

    Follows pass-through layers (pooling by max or average, padding, reshapes), which keep
    their input's quantization in TFLite (`sgt_tfmot.quantize.input_grid`).
    """
    grid = input_grid(layer, layer.name, required=False)
    return None if grid is None else float(grid[0])


def _round_biases(exported: keras.Model) -> None:
    """Rounds every quantized kernel layer's bias to its int32 grid, as the converter will.

    TFLite stores a bias in int32 units of (input step × weight step of its output channel);
    doing the same rounding here makes the export model compute the integer model's values.
    A layer whose input step cannot be told from the graph keeps its float bias.
    """
    for layer in exported.layers:
        config = getattr(layer, "quantize_config", None)
        quantizer = getattr(config, "weight_quantizer", None)
        inner = getattr(layer, "layer", None)
        if quantizer is None or not getattr(inner, "use_bias", False):
            continue
        unit = _bias_unit(layer)
        if unit is None:
            continue
        bias = {_short(w): w for w in layer.weights}["bias:0"]
        bias.assign((np.round(bias.numpy() / unit) * unit).astype(np.float32))


def _bias_unit(layer) -> np.ndarray | None:
    """The int32 unit of a quantized kernel layer's bias (input step × weight step of each
    output channel), or None when the layer has no weight quantizer or its input step cannot
    be told from the graph."""
    config = getattr(layer, "quantize_config", None)
    quantizer = getattr(config, "weight_quantizer", None)
    producer = _graph.inbound_layer(layer)
    input_step = None if producer is None or quantizer is None else _output_step(producer)
    if input_step is None:
        return None
    values = {_short(w): w for w in layer.weights}  # the variables, not the quantized kernel
    kernel = values[f"{config.weight_attr}:0"].numpy()
    return np.maximum(input_step * quantizer.steps(kernel), 1e-30)


def align_biases(model: keras.Model) -> int:
    """Puts the QAT model's biases on the int32 grid the integer model rounds them to, in place.

    The integer model stores each conv's bias, BatchNormalization folded in
    (b' = (b − μ)·γ/√(σ² + ε) + β), in int32 units of (input step × weight step). The rounding
    moves b' by up to half a unit, and a 4-bit network is sensitive enough for that to change
    a few percent of its predictions. This function shifts β (the moving mean μ for a
    BatchNormalization without β; the layer's own bias when no BatchNormalization follows)
    by exactly that rounding, and likewise the `offset` of each `Rescaling` and the offset of
    each BatchNormalization that folds into no convolution (the bias of the 1x1 conv they
    become, per channel), so that the Keras model computes what the integer model computes.
    Each shift is below half an int32 unit; the converted .tflite file is the same before and
    after. Idempotent.

    A changed `Rescaling` offset is a constant of the traced graph: the model's own
    train/test/predict functions are reset here; a model that wraps this one (a trainer)
    must call its `make_test_function(force=True)` (and the others it uses) itself.

    Args:
      model: A QAT model from `sgt_tfmot.quantize_model`, after training.

    Returns:
      The number of layers whose biases (or offsets) were moved onto the grid.

    Raises:
      ValueError: When `model` is not a QAT model.
    """
    if not is_quantized(model):
        raise ValueError(
            f"`model` {model.name!r} is not a QAT model (no quantize wrappers): only the biases "
            "of a model from `sgt_tfmot.quantize_model` can be aligned."
        )
    aligned, offsets = 0, False
    for _, target, grid, current in _biases_and_grid(model):
        if isinstance(target, keras.layers.Rescaling):  # its offset is the conv's bias
            target.offset = [float(b) for b in grid]
            offsets = True
        elif isinstance(target, keras.layers.BatchNormalization):
            _shift_bn_offset(target, grid - current)
        else:
            target.bias.assign(grid.astype(np.float32))
        aligned += 1
    if offsets:  # graph constants: retrace on the next call
        model.train_function = model.test_function = model.predict_function = None
    return aligned


def _biases_and_grid(model: keras.Model):
    """(its int32 unit or None, what holds the bias, its int32-grid value, its current value) of
    every layer whose bias the integer model rounds: a `Rescaling` (its offset), a
    BatchNormalization that folds into no convolution (its offset β − μ·a), a conv/dense with
    its own bias (the inner layer), or with a BatchNormalization folded in (that
    BatchNormalization, whose β, or μ without β, shifts). Values are float64 arrays per
    channel."""
    exported = export_model(model)
    folds = _batch_norm_folds(model, model.get_config())
    rescalings = _rescalings(model)
    affines = _channel_affines(model, {bn.name for bn in folds.values()})
    for layer in model.layers:
        config = getattr(layer, "quantize_config", None)
        inner = getattr(layer, "layer", None)
        if layer.name in rescalings or layer.name in affines:
            grid = _grid_bias(exported.get_layer(layer.name))
            target = inner if config is not None else layer
            yield None, target, grid, np.broadcast_to(_affine(layer)[1], grid.shape)
            continue
        if not isinstance(config, LayerQuantizeConfig) or config.weight_quantizer is None:
            continue
        grid = _grid_bias(exported.get_layer(layer.name))
        if grid is None:
            continue
        unit = _bias_unit(exported.get_layer(layer.name))
        if layer.name in folds:
            bn = getattr(folds[layer.name], "layer", folds[layer.name])
            kernel = np.zeros(getattr(inner, config.weight_attr).shape, np.float32)
            yield unit, bn, grid, _fold(inner, folds[layer.name], kernel)[1]
        else:
            yield unit, inner, grid, inner.bias.numpy().astype(np.float64)


def _shift_bn_offset(bn, shift: np.ndarray) -> None:
    """Moves the offset b = β − μ·a of a BatchNormalization in inference mode by `shift`
    per channel: through β, or, for a BatchNormalization without one (`center=False`),
    through the moving mean (μ − shift / a; a channel with a = 0 has b = β whatever μ)."""
    bn = getattr(bn, "layer", bn)
    if bn.center:
        bn.beta.assign((bn.beta.numpy() + shift).astype(np.float32))
        return
    factor = _bn_factor(bn).astype(np.float64)
    moved = np.divide(shift, factor, out=np.zeros_like(factor), where=factor != 0)
    bn.moving_mean.assign((bn.moving_mean.numpy() - moved).astype(np.float32))


def _grid_bias(exported_layer) -> np.ndarray | None:
    """The bias of a layer of the export model (on its int32 grid), or None without one."""
    biases = [w for w in exported_layer.weights if _short(w) == "bias:0"]
    return biases[0].numpy().astype(np.float64) if biases else None


def biases_aligned(model: keras.Model) -> bool:
    """Whether a QAT model's biases and input offsets already sit on the integer model's
    int32 grid (`align_biases`; `python -m sgt_tfmot.train` does it at the end of a run).

    A bias (BatchNormalization folded in: b' = (b − μ)·γ/√(σ² + ε) + β) counts as on its grid
    value g when |b' − g| is at most `ALIGNED_ULPS` float32 ulps of the largest of |g|, |b'|
    and, for a folded one, |β| and |b' − β|: `align_biases` stores β in float32 after the
    shift and the fold recomputes b' in float32, so an aligned b' keeps rounding errors of
    those operands (up to 1 ulp of them on a trained 8-bit ResNet-20, where the grid value's
    own ulps reached 59). A bias off its grid is off by up to half an int32 unit (input step ×
    weight step: 460 to 120,000 of those ulps, median per layer, on that model), so across a
    layer's channels the two differ. A gap within `ALIGNED_UNIT_SHARE` of the int32 unit
    counts as aligned too: a BatchNormalization channel that died in training (moving
    variance ~1e-20) folds into a bias of 1e-16..5e-12 on grid value 0 (EfficientNetB0),
    too small for float32 ulps of its operands and no change to any integer.
    """
    for unit, target, grid, current in _biases_and_grid(model):
        operands = [grid, current]
        if isinstance(target, keras.layers.BatchNormalization):  # b = β − μ·a
            mean_term = target.moving_mean.numpy() * _bn_factor(target).astype(np.float64)
            operands.append(mean_term)
            if target.center:
                operands += [target.beta.numpy().astype(np.float64), current - target.beta.numpy()]
        scale = np.max(np.abs(np.broadcast_arrays(*operands)), axis=0).astype(np.float32)
        tolerance = ALIGNED_ULPS * np.spacing(scale).astype(np.float64)
        if unit is not None:
            tolerance = np.maximum(tolerance, ALIGNED_UNIT_SHARE * unit)
        if np.any(np.abs(grid - current) > tolerance):
            return False
    return True
