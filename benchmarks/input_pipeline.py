"""Does the input pipeline hold back the SGT step? Images per second, pipeline against cache.

For every `--dataset` (a name with `--data_dir`, an .npz path or an image folder; give two to
compare a folder with the same images as an .npz) the script

1. opens it with `sgt_tfmot.data.open_dataset` and reports the images per second of that
   first read (for a folder: every file decoded and resized by `tf.io`/`tf.image` inside
   `tf.data`; for an .npz: the arrays read);
2. builds the model the train CLI builds (`--model`, `--bits`; SGT through
   `SaliencyGuidedModel`, compiled like `sgt_tfmot.training`), and times its compiled train
   function (what `fit` runs) fed two ways, alternated round by round in one process:
   `cached`, one batch repeated from memory, and `pipeline`, the batches the train CLI feeds
   (`sgt_tfmot.data.training_batches`: per-step order, augmentation, prefetch);
3. times the pipeline alone (no training), the ceiling it puts on a step.

It prints the min and median images per second of each and the ratio pipeline / cached
(1.00: the pipeline costs the step nothing; the target is >= 0.95). After the first read a
folder's images live in memory as the .npz's do, so from the second epoch on a folder and an
.npz feed the step through the same pipeline.

Usage:

    python benchmarks/input_pipeline.py --dataset cifar10 --data_dir ../shared/data
    python benchmarks/input_pipeline.py --dataset runs/folder64/images \\
        --dataset runs/folder64/images.npz --model resnet20 --bits 4
"""

from __future__ import annotations

import json
import statistics
import time

from absl import app, flags

FLAGS = flags.FLAGS
flags.DEFINE_multi_string("dataset", ["mnist_subset"], "Datasets, folders or .npz files.")
flags.DEFINE_string("data_dir", None, "Folder with NAME.npz for dataset names.")
flags.DEFINE_string("model", "resnet20", "Model name (see sgt_tfmot.models).")
flags.DEFINE_string("bits", "4", "'float' or the PACT bits of weights and activations.")
flags.DEFINE_bool("sgt", True, "Saliency-Guided Training step (--nosgt: a plain step).")
flags.DEFINE_integer("batch_size", 128, "Global batch size.", lower_bound=1)
flags.DEFINE_integer("steps", 10, "Timed steps of each feed per round.", lower_bound=1)
flags.DEFINE_integer("rounds", 5, "Rounds; the feeds alternate, the first one flips.")
flags.DEFINE_integer("warmup", 3, "Untimed steps of each feed after tracing.", lower_bound=0)
flags.DEFINE_enum(
    "precision", "auto", ["auto", "float32", "mixed_bfloat16"], "Keras policy of the step."
)
flags.DEFINE_string("json", None, "Also write the results to this JSON file.")
flags.DEFINE_integer("seed", 0, "Seed of the weights, the order and the augmentation.")


def _trainer(model_name: str, bits: str, sgt: bool, info, seed: int, batch_size: int):
    """The compiled model the train CLI trains: `sgt_tfmot.training`'s own builders."""
    from sgt_tfmot import training
    from sgt_tfmot.keras import keras

    keras.utils.set_random_seed(seed)
    quantized = {} if bits == "float" else {"weight_bits": int(bits), "activation_bits": int(bits)}
    config = training.TrainConfig(model=model_name, float=bits == "float", sgt=sgt, seed=seed,
                                  batch_size=batch_size, **quantized)  # fmt: skip
    model = training.build_model(config, info)
    plan = training.Plan.of(config, info.train_size)
    return training.make_trainer(config, model, plan, info.image_shape)


def _timed(train_function, iterator):
    def step() -> float:
        start = time.perf_counter()
        float(train_function(iterator)["loss"])  # waits for the step
        return time.perf_counter() - start

    return step


def _stats(seconds: list[float], batch_size: int) -> dict:
    rates = [batch_size / s for s in seconds]
    return {"min": min(rates), "median": statistics.median(rates), "max": max(rates)}


