"""Full-integer TFLite conversion of QAT models (any bits 2..8) and of float models.

A QAT model converts through its export model (`sgt_tfmot.export.export_model`: 8-bit
fake-quants over the same learned ranges, BatchNormalization folded, biases on the int32
grid), which the converter turns into integers without changing a value; a float model is
quantized after training on representative data. The converter's output then loses the ops
that change no value (`sgt_tfmot.tflite.rewrite.fold_minimums`: the MINIMUM after each
k-bit activation, k < 8, becomes the int8 saturation of its producer). `float_tflite` gives
the float32 baseline of the same network.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable

import numpy as np

from sgt_tfmot import heads
from sgt_tfmot.export import export_model, is_quantized, rebuild_functional
from sgt_tfmot.keras import keras, tf
from sgt_tfmot.tflite.layout import space_to_depth_stage
from sgt_tfmot.tflite.rewrite import fold_minimums, with_signature

__all__ = [
    "LUMA_WEIGHTS",
    "float_tflite",
    "strip_quantization",
    "to_integer_tflite",
    "with_rgb_input",
    "with_softmax",
]

IO_DTYPES = {"int8": tf.int8, "uint8": tf.uint8}


def _check_model_and_batch(model: keras.Model, batch_size) -> None:
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise ValueError(f"`batch_size` must be a positive int. Received: {batch_size!r}")
    if len(model.inputs) != 1 or len(model.outputs) != 1:
        raise ValueError(
            f"`model` must have one input and one output; {model.name!r} has "
            f"{len(model.inputs)} inputs and {len(model.outputs)} outputs."
        )


def _converter(model: keras.Model, batch_size: int) -> tf.lite.TFLiteConverter:
    """A converter of `model`'s inference graph with a fixed batch dimension.

    The graph is given without the model (the converter's `trackable_obj`), so TensorFlow
    converts it frozen, its variables as constants, instead of first saving the model as a
    SavedModel: the same ops, ranges and values in about a tenth of the time (0.4 s against
    4 s for a small QAT model). That path writes no signature: the converted file gets the
    SavedModel one with `sgt_tfmot.tflite.rewrite.with_signature`.
    """
    input_shape = [batch_size, *model.inputs[0].shape[1:]]

    @tf.function(input_signature=[tf.TensorSpec(input_shape, tf.float32)])
    def serve(images):
        return model(images, training=False)

    return tf.lite.TFLiteConverter.from_concrete_functions([serve.get_concrete_function()])


def _representative(data, batch_size: int, samples: int) -> Callable[[], Iterable]:
    images = np.asarray(data, dtype=np.float32)

    def generator():
        for start in range(0, min(len(images), samples) - batch_size + 1, batch_size):
            yield [images[start : start + batch_size]]

    return generator


def to_integer_tflite(
    model: keras.Model,
    representative_data=None,
    io_dtype: str = "int8",
    batch_size: int = 1,
    calibration_samples: int = 500,
    softmax: bool = False,
    rgb_input: bool = False,
    optimize: bool = True,
    space_to_depth: bool = False,
) -> bytes:
    """Converts `model` to a full-integer TFLite flatbuffer with a fixed batch size.

    A QAT model (from `sgt_tfmot.quantize_model`, any bits) converts on its learned ranges
    (`export_model`); a float model is quantized after training on `representative_data`.

    For apps (`softmax`, `rgb_input`), the deployed graph can end in a SOFTMAX (int8, output
    scale 1/256: the scores are probabilities) and, for a one-channel model, start with a
    luma conversion of RGB images: a 1x1 convolution with weights (38, 75, 15) / 128 (sum
    exactly 1, on its own int8 grid, so a grey pixel (v, v, v) becomes exactly v), close to
    the ITU-R BT.601 luma (0.299, 0.587, 0.114). Representative data then has 3 channels.

    Args:
      model: A tf_keras classifier, QAT or float, with one input and one output.
      representative_data: Input images (N, H, W, C) in the model's input range. Required for
        a float model; a QAT model needs none (its ranges were learned; without data the
        conversion is run on two synthetic sets and must come out the same from both).
      io_dtype: "int8" or "uint8": the type of the model's input and output tensors.
      batch_size: The fixed batch dimension (1 for the Edge TPU, which rejects dynamic
        shapes).
      calibration_samples: At most this many representative images are used.
      softmax: End in a softmax (scores are probabilities, not logits). A model that ends in
        a softmax of its own keeps it either way and never gets a second one
        (`sgt_tfmot.heads.logits_model` cuts it off).
      rgb_input: Take RGB images in front of a one-channel model.
      optimize: Remove the ops that change no int8 value from the converter's output
        (`sgt_tfmot.tflite.rewrite.fold_minimums`); False keeps the converter's graph.
      space_to_depth: Store the full-resolution stage as 2x2 pixel blocks
        (`sgt_tfmot.tflite.layout`): the same int8 outputs, about half the batch-1 time on
        x86 XNNPACK, about 16x the stage's weight bytes and 4x its multiply-adds (which
        devices whose kernels cost per multiply-add would pay; not measured here). Needs
        `optimize` for k < 8 bits (a MINIMUM in the stage has no blocked form).

    Returns:
      The .tflite flatbuffer as bytes.

    Raises:
      ValueError: On an unknown `io_dtype`, a non-positive batch size, a float model
        without representative data, or representative data that a QAT model's fixed
        input range would binarise or clip (`FixedRangeQuantizer.fits`); `LayoutError` (a
        ValueError) when `space_to_depth` is asked for a model whose first stage has no
        exact blocked form.
    """
    if io_dtype not in IO_DTYPES:
        raise ValueError(f"`io_dtype` must be one of {sorted(IO_DTYPES)}. Received: {io_dtype!r}")
    _check_model_and_batch(model, batch_size)
    quantized = is_quantized(model)
    if not quantized and representative_data is None:
        raise ValueError(
            f"`model` {model.name!r} is a float model: post-training quantization needs "
            "`representative_data` (a few hundred input images)."
        )
    if quantized and representative_data is not None:
        from sgt_tfmot.quantize import check_input_fits

        check_input_fits(model, representative_data[:calibration_samples], "`representative_data`")
    source = export_model(model) if quantized else model
    if rgb_input:
        source = with_rgb_input(source, quantized)
    if softmax:
        source = with_softmax(source)

    def rewrite(flatbuffer: bytes) -> bytes:
        flatbuffer = with_signature(flatbuffer)
        flatbuffer = fold_minimums(flatbuffer) if optimize else flatbuffer
        return space_to_depth_stage(flatbuffer) if space_to_depth else flatbuffer

    if representative_data is not None:
        return rewrite(
            _convert(source, batch_size, io_dtype, representative_data, calibration_samples)
        )
    # A QAT model needs no calibration: every tensor has a learned range. The converter
    # still asks for representative data, so it gets two opposite synthetic sets; the
    # files must come out identical, which proves no range came from them.
    shape = (batch_size, *source.inputs[0].shape[1:])
    low, high = _input_range(model)
    results = [
        _convert(source, batch_size, io_dtype, np.full(shape, value, np.float32), batch_size)
        for value in (low, high)
    ]
    if results[0] != results[1]:
        raise ValueError(
            f"`model` {model.name!r} has tensors without a learned range (for example a layer "
            "annotated by hand): calibration images change the integer model. Pass "
            "`representative_data` (convert: --calibration_samples N with N >= 1)."
        )
    return rewrite(results[0])


LUMA_WEIGHTS = (38, 75, 15)  # / 128: sum 1, exact on grey; BT.601 is 0.299, 0.587, 0.114


def with_softmax(model: keras.Model) -> keras.Model:
    """`model` followed by a softmax (a pass-through layer for the quantizers); a model that
    ends in a softmax already (`sgt_tfmot.heads`) comes back as it is: never two."""
    if heads.output_head(model) == heads.SOFTMAX:
        return model
    outputs = keras.layers.Softmax(name="probabilities")(model.outputs[0])
    return keras.Model(model.inputs, outputs, name=model.name)


def grey_to_rgb(images: np.ndarray) -> np.ndarray:
    """One-channel (..., 1) images as the RGB images a `with_rgb_input` model takes: the grey
    value in each channel (its luma conversion gives it back exactly)."""
    return np.repeat(images, 3, axis=-1)


def with_rgb_input(model: keras.Model, quantized: bool) -> keras.Model:
    """A one-channel `model` behind a luma conversion of (H, W, 3) RGB images (see above).

    Raises:
      ValueError: when the model does not take one-channel images.
    """
    from sgt_tfmot.quantize import quantize_scope
    from sgt_tfmot.quantize_configs import LayerQuantizeConfig
    from sgt_tfmot.quantizers import ChannelRangeQuantizer, FixedRangeQuantizer

    shape = tuple(model.inputs[0].shape[1:])
    if len(shape) != 3 or shape[-1] != 1:
        raise ValueError(
            f"--rgb_input puts a luma conversion in front of a one-channel model; this model "
            f"takes {shape}."
        )
    rgb = keras.Input((*shape[:2], 3), name="image_rgb")
    conv = keras.layers.Conv2D(1, 1, use_bias=False, name="luma")
    x = rgb
    if quantized:
        with quantize_scope() as scope:
            objects = {k: v for mapping in scope.custom_objects for k, v in mapping.items()}
        low, high = _input_range(model)
        x = objects["QuantizeLayer"](FixedRangeQuantizer(low, high), name="rgb_quantize")(x)
        config = LayerQuantizeConfig(
            "kernel", ChannelRangeQuantizer([127 / 128]), FixedRangeQuantizer(low, high)
        )
        wrapper = objects["QuantizeWrapperV2"](conv, config, name="quant_luma")
        x = wrapper(x)
    else:
        x = conv(x)
    combined = keras.Model(rgb, model(x), name=model.name)
    owner = wrapper if quantized else conv  # a wrapper replaces `conv.kernel` by a tensor
    kernel = next(w for w in owner.weights if w.name.split("/")[-1].startswith("kernel"))
    kernel.assign(np.reshape(np.array(LUMA_WEIGHTS, np.float32) / 128.0, (1, 1, 3, 1)))
    return combined


def _input_range(model: keras.Model) -> tuple[float, float]:
    """The fixed input range of a QAT model (its input quantizer), or (0, 255)."""
    from sgt_tfmot.quantize import input_quantizer

    quantizer = input_quantizer(model)
    return (0.0, 255.0) if quantizer is None else (quantizer.low, quantizer.high)


def _integer_settings(converter, io_dtype: str, representative: Callable[[], Iterable]):
    """Sets `converter` to full-integer conversion with `io_dtype` I/O, calibrated on
    `representative`; returns it."""
    converter.optimizations = [tf.lite.Optimize.DEFAULT]
    converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
    converter.inference_input_type = IO_DTYPES[io_dtype]
    converter.inference_output_type = IO_DTYPES[io_dtype]
    converter.representative_dataset = representative
    return converter


def _convert(source, batch_size, io_dtype, representative_data, samples) -> bytes:
    """The converter's output for `source` (no signature: `to_integer_tflite` adds it)."""
    representative = _representative(representative_data, batch_size, samples)
    return _integer_settings(_converter(source, batch_size), io_dtype, representative).convert()


