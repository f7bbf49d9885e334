"""Batch-1 int8 vs float32 time of single layers at ResNet-20's shapes, in LiteRT (XNNPACK).

Each case is a one-layer Keras model (a 3x3 convolution with ReLU at each stage's shape, the
first convolution on 3 or 1 input channels, the 1x1 convolution that holds the input
Rescaling, its depthwise equivalent), converted to float32 and to full-integer int8
(post-training, random calibration: the values do not matter for the time) and timed
interleaved (`sgt_tfmot.tflite.profile.compare_latency`). It shows what a whole-model profile
cannot: how the int8 kernels' time scales with the layer's shape. The last case is the first
stage's convolution in a space-to-depth layout (16x16x64 for 32x32x16: the same products
plus zero weights), a layout change that this project does not make (see docs).

Usage:

    python benchmarks/tflite_ops.py --rounds 30 --invokes 20
"""

from __future__ import annotations

import numpy as np
from absl import app, flags

FLAGS = flags.FLAGS
flags.DEFINE_integer("rounds", 30, "Interleaved rounds.", lower_bound=1)
flags.DEFINE_integer("invokes", 20, "Timed invokes of each model per round.", lower_bound=1)
flags.DEFINE_integer("num_threads", 1, "LiteRT interpreter threads.", lower_bound=1)

# (name, input shape, layer): ResNet-20's convolutions at 32x32x3 and 28x28x1.
CASES = [
    ("conv3x3 32x32 16->16", (32, 32, 16), ("conv", 16, 3)),
    ("conv3x3 16x16 32->32", (16, 16, 32), ("conv", 32, 3)),
    ("conv3x3 8x8 64->64", (8, 8, 64), ("conv", 64, 3)),
    ("first conv 32x32 3->16", (32, 32, 3), ("conv", 16, 3)),
    ("first conv 28x28 1->16", (28, 28, 1), ("conv", 16, 3)),
    ("rescaling 1x1 conv 32x32x3", (32, 32, 3), ("conv", 3, 1)),
    ("rescaling 1x1 depthwise", (32, 32, 3), ("depthwise", 1, 1)),
    ("conv3x3 16x16 64->64 (s2d)", (16, 16, 64), ("conv", 64, 3)),
]


def one_layer(shape, layer):
    from sgt_tfmot.keras import keras

    kind, filters, size = layer
    inputs = keras.Input(shape)
    if kind == "conv":
        outputs = keras.layers.Conv2D(filters, size, padding="same", activation="relu")(inputs)
    else:
        outputs = keras.layers.DepthwiseConv2D(size, depth_multiplier=filters)(inputs)
    return keras.Model(inputs, outputs)


def convert(model, integer: bool, seed: int = 0) -> bytes:
    from sgt_tfmot.keras import tf

    converter = tf.lite.TFLiteConverter.from_keras_model(model)
    if integer:
        shape = (1, *model.inputs[0].shape[1:])
        rng = np.random.default_rng(seed)
        converter.optimizations = [tf.lite.Optimize.DEFAULT]
        converter.representative_dataset = lambda: (
            [rng.uniform(-1, 1, shape).astype(np.float32)] for _ in range(8)
        )
        converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
        converter.inference_input_type = converter.inference_output_type = tf.int8
    return converter.convert()


def main(argv: list[str]) -> None:
    del argv
    from sgt_tfmot.tflite.profile import compare_latency

    print(
        f"batch 1, {FLAGS.num_threads} thread(s), min (median) of {FLAGS.rounds} rounds x "
        f"{FLAGS.invokes} interleaved invokes"
    )
    print(f"{'layer':<30}{'float32 us':>16}{'int8 us':>16}{'int8/float':>12}")
    for name, shape, layer in CASES:
        model = one_layer(shape, layer)
        timed = compare_latency(
            {"float32": convert(model, False), "int8": convert(model, True)},
            FLAGS.rounds, FLAGS.invokes, FLAGS.num_threads,
        )  # fmt: skip
        f, q = timed["float32"], timed["int8"]
        print(
            f"{name:<30}{1e3 * f['min_ms']:>8.1f} ({1e3 * f['median_ms']:>5.1f})"
            f"{1e3 * q['min_ms']:>8.1f} ({1e3 * q['median_ms']:>5.1f}){q['min_ratio']:>12.2f}"
        )


if __name__ == "__main__":
    app.run(main)
