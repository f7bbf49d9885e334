"""Step time of Saliency-Guided Training relative to a plain training step, on ResNet-20.

For each configuration (float or W4A4 PACT QAT; fp32 or mixed_bfloat16) the script builds
`sgt_tfmot.models.resnet20((32, 32, 3), 10)`, compiles it as a plain `keras.Model` and wrapped
in `SaliencyGuidedModel` once per masking option (same loss, same optimizer type), and times
the compiled train functions (what `fit` runs) on the same batch, alternating plain and SGT
steps in one run (the order rotates every round) so that load changes on a shared machine hit
all alike. It prints, per option, the median ms per step and the ratio SGT / plain, then the
minima and their ratio, then the same two ratios of the CPU time the process spent in each
step (`time.process_time`, all threads): on a machine shared with other jobs the wall time
measures the load as much as the step, the CPU time measures the work.

Masking options (`--options`): a comma-separated list of FILL:PATCH, e.g. `random:1` (the
original SGT: single pixels, random fill), `blur:4` or `impute:4` (4x4 patches, Gaussian blur
or ROAD's noisy linear imputation); `--mask_fraction`, `--blur_sigma` apply to all. For
"impute" it also prints how many conjugate-gradient iterations the imputation ran on the
batch's mask (the solve stops at a tolerance, so its cost depends on the mask). The batch is
uniform noise, or with `--data_dir` the first training images of cifar10.npz, whose saliency
has the structure of real photos.

Cost model of the SGT step, in units of one forward pass F with a backward pass of about 2F:
a plain step is F + 2F = 3F; the SGT step is F (shared forward on x) + about F (input
gradient, no weight gradients) + F (forward on x̃) + 2 · 2F (backward through both branches)
= 7F, i.e. a floor of about 2.3 plain steps. The target is at most 2.5. A fill adds its own
cost on top (the imputation's iterations; the blur's two small matrix products).

Usage:

    python benchmarks/sgt_step.py --steps 20 --warmup 10 --precision both --quantized both
    python benchmarks/sgt_step.py --options random:1,random:4,blur:4,impute:4 \\
        --data_dir ../shared/data --precision fp32 --quantized no
"""

from __future__ import annotations

import os
import statistics
import time

import numpy as np
from absl import app, flags

import sgt_tfmot
from sgt_tfmot import masking, models
from sgt_tfmot.keras import keras, tf
from sgt_tfmot.trainers import SaliencyGuidedModel

FLAGS = flags.FLAGS
flags.DEFINE_integer("batch_size", 128, "Global batch size.")
flags.DEFINE_integer("steps", 20, "Timed steps of each kind.")
flags.DEFINE_integer("warmup", 10, "Untimed steps of each kind after tracing.")
flags.DEFINE_enum("precision", "both", ["fp32", "mixed_bfloat16", "both"], "Keras policy.")
flags.DEFINE_enum("quantized", "both", ["no", "yes", "both"], "W4A4 PACT QAT model or not.")
flags.DEFINE_integer("seed", 0, "Seed of the weights and the random batch.")
flags.DEFINE_list("options", ["random:1"], "Masking options FILL:PATCH, e.g. random:1,impute:4.")
flags.DEFINE_float("mask_fraction", 0.5, "Share of the units SGT masks.")
flags.DEFINE_float("blur_sigma", masking.DEFAULT_BLUR_SIGMA, "σ of the blur fill, pixels.")
flags.DEFINE_string("data_dir", None, "Folder with cifar10.npz: time on real images.")


def _train_function(model: keras.Model, x: np.ndarray, y: np.ndarray):
    """The model's compiled train function, bound to an endless iterator over one batch."""
    iterator = iter(tf.data.Dataset.from_tensors((x, y)).repeat())
    train_function = model.make_train_function()

    def step() -> tuple[float, float]:
        start, cpu = time.perf_counter(), time.process_time()
        logs = train_function(iterator)
        float(logs["loss"])  # wait for the step to finish
        return time.perf_counter() - start, time.process_time() - cpu

    return step


