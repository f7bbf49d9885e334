"""Tiny models of the test suite and the few-second trainings several modules check."""

import dataclasses
from pathlib import Path

import numpy as np

from sgt_tfmot import align_biases, data, load_model, models, quantize_model, save_model
from sgt_tfmot.keras import keras
from sgt_tfmot.quantize import calibrate_ranges
from sgt_tfmot.tflite.converter import to_integer_tflite
from sgt_tfmot.trainers import SaliencyGuidedModel, reestimate_batch_norm

L = keras.layers

# The residual model's 8x8 images and labels (tests/test_export.py's tolerances were set on
# these): two bits of a 4-class label, the mean of the top-left quarter and of the red channel.
RESIDUAL_X = np.random.default_rng(0).integers(0, 256, (64, 8, 8, 3)).astype("float32")
RESIDUAL_Y = (RESIDUAL_X[:, :4, :4].mean(axis=(1, 2, 3)) > 127).astype("int64") + 2 * (
    RESIDUAL_X[..., 0].mean((1, 2)) > 127
)


def residual_model(input_shape=(8, 8, 3), classes=4):
    """Rescaling, Conv-BN-ReLU, a residual block with Add, pooling, logits."""
    inputs = keras.Input(input_shape)
    x = L.Rescaling(1 / 127.5, offset=-1.0)(inputs)
    x = L.Conv2D(8, 3, padding="same", use_bias=False, name="stem")(x)
    x = L.BatchNormalization(name="stem_bn")(x)
    y = L.ReLU(name="stem_relu")(x)
    z = L.Conv2D(8, 3, padding="same", use_bias=False, name="conv")(y)
    z = L.BatchNormalization(name="conv_bn")(z)
    z = L.Add(name="add")([z, y])
    z = L.ReLU(name="add_relu")(z)
    z = L.GlobalAveragePooling2D(name="pool")(z)
    outputs = L.Dense(classes, name="logits")(z)
    return keras.Model(inputs, outputs)


def train_residual_qat(bits):
    """A `bits`-bit QAT `residual_model` trained 4 epochs on RESIDUAL_X (seeded by `bits`)."""
    keras.utils.set_random_seed(bits)
    qat = quantize_model(residual_model(), weight_bits=bits, activation_bits=bits, alpha_init=4.0)
    qat.compile(keras.optimizers.Adam(1e-2), keras.losses.SparseCategoricalCrossentropy(True))
    qat.fit(RESIDUAL_X, RESIDUAL_Y, epochs=4, batch_size=16, verbose=0)
    return qat


def tiny_mnist_classifier(activation=L.ReLU):
    """Rescaling, three stride-2 convs each followed by an `activation` layer, logits."""
    inputs = keras.Input((28, 28, 1))
    x = L.Rescaling(1 / 255.0)(inputs)
    for filters in (16, 16, 16):
        x = activation()(L.Conv2D(filters, 3, strides=2, padding="same")(x))
    outputs = L.Dense(10, name="logits")(L.Flatten()(x))
    return keras.Model(inputs, outputs)


def train_tiny_mnist_qat(bits=8, seed=0):
    """A QAT `tiny_mnist_classifier` trained 3 epochs on 3000 mnist_subset images (~3 s)."""
    x, y = data.load_arrays("mnist_subset", "train")
    keras.utils.set_random_seed(seed)
    qat = quantize_model(
        tiny_mnist_classifier(), weight_bits=bits, activation_bits=bits, alpha_init=6.0
    )
    qat.compile(keras.optimizers.Adam(1e-2), keras.losses.SparseCategoricalCrossentropy(True))
    qat.fit(x[:3000].astype(np.float32), y[:3000], epochs=3, batch_size=64, verbose=0)
    return qat


