"""The tiny colour classifier of the metadata and MediaPipe tests, and its converted files.

The classifier names an 8x8 image's brightest colour channel, with hand-set weights:
Rescaling(1/255) -> Conv2D(3, 3x3, identity at the centre tap) -> ReLU ->
GlobalAveragePooling -> Dense(3, kernel 4 * I) -> Softmax, so its scores are
softmax(4 * channel means / 255) and its top-1 is the channel with the largest mean.
Each image has one bright channel (150..255) over two dark ones (0..120), and every image
holds a black and a white pixel, so calibration sees exactly 0..255 and the uint8 input
quantization is the identity (scale 255 / 255 = 1, zero point 0).
"""

import functools

import numpy as np

import sgt_tfmot  # noqa: F401  (first: it sets up tf_keras)
from sgt_tfmot.keras import keras
from sgt_tfmot.tflite.converter import to_integer_tflite
from sgt_tfmot.tflite.metadata import add_image_classifier_metadata

LABELS = ("red", "green", "blue")
NAME, DESCRIPTION = "tiny_colours", "Names the brightest colour channel of an 8x8 image."
H = W = 8


def colour_images(count: int, channels: int = 3, seed: int = 0) -> np.ndarray:
    """Float images in 0..255; image k has channel k % channels bright."""
    rng = np.random.default_rng(seed)
    images = rng.integers(0, 121, (count, H, W, channels)).astype(np.float32)
    for k in range(count):
        images[k, ..., k % channels] = rng.integers(150, 256, (H, W))
    images[:, 0, 0, :] = 0.0
    images[:, 0, 1, :] = 255.0
    return images


def colour_classifier(channels: int = 3) -> keras.Model:
    inputs = keras.Input((H, W, channels))
    x = keras.layers.Rescaling(1 / 255)(inputs)
    conv = keras.layers.Conv2D(3, 3, padding="same")
    x = keras.layers.ReLU()(conv(x))
    x = keras.layers.GlobalAveragePooling2D()(x)
    dense = keras.layers.Dense(3)
    outputs = keras.layers.Softmax()(dense(x))
    model = keras.Model(inputs, outputs)
    kernel = np.zeros((3, 3, channels, 3), np.float32)
    for c in range(3):
        kernel[1, 1, c % channels, c] = 1.0
    conv.set_weights([kernel, np.zeros(3, np.float32)])
    dense.set_weights([4.0 * np.eye(3, dtype=np.float32), np.zeros(3, np.float32)])
    return model


@functools.cache
def converted(io_dtype: str = "uint8", channels: int = 3) -> bytes:
    """The full-integer file of `colour_classifier`, calibrated on 16 colour images."""
    model = colour_classifier(channels)
    return to_integer_tflite(model, colour_images(16, channels), io_dtype=io_dtype)


@functools.cache
def with_metadata(io_dtype: str = "uint8") -> bytes:
    """`converted(io_dtype)` with the LABELS, NAME and DESCRIPTION as metadata."""
    return add_image_classifier_metadata(converted(io_dtype), LABELS, NAME, DESCRIPTION)
