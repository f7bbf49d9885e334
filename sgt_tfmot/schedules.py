"""Learning-rate schedules of the training command, as serializable Keras schedules."""

from __future__ import annotations

import math

from sgt_tfmot.keras import keras, tf

SCHEDULES = ("onecycle", "cosine", "constant")


@keras.utils.register_keras_serializable(package="sgt_tfmot")
class OneCycle(keras.optimizers.schedules.LearningRateSchedule):
    """Linear warm-up from `peak / 25` to `peak` over `warmup_fraction` of the steps, then a
    cosine decay to `peak / 1e4` at `total_steps` (Smith & Topin's one-cycle policy)."""

    def __init__(self, peak: float, total_steps: int, warmup_fraction: float = 0.15):
        self.peak = float(peak)
        self.total_steps = int(total_steps)
        self.warmup_fraction = float(warmup_fraction)

    def __call__(self, step):
        step = tf.cast(step, tf.float32)
        total = float(max(self.total_steps, 1))
        warmup = max(self.warmup_fraction * total, 1.0)
        start, end = self.peak / 25.0, self.peak / 1e4
        rising = start + (self.peak - start) * step / warmup
        progress = tf.clip_by_value((step - warmup) / max(total - warmup, 1.0), 0.0, 1.0)
        falling = end + 0.5 * (self.peak - end) * (1.0 + tf.cos(math.pi * progress))
        return tf.where(step < warmup, rising, falling)

    def get_config(self) -> dict:
        return {
            "peak": self.peak,
            "total_steps": self.total_steps,
            "warmup_fraction": self.warmup_fraction,
        }


def make(name: str, learning_rate: float, total_steps: int):
    """The schedule `name` ("onecycle", "cosine" or "constant") for `total_steps` steps."""
    if name == "onecycle":
        return OneCycle(learning_rate, total_steps)
    if name == "cosine":
        return keras.optimizers.schedules.CosineDecay(learning_rate, max(total_steps, 1))
    if name == "constant":
        return learning_rate
    raise ValueError(f"Unknown schedule {name!r}. Known schedules: {', '.join(SCHEDULES)}.")
