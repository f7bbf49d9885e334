"""Re-estimating BatchNormalization statistics on data ("precise BN").

A model evaluated, quantized or exported in inference mode uses each BatchNormalization's
moving mean and variance. They lag behind the weights early in training (Keras
Applications use momentum 0.999), after a short fine-tune, or when they were written by
other inputs than the ones the model will see; then the inference-mode model computes
something else than the trained one (measured on MobileNetV2 after 30 steps: a pooled
output of 2e-4 instead of ~0.3).

`reestimate_batch_norm(model, images)` replaces them by the population statistics of the
given images: one training-mode forward pass per batch, with momentum seen/(seen + n) for a
batch of n after `seen` images, so that the moving values end as the mean of the per-batch
statistics weighted by the batches' sizes. No weight changes,
and every other state a training-mode forward writes (the quantizers' moving ranges, TFMOT's
step counters) is put back.

`refit_stale_batch_norm(model, images, labels)` does it only where the model's own statistics
are stale: when re-estimated ones raise its inference-mode top-1 on labelled images by a
margin. A user's model trained for a few epochs on a small folder can predict one class in
inference mode (Keras's default momentum 0.99 over a few dozen steps) while its weights
classify well; calibrating quantization ranges on its inference-mode activations then sets
them from values that training never sees (measured: a 3-class folder model at 33 % with its
own statistics, 65 % with re-estimated ones; its QAT fine-tune ended at 66.7 % with PACT α
0.20 on the last ReLU, at 88.3 % from the re-estimated model, and at 100 % when the trained
model's lagging statistics were re-estimated too).
"""

from __future__ import annotations

import dataclasses

import numpy as np

from sgt_tfmot._checks import check_int
from sgt_tfmot.keras import keras, tf

__all__ = ["StatisticsFit", "refit_stale_batch_norm", "reestimate_batch_norm"]


def _batch_norms(model: keras.Model) -> list:
    norm = keras.layers.BatchNormalization
    return [layer for layer in model.submodules if isinstance(layer, norm)]


def _moving_statistics(norms: list) -> list:
    return [v for layer in norms for v in (layer.moving_mean, layer.moving_variance)]


def reestimate_batch_norm(model: keras.Model, images, batch_size: int = 128) -> int:
    """Sets every BatchNormalization's moving statistics to those of `images`, in place
    (under the model's distribution strategy when it was built in one's scope).

    Args:
      model: A float or QAT tf_keras model.
      images: (N, ...) inputs in the model's input range, N >= 2.
      batch_size: Images per forward pass, >= 2 (batch statistics need two samples).

    Returns:
      The number of BatchNormalization layers re-estimated.
    """
    batch_size = check_int(batch_size, "batch_size", 2)
    images = np.asarray(images)  # cast batch by batch: 1,024 photos are large in float32
    norms = _batch_norms(model)
    if not norms:
        return 0
    statistics = {id(v) for v in _moving_statistics(norms)}
    strategy = model.distribute_strategy  # the default strategy outside any scope
    others = [w for w in model.non_trainable_weights if id(w) not in statistics]
    saved = [w.numpy() for w in others]
    momenta = [layer.momentum for layer in norms]
    try:
        for seen in range(0, len(images) - 1, batch_size):
            batch = images[seen : seen + batch_size]
            if len(batch) < 2:
                break
            for layer in norms:
                layer.momentum = seen / (seen + len(batch))
            # in a replica context: for a model built in a distribution strategy's scope (a
            # run's), TFMOT's moving-range updates refuse the cross-replica one
            batch = tf.constant(batch, tf.float32)
            strategy.run(model, args=(batch,), kwargs={"training": True})
    finally:
        for layer, momentum in zip(norms, momenta, strict=True):
            layer.momentum = momentum
        for weight, value in zip(others, saved, strict=True):
            weight.assign(value)
    return len(norms)


@dataclasses.dataclass(frozen=True)
class StatisticsFit:
    """What `refit_stale_batch_norm` measured: the model's inference-mode top-1 on the
    labelled images with its own BatchNormalization statistics and with statistics
    re-estimated on those images, and whether the re-estimated ones were kept."""

    own_accuracy: float
    data_accuracy: float
    replaced: bool
    images: int


def _top1(model: keras.Model, images: np.ndarray, labels: np.ndarray, batch_size: int) -> float:
    predicted = [
        np.argmax(np.asarray(model(tf.constant(x, tf.float32), training=False)), -1)
        for x in (images[i : i + batch_size] for i in range(0, len(images), batch_size))
    ]
    return float(np.mean(np.concatenate(predicted) == labels))


def refit_stale_batch_norm(
    model: keras.Model, images, labels, margin: float = 0.05, batch_size: int = 128
) -> StatisticsFit | None:
    """Re-estimates the BatchNormalization statistics of `model` on `images` (in place) when
    that raises its inference-mode top-1 on `labels` by at least `margin`; otherwise leaves
    them as they were. A model whose statistics fit its data (one trained to convergence)
    scores within a point or two either way and keeps its own.

    Args:
      model: A float or QAT tf_keras classifier (argmax over its output is the class).
      images: (N, ...) labelled inputs in the model's input range, N >= 2.
      labels: (N,) integer classes.
      margin: Top-1 gain (0..1) the re-estimated statistics must bring to be kept.
      batch_size: Images per forward pass, >= 2.

    Returns:
      The measurement (`StatisticsFit`), or None for a model without BatchNormalization.
    """
    batch_size = check_int(batch_size, "batch_size", 2)
    images = np.asarray(images)
    labels = np.asarray(labels).reshape(-1)
    if len(labels) != len(images):
        raise ValueError(f"labels: {len(labels)} for {len(images)} images; one per image")
    norms = _batch_norms(model)
    if not norms:
        return None
    statistics = _moving_statistics(norms)
    own = [v.numpy() for v in statistics]
    own_accuracy = _top1(model, images, labels, batch_size)
    reestimate_batch_norm(model, images, batch_size)
    data_accuracy = _top1(model, images, labels, batch_size)
    replaced = data_accuracy >= own_accuracy + margin
    if not replaced:
        for variable, value in zip(statistics, own, strict=True):
            variable.assign(value)
    return StatisticsFit(own_accuracy, data_accuracy, replaced, len(images))
