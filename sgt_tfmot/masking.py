"""The masking rule of Saliency-Guided Training (SGT): which input features to hide, and how.

SGT (Ismail, Corrada Bravo & Feizi, NeurIPS 2021; Algorithm 1 of Maleki et al., arXiv
2412.03915) hides the input features with the *lowest* saliency and asks the model to give the
same output on the masked input. This module holds that rule and nothing else, as pure,
batch-vectorised TensorFlow ops (no per-sample Python), so it runs inside a compiled
`train_step`:

* `saliency_mask(S, fraction)` ranks the features of each sample by saliency and marks the
  k = ⌊fraction · n⌋ lowest;
* `mask_input(x, mask, fill)` replaces the marked features of x.

Layout. Inputs are channels-last: a tensor of rank r ≥ 3 is (batch, positions..., channels),
e.g. (B, H, W, C) images; a rank-2 tensor (B, F) is read as F positions with a single channel.
"Per channel" statistics are taken over the positions of one sample.

Example:

>>> s = tf.constant([[[[0.3], [-0.1]], [[0.0], [2.0]]]])   # (1, 2, 2, 1)
>>> mask = saliency_mask(s, 0.5)                            # |s|: 0.3, 0.1, 0.0, 2.0
>>> tf.reshape(mask, [-1]).numpy().tolist()
[False, True, True, False]
>>> x_masked = mask_input(tf.ones_like(s), mask, fill="zero")
"""

from __future__ import annotations

import math
from collections.abc import Callable
from fractions import Fraction

import numpy as np

from sgt_tfmot._checks import check_choice, check_open_fraction
from sgt_tfmot.keras import tf

RANKINGS = ("abs", "signed")
CHANNEL_REDUCTIONS = ("mean", "max", None)
FILLS = ("random", "zero", "mean")

FillFn = Callable[[tf.Tensor, tf.Tensor], tf.Tensor]

__all__ = [
    "CHANNEL_REDUCTIONS",
    "FILLS",
    "RANKINGS",
    "fill_values",
    "mask_input",
    "masked_count",
    "saliency_mask",
]


