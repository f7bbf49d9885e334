"""Batch-1 latency and size of the integer TFLite model against the float32 TFLite model.

Both flatbuffers come from the same Keras model in one run: the full-integer model of
`sgt_tfmot.tflite.to_integer_tflite` (int8 I/O, batch 1) and the float32 model of
`sgt_tfmot.tflite.converter.float_tflite` (for a QAT model: the float network under its
quantize wrappers). Each is loaded in its own LiteRT interpreter (default delegates, i.e.
XNNPACK, with `--num_threads` threads) and `invoke()` is timed on one fixed input, the two
models alternating call by call (the order flips every round) so that load changes on a
shared machine hit both alike. The script prints each model's size, the min, median and 90th
percentile latency, and the int8 / float ratios of the min and of the median (on a busy
machine the min is the steadiest).

Without `--model` it measures an untrained W4A4 PACT QAT ResNet-20 on 32x32x3 (the
CIFAR-10 model; weights do not change the op count or the latency).

Usage:

    python benchmarks/tflite_latency.py --steps 200 --warmup 20
    python benchmarks/tflite_latency.py --model runs/cifar_w4a4 --num_threads 1
    python benchmarks/tflite_latency.py --model zoo:cifar10-w4a4-sgt-ft --space_to_depth
"""

from __future__ import annotations

import statistics
import time

import numpy as np
from absl import app, flags
from ai_edge_litert.interpreter import Interpreter

import sgt_tfmot
from sgt_tfmot import models, saving
from sgt_tfmot.keras import keras
from sgt_tfmot.tflite.converter import float_tflite, to_integer_tflite
from sgt_tfmot.tflite.layout import LayoutError

FLAGS = flags.FLAGS
flags.DEFINE_string("model", None, "Saved model or training run directory; default: ResNet-20.")
flags.DEFINE_integer("steps", 200, "Timed invokes of each model.", lower_bound=1)
flags.DEFINE_integer("warmup", 20, "Untimed invokes of each model first.", lower_bound=0)
flags.DEFINE_integer("num_threads", 1, "LiteRT interpreter threads.", lower_bound=1)
flags.DEFINE_integer("bits", 4, "Weight/activation bits of the default QAT ResNet-20.")
flags.DEFINE_integer("seed", 0, "Seed of the weights and of the input image.")
flags.DEFINE_bool(
    "space_to_depth", False,
    "Convert with the full-resolution stage as 2x2 pixel blocks (sgt_tfmot.tflite.layout).",
)  # fmt: skip


def _percentile(values: list[float], q: float) -> float:
    return float(np.percentile(np.asarray(values), q))


def _invoker(flatbuffer: bytes, image: np.ndarray, num_threads: int):
    """A function that runs one batch-1 inference and returns its wall time in seconds."""
    interpreter = Interpreter(model_content=flatbuffer, num_threads=num_threads)
    interpreter.allocate_tensors()
    (detail,) = interpreter.get_input_details()
    if np.issubdtype(detail["dtype"], np.integer):
        scale, zero_point = detail["quantization"]
        info = np.iinfo(detail["dtype"])
        value = np.clip(np.round(image / scale + zero_point), info.min, info.max)
    else:
        value = image
    interpreter.set_tensor(detail["index"], value.astype(detail["dtype"]))

    def invoke() -> float:
        start = time.perf_counter()
        interpreter.invoke()
        return time.perf_counter() - start

    return invoke


