"""QAT / float training-step time for ResNet-20 (32x32x3, batch 128), measured in one run.

    python benchmarks/qat_step.py [--steps 20] [--warmup 5] [--batch_size 128]
        [--precision float32|mixed_bfloat16] [--bits 4]

Both models take the same random batch; their compiled `train_step`s are timed alternately
(one QAT step, one float step, ...) so that load from other processes hits both alike. Prints
the median step time of each and the ratio.
"""

import statistics
import time

import numpy as np
from absl import app, flags

import sgt_tfmot
from sgt_tfmot import models
from sgt_tfmot.keras import keras, tf

FLAGS = flags.FLAGS
flags.DEFINE_integer("steps", 20, "Timed steps per model.")
flags.DEFINE_integer("warmup", 5, "Untimed steps per model (tracing, allocation).")
flags.DEFINE_integer("batch_size", 128, "Batch size.")
flags.DEFINE_enum("precision", "float32", ["float32", "mixed_bfloat16"], "Keras policy.")
flags.DEFINE_integer("bits", 4, "Weight and activation bits of the QAT model.")


def compiled_step(model, x, y):
    model.compile(
        keras.optimizers.SGD(0.01, momentum=0.9),
        keras.losses.SparseCategoricalCrossentropy(from_logits=True),
    )
    step = tf.function(model.train_step)
    data = (tf.constant(x), tf.constant(y))
    return lambda: step(data)


def main(argv):
    del argv
    keras.mixed_precision.set_global_policy(FLAGS.precision)
    rng = np.random.default_rng(0)
    x = rng.integers(0, 256, (FLAGS.batch_size, 32, 32, 3)).astype("float32")
    y = rng.integers(0, 10, FLAGS.batch_size).astype("int64")
    float_model = models.resnet20((32, 32, 3), 10)
    qat_model = sgt_tfmot.quantize_model(models.resnet20((32, 32, 3), 10), FLAGS.bits, FLAGS.bits)
    steps = {"float": compiled_step(float_model, x, y), "qat": compiled_step(qat_model, x, y)}
    times = {name: [] for name in steps}
    for i in range(FLAGS.warmup + FLAGS.steps):
        for name, step in steps.items():
            start = time.perf_counter()
            loss = step()
            float(loss["loss"])  # wait for the step to finish
            if i >= FLAGS.warmup:
                times[name].append(time.perf_counter() - start)
    median = {name: statistics.median(t) * 1000 for name, t in times.items()}
    print(
        f"ResNet-20 32x32x3 batch {FLAGS.batch_size} {FLAGS.precision}, W{FLAGS.bits}A{FLAGS.bits},"
        f" {FLAGS.steps} steps: float {median['float']:.0f} ms/step, QAT {median['qat']:.0f}"
        f" ms/step, QAT/float = {median['qat'] / median['float']:.2f}"
    )


if __name__ == "__main__":
    app.run(main)
