"""Step time of Saliency-Guided Training relative to a plain training step, on ResNet-20.

For each configuration (float or W4A4 PACT QAT; fp32 or mixed_bfloat16) the script builds
`sgt_tfmot.models.resnet20((32, 32, 3), 10)`, compiles it as a plain `keras.Model` and wrapped
in `SaliencyGuidedModel` (same loss, same optimizer type), and times the two compiled train
functions (what `fit` runs) on the same random batch, alternating plain and SGT steps in one
run so that load changes on a shared machine hit both alike. It prints the median ms per
step and the ratio SGT / plain, then the minima and their ratio.

Cost model of the SGT step, in units of one forward pass F with a backward pass of about 2F:
a plain step is F + 2F = 3F; the SGT step is F (shared forward on x) + about F (input
gradient, no weight gradients) + F (forward on x̃) + 2 · 2F (backward through both branches)
= 7F, i.e. a floor of about 2.3 plain steps. The target is at most 2.5.

Usage:

    python benchmarks/sgt_step.py --steps 20 --warmup 10 --precision both --quantized both
"""

from __future__ import annotations

import statistics
import time

import numpy as np
from absl import app, flags

import sgt_tfmot
from sgt_tfmot import models
from sgt_tfmot.keras import keras, tf
from sgt_tfmot.trainers import SaliencyGuidedModel

FLAGS = flags.FLAGS
flags.DEFINE_integer("batch_size", 128, "Global batch size.")
flags.DEFINE_integer("steps", 20, "Timed steps of each kind.")
flags.DEFINE_integer("warmup", 10, "Untimed steps of each kind after tracing.")
flags.DEFINE_enum("precision", "both", ["fp32", "mixed_bfloat16", "both"], "Keras policy.")
flags.DEFINE_enum("quantized", "both", ["no", "yes", "both"], "W4A4 PACT QAT model or not.")
flags.DEFINE_integer("seed", 0, "Seed of the weights and the random batch.")


def _train_function(model: keras.Model, x: np.ndarray, y: np.ndarray):
    """The model's compiled train function, bound to an endless iterator over one batch."""
    iterator = iter(tf.data.Dataset.from_tensors((x, y)).repeat())
    train_function = model.make_train_function()

    def step() -> float:
        start = time.perf_counter()
        logs = train_function(iterator)
        float(logs["loss"])  # wait for the step to finish
        return time.perf_counter() - start

    return step


def measure(
    precision: str = "fp32",
    quantized: bool = False,
    batch_size: int = 128,
    steps: int = 20,
    warmup: int = 10,
    seed: int = 0,
) -> dict:
    """Median plain and SGT step times (ms) and their ratio for one configuration.

    Args:
      precision: "fp32" or "mixed_bfloat16" (the global Keras policy while building).
      quantized: time the W4A4 QAT model from `sgt_tfmot.quantize_model` instead of the float
        one (first and last layers at 8 bits, as in the paper).
      batch_size: global batch size.
      steps: timed steps of each kind, alternating plain/SGT (the order flips every round).
      warmup: untimed steps of each kind, after the first (tracing) call.
      seed: seed of the weights and of the random batch.

    Returns:
      {"plain_ms", "sgt_ms", "ratio"}: medians over `steps`, ratio = sgt_ms / plain_ms;
      {"plain_min_ms", "sgt_min_ms", "min_ratio"}: the same of the minima.
    """
    keras.utils.set_random_seed(seed)
    keras.mixed_precision.set_global_policy("mixed_bfloat16" if precision != "fp32" else "float32")
    try:
        model = models.resnet20((32, 32, 3), 10)
        if quantized:
            model = sgt_tfmot.quantize_model(model, weight_bits=4, activation_bits=4)
        rng = np.random.default_rng(seed)
        x = rng.uniform(0, 255, (batch_size, 32, 32, 3)).astype(np.float32)
        y = rng.integers(0, 10, batch_size).astype(np.int64)

        def compiled(m):
            m.compile(
                keras.optimizers.SGD(0.01, momentum=0.9),
                keras.losses.SparseCategoricalCrossentropy(from_logits=True),
            )
            return m

        sgt = compiled(SaliencyGuidedModel(model, seed=seed))
        plain = compiled(model)  # same weights: both step kinds train one network
        plain_step, sgt_step = _train_function(plain, x, y), _train_function(sgt, x, y)
        for _ in range(warmup + 1):
            plain_step()
            sgt_step()
        plain_times, sgt_times = [], []
        for i in range(steps):
            if i % 2:
                sgt_times.append(sgt_step())
                plain_times.append(plain_step())
            else:
                plain_times.append(plain_step())
                sgt_times.append(sgt_step())
    finally:
        keras.mixed_precision.set_global_policy("float32")
    plain_ms = 1e3 * statistics.median(plain_times)
    sgt_ms = 1e3 * statistics.median(sgt_times)
    plain_min, sgt_min = 1e3 * min(plain_times), 1e3 * min(sgt_times)
    return {
        "plain_ms": plain_ms, "sgt_ms": sgt_ms, "ratio": sgt_ms / plain_ms,
        "plain_min_ms": plain_min, "sgt_min_ms": sgt_min, "min_ratio": sgt_min / plain_min,
    }  # fmt: skip


def run(
    precisions: list[str], quantized: list[bool], batch_size: int, steps: int, warmup: int, seed=0
) -> list[dict]:
    """Measures every configuration and prints one row each; returns the rows."""
    print(f"ResNet-20, 32x32x3, batch {batch_size}, {steps} timed steps of each kind")
    print(
        f"{'model':<8} {'precision':<15} {'plain ms':>9} {'SGT ms':>9} {'SGT/plain':>10}"
        f"{'plain min':>10} {'SGT min':>9} {'min ratio':>10}"
    )
    rows = []
    for is_quantized in quantized:
        for precision in precisions:
            name = "W4A4" if is_quantized else "float"
            try:
                row = measure(precision, is_quantized, batch_size, steps, warmup, seed)
            except Exception as error:  # noqa: BLE001  (report the row, keep the others)
                print(f"{name:<8} {precision:<15} skipped: {type(error).__name__}: {error}")
                continue
            rows.append({"model": name, "precision": precision, **row})
            print(
                f"{name:<8} {precision:<15} {row['plain_ms']:9.1f} {row['sgt_ms']:9.1f} "
                f"{row['ratio']:10.2f}{row['plain_min_ms']:10.1f} {row['sgt_min_ms']:9.1f} "
                f"{row['min_ratio']:10.2f}",
                flush=True,
            )
    return rows


def main(argv: list[str]) -> None:
    del argv
    both = ["fp32", "mixed_bfloat16"]
    run(
        precisions=both if FLAGS.precision == "both" else [FLAGS.precision],
        quantized={"no": [False], "yes": [True], "both": [False, True]}[FLAGS.quantized],
        batch_size=FLAGS.batch_size,
        steps=FLAGS.steps,
        warmup=FLAGS.warmup,
        seed=FLAGS.seed,
    )


if __name__ == "__main__":
    app.run(main)