def measure(
    model: keras.Model,
    steps: int = 200,
    warmup: int = 20,
    num_threads: int = 1,
    seed: int = 0,
    space_to_depth: bool = False,
) -> dict:
    """Sizes and batch-1 latencies of the int8 and float32 TFLite versions of `model`.

    Args:
      model: A tf_keras classifier (QAT or float) taking raw pixels 0..255.
      steps: Timed invokes of each model, alternating int8 / float.
      warmup: Untimed invokes of each model before timing.
      num_threads: Threads of each LiteRT interpreter.
      seed: Seed of the input image and of the calibration images.
      space_to_depth: The int8 model with its full-resolution stage as 2x2 pixel blocks.

    Returns:
      {"int8_bytes", "float_bytes", "size_ratio", "int8_ms", "float_ms", "int8_min_ms",
      "float_min_ms", "int8_p90_ms", "float_p90_ms", "latency_ratio", "min_latency_ratio"}:
      medians, minima and 90th percentiles over `steps`; ratios are int8 / float (of the
      medians, and of the minima).
    """
    rng = np.random.default_rng(seed)
    shape = tuple(model.inputs[0].shape[1:])
    calibration = rng.integers(0, 256, (64, *shape)).astype(np.float32)
    image = calibration[:1]
    flatbuffers = {
        "int8": to_integer_tflite(
            model, calibration, calibration_samples=64, space_to_depth=space_to_depth
        ),
        "float": float_tflite(model),
    }
    invokers = {name: _invoker(fb, image, num_threads) for name, fb in flatbuffers.items()}
    for _ in range(warmup):
        for invoke in invokers.values():
            invoke()
    times: dict[str, list[float]] = {name: [] for name in invokers}
    order = list(invokers)
    for step in range(steps):
        for name in order if step % 2 == 0 else order[::-1]:
            times[name].append(invokers[name]())
    result = {
        "int8_bytes": len(flatbuffers["int8"]),
        "float_bytes": len(flatbuffers["float"]),
    }
    result["size_ratio"] = result["int8_bytes"] / result["float_bytes"]
    for name, values in times.items():
        result[f"{name}_ms"] = 1000 * statistics.median(values)
        result[f"{name}_min_ms"] = 1000 * min(values)
        result[f"{name}_p90_ms"] = 1000 * _percentile(values, 90)
    result["latency_ratio"] = result["int8_ms"] / result["float_ms"]
    result["min_latency_ratio"] = result["int8_min_ms"] / result["float_min_ms"]
    return result


def main(argv: list[str]) -> None:
    del argv
    if FLAGS.model:
        model = saving.load_model(FLAGS.model)
        name = FLAGS.model
    else:
        keras.utils.set_random_seed(FLAGS.seed)
        model = sgt_tfmot.quantize_model(
            models.resnet20((32, 32, 3), 10),
            weight_bits=FLAGS.bits,
            activation_bits=FLAGS.bits,
        )
        name = f"untrained W{FLAGS.bits}A{FLAGS.bits} PACT QAT ResNet-20, 32x32x3"
    try:
        result = measure(
            model, FLAGS.steps, FLAGS.warmup, FLAGS.num_threads, FLAGS.seed, FLAGS.space_to_depth
        )
    except LayoutError as error:
        raise app.UsageError(f"--space_to_depth does not apply to {name}: {error}") from None
    layout = " (int8: space-to-depth first stage)" if FLAGS.space_to_depth else ""
    print(f"model: {name}{layout}")
    print(
        f"batch 1, {FLAGS.num_threads} thread(s), min, median and p90 of {FLAGS.steps} invokes "
        "each, interleaved"
    )
    print(f"{'':8}{'size (bytes)':>14}{'min ms':>9}{'median ms':>11}{'p90 ms':>9}")
    for kind in ("int8", "float"):
        print(
            f"{kind:<8}{result[f'{kind}_bytes']:>14,}{result[f'{kind}_min_ms']:>9.3f}"
            f"{result[f'{kind}_ms']:>11.3f}{result[f'{kind}_p90_ms']:>9.3f}"
        )
    print(
        f"int8 / float: size {result['size_ratio']:.3f}x, latency "
        f"{result['min_latency_ratio']:.3f}x (min), {result['latency_ratio']:.3f}x (median)"
    )


if __name__ == "__main__":
    app.run(main)
