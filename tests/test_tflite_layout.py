"""`space_to_depth_stage`: the full-resolution stage as 2x2 pixel blocks, not one value changed.

The weight rule is checked against a brute-force integer convolution in numpy (every kernel
size and stride the rewrite takes); the rewrite itself bit for bit (`assert_array_equal` on
the int8/uint8 outputs) in each of XNNPACK, LiteRT's builtin and its reference kernels, on
random images over the input type's whole range and on dataset images, for a W4A4 ResNet-20
(ranges calibrated off their initial values) and the MNIST classifier with the delivery
options; and what it refuses, with the op named.
"""

import numpy as np
import pytest

from sgt_tfmot import models, quantize_model
from sgt_tfmot.keras import keras
from sgt_tfmot.quantize import calibrate_ranges
from sgt_tfmot.tflite.converter import to_integer_tflite
from sgt_tfmot.tflite.edgetpu import check_edgetpu
from sgt_tfmot.tflite.flatbuffer import read_model
from sgt_tfmot.tflite.layout import LayoutError, blocked_weights, space_to_depth_stage
from sgt_tfmot.tflite.profile import delegate_partitions
from sgt_tfmot.trainers import reestimate_batch_norm
from tests.helpers.models import residual_model
from tests.helpers.tflite import MNIST, assert_same_outputs, quantized, random_images

L = keras.layers


