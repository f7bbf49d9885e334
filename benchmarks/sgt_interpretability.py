"""Short, controlled SGT runs: which setting makes a model's salient pixels matter?

Fine-tunes one trained QAT (or float) model for a few epochs with SGT under each variant
(λ = kl_weight, masked share, training fill, saliency target, channel reduction), each from
the same starting weights and with the same batches, then measures the accuracy-drop curves
of every variant on the same test images (top-first, bottom-first and random order, with
an evaluation fill):

    python benchmarks/sgt_interpretability.py --model zoo:cifar10-w4a4-sgt-ft \\
        --dataset cifar10 --data_dir ../shared/data --epochs 2 \\
        --variants "kl=0.05;kl=1;kl=1,fill=mean;kl=1,mask=0.3" --out runs/sgt-study.json

A variant is `key=value` pairs: kl (λ), mask (mask_fraction), fill (random|zero|mean),
target (label|predicted), reduce (mean|max|none), lr (peak learning rate). Prints one table
row per variant: accuracy, and accuracy with 20 %, 30 % (top-first and random) and 50 %
(bottom-first) of the pixels removed.
"""

from __future__ import annotations

import json
import math
import time
from pathlib import Path

import numpy as np
from absl import app, flags

from sgt_tfmot import data, saving, schedules
from sgt_tfmot.explain.curves import drop_curves
from sgt_tfmot.keras import keras
from sgt_tfmot.trainers import SaliencyGuidedModel

FLAGS = flags.FLAGS
flags.DEFINE_string("model", None, "Starting model (file, run directory, zoo:NAME).", required=True)
flags.DEFINE_string("dataset", "cifar10", "Dataset.")
flags.DEFINE_string("data_dir", None, "Folder with DATASET.npz.")
flags.DEFINE_integer("epochs", 2, "Fine-tuning epochs per variant.")
flags.DEFINE_integer("max_steps", None, "Cap on the steps per variant (smoke tests).")
flags.DEFINE_integer("batch_size", 128, "Batch size.")
flags.DEFINE_string("variants", "kl=0.05;kl=1", "Variants separated by ';'.")
flags.DEFINE_integer("curve_images", 500, "Test images of the curves.")
flags.DEFINE_string("eval_fill", "random", "Fill of the removed pixels in the curves.")
flags.DEFINE_string("out", None, "JSON file of the results.")

KEYS = {
    "kl": ("kl_weight", float),
    "mask": ("mask_fraction", float),
    "fill": ("fill", str),
    "target": ("target", str),
    "reduce": ("reduce_channels", str),
    "lr": ("lr", float),
}


def parse(text: str) -> dict:
    settings = {"kl_weight": 0.05, "mask_fraction": 0.5, "fill": "random", "target": "label",
                "reduce_channels": "mean", "lr": 0.005}  # fmt: skip
    for pair in filter(None, text.split(",")):
        key, value = pair.split("=")
        name, kind = KEYS[key.strip()]
        settings[name] = kind(value.strip())
    if settings["reduce_channels"] == "none":
        settings["reduce_channels"] = None
    return settings


def finetune(path, settings, x, y, epochs, batch_size, max_steps):
    model = saving.float32_model(saving.load_model(path))
    keras.utils.set_random_seed(0)
    steps = math.ceil(len(x) / batch_size)
    if max_steps:
        steps, epochs = min(steps, max_steps), 1
    lr = settings.pop("lr")
    trainer = SaliencyGuidedModel(model, seed=0, **settings)
    optimizer = keras.optimizers.SGD(schedules.make("cosine", lr, steps * epochs), momentum=0.9)
    trainer.compile(optimizer, keras.losses.SparseCategoricalCrossentropy(from_logits=True),
                    metrics=["accuracy"])  # fmt: skip
    augment = ("crop", "flip") if x.shape[-1] == 3 else ()
    batches = data.training_batches(
        x, y, batch_size, seed=0, total_steps=steps * epochs, augment=augment
    )
    history = trainer.fit(batches, epochs=epochs, steps_per_epoch=steps, verbose=2)
    return model, {k: float(v[-1]) for k, v in history.history.items()}


def main(argv):
    del argv
    x_train, y_train = data.load_arrays(FLAGS.dataset, "train", FLAGS.data_dir)
    x_test, y_test = data.load_arrays(FLAGS.dataset, "test", FLAGS.data_dir)
    x_test = x_test[: FLAGS.curve_images].astype(np.float32)
    y_test = y_test[: FLAGS.curve_images]
    rows = []
    print(
        "| variant | train s | accuracy | top 20 % | random 20 % | top 30 % | random 30 % "
        "| bottom 50 % | masked acc (train) |\n|---|---|---|---|---|---|---|---|---|"
    )
    for text in FLAGS.variants.split(";"):
        start = time.monotonic()
        model, last = finetune(FLAGS.model, parse(text), x_train, y_train, FLAGS.epochs,
                               FLAGS.batch_size, FLAGS.max_steps)  # fmt: skip
        seconds = time.monotonic() - start
        curves = drop_curves(model, x_test, y_test, fill=FLAGS.eval_fill, seed=0).curves
        point = {order: dict(zip((0, 10, 20, 30, 40, 50, 60, 70, 80, 90), c, strict=True))
                 for order, c in curves.items()}  # fmt: skip
        row = {"variant": text, "seconds": seconds, "curves": curves, "train": last}
        rows.append(row)
        print(f"| {text} | {seconds:.0f} | {100 * point['top'][0]:.1f} | "
              f"{100 * point['top'][20]:.1f} | {100 * point['random'][20]:.1f} | "
              f"{100 * point['top'][30]:.1f} | {100 * point['random'][30]:.1f} | "
              f"{100 * point['bottom'][50]:.1f} | {100 * last.get('masked_accuracy', 0):.1f} |",
              flush=True)  # fmt: skip
    if FLAGS.out:
        Path(FLAGS.out).write_text(json.dumps({"eval_fill": FLAGS.eval_fill, "rows": rows},
                                              indent=1))  # fmt: skip


if __name__ == "__main__":
    app.run(main)
