"""QuantizeConfigs: which tensors of each supported layer type are quantized, and how.

The rule of this package (PACT paper, Sec. 4, with the first and last layers at 8 bits):

| layer                                              | weights               | output              |
|----------------------------------------------------|-----------------------|---------------------|
| Conv1D/Conv2D                                      | k-bit, per channel    | see below           |
| DepthwiseConv2D, Dense                             | k-bit, per tensor     | see below           |
| ReLU, ReLU(max_value=6), Activation relu/relu6,    | -                     | PACT, k-bit         |
| and Conv/Dense with `activation="relu"`/`"relu6"`  |                       |                     |
| BatchNormalization, Add, Subtract, Multiply,       | -                     | 8-bit moving range  |
| AveragePooling1D, GlobalAveragePooling,            |                       |                     |
| Normalization, Rescaling, linear Conv/Dense        |                       |                     |
| Concatenate                                        | -                     | 8-bit moving range, |
|                                                    |                       | PACT when every     |
|                                                    |                       | input is a ReLU     |
| LeakyReLU                                          | -                     | 8-bit moving range, |
|                                                    |                       | requantized as      |
|                                                    |                       | TFLite's kernel     |
| Activation sigmoid / tanh                          | -                     | LOGISTIC's / TANH's |
|                                                    |                       | fixed int8 grid     |
| AveragePooling2D                                   | -                     | the input's grid,   |
|                                                    |                       | rounded as TFLite's |
|                                                    |                       | int8 kernel does    |
| MaxPooling, Flatten, Reshape, Dropout, ZeroPadding,| -                     | none (TFLite keeps  |
| Cropping2D, Softmax, Activation softmax/linear,    |                       | the input's scale)  |
| GlobalAveragePooling over one element (1x1 map)    |                       |                     |

SeparableConv2D, swish, arithmetic with a number (MobileNetV3's hard swish) and
Normalization arrive here already rewritten into these layers (`sgt_tfmot.decompose`).

"See below": the output quantizer of a layer is left out when the tensor is only consumed by
a layer that quantizes it anyway in the integer graph: a PACT activation (the TFLite converter
fuses the ReLU into the producer, whose output then carries PACT's [0, α] range; not into a
Concatenate, which keeps its range), a
BatchNormalization right after a Conv/Dense (the converter folds it into the producer), or a
Concatenate (the converter gives its range to such an input). This is why
BatchNormalization never adds an 8-bit fake-quant in front of PACT, and why a Conv2D
followed by a separate ReLU layer keeps its kernel quantizer: TFMOT's default patterns get
both wrong. The graph-level decision is made in `sgt_tfmot.quantize`; this module says what
each layer type can do.

Four integer kernels round in a way no fake-quant op expresses, so the wrapper reproduces
them (`LayerQuantizeConfig.integer_kernel`, run by `sgt_tfmot.quantize.QuantizeWrapperV2`):
an AveragePooling2D rounds its average on its input's grid as AVERAGE_POOL_2D does, a
Concatenate's input that keeps a grid of its own (read elsewhere too, or a pooled or
concatenated tensor) is moved onto the output's grid as the converter's QUANTIZE op does,
a LeakyReLU requantizes each side with XNNPACK's fixed-point multipliers, and a PACT ReLU
after a Concatenate (a RELU op of its own) moves its input onto PACT's grid with TFLite's
31-bit multiplier, which rounds twice at a scale ratio under 1/2.
"""

from __future__ import annotations

from sgt_tfmot.keras import keras, tfmot
from sgt_tfmot.quantizers import (
    FixedRangeQuantizer,
    PACTQuantizer,
    RangeQuantizer,
    WeightQuantizer,
)

_QuantizeConfig = tfmot.quantization.keras.QuantizeConfig
layers = keras.layers

# Layer type -> (kernel attribute, per-channel ranges).
KERNEL_LAYERS = {
    layers.Conv2D: ("kernel", True),
    layers.Conv1D: ("kernel", True),
    layers.DepthwiseConv2D: ("depthwise_kernel", False),
    layers.Dense: ("kernel", False),
}

RANGE_LAYERS = (
    layers.BatchNormalization,
    layers.Add,
    layers.Subtract,
    layers.Multiply,
    layers.Average,
    layers.Concatenate,
    layers.AveragePooling1D,
    layers.GlobalAveragePooling2D,
    layers.GlobalAveragePooling1D,
    layers.Normalization,
    layers.Rescaling,
    layers.LeakyReLU,
)