def conv(x: np.ndarray, w: np.ndarray, stride: int) -> np.ndarray:
    """TensorFlow's SAME convolution of an (H, W, I) integer image, in int64."""
    height, width, _ = x.shape
    outputs, k, _, _ = w.shape
    out_h, out_w = -(-height // stride), -(-width // stride)
    pad_h = max((out_h - 1) * stride + k - height, 0)
    pad_w = max((out_w - 1) * stride + k - width, 0)
    padded = np.pad(x, ((pad_h // 2, pad_h - pad_h // 2), (pad_w // 2, pad_w - pad_w // 2), (0, 0)))
    result = np.zeros((out_h, out_w, outputs), np.int64)
    for i in range(out_h):
        for j in range(out_w):
            window = padded[i * stride : i * stride + k, j * stride : j * stride + k]
            result[i, j] = np.einsum("yxi,oyxi->o", window, w)
    return result


def space_to_depth(x: np.ndarray) -> np.ndarray:
    """TFLite's SPACE_TO_DEPTH (block 2) of an (H, W, C) image: channel (2a + b)·C + c."""
    height, width, channels = x.shape
    blocks = x.reshape(height // 2, 2, width // 2, 2, channels).transpose(0, 2, 1, 3, 4)
    return blocks.reshape(height // 2, width // 2, 4 * channels)


@pytest.mark.parametrize(
    "kernel, stride", [(1, 1), (3, 1), (5, 1), (7, 1), (1, 2), (2, 2), (3, 2), (4, 2), (5, 2)]
)
def test_blocked_weights_compute_the_same_convolution(kernel, stride):
    rng = np.random.default_rng(kernel * 10 + stride)
    x = rng.integers(-128, 128, (10, 6, 3)).astype(np.int64)  # q − z: zero padding is real 0
    w = rng.integers(-127, 128, (4, kernel, kernel, 3)).astype(np.int8)
    blocked = blocked_weights(w, stride)
    assert blocked.dtype == np.int8 and blocked.shape[3] == 12
    assert blocked.shape[0] == (16 if stride == 1 else 4)
    assert np.count_nonzero(blocked) == np.count_nonzero(w) * (4 if stride == 1 else 1)
    found = conv(space_to_depth(x), blocked.astype(np.int64), 1)
    expected = conv(x, w.astype(np.int64), stride)
    np.testing.assert_array_equal(found, space_to_depth(expected) if stride == 1 else expected)


def stage_shapes(flatbuffer: bytes) -> list[tuple[int, ...]]:
    return [tuple(op.outputs[0].shape) for op in read_model(flatbuffer).ops]


@pytest.mark.slow
def test_resnet20_first_stage_in_blocks_changes_no_value():
    """A calibrated W4A4 QAT ResNet-20 on 8x8x3 (stage 1: 8x8x16), uint8 I/O (one conversion
    of ~10 s; W8A8 runs the same op graph without the MINIMUM folding)."""
    keras.utils.set_random_seed(4)
    x = np.random.default_rng(0).integers(0, 256, (48, 8, 8, 3)).astype("float32")
    model = models.build("resnet20", (8, 8, 3), 4)
    reestimate_batch_norm(model, x, batch_size=16)
    qat = quantize_model(model, weight_bits=4, activation_bits=4)
    calibrate_ranges(qat, model, x)
    before = to_integer_tflite(qat, x[:16], io_dtype="uint8")
    after = space_to_depth_stage(before)
    names_before, names_after = read_model(before).op_names, read_model(after).op_names
    assert names_after.count("SPACE_TO_DEPTH") == 1 and names_before[0] == "QUANTIZE"
    assert [n for n in names_after if n != "SPACE_TO_DEPTH"] == names_before
    shapes = stage_shapes(after)
    assert shapes.count((1, 4, 4, 12)) == 2  # the blocked input and its Rescaling
    assert shapes.count((1, 4, 4, 64)) == 10  # first conv, 6 convs and 3 ADDs of stage 1
    assert (1, 8, 8, 16) not in shapes and shapes.count((1, 4, 4, 32)) == 9 + 1  # stage 2
    assert check_edgetpu(after).compatible and delegate_partitions(after) == 1
    images = np.concatenate([random_images(before, 200), quantized(before, x)])
    assert_same_outputs(before, after, images)


@pytest.mark.slow
@pytest.mark.parametrize(
    "io_dtype, softmax, rgb_input", [("int8", False, False), ("uint8", True, True)]
)
def test_delivery_options_in_blocks_change_no_value(mnist_w4a4, io_dtype, softmax, rgb_input):
    images = np.repeat(MNIST, 3, axis=-1) if rgb_input else MNIST
    options = {"io_dtype": io_dtype, "softmax": softmax, "rgb_input": rgb_input}
    before = to_integer_tflite(mnist_w4a4, images[:8], **options)
    after = to_integer_tflite(mnist_w4a4, images[:8], space_to_depth=True, **options)
    assert after == space_to_depth_stage(before)
    assert (1, 14, 14, 4 * (3 if rgb_input else 1)) in stage_shapes(after)  # the blocked input
    assert_same_outputs(before, after, np.concatenate([random_images(before, 200),
                                                       quantized(before, images)]))  # fmt: skip


@pytest.mark.slow
def test_a_stage_without_a_blocked_form_is_refused_naming_the_op():
    qat = quantize_model(residual_model(), weight_bits=8, activation_bits=8)
    x = np.random.default_rng(0).integers(0, 256, (8, 8, 8, 3)).astype("float32")
    flatbuffer = to_integer_tflite(qat, x)
    with pytest.raises(LayoutError, match=r"MEAN \(op \d+\) reads a full-resolution tensor"):
        space_to_depth_stage(flatbuffer)
    with pytest.raises(ValueError, match="MEAN"):
        to_integer_tflite(qat, x, space_to_depth=True)
    inputs = keras.Input((7, 7, 1))
    odd = keras.Model(inputs, L.Dense(2)(L.Flatten()(L.Conv2D(4, 3, strides=2)(inputs))))
    with pytest.raises(LayoutError, match=r"\[1, 7, 7, 1\]: the layout takes \(1, H, W, C\)"):
        space_to_depth_stage(to_integer_tflite(odd, np.zeros((4, 7, 7, 1), np.float32)))


def float_file(layers, input_shape=(8, 8, 4)) -> bytes:
    """The integer file of an untrained float model (calibrated on noise)."""
    keras.utils.set_random_seed(0)
    inputs = keras.Input(input_shape)
    x = inputs
    for layer in layers:
        x = layer(x)
    images = np.random.default_rng(0).uniform(0, 255, (4, *input_shape)).astype(np.float32)
    return to_integer_tflite(keras.Model(inputs, x), images)


@pytest.mark.parametrize(
    "layers, message",
    [
        ([L.Conv2D(4, 3, padding="same", groups=2), L.Conv2D(4, 3, strides=2)],
         r"CONV_2D \(op 0\) is a grouped convolution"),
        ([L.Conv2D(4, 3, padding="same", dilation_rate=2), L.Conv2D(4, 3, strides=2)],
         r"CONV_2D \(op 0\) is dilated"),
        ([L.Conv2D(4, 3, padding="same")], r"the model output .* is at full resolution"),
    ],
)  # fmt: skip
def test_convolutions_without_a_blocked_form_are_refused(layers, message):
    with pytest.raises(LayoutError, match=message):
        space_to_depth_stage(float_file(layers))
