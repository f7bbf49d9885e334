"""The per-pixel protocol: the trainer's masking rule, as the SGT papers measure.

The k = ⌊x · n⌋ pixels of highest (lowest, random) saliency are marked by
`sgt_tfmot.masking.saliency_mask` and replaced by `sgt_tfmot.masking.mask_input` with one of
the trainer's fills (Ismail et al. 2021; Fig. 3 of Maleki et al., arXiv 2412.03915): the same
features as "the lowest x %" in training. One seed serves every fraction, as in
`sgt_tfmot.explain.curves.accuracy_drop_curve`, whose numbers these are.

Scattered constant pixels are out of distribution and their pattern can leak the class
(Rong et al. 2022), so on natural images random order can look worse than top-first here;
ROAD (`road`) is the protocol built to avoid that.
"""

from __future__ import annotations

import numpy as np

from sgt_tfmot import masking
from sgt_tfmot.explain.protocols.base import Protocol, ProtocolOptions
from sgt_tfmot.keras import tf

__all__ = ["PerPixel", "ranking_mask"]


def ranking_mask(
    saliency: tf.Tensor,
    fraction: float,
    order: str,
    reduce_channels: str | None,
    seed: int,
) -> tf.Tensor:
    """The mask of the ⌊fraction · n⌋ most ("top"), least ("bottom") or random features.

    All three go through `saliency_mask`, which marks the *lowest* scores: "bottom" ranks |S|,
    "top" ranks −|S| (the highest |S| are the lowest −|S|), "random" ranks uniform noise. A
    channel reduction is applied to |S| before the negation (max of |S|, not of −|S|).
    """
    score = tf.abs(tf.convert_to_tensor(saliency, tf.float32))
    if order == "bottom":
        return masking.saliency_mask(score, fraction, reduce_channels, rank_by="signed")
    has_channels = score.shape.rank >= 3
    if order == "random":
        # One uniform score per position (per feature without a reduction).
        shape = tf.shape(score)
        if reduce_channels is not None and has_channels:
            shape = tf.concat([shape[:-1], [1]], axis=0)
        score = tf.random.stateless_uniform(shape, seed=[seed, 0])
        score = tf.broadcast_to(score, tf.shape(saliency))
        return masking.saliency_mask(score, fraction, reduce_channels, rank_by="signed")
    if reduce_channels == "max" and has_channels:
        # mean over channels of a per-position constant = that constant.
        score = tf.broadcast_to(tf.reduce_max(score, axis=-1, keepdims=True), tf.shape(score))
        reduce_channels = "mean"
    return masking.saliency_mask(-score, fraction, reduce_channels, rank_by="signed")


class PerPixel(Protocol):
    name, title, unit, measure = "pixel", "per-pixel (trainer's masking rule)", "pixel", "accuracy"
    fills = ("mean", *(f for f in masking.FILLS if f != "mean"))  # the trainer's, mean first
    reference = "Ismail et al. 2021 (SGT); Maleki et al. 2024, Fig. 3"

    def rank(self, saliency, order, options: ProtocolOptions):
        """The saliency itself: `masking.saliency_mask` ranks it at each fraction."""
        return np.asarray(saliency, np.float32)

    def perturb(self, images, ranked, fraction, order, options: ProtocolOptions, seed):
        """`mask_input` of the `ranking_mask` of the saliency `ranked`; one seed
        (`options.seed`) for every fraction, as `accuracy_drop_curve`."""
        if fraction == 0.0:
            return images
        saliency = ranked
        if saliency.shape != images.shape:  # a per-pixel map: the same score on each channel
            saliency = np.broadcast_to(saliency[..., None], images.shape)
        x = tf.constant(images)
        if fraction == 1.0:
            mask = tf.ones_like(x, dtype=tf.bool)
        else:
            mask = ranking_mask(saliency, fraction, order, options.reduce_channels, options.seed)
        fill_seed = tf.constant([options.seed, 1], tf.int64)
        return masking.mask_input(x, mask, self.fill(options), seed=fill_seed).numpy()