PASS_THROUGH_LAYERS = (
    layers.InputLayer,
    layers.MaxPooling2D,
    layers.MaxPooling1D,
    layers.GlobalMaxPooling2D,
    layers.GlobalMaxPooling1D,
    layers.Flatten,
    layers.Reshape,
    layers.Dropout,
    layers.SpatialDropout2D,
    layers.ZeroPadding2D,
    layers.Cropping2D,
    layers.Softmax,
)

# TFLite's int8 kernel keeps its input's scale and zero point for the output and rounds in its
# own way (`sgt_tfmot.int8_kernels.average_pool_int8`): the wrapper rounds onto the input's grid.
SAME_GRID_LAYERS = (layers.AveragePooling2D,)

# The TFLite int8 kernels whose rounding a wrapper reproduces (`LayerQuantizeConfig`).
AVERAGE_POOL, CONCATENATION, LEAKY_RELU = "average_pool_2d", "concatenation", "leaky_relu"
RELU = "relu"
INTEGER_KERNELS = (AVERAGE_POOL, CONCATENATION, LEAKY_RELU, RELU)
# Those computed from their input's grid (the layer before must have one).
INPUT_GRID_KERNELS = (AVERAGE_POOL, LEAKY_RELU, RELU)

# Activations whose TFLite int8 kernel writes a fixed output grid, as the (low, high) of a
# FixedRangeQuantizer over that grid: LOGISTIC scale 1/256 and zero point −128, TANH scale
# 1/128 and zero point 0.
FIXED_GRID_ACTIVATIONS = {"sigmoid": (0.0, 255.0 / 256.0), "tanh": (-1.0, 127.0 / 128.0)}

_RELU_NAMES = ("relu", "relu6")
_PASS_THROUGH_ACTIVATIONS = ("linear", "softmax")


def _activation_name(layer) -> str | None:
    activation = getattr(layer, "activation", None)
    return getattr(activation, "__name__", None) if activation is not None else None


def is_kernel_layer(layer) -> bool:
    """True for the layer types whose kernel gets a k-bit weight quantizer."""
    return type(layer) in KERNEL_LAYERS


def is_pact_activation(layer) -> bool:
    """True for layers whose output is a ReLU (or ReLU6) that PACT replaces."""
    if isinstance(layer, layers.ReLU):
        return (
            float(layer.negative_slope) == 0.0
            and float(layer.threshold) == 0.0
            and (layer.max_value is None or float(layer.max_value) == 6.0)
        )
    if isinstance(layer, layers.Activation) or is_kernel_layer(layer):
        return _activation_name(layer) in _RELU_NAMES
    return False


def relu6(layer) -> bool:
    """True for a PACT activation that is a ReLU6 (`ReLU(6)`, relu6 activations)."""
    if isinstance(layer, layers.ReLU):
        return layer.max_value is not None and float(layer.max_value) == 6.0
    return _activation_name(layer) == "relu6"


def averages_one_element(layer) -> bool:
    """True for a GlobalAveragePooling1D/2D over a single element (a 1x1 map, a sequence of
    length 1): the TFLite converter drops its MEAN (a reshape at most), so its output keeps
    its input's scale, and a range of its own would round the Keras model's values onto
    another grid (EfficientNetB0's squeeze-and-excitation at 32x32: 23 % of its top-1
    predictions moved)."""
    if not isinstance(layer, (layers.GlobalAveragePooling2D, layers.GlobalAveragePooling1D)):
        return False
    try:
        shape = layer.input_shape
    except AttributeError:  # not built into a model
        return False
    if not isinstance(shape, tuple):
        return False
    channels_last = getattr(layer, "data_format", "channels_last") == "channels_last"
    axes = range(1, len(shape) - 1) if channels_last else range(2, len(shape))
    return all(shape[axis] == 1 for axis in axes)


def is_pass_through(layer) -> bool:
    """True for layers that keep their input's quantization (no quantizer of their own)."""
    if isinstance(layer, PASS_THROUGH_LAYERS) or averages_one_element(layer):
        return True
    return isinstance(layer, layers.Activation) and (
        _activation_name(layer) in _PASS_THROUGH_ACTIVATIONS
    )


