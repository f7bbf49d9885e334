"""Where the batch-1 time of the integer TFLite model goes, op by op, against float32.

Converts one model to its full-integer TFLite (`to_integer_tflite`, int8 I/O) and its float32
TFLite (`float_tflite`), times both interleaved in one process (`--rounds` rounds of
`--invokes` invokes of each, the order drawn anew every round: a shared machine's load hits
both alike) and prints the min and median latency of each and their int8 / float ratios.
Then it profiles the integer model per op (`sgt_tfmot.tflite.profile`: timed prefix models,
XNNPACK as deployed) and prints the time per op type and the slowest ops; `--profile_float`
does the same for the float model.

Without `--model` or `--tflite` it builds a W{bits}A{bits} PACT QAT ResNet-20 on
`--input_shape`, trains it for `--fit_steps` steps on random data (so that the ranges move
off their initial values), aligns its biases and converts it.

Usage:

    python benchmarks/tflite_profile.py                                   # W4A4, 32x32x3
    python benchmarks/tflite_profile.py --bits 8 --input_shape 28,28,1    # W8A8, 28x28x1
    python benchmarks/tflite_profile.py --model runs/cifar10-w4a4-sgt-ft
    python benchmarks/tflite_profile.py --tflite a.tflite --tflite b.tflite  # files only
"""

from __future__ import annotations

import json
import statistics

import numpy as np
from absl import app, flags

FLAGS = flags.FLAGS
flags.DEFINE_string("model", None, "Saved QAT/float model or run directory; default: ResNet-20.")
flags.DEFINE_multi_string("tflite", None, "Only time (and profile) these .tflite files.")
flags.DEFINE_integer("bits", 4, "Weight/activation bits of the default ResNet-20.", lower_bound=2)
flags.DEFINE_list("input_shape", ["32", "32", "3"], "Input shape of the default ResNet-20.")
flags.DEFINE_integer("fit_steps", 5, "Training steps of the default ResNet-20.", lower_bound=0)
flags.DEFINE_integer("rounds", 30, "Interleaved rounds.", lower_bound=1)
flags.DEFINE_integer("invokes", 10, "Timed invokes of each model per round.", lower_bound=1)
flags.DEFINE_integer("num_threads", 1, "LiteRT interpreter threads.", lower_bound=1)
flags.DEFINE_bool("profile", True, "Profile the integer model per op.")
flags.DEFINE_bool("profile_float", False, "Profile the float32 model per op too.")
flags.DEFINE_integer("top", 10, "Slowest ops listed.", lower_bound=0)
flags.DEFINE_string("json", None, "Also write the results to this JSON file.")
flags.DEFINE_integer("seed", 0, "Seed of the weights, the training data and the inputs.")


def default_model(bits: int, input_shape: tuple[int, ...], fit_steps: int, seed: int = 0):
    """An aligned W{bits}A{bits} PACT QAT ResNet-20, trained `fit_steps` steps on noise."""
    import sgt_tfmot
    from sgt_tfmot import models
    from sgt_tfmot.keras import keras

    keras.utils.set_random_seed(seed)
    model = sgt_tfmot.quantize_model(
        models.resnet20(input_shape, 10), weight_bits=bits, activation_bits=bits
    )
    if fit_steps:
        rng = np.random.default_rng(seed)
        x = rng.integers(0, 256, (32 * fit_steps, *input_shape)).astype(np.float32)
        y = rng.integers(0, 10, (32 * fit_steps,))
        model.compile(
            keras.optimizers.SGD(0.05, momentum=0.9),
            keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        )
        model.fit(x, y, batch_size=32, epochs=1, verbose=0)
    sgt_tfmot.align_biases(model)
    return model


def latencies(
    flatbuffers: dict[str, bytes], rounds: int, invokes: int, num_threads: int, seed: int = 0
) -> dict[str, dict[str, float]]:
    """{name: {"min_ms", "median_ms", "min_ratio", "median_ratio"}}, ratios against the
    first model, all timed interleaved (`sgt_tfmot.tflite.profile.time_models`)."""
    from sgt_tfmot.tflite.profile import time_models

    samples = time_models(list(flatbuffers.values()), rounds, invokes, num_threads, seed=seed)
    first = samples[0]
    return {
        name: {
            "bytes": len(flatbuffers[name]),
            "min_ms": 1e3 * min(times),
            "median_ms": 1e3 * statistics.median(times),
            "min_ratio": min(times) / min(first),
            "median_ratio": statistics.median(times) / statistics.median(first),
        }
        for name, times in zip(flatbuffers, samples, strict=True)
    }


def run(
    flatbuffers: dict[str, bytes],
    rounds: int = 30,
    invokes: int = 10,
    num_threads: int = 1,
    profiled: tuple[str, ...] = (),
    top: int = 10,
    seed: int = 0,
) -> tuple[str, dict]:
    """Times `flatbuffers` interleaved and profiles those named in `profiled`.

    Returns:
      (the text report, the same as JSON-ready dicts).
    """
    from sgt_tfmot.tflite.profile import format_table, profile

    timed = latencies(flatbuffers, rounds, invokes, num_threads, seed)
    first = next(iter(flatbuffers))
    lines = [
        f"batch 1, {num_threads} thread(s), {rounds} rounds x {invokes} invokes of each model, "
        f"interleaved; ratios against {first!r}",
        f"{'model':<24}{'bytes':>10}{'min ms':>9}{'median ms':>11}{'ratio min':>11}"
        f"{'ratio median':>14}",
    ]
    for name, t in timed.items():
        lines.append(
            f"{name:<24}{t['bytes']:>10,}{t['min_ms']:>9.3f}{t['median_ms']:>11.3f}"
            f"{t['min_ratio']:>11.3f}{t['median_ratio']:>14.3f}"
        )
    result = {"latency": timed, "profiles": {}}
    for name in profiled:
        found = profile(flatbuffers[name], rounds, invokes, num_threads, seed=seed)
        lines += ["", f"per-op profile of {name!r}:", format_table(found, top)]
        result["profiles"][name] = found.to_dict()
    return "\n".join(lines), result


def main(argv: list[str]) -> None:
    del argv
    if FLAGS.tflite:
        flatbuffers = {path: open(path, "rb").read() for path in FLAGS.tflite}
        profiled = tuple(flatbuffers) if FLAGS.profile else ()
    else:
        from sgt_tfmot import saving
        from sgt_tfmot.tflite.converter import float_tflite, to_integer_tflite

        if FLAGS.model:
            model = saving.load_model(FLAGS.model)
        else:
            shape = tuple(int(d) for d in FLAGS.input_shape)
            model = default_model(FLAGS.bits, shape, FLAGS.fit_steps, FLAGS.seed)
        from sgt_tfmot.export import is_quantized

        calibration = None  # a QAT model converts on its learned ranges
        if not is_quantized(model):
            shape = (64, *model.inputs[0].shape[1:])
            calibration = np.random.default_rng(FLAGS.seed).uniform(0, 255, shape)
        flatbuffers = {
            "float32": float_tflite(model),
            "int8": to_integer_tflite(model, calibration),
        }
        profiled = (("int8",) if FLAGS.profile else ()) + (
            ("float32",) if FLAGS.profile_float else ()
        )
    text, result = run(
        flatbuffers, FLAGS.rounds, FLAGS.invokes, FLAGS.num_threads, profiled, FLAGS.top,
        FLAGS.seed,
    )  # fmt: skip
    print(text)
    if FLAGS.json:
        with open(FLAGS.json, "w") as handle:
            json.dump(result, handle, indent=1)


if __name__ == "__main__":
    app.run(main)
