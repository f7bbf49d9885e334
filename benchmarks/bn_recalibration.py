"""How much a trained model's BatchNormalization statistics are off: accuracy before and after
re-estimating them on clean training batches.

SGT runs a second, masked forward in training mode. Before `SaliencyGuidedModel` kept the
moving statistics to the clean batches, the masked images (half their pixels noise) leaked
into BatchNormalization's moving mean and variance, and the model was evaluated with
statistics of inputs it never sees at test time. This script measures that on a saved model:

1. test accuracy of the model as saved;
2. every BatchNormalization's moving mean and variance reset (0 and 1) and re-estimated by
   `--batches` training-mode forward passes over clean (augmented) training batches, with no
   weight update;
3. test accuracy again.

A large gain means the saved statistics did not describe clean inputs; a well-trained model
gains (or loses) a few tenths of a point at most.

Usage:

    python benchmarks/bn_recalibration.py --model runs/cifar10-w4a4-sgt-e10 \
        --dataset cifar10 --data_dir ../shared/data
"""

from __future__ import annotations

import numpy as np
from absl import app, flags

from sgt_tfmot import data, saving
from sgt_tfmot.keras import keras, tf

FLAGS = flags.FLAGS
flags.DEFINE_string("model", None, "Saved model or training run directory.", required=True)
flags.DEFINE_string("dataset", "cifar10", "Dataset the model was trained on.")
flags.DEFINE_string("data_dir", None, "Directory of DATASET.npz (see sgt_tfmot.data).")
flags.DEFINE_integer("batches", 100, "Training batches for the re-estimate.", lower_bound=1)
flags.DEFINE_integer("batch_size", 128, "Batch size of the re-estimate.", lower_bound=2)


def accuracy(model: keras.Model, images: np.ndarray, labels: np.ndarray) -> float:
    predictions = model.predict(images, batch_size=500, verbose=0).argmax(-1)
    return float((predictions == labels).mean())


def main(argv):
    del argv
    model = saving.float32_model(saving.load_model(FLAGS.model))
    images, labels = data.load_arrays(FLAGS.dataset, "test", data_dir=FLAGS.data_dir)
    images, labels = images.astype(np.float32), labels.reshape(-1)
    before = accuracy(model, images, labels)

    batch_norms = [
        layer for layer in model.submodules if isinstance(layer, keras.layers.BatchNormalization)
    ]
    for layer in batch_norms:
        layer.moving_mean.assign(tf.zeros_like(layer.moving_mean))
        layer.moving_variance.assign(tf.ones_like(layer.moving_variance))
    train = data.load(FLAGS.dataset, "train", FLAGS.data_dir, FLAGS.batch_size, seed=0)

    @tf.function
    def forward(batch):
        model(batch, training=True)  # updates the moving statistics; no optimizer step

    for batch, _ in train.take(FLAGS.batches):
        forward(batch)
    after = accuracy(model, images, labels)
    print(f"BatchNormalization layers: {len(batch_norms)}")
    print(f"test accuracy as saved:         {100 * before:.2f} %")
    print(f"after re-estimating statistics: {100 * after:.2f} %  ({FLAGS.batches} batches)")
    print(f"change: {100 * (after - before):+.2f} pp")


if __name__ == "__main__":
    app.run(main)