def parse_option(text: str) -> dict:
    """ "impute:4" -> {"fill": "impute", "patch_size": 4}."""
    fill, _, patch = text.partition(":")
    return {"fill": fill, "patch_size": int(patch or 1)}


def batch(batch_size: int, seed: int, data_dir: str | None) -> tuple[np.ndarray, np.ndarray]:
    """(x, y): uniform 0..255 noise, or the first images of cifar10.npz's training split."""
    if data_dir is None:
        rng = np.random.default_rng(seed)
        x = rng.uniform(0, 255, (batch_size, 32, 32, 3)).astype(np.float32)
        return x, rng.integers(0, 10, batch_size).astype(np.int64)
    with np.load(os.path.join(data_dir, "cifar10.npz")) as data:
        x = data["x_train"][:batch_size].astype(np.float32)
        y = data["y_train"][:batch_size].reshape(-1).astype(np.int64)
    return x, y


def imputation_iterations(model, x, y, option: dict, mask_fraction: float) -> int:
    """Conjugate-gradient iterations of the imputation on the mask SGT makes for (x, y) now."""
    x = tf.constant(x)
    with tf.GradientTape() as tape:
        tape.watch(x)
        scores = tf.cast(model(x, training=True), tf.float32)
        score = tf.reduce_sum(tf.gather(scores, tf.constant(y)[:, None], batch_dims=1))
    mask = masking.saliency_mask(
        tape.gradient(score, x), mask_fraction, patch_size=option["patch_size"]
    )
    _, iterations = masking._linear_imputation(x, tf.cast(mask, tf.float32))
    return int(iterations)


def measure(
    precision: str = "fp32",
    quantized: bool = False,
    batch_size: int = 128,
    steps: int = 20,
    warmup: int = 10,
    seed: int = 0,
    options: list[dict] | None = None,
    mask_fraction: float = 0.5,
    blur_sigma: float = masking.DEFAULT_BLUR_SIGMA,
    data_dir: str | None = None,
) -> list[dict]:
    """Median and minimum plain and SGT step times (ms) and their ratios, one row per option.

    Args:
      precision: "fp32" or "mixed_bfloat16" (the global Keras policy while building).
      quantized: time the W4A4 QAT model from `sgt_tfmot.quantize_model` instead of the float
        one (first and last layers at 8 bits, as in the paper).
      batch_size: global batch size.
      steps: timed steps of each kind; each round times plain and every option once, in an
        order that rotates from round to round.
      warmup: untimed steps of each kind, after the first (tracing) call.
      seed: seed of the weights and of the random batch.
      options: SaliencyGuidedModel masking options per variant, e.g. {"fill": "impute",
        "patch_size": 4}; default: the original SGT (random fill, single pixels).
      mask_fraction, blur_sigma: passed to every variant.
      data_dir: folder with cifar10.npz to time on real images instead of noise.

    Returns:
      Per option: {"option", "plain_ms", "sgt_ms", "ratio"} (medians, ratio = sgt / plain),
      {"plain_min_ms", "sgt_min_ms", "min_ratio"} (the same of the minima), {"cpu_ratio",
      "cpu_min_ratio"} (median and min of the process's CPU time per step), and for the
      imputation "iterations" (of the solve on the batch's mask after the timing).
    """
    options = options or [{"fill": "random", "patch_size": 1}]
    keras.utils.set_random_seed(seed)
    keras.mixed_precision.set_global_policy("mixed_bfloat16" if precision != "fp32" else "float32")
    try:
        model = models.resnet20((32, 32, 3), 10)
        if quantized:
            model = sgt_tfmot.quantize_model(model, weight_bits=4, activation_bits=4)
        x, y = batch(batch_size, seed, data_dir)

        def compiled(m):
            m.compile(
                keras.optimizers.SGD(0.01, momentum=0.9),
                keras.losses.SparseCategoricalCrossentropy(from_logits=True),
            )
            return m

        variants = [
            compiled(
                SaliencyGuidedModel(
                    model, seed=seed, mask_fraction=mask_fraction, blur_sigma=blur_sigma,
                    **option,
                )
            )
            for option in options
        ]  # fmt: skip
        plain = compiled(model)  # same weights: every step kind trains one network
        kinds = [_train_function(plain, x, y)] + [_train_function(v, x, y) for v in variants]
        for _ in range(warmup + 1):
            for step in kinds:
                step()
        times, cpu_times = [[] for _ in kinds], [[] for _ in kinds]
        for i in range(steps):
            order = [(i + j) % len(kinds) for j in range(len(kinds))]
            for kind in order:
                wall, cpu = kinds[kind]()
                times[kind].append(wall)
                cpu_times[kind].append(cpu)
        iterations = {
            n: imputation_iterations(model, x, y, option, mask_fraction)
            for n, option in enumerate(options)
            if option["fill"] == "impute"
        }
    finally:
        keras.mixed_precision.set_global_policy("float32")
    plain_ms, plain_min = 1e3 * statistics.median(times[0]), 1e3 * min(times[0])
    plain_cpu, plain_cpu_min = statistics.median(cpu_times[0]), min(cpu_times[0])
    rows = []
    for n, option in enumerate(options):
        sgt_ms, sgt_min = 1e3 * statistics.median(times[n + 1]), 1e3 * min(times[n + 1])
        sgt_cpu, sgt_cpu_min = statistics.median(cpu_times[n + 1]), min(cpu_times[n + 1])
        rows.append({
            "option": f"{option['fill']}:{option['patch_size']}",
            "plain_ms": plain_ms, "sgt_ms": sgt_ms, "ratio": sgt_ms / plain_ms,
            "plain_min_ms": plain_min, "sgt_min_ms": sgt_min, "min_ratio": sgt_min / plain_min,
            "cpu_ratio": sgt_cpu / plain_cpu, "cpu_min_ratio": sgt_cpu_min / plain_cpu_min,
            "iterations": iterations.get(n),
        })  # fmt: skip
    return rows