def small_classifier(input_shape=(12, 12, 1), classes=3):
    """A float classifier of raw 0..255 pixels with mobilenet_tiny's kinds of layers, few of
    them: Rescaling, Conv-BN-ReLU6, depthwise Conv-BN-ReLU6, pooling, logits (~300
    parameters). Saved to a file, it is a `--model` the training command takes, and a
    run on it traces in a fraction of mobilenet_tiny's time."""
    inputs = keras.Input(input_shape)
    x = L.Rescaling(1 / 127.5, offset=-1.0)(inputs)
    x = L.Conv2D(8, 3, strides=2, padding="same", use_bias=False)(x)
    x = L.ReLU(6.0)(L.BatchNormalization()(x))
    x = L.DepthwiseConv2D(3, padding="same", use_bias=False)(x)
    x = L.ReLU(6.0)(L.BatchNormalization()(x))
    outputs = L.Dense(classes, name="logits")(L.GlobalAveragePooling2D()(x))
    return keras.Model(inputs, outputs)


@dataclasses.dataclass(frozen=True)
class MobileNetV2Run:
    """A W4A4 MobileNetV2 (Keras Applications, width 0.35, 32x32x3, 4 classes) through
    quantize -> SGT fine-tune -> save/load -> aligned biases -> the converter.

    Attributes:
      x, y: The 48 random raw-pixel images and their labels (two bits: the mean of the red
        and of the green channel above 127.5).
      reestimated: BN layers whose statistics `reestimate_batch_norm` set on `x` before
        quantizing.
      flat: No layer of the float model is a nested model.
      qat: The QAT model after 3 SGT steps (and BN statistics re-estimated again).
      qat_outputs, loaded_outputs: `qat` and its .h5 copy on `x`, before aligning.
      loaded: The .h5 copy, biases aligned (what the training command leaves).
      raw: `to_integer_tflite(loaded, x[:16], optimize=False)`, the converter's graph; the
        default `optimize=True` returns `fold_minimums(raw)`.
    """

    x: np.ndarray
    y: np.ndarray
    reestimated: int
    flat: bool
    qat: keras.Model
    qat_outputs: np.ndarray
    loaded_outputs: np.ndarray
    loaded: keras.Model
    raw: bytes


def mobilenet_v2_w4a4(folder: Path) -> MobileNetV2Run:
    """Runs the `MobileNetV2Run` pipeline (the .h5 goes into `folder`; one conversion)."""
    keras.utils.set_random_seed(0)
    rng = np.random.default_rng(0)
    x = rng.integers(0, 256, (48, 32, 32, 3)).astype("float32")  # raw pixels
    y = (x[..., 0].mean((1, 2)) > 127.5).astype("int64") + 2 * (x[..., 1].mean((1, 2)) > 127.5)
    model = models.build("mobilenet_v2", (32, 32, 3), 4, width=0.35)
    flat = not any(isinstance(layer, keras.Model) for layer in model.layers)
    # The inference-mode model of a random init computes nearly nothing until its BN
    # statistics describe the data; then ranges and α from the float model's activations
    # (far below α0 = 6, where 4-bit PACT would round every activation to 0).
    reestimated = reestimate_batch_norm(model, x, batch_size=16)
    qat = quantize_model(model, weight_bits=4, activation_bits=4)
    calibrate_ranges(qat, model, x)
    sgt = SaliencyGuidedModel(qat, kl_weight=0.1, seed=0)
    sgt.compile(keras.optimizers.SGD(0.05, momentum=0.9),
                keras.losses.SparseCategoricalCrossentropy(from_logits=True))  # fmt: skip
    sgt.fit(x, y, batch_size=16, epochs=1, verbose=0)  # 3 steps
    reestimate_batch_norm(qat, x, batch_size=16)  # after the short fine-tune, likewise
    loaded = load_model(save_model(qat, folder / "mnv2.h5"))
    qat_outputs, loaded_outputs = qat.predict(x, verbose=0), loaded.predict(x, verbose=0)
    align_biases(loaded)
    raw = to_integer_tflite(loaded, x[:16], optimize=False)
    return MobileNetV2Run(x, y, reestimated, flat, qat, qat_outputs, loaded_outputs, loaded, raw)
