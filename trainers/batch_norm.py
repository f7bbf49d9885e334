"""Re-estimating BatchNormalization statistics on data ("precise BN").

A model evaluated, quantized or exported in inference mode uses each BatchNormalization's
moving mean and variance. They lag behind the weights early in training (Keras
Applications use momentum 0.999), after a short fine-tune, or when they were written by
other inputs than the ones the model will see; then the inference-mode model computes
something else than the trained one (measured on MobileNetV2 after 30 steps: a pooled
output of 2e-4 instead of ~0.3).

`reestimate_batch_norm(model, images)` replaces them by the population statistics of the
given images: one training-mode forward pass per batch, with momentum i/(i + 1) for batch i,
so that the moving values end as the mean of the per-batch statistics. No weight changes,
and every other state a training-mode forward writes (the quantizers' moving ranges, TFMOT's
step counters) is put back.
"""

from __future__ import annotations

import numpy as np

from sgt_tfmot._checks import check_int
from sgt_tfmot.keras import keras, tf

__all__ = ["reestimate_batch_norm"]


def reestimate_batch_norm(model: keras.Model, images, batch_size: int = 128) -> int:
    """Sets every BatchNormalization's moving statistics to those of `images`, in place.

    Args:
      model: A float or QAT tf_keras model.
      images: (N, ...) inputs in the model's input range, N >= 2.
      batch_size: Images per forward pass, >= 2 (batch statistics need two samples).

    Returns:
      The number of BatchNormalization layers re-estimated.
    """
    batch_size = check_int(batch_size, "batch_size", 2)
    images = np.asarray(images, np.float32)
    norms = [
        layer for layer in model.submodules if isinstance(layer, keras.layers.BatchNormalization)
    ]
    if not norms:
        return 0
    statistics = {id(v) for layer in norms for v in (layer.moving_mean, layer.moving_variance)}
    others = [w for w in model.non_trainable_weights if id(w) not in statistics]
    saved = [w.numpy() for w in others]
    momenta = [layer.momentum for layer in norms]
    try:
        for index, start in enumerate(range(0, len(images) - 1, batch_size)):
            batch = images[start : start + batch_size]
            if len(batch) < 2:
                break
            for layer in norms:
                layer.momentum = index / (index + 1.0)
            model(tf.constant(batch), training=True)
    finally:
        for layer, momentum in zip(norms, momenta, strict=True):
            layer.momentum = momentum
        for weight, value in zip(others, saved, strict=True):
            weight.assign(value)
    return len(norms)