def run(
    precisions: list[str],
    quantized: list[bool],
    batch_size: int,
    steps: int,
    warmup: int,
    seed=0,
    options: list[dict] | None = None,
    **settings,
) -> list[dict]:
    """Measures every configuration and prints one row per option; returns the rows."""
    images = "cifar10 training images" if settings.get("data_dir") else "uniform noise"
    print(f"ResNet-20, 32x32x3, batch {batch_size} of {images}, {steps} timed steps of each kind")
    print(
        f"{'model':<8} {'precision':<15} {'option':<10} {'plain ms':>9} {'SGT ms':>9} "
        f"{'SGT/plain':>10}{'plain min':>10} {'SGT min':>9} {'min ratio':>10} {'CPU ratio':>10}"
        f"{'CPU min':>8} {'CG it':>6}"
    )
    rows = []
    for is_quantized in quantized:
        for precision in precisions:
            name = "W4A4" if is_quantized else "float"
            try:
                found = measure(
                    precision, is_quantized, batch_size, steps, warmup, seed, options, **settings
                )
            except Exception as error:  # noqa: BLE001  (report the row, keep the others)
                print(f"{name:<8} {precision:<15} skipped: {type(error).__name__}: {error}")
                continue
            for row in found:
                rows.append({"model": name, "precision": precision, **row})
                iterations = "" if row["iterations"] is None else str(row["iterations"])
                print(
                    f"{name:<8} {precision:<15} {row['option']:<10} {row['plain_ms']:9.1f} "
                    f"{row['sgt_ms']:9.1f} {row['ratio']:10.2f}{row['plain_min_ms']:10.1f} "
                    f"{row['sgt_min_ms']:9.1f} {row['min_ratio']:10.2f} {row['cpu_ratio']:10.2f}"
                    f"{row['cpu_min_ratio']:8.2f} {iterations:>6}",
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
        options=[parse_option(text) for text in FLAGS.options],
        mask_fraction=FLAGS.mask_fraction,
        blur_sigma=FLAGS.blur_sigma,
        data_dir=FLAGS.data_dir,
    )


if __name__ == "__main__":
    app.run(main)
