"""Where the batch-1 time of the integer TFLite model goes, op by op, against float32.

Converts one model to its full-integer TFLite (`to_integer_tflite`, int8 I/O) and its float32
TFLite (`float_tflite`), times both interleaved in one process (`--rounds` rounds of
`--invokes` invokes of each, the order drawn anew every round: a shared machine's load hits
both alike) and prints the min and median latency of each and their int8 / float ratios.
Then it profiles the integer model per op (`sgt_tfmot.tflite.profile`: timed prefix models,
XNNPACK as deployed) and prints the time per op type and the slowest ops; `--profile_float`
does the same for the float model. The integer model is what `to_integer_tflite` returns; with
`--unoptimized` (default) the converter's own graph before the value-preserving rewrites
(`sgt_tfmot.tflite.rewrite`: the MINIMUM after each k-bit activation) is timed beside it, and
with `--space_to_depth` (default) the same model with its full-resolution stage as 2x2 pixel
blocks (`sgt_tfmot.tflite.layout`); the int8 outputs of each are compared with the
converter's graph on `--exact_images` random images (and `--dataset`'s test split).

Without `--model` or `--tflite` it builds a W{bits}A{bits} PACT QAT ResNet-20 on
`--input_shape`, trains it for `--fit_steps` steps on random data (so that the ranges move
off their initial values), aligns its biases and converts it.

Usage:

    python benchmarks/tflite_profile.py                                   # W4A4, 32x32x3
    python benchmarks/tflite_profile.py --bits 8 --input_shape 28,28,1    # W8A8, 28x28x1
    python benchmarks/tflite_profile.py --model zoo:cifar10-w4a4-sgt-ft --dataset cifar10 \
        --data_dir ../shared/data                   # a trained model, exactness on its test set
    python benchmarks/tflite_profile.py --tflite a.tflite --tflite b.tflite  # files only
"""

from __future__ import annotations

import json

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
flags.DEFINE_bool("profile", True, "Profile the integer model(s) per op.")
flags.DEFINE_bool("profile_float", False, "Profile the float32 model per op too.")
flags.DEFINE_bool(
    "unoptimized", True,
    "Also time the converter's own integer graph (`to_integer_tflite(optimize=False)`, before "
    "the value-preserving rewrites of sgt_tfmot.tflite.rewrite), when it differs.",
)  # fmt: skip
flags.DEFINE_bool(
    "space_to_depth", True,
    "Also time the integer model with its full-resolution stage as 2x2 pixel blocks "
    "(`to_integer_tflite(space_to_depth=True)`, sgt_tfmot.tflite.layout), when it applies.",
)  # fmt: skip
flags.DEFINE_integer(
    "exact_images", 200,
    "Compare the int8 outputs of the converter's graph and of each rewritten one on this many "
    "random int8 images (and on the --dataset test split), in XNNPACK, the builtin and the "
    "reference kernels; 0 skips it.", lower_bound=0,
)  # fmt: skip
flags.DEFINE_string("dataset", None, "Also compare on this dataset's test split (--exact_images).")
flags.DEFINE_string("data_dir", None, "Folder of --dataset (see sgt_tfmot.data).")
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


def differing_outputs(before: bytes, after: bytes, images: np.ndarray) -> dict[str, int]:
    """{runtime: images whose integer outputs differ between two files}, for already
    quantized images, in each of `sgt_tfmot.tflite.runtime.RUNTIMES` (XNNPACK, LiteRT's
    builtin kernels, its reference kernels)."""
    from sgt_tfmot.tflite.runtime import RUNTIMES, integer_outputs

    found = {}
    for runtime in RUNTIMES:
        results = [integer_outputs(flatbuffer, images, runtime) for flatbuffer in (before, after)]
        found[runtime] = int(np.any(results[0] != results[1], axis=1).sum())
    return found


def exactness_images(flatbuffer: bytes, count: int, dataset, data_dir, seed: int = 0):
    """`count` random images over the input type's range, then the dataset's test split
    quantized with the input's scale and zero point."""
    from ai_edge_litert.interpreter import Interpreter

    interpreter = Interpreter(model_content=flatbuffer)
    (source,) = interpreter.get_input_details()
    info = np.iinfo(source["dtype"])
    shape = tuple(source["shape"][1:])
    images = [np.random.default_rng(seed).integers(info.min, int(info.max) + 1, (count, *shape))]
    if dataset:
        from sgt_tfmot import data

        x_test, _ = data.load_arrays(dataset, "test", data_dir)
        scale, zero_point = source["quantization"]
        images.append(np.clip(np.round(x_test / scale + zero_point), info.min, info.max))
    return np.concatenate(images)


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
    from sgt_tfmot.tflite.profile import compare_latency, format_table, profile

    timed = compare_latency(flatbuffers, rounds, invokes, num_threads, seed)
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
        from sgt_tfmot.tflite.layout import LayoutError, space_to_depth_stage
        from sgt_tfmot.tflite.rewrite import fold_minimums

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
        converted = to_integer_tflite(model, calibration, optimize=False)
        flatbuffers = {"float32": float_tflite(model), "int8": fold_minimums(converted)}
        if FLAGS.space_to_depth:
            try:
                flatbuffers["int8 space-to-depth"] = space_to_depth_stage(flatbuffers["int8"])
            except LayoutError as error:
                print(f"no space-to-depth model: {error}")
        if FLAGS.unoptimized and converted != flatbuffers["int8"]:
            flatbuffers["int8 converter graph"] = converted
        profiled = tuple(name for name in flatbuffers if name != "float32") if FLAGS.profile else ()
        profiled += ("float32",) if FLAGS.profile_float else ()
    text, result = run(
        flatbuffers, FLAGS.rounds, FLAGS.invokes, FLAGS.num_threads, profiled, FLAGS.top,
        FLAGS.seed,
    )  # fmt: skip
    print(text)
    reference = "int8 converter graph" if "int8 converter graph" in flatbuffers else "int8"
    rewritten = [name for name in flatbuffers if name not in ("float32", reference)]
    if FLAGS.exact_images and rewritten and reference in flatbuffers:
        before = flatbuffers[reference]
        images = exactness_images(before, FLAGS.exact_images, FLAGS.dataset, FLAGS.data_dir)
        result["differing_outputs"] = {"reference": reference, "images": len(images)}
        for name in rewritten:
            differing = differing_outputs(before, flatbuffers[name], images)
            result["differing_outputs"][name] = differing
            print(
                f"\nint8 outputs of {reference!r} vs {name!r} on {len(images)} images (random"
                + (f" + {FLAGS.dataset} test split" if FLAGS.dataset else "")
                + "): "
                + ", ".join(f"{n} differ in {runtime}" for runtime, n in differing.items())
            )
    if FLAGS.json:
        with open(FLAGS.json, "w") as handle:
            json.dump(result, handle, indent=1)


if __name__ == "__main__":
    app.run(main)