def measure(reference: str, data_dir, settings: dict) -> dict:
    """The three measurements of one dataset (see the module docstring)."""
    from sgt_tfmot import data
    from sgt_tfmot.keras import tf

    start = time.perf_counter()
    info, arrays = data.open_dataset(reference, data_dir)
    read_seconds = time.perf_counter() - start
    x, y = arrays.split("train")
    batch, steps, rounds = settings["batch_size"], settings["steps"], settings["rounds"]
    trainer = _trainer(settings["model"], settings["bits"], settings["sgt"], info,
                       settings["seed"], batch)  # fmt: skip
    total = (rounds + 1) * (steps + settings["warmup"] + 1) * 2
    pipeline = iter(
        data.training_batches(
            x, y, batch, seed=settings["seed"], total_steps=total, augment=info.augment
        )  # fmt: skip
    )
    first = next(iter(data.training_batches(x, y, batch, seed=1, total_steps=1)))
    cached = iter(tf.data.Dataset.from_tensors(first).repeat())
    train_function = trainer.make_train_function()
    feeds = {"cached": _timed(train_function, cached), "pipeline": _timed(train_function, pipeline)}
    for step in feeds.values():
        for _ in range(settings["warmup"] + 1):
            step()
    times = {name: [] for name in feeds}
    for index in range(rounds):
        for name in list(feeds)[:: 1 if index % 2 == 0 else -1]:
            times[name] += [feeds[name]() for _ in range(steps)]
    alone = iter(data.training_batches(x, y, batch, seed=2, total_steps=steps * rounds + 1))
    next(alone)
    pipeline_only = []
    for _ in range(steps * rounds):
        start = time.perf_counter()
        next(alone)
        pipeline_only.append(time.perf_counter() - start)
    result = {
        "dataset": reference,
        "source": info.source,
        "image_shape": list(info.image_shape),
        "train_images": int(len(x)),
        "first_read_images_per_second": (len(x) + info.test_size) / read_seconds,
        "first_read_seconds": read_seconds,
        "cached": _stats(times["cached"], batch),
        "pipeline": _stats(times["pipeline"], batch),
        "pipeline_alone": _stats(pipeline_only, batch),
    }
    result["ratio_median"] = result["pipeline"]["median"] / result["cached"]["median"]
    result["ratio_min"] = result["pipeline"]["min"] / result["cached"]["min"]
    return result


def main(argv: list[str]) -> None:
    del argv
    from sgt_tfmot import _cli, precision  # noqa: F401  (_cli first: TensorFlow quietly)
    from sgt_tfmot.keras import keras

    lowest_bits = None if FLAGS.bits == "float" else min(int(FLAGS.bits), 8)  # as the CLI
    policy, _ = precision.resolve(FLAGS.precision, lowest_bits)
    keras.mixed_precision.set_global_policy(policy)
    settings = {
        "model": FLAGS.model,
        "bits": FLAGS.bits,
        "sgt": FLAGS.sgt,
        "batch_size": FLAGS.batch_size,
        "steps": FLAGS.steps,
        "rounds": FLAGS.rounds,
        "warmup": FLAGS.warmup,
        "seed": FLAGS.seed,
        "precision": policy,
    }
    bits = "float" if FLAGS.bits == "float" else f"W{FLAGS.bits}A{FLAGS.bits}"
    print(
        f"{FLAGS.model} {bits}"
        f" {'SGT' if FLAGS.sgt else 'plain'} step, batch {FLAGS.batch_size}, {policy}, "
        f"{FLAGS.rounds} rounds x {FLAGS.steps} steps per feed, alternated (images/s)"
    )
    print(f"{'dataset':<36}{'read':>9}{'cached min/med':>18}{'pipeline min/med':>19}"
          f"{'alone med':>11}{'ratio med':>11}{'ratio min':>11}")  # fmt: skip
    results = []
    for reference in FLAGS.dataset:
        row = measure(reference, FLAGS.data_dir, settings)
        results.append(row)
        print(
            f"{reference[-36:]:<36}{row['first_read_images_per_second']:>9.0f}"
            f"{row['cached']['min']:>9.0f}/{row['cached']['median']:<8.0f}"
            f"{row['pipeline']['min']:>10.0f}/{row['pipeline']['median']:<8.0f}"
            f"{row['pipeline_alone']['median']:>11.0f}{row['ratio_median']:>11.3f}"
            f"{row['ratio_min']:>11.3f}",
            flush=True,
        )
    if FLAGS.json:
        with open(FLAGS.json, "w") as handle:
            json.dump({"settings": settings, "results": results}, handle, indent=1)


if __name__ == "__main__":
    app.run(main)