def strip_quantization(model: keras.Model) -> keras.Model:
    """The float model under a QAT model's quantize wrappers, with the same float weights.

    Every `QuantizeWrapper` is replaced by a copy of the layer it wraps (under that layer's
    own name), the input `QuantizeLayer` is dropped, and every float weight (kernels, biases,
    BatchNormalization statistics) is copied; the quantizers' variables (α, ranges, step
    counters) are left behind. The result computes the QAT model's function without any
    fake-quant op: it is the float baseline of the same network (for example the size
    baseline of `float_tflite`). A float model comes back as an unchanged copy.

    Args:
      model: A Functional QAT model from `sgt_tfmot.quantize_model`, or a float model.

    Returns:
      A new Functional float model.

    Raises:
      ValueError: When `model` is not a Functional tf_keras model, or a wrapped layer's
        weights cannot be matched to the float layer's.
    """
    if not isinstance(model, keras.Model) or not getattr(model, "_is_graph_network", False):
        raise ValueError(
            f"`model` must be a Functional or Sequential tf_keras model. Received: {model!r}"
        )
    config = model.get_config()
    renamed: dict[str, str] = {}  # wrapper name -> inner layer name
    bypassed: dict[str, list] = {}  # QuantizeLayer name -> its inbound entry
    layers = []
    for layer_config in config["layers"]:
        if layer_config["class_name"] == "QuantizeLayer":
            ((entry,),) = layer_config["inbound_nodes"]
            bypassed[layer_config["name"]] = entry
            continue
        if "quantize_config" in layer_config["config"] and "layer" in layer_config["config"]:
            inner = layer_config["config"]["layer"]  # {"class_name": ..., "config": ...}
            renamed[layer_config["name"]] = inner["config"]["name"]
            layer_config = {
                **inner,
                "name": inner["config"]["name"],
                "inbound_nodes": layer_config["inbound_nodes"],
            }
        layers.append(layer_config)

    def remap(entry):
        while entry[0] in bypassed:
            entry = [*bypassed[entry[0]][:3], *entry[3:]]
        return [renamed.get(entry[0], entry[0]), *entry[1:]]

    stripped = rebuild_functional(config, layers, remap)
    for layer in model.layers:
        if type(layer).__name__ == "QuantizeLayer" or isinstance(layer, keras.layers.InputLayer):
            continue
        inner = getattr(layer, "layer", None) if hasattr(layer, "quantize_config") else None
        if inner is None:
            stripped.get_layer(layer.name).set_weights(layer.get_weights())
            continue
        target = stripped.get_layer(inner.name)
        values = []
        for weight in target.weights:
            # The wrapped variables are named after the wrapper or the inner layer (it
            # depends on how the model was built or loaded), but their last name component
            # is the layer's own ("kernel:0"); the quantizers' are different ("output_min:0").
            short = weight.name.split("/")[-1]
            matches = [w for w in layer.weights if w.name.split("/")[-1] == short]
            if len(matches) != 1:
                raise ValueError(
                    f"Cannot match the float weight {short!r} of layer {inner.name!r} in its "
                    f"quantize wrapper {layer.name!r}: found {len(matches)} candidates among "
                    f"{[w.name for w in layer.weights]}."
                )
            values.append(matches[0].numpy())
        target.set_weights(values)
    return stripped


def float_tflite(model: keras.Model, batch_size: int = 1) -> bytes:
    """Converts a float model to a float32 TFLite flatbuffer (no optimizations).

    The baseline of the integer model's size and latency: the same network with float32
    weights and activations. A QAT model is stripped first (`strip_quantization`).

    Args:
      model: A tf_keras model with one input and one output, float or QAT.
      batch_size: The fixed batch dimension, as for `to_integer_tflite`.

    Returns:
      The .tflite flatbuffer as bytes.

    Raises:
      ValueError: On a non-positive batch size or a model without exactly one input and one
        output.
    """
    _check_model_and_batch(model, batch_size)
    source = strip_quantization(model) if is_quantized(model) else model
    return with_signature(_converter(source, batch_size).convert())