def fixed_grid(layer) -> tuple[float, float] | None:
    """The fixed output range of an `Activation` layer in `FIXED_GRID_ACTIVATIONS`, or None."""
    if not isinstance(layer, layers.Activation):
        return None
    return FIXED_GRID_ACTIVATIONS.get(_activation_name(layer))


def is_supported(layer) -> bool:
    """True when this module knows how to quantize `layer`."""
    return (
        is_kernel_layer(layer)
        or is_pact_activation(layer)
        or is_pass_through(layer)
        or fixed_grid(layer) is not None
        or isinstance(layer, RANGE_LAYERS + SAME_GRID_LAYERS)
    )


def supported_layer_names() -> list[str]:
    """Class names of the supported layer types, for error messages and docs (with those
    `sgt_tfmot.decompose` rewrites into them)."""
    names = {cls.__name__ for cls in KERNEL_LAYERS}
    names |= {cls.__name__ for cls in RANGE_LAYERS + PASS_THROUGH_LAYERS + SAME_GRID_LAYERS}
    activations = [*_RELU_NAMES, *_PASS_THROUGH_ACTIVATIONS, *FIXED_GRID_ACTIVATIONS, "swish"]
    names |= {"ReLU", f"Activation({'|'.join(activations)})", "SeparableConv2D"}
    names |= {"TFOpLambda(x + c, x - c, c - x, x * c, x / c)"}
    return sorted(names)


@keras.utils.register_keras_serializable(package="sgt_tfmot")
class LayerQuantizeConfig(_QuantizeConfig):
    """Quantizes a layer's kernel and/or its output.

    Args:
      weight_attr: Name of the kernel attribute (`"kernel"`, `"depthwise_kernel"`), or None.
      weight_quantizer: Quantizer for that kernel.
      output_quantizer: Quantizer applied to the layer's output (after its activation), or
        None.
      integer_kernel: The TFLite int8 kernel whose rounding the wrapper
        (`sgt_tfmot.quantize.QuantizeWrapperV2`) reproduces beyond the output quantizer, one
        of `INTEGER_KERNELS`: "average_pool_2d" (the output stays on the input's grid and is
        rounded there, `sgt_tfmot.int8_kernels.average_pool_int8`; no output quantizer),
        "concatenation" (an input that keeps its own grid is requantized onto the output's
        as the converter's QUANTIZE op does, `sgt_tfmot.int8_kernels.requantize_int8`) or
        "leaky_relu" (the output requantized from the input's grid with XNNPACK's
        multipliers, `sgt_tfmot.int8_kernels.leaky_relu_int8`) or "relu" (a PACT ReLU
        that TFLite fuses into nothing, as after a Concatenate: requantized from the
        input's grid with TFLite's 31-bit multiplier, `sgt_tfmot.int8_kernels.relu_int8`).
    """

    def __init__(
        self,
        weight_attr=None,
        weight_quantizer=None,
        output_quantizer=None,
        integer_kernel: str | None = None,
    ):
        if (weight_attr is None) != (weight_quantizer is None):
            raise ValueError(
                "`weight_attr` and `weight_quantizer` must be given together. Received: "
                f"weight_attr={weight_attr!r}, weight_quantizer={weight_quantizer!r}"
            )
        if integer_kernel not in (None, *INTEGER_KERNELS):
            raise ValueError(
                f"`integer_kernel` must be None or one of {INTEGER_KERNELS}. Received: "
                f"{integer_kernel!r}"
            )
        if integer_kernel == AVERAGE_POOL and output_quantizer is not None:
            raise ValueError(
                f"`integer_kernel={AVERAGE_POOL!r}` keeps the input's grid: it cannot have an "
                f"`output_quantizer` too. Received: output_quantizer={output_quantizer!r}"
            )
        self.weight_attr = weight_attr
        self.weight_quantizer = weight_quantizer
        self.output_quantizer = output_quantizer
        self.integer_kernel = integer_kernel

    def get_weights_and_quantizers(self, layer):
        if self.weight_attr is None:
            return []
        return [(getattr(layer, self.weight_attr), self.weight_quantizer)]

    def get_activations_and_quantizers(self, layer):
        return []

    def set_quantize_weights(self, layer, quantize_weights):
        if self.weight_attr is not None:
            setattr(layer, self.weight_attr, quantize_weights[0])

    def set_quantize_activations(self, layer, quantize_activations):
        pass

    def get_output_quantizers(self, layer):
        return [self.output_quantizer] if self.output_quantizer is not None else []

    def get_config(self) -> dict:
        serialize = keras.utils.serialize_keras_object
        config = {
            "weight_attr": self.weight_attr,
            "weight_quantizer": serialize(self.weight_quantizer),
            "output_quantizer": serialize(self.output_quantizer),
        }
        if self.integer_kernel is not None:  # files of other layers stay as they were
            config["integer_kernel"] = self.integer_kernel
        return config

    @classmethod
    def from_config(cls, config: dict):
        deserialize = keras.utils.deserialize_keras_object
        return cls(
            weight_attr=config["weight_attr"],
            weight_quantizer=deserialize(config["weight_quantizer"]),
            output_quantizer=deserialize(config["output_quantizer"]),
            integer_kernel=config.get("integer_kernel"),
        )

    def __eq__(self, other) -> bool:
        return type(self) is type(other) and self.get_config() == other.get_config()


