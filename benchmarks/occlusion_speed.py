"""Images per second of the occlusion map: the integer model in LiteRT against Keras QAT.

Builds an untrained W4A4 PACT QAT ResNet-20 on 32x32x3 (weights do not change the cost),
converts it to a full-integer .tflite (fixed batch `--tflite_batch`), and times
`Occlusion()` (patch 4, stride 2: 225 occluded copies per image) on `--images` random
images, once through `TFLiteModel(flatbuffer)` and once through the Keras QAT model. Each is
warmed up on one image first (interpreter allocation, Keras' predict function), then timed
`--repeats` times; the best run is reported, as the machine may be shared.

Usage:

    python benchmarks/occlusion_speed.py --images 8
"""

from __future__ import annotations

import time

import numpy as np
from absl import app, flags

import sgt_tfmot
from sgt_tfmot import models
from sgt_tfmot.explain.attributions import AttributionOptions
from sgt_tfmot.explain.attributions.occlusion import Occlusion, positions
from sgt_tfmot.keras import keras
from sgt_tfmot.tflite import TFLiteModel, to_integer_tflite

FLAGS = flags.FLAGS
flags.DEFINE_integer("images", 8, "Images explained per timed run.", lower_bound=1)
flags.DEFINE_integer("patch", 4, "Occlusion patch size, pixels.", lower_bound=1)
flags.DEFINE_integer("stride", 2, "Occlusion stride, pixels.", lower_bound=1)
flags.DEFINE_integer("batch_size", 64, "Occluded images per predict call.", lower_bound=1)
flags.DEFINE_integer("tflite_batch", 1, "Fixed batch size of the .tflite model.", lower_bound=1)
flags.DEFINE_integer("bits", 4, "Weight/activation bits of the QAT ResNet-20.")
flags.DEFINE_integer("repeats", 2, "Timed runs of each model (best one reported).", lower_bound=1)
flags.DEFINE_integer("seed", 0, "Seed of the weights and images.")


def images_per_second(model, images, targets, options: AttributionOptions, repeats: int) -> float:
    """Images explained per second by `Occlusion()` on `model` (best of `repeats`)."""
    Occlusion()(model, images[:1], targets[:1], options)  # warm-up
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        Occlusion()(model, images, targets, options)
        best = min(best, time.perf_counter() - start)
    return len(images) / best


def main(argv: list[str]) -> None:
    del argv
    keras.utils.set_random_seed(FLAGS.seed)
    qat = sgt_tfmot.quantize_model(
        models.resnet20((32, 32, 3), 10), weight_bits=FLAGS.bits, activation_bits=FLAGS.bits
    )
    rng = np.random.default_rng(FLAGS.seed)
    images = rng.integers(0, 256, (FLAGS.images, 32, 32, 3)).astype(np.float32)
    targets = rng.integers(0, 10, FLAGS.images)
    calibration = rng.integers(0, 256, (64, 32, 32, 3)).astype(np.float32)
    tflite = TFLiteModel(to_integer_tflite(qat, calibration, batch_size=FLAGS.tflite_batch))
    options = AttributionOptions(
        patch=FLAGS.patch, stride=FLAGS.stride, batch_size=FLAGS.batch_size
    )
    patches = len(positions(32, 32, FLAGS.patch, FLAGS.stride))
    print(
        f"W{FLAGS.bits}A{FLAGS.bits} QAT ResNet-20, 32x32x3, {FLAGS.images} images, patch "
        f"{FLAGS.patch} stride {FLAGS.stride}: {patches} occluded copies per image"
    )
    for name, model in ((f"LiteRT int8 (batch {FLAGS.tflite_batch})", tflite), ("Keras QAT", qat)):
        rate = images_per_second(model, images, targets, options, FLAGS.repeats)
        print(f"{name:<24}{rate:8.2f} images/s  ({rate * (patches + 1):,.0f} predictions/s)")


if __name__ == "__main__":
    app.run(main)
