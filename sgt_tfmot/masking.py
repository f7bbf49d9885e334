"""The masking rule of Saliency-Guided Training (SGT): which input features to hide, and how.

SGT (Ismail, Corrada Bravo & Feizi, NeurIPS 2021; Algorithm 1 of Maleki et al., arXiv
2412.03915) hides the input features with the *lowest* saliency and asks the model to give the
same output on the masked input. This module holds that rule and nothing else, as pure,
batch-vectorised TensorFlow ops (no per-sample Python), so it runs inside a compiled
`train_step`:

* `saliency_mask(S, fraction, patch_size=p)` ranks the features of each sample by saliency
  (single pixels, or p x p patches whose saliency is summed) and marks the k = ⌊fraction · n⌋
  lowest;
* `mask_input(x, mask, fill)` replaces the marked features of x: with random values in the
  sample's range, zero, the mean, a Gaussian blur of the image, or ROAD's noisy linear
  imputation from the neighbouring pixels (the last two keep a masked photo close to the data:
  Rong et al., ICML 2022).

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

from sgt_tfmot._checks import (
    InputError,
    check_choice,
    check_int,
    check_number,
    check_open_fraction,
)
from sgt_tfmot.keras import tf

RANKINGS = ("abs", "signed")
CHANNEL_REDUCTIONS = ("mean", "max", None)
FILLS = ("random", "zero", "mean", "blur", "impute")
IMAGE_FILLS = ("blur", "impute")  # fills that need (batch, height, width, channels) images
DEFAULT_BLUR_SIGMA = 2.0  # pixels
MAX_BLUR_SIGMA = 1000.0  # far beyond any image: the blur is the image's mean long before
DEFAULT_IMPUTE_NOISE = 0.01  # ROAD's noise, a share of the sample's value range per channel

# ROAD's neighbourhood (Rong et al. 2022): (row offset, column offset) -> weight; sums to 1.
NEIGHBOUR_WEIGHTS = {
    (0, 1): 1 / 6, (0, -1): 1 / 6, (1, 0): 1 / 6, (-1, 0): 1 / 6,
    (1, 1): 1 / 12, (1, -1): 1 / 12, (-1, 1): 1 / 12, (-1, -1): 1 / 12,
}  # fmt: skip
# The imputation's iterations stop where every equation holds to this share of the value range
# (docstring of `impute`); the error this leaves is measured in tests/test_masking.py.
IMPUTE_TOLERANCE = 1e-5

FillFn = Callable[[tf.Tensor, tf.Tensor], tf.Tensor]

__all__ = [
    "CHANNEL_REDUCTIONS",
    "DEFAULT_BLUR_SIGMA",
    "DEFAULT_IMPUTE_NOISE",
    "FILLS",
    "IMAGE_FILLS",
    "NEIGHBOUR_WEIGHTS",
    "RANKINGS",
    "blur",
    "blur_matrix",
    "check_patch_size",
    "fill_values",
    "impute",
    "mask_input",
    "masked_count",
    "noise_distribution",
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


def check_patch_size(patch_size, positions) -> int:
    """`patch_size` as an int, when p x p patches tile positions of the sizes `positions`.

    A size that does not divide every position dimension is refused, not given a ragged last
    patch: a smaller patch sums fewer saliency values, so it would be ranked low and masked
    for its size alone.

    Args:
      patch_size: side of the patches, an integer >= 1 (1: single pixels).
      positions: the sizes of the position dimensions, e.g. (height, width) of an image.

    Returns:
      `patch_size`.

    Raises:
      InputError: on a size that is not an integer >= 1, that does not divide every
        dimension (the message lists the sizes that do), or > 1 with a dimension unknown.
    """
    patch_size = check_int(patch_size, "patch_size", 1)
    if patch_size == 1:
        return patch_size
    dims = tuple(positions)
    if any(d is None for d in dims):
        raise InputError(
            f"> 1 needs inputs of known size, to cut them into patches; the input's "
            f"positions have sizes {dims}",
            "patch_size",
            patch_size,
        )
    if any(d % patch_size for d in dims):
        common = math.gcd(*dims)
        divisors = ", ".join(str(d) for d in range(1, common + 1) if common % d == 0)
        size = "x".join(str(d) for d in dims)
        raise InputError(f"must divide the input's size {size}: one of {divisors}", "patch_size",
                         patch_size)  # fmt: skip
    return patch_size


def saliency_mask(
    saliency: tf.Tensor,
    fraction: float,
    reduce_channels: str | None = "mean",
    rank_by: str = "abs",
    patch_size: int = 1,
) -> tf.Tensor:
    """Marks, for each sample, the ⌊fraction · n⌋ units (pixels or patches) of lowest saliency.

    Score of position p of sample b, with g = |·| (`rank_by="abs"`) or the identity
    (`"signed"`, as in the original SGT code):

        score[b, p] = reduce_c g(S[b, p, c])     (reduce = mean or max over channels)
        score[b, f] = g(S[b, f])                 (reduce_channels=None: every feature alone)

    With `patch_size` P > 1 the units are the P x P patches that tile the positions (P along
    every position axis: P x P on images), and the score of a patch is the sum of the scores of
    its positions (per channel when reduce_channels is None):

        score[b, u] = Σ_{p in patch u} score[b, p]

    M[b, u] = True for the k = ⌊fraction · n⌋ units of lowest score in sample b (n units per
    sample); ties go to the lower flat (row-major) index first, so the result is deterministic
    and equals `np.argsort(score[b], kind="stable")[:k]`. The mask of a patch is repeated over
    its positions and, with a channel reduction, over the channels (one mask per pixel, as in
    the original code). Implemented with reshapes, one `tf.math.top_k` over the batch and a
    scatter: no per-sample or per-patch loop.

    Args:
      saliency: input gradients, shaped like the input (B, ..., C) or (B, F).
      fraction: share of the units to mask per sample, in (0, 1); the paper uses 0.5.
      reduce_channels: "mean" (original SGT), "max", or None to rank every feature on its own.
        A rank-2 (B, F) input has a single channel, so the reduction is the identity there.
      rank_by: "abs" (rank by |S|) or "signed" (rank by S).
      patch_size: side P of the patches, an integer >= 1 that divides every position
        dimension (1: single pixels, the original SGT).

    Returns:
      A boolean tensor shaped like `saliency`, True where a feature is masked.

    Raises:
      ValueError: on a `fraction` outside (0, 1), an unknown `reduce_channels` or `rank_by`, a
        saliency of rank < 2, or a `patch_size` that does not divide the positions
        (`check_patch_size`).
    """
    fraction = check_open_fraction(fraction, "fraction")
    check_choice(reduce_channels, CHANNEL_REDUCTIONS, "reduce_channels")
    check_choice(rank_by, RANKINGS, "rank_by")
    patch_size = check_int(patch_size, "patch_size", 1)
    saliency = tf.convert_to_tensor(saliency)
    rank = _static_rank(saliency, "saliency")
    positions = len(_position_axes(rank))
    if patch_size > 1:
        check_patch_size(patch_size, saliency.shape[1 : 1 + positions])

    score = tf.cast(saliency, tf.float32)
    if rank_by == "abs":
        score = tf.abs(score)
    reduced = reduce_channels is not None and rank >= 3
    if reduced:
        reduce = tf.reduce_mean if reduce_channels == "mean" else tf.reduce_max
        score = reduce(score, axis=-1)
    if patch_size > 1:
        score = _patch_sums(score, patch_size, positions)

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
    if patch_size > 1:
        mask = _repeat_patches(mask, patch_size, positions)
    if reduced:
        mask = tf.broadcast_to(mask[..., None], tf.shape(saliency))
    return mask


def _patch_sums(score: tf.Tensor, size: int, positions: int) -> tf.Tensor:
    """(B, d1, ..., dm, [C]) -> (B, d1/size, ..., dm/size, [C]): sums over size^m blocks."""
    dims = score.shape[1 : 1 + positions]
    split = [tf.shape(score)[:1]]
    for d in dims:
        split.append([d // size, size])
    split.append(tf.shape(score)[1 + positions :])  # the channels, when not reduced
    blocks = tf.reshape(score, tf.concat(split, axis=0))
    return tf.reduce_sum(blocks, axis=[2 + 2 * i for i in range(positions)])


def _repeat_patches(mask: tf.Tensor, size: int, positions: int) -> tf.Tensor:
    """(B, n1, ..., nm, [C]) -> (B, n1·size, ..., nm·size, [C]): each unit over its patch."""
    shape = tf.shape(mask)
    expanded, tiled, full = mask, [shape[:1]], [shape[:1]]
    for i in range(positions):
        expanded = tf.expand_dims(expanded, 2 + 2 * i)
        tiled.append([shape[1 + i], size])
        full.append([shape[1 + i] * size])
    tiled.append(shape[1 + positions :])
    full.append(shape[1 + positions :])
    expanded = tf.broadcast_to(expanded, tf.concat(tiled, axis=0))
    return tf.reshape(expanded, tf.concat(full, axis=0))


def noise_distribution(fill: str | FillFn) -> str | None:
    """The random draw a fill takes as `noise`: "uniform" (U[0, 1), the random fill),
    "normal" (N(0, 1), the imputation's noise), or None (a deterministic fill)."""
    if callable(fill):
        return None
    return {"random": "uniform", "impute": "normal"}.get(check_choice(fill, FILLS, "fill"))


def fill_values(
    x: tf.Tensor,
    fill: str | FillFn = "random",
    seed: tf.Tensor | None = None,
    noise: tf.Tensor | None = None,
    mask: tf.Tensor | None = None,
    *,
    blur_sigma: float = DEFAULT_BLUR_SIGMA,
    impute_noise: float = DEFAULT_IMPUTE_NOISE,
) -> tf.Tensor:
    """Values that replace the masked features of `x`, broadcastable to `x`.

    With lo[b, c] = min_p x[b, p, c] and hi[b, c] = max_p x[b, p, c] (per sample and channel):

        random:  lo + u · (hi − lo),  u ~ U[0, 1) per feature   (original SGT fill)
        zero:    0
        mean:    mean_p x[b, p, c]
        blur:    clip(G_σ * x, lo, hi), the image blurred by a Gaussian of σ = `blur_sigma`
                 pixels (`blur`; RISE's deletion baseline, Petsiuk et al. 2018)
        impute:  clip(v + impute_noise · (hi − lo) · ε, lo, hi), ε ~ N(0, 1) per feature, v
                 ROAD's linear imputation of the masked features from the others (`impute`;
                 Rong et al. 2022)
        callable fill(x, mask) -> values

    Every fill but zero and mean (and a callable's) therefore stays inside each sample's own
    range per channel. "blur" and "impute" take images (B, H, W, C) and compute in float32
    whatever the dtype of x (the result is cast back).

    Args:
      x: input batch, (B, ..., C) or (B, F).
      fill: "random", "zero", "mean", "blur", "impute" or a callable `fill(x, mask)`.
      seed: shape [2] integer seed of the stateless RNG for the random fill and the
        imputation's noise.
      noise: the random draw of the fill, shaped like `x` (`noise_distribution(fill)`: U[0, 1)
        for "random", N(0, 1) for "impute"); takes precedence over `seed` (the SGT trainer
        draws it so that replicas split one global draw).
      mask: the boolean mask; "impute" needs it (the masked features are its unknowns), a
        callable `fill` receives it.
      blur_sigma: σ of the blur in pixels, in (0, 1000].
      impute_noise: standard deviation of the imputation's noise as a share of the sample's
        range per channel, in [0, 1] (ROAD: 0.01).

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
    if fill == "blur":
        blurred = blur(x, blur_sigma)
        values = tf.cast(x, tf.float32)
        lo = tf.reduce_min(values, axis=axes, keepdims=True)
        hi = tf.reduce_max(values, axis=axes, keepdims=True)
        return tf.cast(tf.clip_by_value(tf.cast(blurred, tf.float32), lo, hi), x.dtype)
    if fill == "impute":
        if mask is None:
            raise ValueError("fill='impute' needs the `mask`: its features are the unknowns.")
        return impute(x, mask, impute_noise, noise=noise, seed=seed)
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
    *,
    blur_sigma: float = DEFAULT_BLUR_SIGMA,
    impute_noise: float = DEFAULT_IMPUTE_NOISE,
) -> tf.Tensor:
    """The masked input x̃ = M_k(S, x): x̃ = where(mask, fill_values(x), x).

    Args:
      x: input batch, (B, ..., C) or (B, F); (B, H, W, C) for "blur" and "impute".
      mask: boolean tensor shaped like `x` (from `saliency_mask`), True where x is replaced.
      fill: "random" (default), "zero", "mean", "blur", "impute" or a callable
        `fill(x, mask)`; see `fill_values`.
      seed: shape [2] integer seed of the stateless RNG for the random fill and the
        imputation's noise; None draws from TensorFlow's global RNG.
      noise: the fill's random draw shaped like `x` (overrides `seed`; see `fill_values`).
      blur_sigma: σ of the "blur" fill in pixels.
      impute_noise: noise of the "impute" fill, a share of the sample's range per channel.

    Returns:
      x̃, same shape and dtype as `x`.
    """
    x = tf.convert_to_tensor(x)
    mask = tf.convert_to_tensor(mask, tf.bool)
    values = fill_values(
        x, fill, seed=seed, noise=noise, mask=mask, blur_sigma=blur_sigma,
        impute_noise=impute_noise,
    )  # fmt: skip
    return tf.where(mask, tf.broadcast_to(values, tf.shape(x)), x)


# ----------------------------------------------------------------------------- image fills
def _image_size(x: tf.Tensor, what: str) -> tuple[int, int]:
    """(height, width) of a (B, H, W, C) batch with static H and W, else a ValueError."""
    if x.shape.rank != 4 or x.shape[1] is None or x.shape[2] is None:
        raise ValueError(
            f"{what} takes images (batch, height, width, channels) of known height and width. "
            f"Received shape: {x.shape}"
        )
    return int(x.shape[1]), int(x.shape[2])


def blur_matrix(size: int, sigma: float) -> np.ndarray:
    """The (size, size) float64 matrix G of a 1-D Gaussian blur with mirrored borders.

    (G v)[i] = Σ_{t=-r..r} g(t) · v[m(i + t)], with g(t) = exp(−t² / 2σ²) / Σ_s exp(−s² / 2σ²),
    r = ⌊4σ + 0.5⌋, and m() mirroring an index about the borders (… b a | a b c d | d c …,
    repeatedly for r > size). That is `scipy.ndimage.gaussian_filter1d(v, sigma,
    mode="reflect", truncate=4.0)`, the blur of RISE's deletion baseline, as a matrix
    (tests/test_masking.py checks the equality).
    """
    size = check_int(size, "size", 1)
    sigma = check_number(sigma, "blur_sigma", 0.0, MAX_BLUR_SIGMA, low_open=True)
    radius = int(4.0 * sigma + 0.5)
    offsets = np.arange(-radius, radius + 1)
    kernel = np.exp(-0.5 / sigma**2 * offsets.astype(np.float64) ** 2)
    kernel /= kernel.sum()
    period = 2 * size  # mirroring repeats with this period: fold the kernel onto it first
    folded = np.bincount(offsets % period, weights=kernel, minlength=period)
    rows = np.arange(size)[:, None]
    columns = (rows + np.arange(period)[None, :]) % period
    columns = np.where(columns >= size, period - 1 - columns, columns)
    matrix = np.zeros((size, size))
    np.add.at(matrix, (np.broadcast_to(rows, columns.shape), columns), folded[None, :])
    return matrix


def blur(x: tf.Tensor, sigma: float = DEFAULT_BLUR_SIGMA) -> tf.Tensor:
    """Images (B, H, W, C) blurred by a Gaussian of σ = `sigma` pixels over height and width,
    in float32: Gₕ · x · G_wᵀ per sample and channel (`blur_matrix`, two matrix products)."""
    x = tf.convert_to_tensor(x)
    height, width = _image_size(x, "The blur")
    rows = tf.constant(blur_matrix(height, sigma), tf.float32)
    columns = tf.constant(blur_matrix(width, sigma), tf.float32)
    blurred = tf.einsum("ij,bjwc->biwc", rows, tf.cast(x, tf.float32))
    return tf.einsum("kw,biwc->bikc", columns, blurred)


def impute(
    x: tf.Tensor,
    removed: tf.Tensor,
    noise_scale: float = DEFAULT_IMPUTE_NOISE,
    *,
    noise: tf.Tensor | None = None,
    seed: tf.Tensor | None = None,
) -> tf.Tensor:
    """ROAD's noisy linear imputation (Rong et al., ICML 2022) of the removed features.

    For every sample and channel of images x (B, H, W, C), each removed pixel i takes the
    weighted mean of its neighbours N(i) inside the image (`NEIGHBOUR_WEIGHTS`: 1/6 for the
    four direct ones, 1/12 for the four diagonal ones, renormalised at the border), removed
    neighbours included. The removed values v solve the sparse linear system

        d_i v_i − Σ_{j∈N(i), removed} w_ij v_j = Σ_{j∈N(i), kept} w_ij x_j,   d_i = Σ_{j∈N(i)} w_ij

    (symmetric positive definite when the image keeps a pixel). It is solved in the graph by
    conjugate gradients over all samples and channels at once (one XLA-compiled loop, started
    from the mean of the kept pixels): each (sample, channel) stops at the first iteration
    where every equation holds to `IMPUTE_TOLERANCE` times its value range hi − lo (at most
    4 (H + W) iterations); the tests measure the error against an exact sparse solve. Then

        x̃_i = clip(v_i + noise_scale · (hi − lo) · ε_i, lo, hi),   ε_i ~ N(0, 1)

    per removed feature, lo and hi the sample's minimum and maximum per channel. A channel
    with no kept pixel takes its mean (plus the noise). Kept features are returned unchanged.

    Args:
      x: images (B, H, W, C), H and W known.
      removed: boolean, shaped like x: True where a feature is imputed (each channel its own
        system; with one mask per pixel all channels share it, as in ROAD).
      noise_scale: standard deviation of the noise as a share of hi − lo, in [0, 1].
      noise: the N(0, 1) draw ε shaped like x; else drawn with `seed` (stateless) or from
        TensorFlow's global RNG.
      seed: shape [2] integer seed of the stateless RNG of the noise.

    Returns:
      The imputed images, shaped like x, in x's dtype (computed in float32).
    """
    x = tf.convert_to_tensor(x)
    _image_size(x, "The imputation")
    noise_scale = check_number(noise_scale, "impute_noise", 0.0, 1.0)
    removed = tf.convert_to_tensor(removed, tf.bool)
    values = tf.cast(x, tf.float32)
    solved, _ = _linear_imputation(values, tf.cast(removed, tf.float32))
    lo = tf.reduce_min(values, axis=[1, 2], keepdims=True)
    hi = tf.reduce_max(values, axis=[1, 2], keepdims=True)
    if noise_scale > 0:
        if noise is None:
            shape = tf.shape(values)
            noise = (
                tf.random.normal(shape)
                if seed is None
                else tf.random.stateless_normal(shape, seed=seed)
            )
        solved += noise_scale * (hi - lo) * tf.cast(noise, tf.float32)
    imputed = tf.where(removed, tf.clip_by_value(solved, lo, hi), values)
    return tf.cast(imputed, x.dtype)


def _neighbour_sum(u: tf.Tensor) -> tf.Tensor:
    """Σ_{(dy, dx)} w · u[b, y + dy, x + dx, c] over `NEIGHBOUR_WEIGHTS`, zero outside the
    image; (B, H, W, C) in, (B, H, W, C) out (eight shifted slices, fused by XLA)."""
    height, width = u.shape[1], u.shape[2]
    padded = tf.pad(u, [[0, 0], [1, 1], [1, 1], [0, 0]])
    total = tf.zeros_like(u)
    for (dy, dx), weight in NEIGHBOUR_WEIGHTS.items():
        total += weight * padded[:, 1 + dy : 1 + dy + height, 1 + dx : 1 + dx + width, :]
    return total


@tf.function(jit_compile=True, autograph=False)
def _linear_imputation(values: tf.Tensor, removed: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
    """(the system of `impute` solved by conjugate gradients, the number of iterations run).

    values: float32 images (B, H, W, C); removed: float32, 1 where a feature is unknown.
    Conjugate gradients on A v = b with A v = removed ⊙ (d ⊙ v − N(v)) (N = `_neighbour_sum`,
    d = N(1)); the kept features are never changed. A (sample, channel) stops (α = 0) once
    max |b − A v| ≤ IMPUTE_TOLERANCE · (hi − lo), so its result does not depend on the other
    images of the batch.
    """
    height, width = int(values.shape[1]), int(values.shape[2])
    axes = [1, 2]
    kept = 1.0 - removed
    degree = _neighbour_sum(tf.ones_like(values))
    kept_count = tf.reduce_sum(kept, axes, keepdims=True)
    has_kept = tf.cast(kept_count > 0, tf.float32)
    kept_mean = tf.reduce_sum(values * kept, axes, keepdims=True) / tf.maximum(kept_count, 1.0)
    start = has_kept * kept_mean + (1.0 - has_kept) * tf.reduce_mean(values, axes, keepdims=True)
    value_range = tf.reduce_max(values, axes, keepdims=True) - tf.reduce_min(
        values, axes, keepdims=True
    )
    threshold = IMPUTE_TOLERANCE * value_range

    def unconverged(r):
        return (tf.reduce_max(tf.abs(r), axes, keepdims=True) > threshold) & (value_range > 0)

    v = values * kept + removed * start
    r = has_kept * removed * (_neighbour_sum(v) - degree * v)  # b − A v
    rr = tf.reduce_sum(r * r, axes, keepdims=True)

    def step(i, v, r, p, rr, active):
        ap = removed * (degree * p - _neighbour_sum(p))
        alpha = tf.where(active, tf.math.divide_no_nan(rr, tf.reduce_sum(p * ap, axes, True)), 0.0)
        v = v + alpha * p
        r = r - alpha * ap
        rr_next = tf.reduce_sum(r * r, axes, keepdims=True)
        p = tf.where(active, r + tf.math.divide_no_nan(rr_next, rr) * p, p)
        rr = tf.where(active, rr_next, rr)
        return i + 1, v, r, p, rr, active & unconverged(r)

    def running(i, v, r, p, rr, active):
        return tf.reduce_any(active)

    iterations, v, *_ = tf.while_loop(
        running, step, (tf.constant(0), v, r, r, rr, unconverged(r)),
        maximum_iterations=4 * (height + width),
    )  # fmt: skip
    return v, iterations