def masked_count(fraction: float, n: int) -> int:
    """Number of features masked per sample: k = ⌊fraction · n⌋.

    The product is taken on the decimal value of `fraction` (0.29 · 100 = 29, not the
    28.999... of binary floating point).

    Args:
      fraction: share of the features to mask, in (0, 1).
      n: number of ranked features (positions) per sample.

    Returns:
      k, an `int` with 0 <= k < n; for a tensor `n` (positions known only at run time), the
      same k as an int32 tensor, by the same integer arithmetic.
    """
    fraction = Fraction(repr(check_open_fraction(fraction, "fraction")))
    if isinstance(n, int | np.integer):
        return math.floor(fraction * int(n))
    n = tf.cast(n, tf.int64)
    return tf.cast(n * fraction.numerator // fraction.denominator, tf.int32)


def _position_axes(rank: int) -> list[int]:
    """Axes of the positions of one sample: 1..r-2 for rank r >= 3, [1] for (B, F)."""
    return list(range(1, rank - 1)) if rank >= 3 else [1]


def _static_rank(tensor: tf.Tensor, name: str) -> int:
    rank = tensor.shape.rank
    if rank is None or rank < 2:
        raise ValueError(
            f"`{name}` must have a known rank >= 2 (batch, features...). "
            f"Received shape: {tensor.shape}"
        )
    return rank


def saliency_mask(
    saliency: tf.Tensor,
    fraction: float,
    reduce_channels: str | None = "mean",
    rank_by: str = "abs",
) -> tf.Tensor:
    """Marks, for each sample, the ⌊fraction · n⌋ features with the lowest saliency.

    Score of position p of sample b, with g = |·| (`rank_by="abs"`) or the identity
    (`"signed"`, as in the original SGT code):

        score[b, p] = reduce_c g(S[b, p, c])     (reduce = mean or max over channels)
        score[b, f] = g(S[b, f])                 (reduce_channels=None: every feature alone)

    M[b, p] = True for the k = ⌊fraction · n⌋ positions of lowest score in sample b (n
    positions per sample); ties go to the lower flat (row-major) index first, so the result is
    deterministic and equals `np.argsort(score[b], kind="stable")[:k]`. With a channel
    reduction the mask of a position is repeated over its channels (one mask per pixel, as in
    the original code). Implemented with one `tf.math.top_k` over the batch and a scatter.

    Args:
      saliency: input gradients, shaped like the input (B, ..., C) or (B, F).
      fraction: share of the positions to mask per sample, in (0, 1); the paper uses 0.5.
      reduce_channels: "mean" (original SGT), "max", or None to rank every feature on its own.
        A rank-2 (B, F) input has a single channel, so the reduction is the identity there.
      rank_by: "abs" (rank by |S|) or "signed" (rank by S).

    Returns:
      A boolean tensor shaped like `saliency`, True where a feature is masked.

    Raises:
      ValueError: on a `fraction` outside (0, 1), an unknown `reduce_channels` or `rank_by`, or
        a saliency of rank < 2.
    """
    fraction = check_open_fraction(fraction, "fraction")
    check_choice(reduce_channels, CHANNEL_REDUCTIONS, "reduce_channels")
    check_choice(rank_by, RANKINGS, "rank_by")
    saliency = tf.convert_to_tensor(saliency)
    rank = _static_rank(saliency, "saliency")

    score = tf.cast(saliency, tf.float32)
    if rank_by == "abs":
        score = tf.abs(score)
    reduced = reduce_channels is not None and rank >= 3
    if reduced:
        reduce = tf.reduce_mean if reduce_channels == "mean" else tf.reduce_max
        score = reduce(score, axis=-1)

    batch = tf.shape(score)[0]
    flat = tf.reshape(score, [batch, -1])
    n = flat.shape[1]
    k = masked_count(fraction, n if n is not None else tf.shape(flat)[1])

    # top_k of -score = the k lowest scores; equal values come out lower index first.
    _, lowest = tf.math.top_k(-flat, k=k, sorted=True)
    rows = tf.broadcast_to(tf.range(batch)[:, None], tf.shape(lowest))
    indices = tf.stack([rows, lowest], axis=-1)
    hits = tf.scatter_nd(indices, tf.ones_like(lowest, dtype=tf.int32), tf.shape(flat))
    mask = tf.reshape(hits > 0, tf.shape(score))
    if reduced:
        mask = tf.broadcast_to(mask[..., None], tf.shape(saliency))
    return mask


def fill_values(
    x: tf.Tensor,
    fill: str | FillFn = "random",
    seed: tf.Tensor | None = None,
    noise: tf.Tensor | None = None,
    mask: tf.Tensor | None = None,
) -> tf.Tensor:
    """Values that replace the masked features of `x`, broadcastable to `x`.

    With lo[b, c] = min_p x[b, p, c] and hi[b, c] = max_p x[b, p, c] (per sample and channel):

        random:  lo + u · (hi − lo),  u ~ U[0, 1) per feature   (original SGT fill)
        zero:    0
        mean:    mean_p x[b, p, c]
        callable fill(x, mask) -> values

    The random fill therefore stays inside each sample's own range per channel.

    Args:
      x: input batch, (B, ..., C) or (B, F).
      fill: "random", "zero", "mean" or a callable `fill(x, mask)`.
      seed: shape [2] integer seed of the stateless RNG for the random fill.
      noise: uniform [0, 1) noise shaped like `x` for the random fill; takes precedence over
        `seed` (the SGT trainer draws it so that replicas split one global draw).
      mask: the boolean mask, passed on to a callable `fill`.

    Returns:
      The replacement values.
    """
    x = tf.convert_to_tensor(x)
    if mask is not None:
        mask = tf.convert_to_tensor(mask, tf.bool)
    if callable(fill):
        return tf.cast(fill(x, mask), x.dtype)
    check_choice(fill, FILLS, "fill")
    if fill == "zero":
        return tf.zeros_like(x)
    axes = _position_axes(_static_rank(x, "x"))
    if fill == "mean":
        return tf.reduce_mean(x, axis=axes, keepdims=True)
    lo = tf.reduce_min(x, axis=axes, keepdims=True)
    hi = tf.reduce_max(x, axis=axes, keepdims=True)
    if noise is None:
        if seed is None:
            noise = tf.random.uniform(tf.shape(x), dtype=x.dtype)
        else:
            noise = tf.random.stateless_uniform(tf.shape(x), seed=seed, dtype=x.dtype)
    return lo + tf.cast(noise, x.dtype) * (hi - lo)


def mask_input(
    x: tf.Tensor,
    mask: tf.Tensor,
    fill: str | FillFn = "random",
    seed: tf.Tensor | None = None,
    noise: tf.Tensor | None = None,
) -> tf.Tensor:
    """The masked input x̃ = M_k(S, x): x̃ = where(mask, fill_values(x), x).

    Args:
      x: input batch, (B, ..., C) or (B, F).
      mask: boolean tensor shaped like `x` (from `saliency_mask`), True where x is replaced.
      fill: "random" (default), "zero", "mean" or a callable `fill(x, mask)`; see `fill_values`.
      seed: shape [2] integer seed of the stateless RNG for the random fill; None draws from
        TensorFlow's global RNG.
      noise: uniform [0, 1) noise shaped like `x` for the random fill (overrides `seed`).

    Returns:
      x̃, same shape and dtype as `x`.
    """
    x = tf.convert_to_tensor(x)
    mask = tf.convert_to_tensor(mask, tf.bool)
    values = fill_values(x, fill, seed=seed, noise=noise, mask=mask)
    return tf.where(mask, tf.broadcast_to(values, tf.shape(x)), x)