def config_for(
    layer,
    *,
    weight_bits: int,
    activation_bits: int,
    alpha_init: float,
    alpha_l2: float,
    quantize_output: bool,
    model_output: bool = False,
    weight_range: str = "max",
    relu_inputs: str | None = None,
    reads_concatenate: bool = False,
) -> LayerQuantizeConfig | None:
    """The QuantizeConfig of one supported layer, or None when it needs no quantizer.

    Args:
      layer: A supported layer (`is_supported(layer)`).
      weight_bits: Bits of the kernel, if the layer has one.
      activation_bits: Bits of a PACT output.
      alpha_init: Initial α of a PACT output.
      alpha_l2: L2 penalty on α.
      quantize_output: False when the consumer quantizes this layer's output (see module
        docstring), PACT outputs included.
      model_output: The layer's output is the model's output: its 8-bit range quantizer
        passes gradients straight through (see `RangeQuantizer`).
      weight_range: How the kernel's range is chosen ("max" or "mse", see
        `sgt_tfmot.quantizers.weight_range`).
      relu_inputs: "relu" ("relu6") when every input of this `Concatenate` is a ReLU
        (ReLU6) output: the concatenation's output, which takes over its inputs' grids,
        gets PACT (with α ≤ 6) instead of an 8-bit range.
      reads_concatenate: This activation layer's input is a Concatenate's output: TFLite
        fuses no ReLU into a CONCATENATION, so the file has a RELU op that moves the
        concatenation's grid onto PACT's (integer kernel "relu").
    """
    if isinstance(layer, SAME_GRID_LAYERS):
        return LayerQuantizeConfig(integer_kernel=AVERAGE_POOL)
    if fixed_grid(layer) is not None:  # the kernel's grid, whoever reads the output
        return LayerQuantizeConfig(output_quantizer=FixedRangeQuantizer(*fixed_grid(layer)))
    weight_attr, weight_quantizer = None, None
    if is_kernel_layer(layer):
        weight_attr, per_channel = KERNEL_LAYERS[type(layer)]
        weight_quantizer = WeightQuantizer(
            weight_bits, per_channel=per_channel, weight_range=weight_range
        )

    output_quantizer = None
    pact_concat = isinstance(layer, layers.Concatenate) and relu_inputs in _RELU_NAMES
    if not quantize_output:
        pass
    elif is_pact_activation(layer) or pact_concat:
        max_alpha = 6.0 if relu6(layer) or relu_inputs == "relu6" else None
        output_quantizer = PACTQuantizer(activation_bits, alpha_init, alpha_l2, max_alpha=max_alpha)
    elif not is_pass_through(layer):
        output_quantizer = RangeQuantizer(8, straight_through=model_output)

    if weight_quantizer is None and output_quantizer is None:
        return None
    if isinstance(layer, layers.Concatenate):
        return LayerQuantizeConfig(output_quantizer=output_quantizer, integer_kernel=CONCATENATION)
    if isinstance(layer, layers.LeakyReLU) and output_quantizer is not None:
        return LayerQuantizeConfig(output_quantizer=output_quantizer, integer_kernel=LEAKY_RELU)
    standalone_pact = isinstance(output_quantizer, PACTQuantizer) and weight_quantizer is None
    if standalone_pact and reads_concatenate:
        return LayerQuantizeConfig(output_quantizer=output_quantizer, integer_kernel=RELU)
    return LayerQuantizeConfig(weight_attr, weight_quantizer, output_quantizer)
