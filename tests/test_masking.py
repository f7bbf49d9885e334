"""Tests of the SGT masking rule (`sgt_tfmot.masking`): masks against a brute-force numpy
ranking (pixels and patches), fills against numpy/scipy (the blur against
`scipy.ndimage.gaussian_filter`, the imputation against an exact sparse solve)."""

import math

import numpy as np
import pytest
from scipy import ndimage, sparse
from scipy.sparse import linalg as sparse_linalg

from sgt_tfmot import masking
from sgt_tfmot.keras import keras, tf
from sgt_tfmot.masking import fill_values, mask_input, masked_count, saliency_mask
from tests.helpers.masking import numpy_patch_mask


def numpy_mask(saliency, fraction, reduce_channels="mean", rank_by="abs"):
    """Brute force: score per position, stable argsort per sample, first k = floor(f·n)."""
    score = np.abs(saliency) if rank_by == "abs" else saliency.copy()
    reduced = reduce_channels is not None and saliency.ndim >= 3
    if reduced:
        score = score.mean(axis=-1) if reduce_channels == "mean" else score.max(axis=-1)
    flat = score.reshape(len(score), -1)
    k = math.floor(round(fraction * flat.shape[1], 9))
    mask = np.zeros(flat.shape, bool)
    for b, row in enumerate(flat):
        mask[b, np.argsort(row, kind="stable")[:k]] = True
    mask = mask.reshape(score.shape)
    if reduced:
        mask = np.broadcast_to(mask[..., None], saliency.shape)
    return mask


@pytest.mark.parametrize("reduce_channels", ["mean", "max", None])
@pytest.mark.parametrize("rank_by", ["abs", "signed"])
@pytest.mark.parametrize("fraction", [0.5, 0.3, 0.9])
def test_mask_is_brute_force_ranking_with_ties(reduce_channels, rank_by, fraction):
    rng = np.random.default_rng(0)
    # Small integers: many exact ties (also after the channel mean: sums are exact, then one
    # division by 3 rounded the same way in numpy and TF), so the tie-break is exercised.
    saliency = rng.integers(-3, 4, size=(5, 6, 7, 3)).astype(np.float32)
    got = saliency_mask(saliency, fraction, reduce_channels, rank_by=rank_by).numpy()
    np.testing.assert_array_equal(got, numpy_mask(saliency, fraction, reduce_channels, rank_by))


@pytest.mark.parametrize("reduce_channels", ["mean", "max", None])
def test_mask_is_brute_force_ranking_continuous(reduce_channels):
    saliency = np.random.default_rng(1).normal(size=(4, 5, 5, 2)).astype(np.float32)
    got = saliency_mask(saliency, 0.5, reduce_channels).numpy()
    np.testing.assert_array_equal(got, numpy_mask(saliency, 0.5, reduce_channels))


def test_ties_go_to_lowest_index():
    # All positions equal: the k masked ones are the first k in row-major order.
    mask = saliency_mask(tf.ones((2, 3, 3, 2)), 0.5).numpy()
    expected = np.zeros((2, 9), bool)
    expected[:, :4] = True  # floor(0.5 * 9) = 4
    np.testing.assert_array_equal(mask[..., 0].reshape(2, 9), expected)
    np.testing.assert_array_equal(mask[..., 1], mask[..., 0])


def test_docstring_example():
    s = tf.constant([[[[0.3], [-0.1]], [[0.0], [2.0]]]])
    # |s| = 0.3, 0.1, 0.0, 2.0 -> the two lowest are positions 2 (0.0) and 1 (0.1).
    assert tf.reshape(saliency_mask(s, 0.5), [-1]).numpy().tolist() == [False, True, True, False]
    # signed: -0.1 < 0.0 < 0.3 < 2.0 -> the same two positions.
    assert tf.reshape(saliency_mask(s, 0.5, rank_by="signed"), [-1]).numpy().tolist() == [
        False,
        True,
        True,
        False,
    ]


@pytest.mark.parametrize(
    "shape, fraction, reduce_channels, n",
    [
        ((3, 7, 5, 3), 0.5, "mean", 35),  # 35 pixels -> 17
        ((3, 7, 5, 3), 0.5, None, 105),  # 105 features -> 52
        ((3, 11, 2), 0.3, "max", 11),  # 1-D signal with 2 channels -> 3
        ((3, 10), 0.29, "mean", 10),  # (B, F): one channel, 10 positions -> 2
        ((3, 100), 0.29, "mean", 100),  # decimal product: 29, not 28
        ((2, 1, 1, 3), 0.5, "mean", 1),  # k = 0: nothing masked
    ],
)
def test_exact_count_per_sample(shape, fraction, reduce_channels, n):
    saliency = np.random.default_rng(2).normal(size=shape).astype(np.float32)
    mask = saliency_mask(saliency, fraction, reduce_channels).numpy()
    k = math.floor(round(fraction * n, 9))
    assert k == masked_count(fraction, n)
    channels = shape[-1] if len(shape) >= 3 and reduce_channels is not None else 1
    np.testing.assert_array_equal(mask.reshape(shape[0], -1).sum(axis=1), k * channels)


def test_masked_count_values():
    assert masked_count(0.5, 1024) == 512
    assert masked_count(0.29, 100) == 29  # 0.29 * 100 = 28.999999999999996 in binary floats
    assert masked_count(0.5, 7) == 3
    assert masked_count(0.01, 50) == 0


def test_mask_in_tf_function_with_unknown_spatial_shape():
    fn = tf.function(
        lambda s: saliency_mask(s, 0.5, None),
        input_signature=[tf.TensorSpec([None, None, None, 2])],
        autograph=False,
    )
    saliency = np.random.default_rng(3).normal(size=(2, 3, 5, 2)).astype(np.float32)
    np.testing.assert_array_equal(fn(saliency).numpy(), numpy_mask(saliency, 0.5, None))


@pytest.mark.parametrize("bad", [0, 1, 1.5, -0.1, float("nan"), "half", None, True])
def test_bad_fraction(bad):
    with pytest.raises(ValueError, match=r"`fraction` must be a finite number in \(0, 1\)"):
        saliency_mask(tf.ones((1, 4)), bad)


def test_bad_choices():
    with pytest.raises(
        ValueError,
        match=r"`reduce_channels` must be one of 'mean', 'max', None\. "
        r"Received: reduce_channels='sum'",
    ):
        saliency_mask(tf.ones((1, 2, 2, 1)), 0.5, reduce_channels="sum")
    with pytest.raises(
        ValueError, match=r"`rank_by` must be one of 'abs', 'signed'\. Received: rank_by='grad'"
    ):
        saliency_mask(tf.ones((1, 2, 2, 1)), 0.5, rank_by="grad")
    with pytest.raises(
        ValueError, match=r"`fill` must be one of 'random', 'zero', 'mean', 'blur', 'impute'"
    ):
        mask_input(tf.ones((1, 4)), tf.ones((1, 4), bool), fill="noise")
    with pytest.raises(ValueError, match=r"`saliency` must have a known rank >= 2"):
        saliency_mask(tf.ones((4,)), 0.5)


def _batch(seed=4):
    rng = np.random.default_rng(seed)
    # Different ranges per sample and channel, so "within the sample's range" can fail.
    scale = rng.uniform(0.5, 5.0, size=(3, 1, 1, 2))
    shift = rng.uniform(-3.0, 3.0, size=(3, 1, 1, 2))
    x = (rng.random((3, 6, 6, 2)) * scale + shift).astype(np.float32)
    mask = saliency_mask(rng.normal(size=x.shape).astype(np.float32), 0.5).numpy()
    return x, mask


def test_random_fill_within_each_sample_channel_range():
    x, mask = _batch()
    x_masked = mask_input(x, mask, "random", seed=tf.constant([1, 2])).numpy()
    np.testing.assert_array_equal(x_masked[~mask], x[~mask])  # unmasked features untouched
    lo = x.min(axis=(1, 2), keepdims=True)
    hi = x.max(axis=(1, 2), keepdims=True)
    filled = np.where(mask, x_masked, np.nan)
    assert np.all((filled >= lo) | ~mask) and np.all((filled <= hi) | ~mask)
    # The fill really is new random values, not a copy of x.
    assert np.mean(x_masked[mask] != x[mask]) > 0.9
    # Stateless RNG: the same seed gives the same fill, another seed another fill.
    again = mask_input(x, mask, "random", seed=tf.constant([1, 2])).numpy()
    other = mask_input(x, mask, "random", seed=tf.constant([1, 3])).numpy()
    np.testing.assert_array_equal(again, x_masked)
    assert np.any(other != x_masked)


def test_random_fill_is_affine_in_given_noise():
    x, mask = _batch(5)
    noise = np.random.default_rng(6).random(x.shape).astype(np.float32)
    lo = x.min(axis=(1, 2), keepdims=True)
    hi = x.max(axis=(1, 2), keepdims=True)
    expected = lo + noise * (hi - lo)
    np.testing.assert_allclose(fill_values(x, "random", noise=noise).numpy(), expected, rtol=1e-6)


def test_zero_mean_and_callable_fills():
    x, mask = _batch(7)
    np.testing.assert_array_equal(mask_input(x, mask, "zero").numpy(), np.where(mask, 0.0, x))
    mean = x.mean(axis=(1, 2), keepdims=True)
    np.testing.assert_allclose(
        mask_input(x, mask, "mean").numpy(), np.where(mask, mean, x), rtol=1e-6
    )
    seen = {}

    def fill(x_in, mask_in):
        seen["mask"] = mask_in.numpy()
        return -7.0 * tf.ones_like(x_in)

    np.testing.assert_array_equal(mask_input(x, mask, fill).numpy(), np.where(mask, -7.0, x))
    np.testing.assert_array_equal(seen["mask"], mask)


def test_rank2_inputs_use_per_sample_range():
    x = np.array([[0.0, 10.0, 5.0, 2.0], [-1.0, -2.0, -3.0, -4.0]], np.float32)
    mask = np.array([[True, False, True, False], [False, True, True, False]])
    x_masked = mask_input(x, mask, "random", seed=tf.constant([0, 0])).numpy()
    assert np.all((x_masked[0] >= 0.0) & (x_masked[0] <= 10.0))
    assert np.all((x_masked[1] >= -4.0) & (x_masked[1] <= -1.0))
    np.testing.assert_allclose(
        mask_input(x, mask, "mean").numpy(),
        [[4.25, 10.0, 4.25, 2.0], [-1.0, -2.5, -2.5, -4.0]],  # means 17/4 and -10/4
    )


def test_module_docstring_example_runs():
    import doctest

    from sgt_tfmot import masking

    assert doctest.testmod(masking).failed == 0


# ----------------------------------------------------------------------------- patches
@pytest.mark.parametrize("reduce_channels", ["max", None])
@pytest.mark.parametrize("rank_by", ["abs", "signed"])
@pytest.mark.parametrize(
    "shape, patch, fraction",
    [((3, 8, 12, 3), 2, 0.5), ((3, 8, 12, 3), 4, 0.3), ((2, 6, 6, 2), 3, 0.75),
     ((2, 9, 9, 1), 9, 0.5), ((3, 12, 2), 4, 0.5), ((3, 12), 3, 0.5)],
)  # fmt: skip
def test_patch_mask_is_brute_force_ranking_with_ties(shape, patch, fraction, reduce_channels,
                                                     rank_by):  # fmt: skip
    # Small integers: the patch sums are exact in float32 and tie often (tie-break exercised).
    saliency = np.random.default_rng(10).integers(-2, 3, size=shape).astype(np.float32)
    got = saliency_mask(saliency, fraction, reduce_channels, rank_by, patch_size=patch).numpy()
    expected = numpy_patch_mask(saliency, fraction, patch, reduce_channels, rank_by)
    np.testing.assert_array_equal(got, expected)


@pytest.mark.parametrize("rank_by", ["abs", "signed"])
@pytest.mark.parametrize("patch", [1, 2, 4])
def test_patch_mask_channel_mean_continuous(patch, rank_by):
    # The channel mean is not exact in floats: continuous values, so no sum ties.
    saliency = np.random.default_rng(11).normal(size=(4, 8, 8, 3)).astype(np.float32)
    got = saliency_mask(saliency, 0.5, "mean", rank_by, patch_size=patch).numpy()
    np.testing.assert_array_equal(got, numpy_patch_mask(saliency, 0.5, patch, "mean", rank_by))
    if patch == 1:
        np.testing.assert_array_equal(got, numpy_mask(saliency, 0.5, "mean", rank_by))


def test_patch_mask_counts_and_whole_patches():
    saliency = np.random.default_rng(12).normal(size=(5, 32, 32, 3)).astype(np.float32)
    mask = saliency_mask(saliency, 0.5, patch_size=4).numpy()
    pixels = mask[..., 0]
    # floor(0.5 · 64 patches) = 32 patches of 16 pixels, on all three channels.
    np.testing.assert_array_equal(pixels.reshape(5, -1).sum(axis=1), 32 * 16)
    blocks = pixels.reshape(5, 8, 4, 8, 4)
    assert np.all(blocks.all(axis=(2, 4)) == blocks.any(axis=(2, 4)))  # whole patches only
    np.testing.assert_array_equal(mask, np.broadcast_to(pixels[..., None], mask.shape))


def test_patch_mask_in_tf_function_with_unknown_batch():
    fn = tf.function(
        lambda s: saliency_mask(s, 0.5, "max", patch_size=2),
        input_signature=[tf.TensorSpec([None, 4, 6, 2])],
        autograph=False,
    )
    saliency = np.random.default_rng(13).normal(size=(3, 4, 6, 2)).astype(np.float32)
    np.testing.assert_array_equal(fn(saliency).numpy(), numpy_patch_mask(saliency, 0.5, 2, "max"))


@pytest.mark.parametrize(
    "shape, patch, message",
    [
        ((1, 28, 28, 1), 5, r"`patch_size` must divide the input's size 28x28: one of 1, 2, 4, "
                            r"7, 14, 28\. Received: patch_size=5"),
        ((1, 32, 24, 3), 16, r"size 32x24: one of 1, 2, 4, 8\. Received: patch_size=16"),
        ((1, 8, 8, 1), 0, r"`patch_size` must be an integer >= 1\. Received: patch_size=0"),
        ((1, 8, 8, 1), 2.0, r"`patch_size` must be an integer >= 1\. Received: patch_size=2\.0"),
        ((1, 10), 4, r"must divide the input's size 10: one of 1, 2, 5, 10\."),
    ],
)  # fmt: skip
def test_bad_patch_size_is_refused_not_ragged(shape, patch, message):
    with pytest.raises(ValueError, match=message):
        saliency_mask(tf.ones(shape), 0.5, patch_size=patch)


def test_patch_size_needs_known_positions():
    fn = tf.function(lambda s: saliency_mask(s, 0.5, patch_size=2), autograph=False)
    with pytest.raises(ValueError, match=r"`patch_size` > 1 needs inputs of known size"):
        fn.get_concrete_function(tf.TensorSpec([None, None, None, 3]))
    assert masking.check_patch_size(1, (None, None)) == 1


# ----------------------------------------------------------------------------- blur
@pytest.mark.parametrize("size, sigma", [(7, 0.5), (8, 2.0), (5, 3.0), (32, 2.0), (3, 10.0)])
def test_blur_matrix_is_scipy_gaussian_filter(size, sigma):
    # (3, 10.0): a radius of 40 pixels mirrors many times over a 3-pixel signal.
    v = np.random.default_rng(14).normal(size=(size, 4))
    expected = ndimage.gaussian_filter1d(v, sigma, axis=0, mode="reflect", truncate=4.0)
    np.testing.assert_allclose(masking.blur_matrix(size, sigma) @ v, expected, atol=1e-12)


IMAGE_DTYPES = ["float32", "bfloat16"]


def rounded(x, dtype):
    """x as the float32 values of `dtype` (what a bfloat16 batch holds)."""
    return tf.cast(tf.cast(x, dtype), tf.float32).numpy()


@pytest.mark.parametrize("dtype", IMAGE_DTYPES)
def test_blur_is_scipy_gaussian_filter_on_images(dtype):
    x = np.random.default_rng(15).uniform(0, 255, (3, 9, 7, 2)).astype(np.float32)
    got = masking.blur(tf.cast(x, dtype), 1.5)
    assert got.dtype == tf.float32  # computed in float32 whatever the input dtype
    expected = ndimage.gaussian_filter(
        rounded(x, dtype).astype(np.float64), (0, 1.5, 1.5, 0), mode="reflect", truncate=4.0
    )
    np.testing.assert_allclose(got.numpy(), expected, atol=1e-4 * 255)  # float32 products


@pytest.mark.parametrize("dtype", IMAGE_DTYPES)
def test_blur_fill_stays_in_each_sample_channel_range(dtype):
    x, mask = _batch(16)
    x = np.repeat(x, 2, axis=1)  # (3, 12, 6, 2)
    mask = np.repeat(mask, 2, axis=1)
    got = mask_input(tf.cast(x, dtype), mask, "blur", blur_sigma=3.0)
    assert got.dtype == dtype
    got, x = tf.cast(got, tf.float32).numpy(), rounded(x, dtype)
    np.testing.assert_array_equal(got[~mask], x[~mask])
    lo, hi = x.min(axis=(1, 2), keepdims=True), x.max(axis=(1, 2), keepdims=True)
    assert np.all(got >= lo) and np.all(got <= hi)
    blurred = ndimage.gaussian_filter(x.astype(np.float64), (0, 3, 3, 0), mode="reflect")
    expected = np.where(mask, np.clip(blurred, lo, hi), x)
    tolerance = 1e-5 if dtype == "float32" else 1e-2  # bfloat16 has 8 bits of mantissa
    np.testing.assert_allclose(got, expected, rtol=tolerance, atol=tolerance)


# ----------------------------------------------------------------------------- imputation
def exact_imputation(image, removed):
    """ROAD's system for one (H, W) channel, built pixel by pixel and solved exactly."""
    h, w = image.shape
    unknowns = np.argwhere(removed)
    index = -np.ones((h, w), int)
    index[removed] = np.arange(len(unknowns))
    matrix = sparse.lil_matrix((len(unknowns), len(unknowns)))
    rhs = np.zeros(len(unknowns))
    for n, (i, j) in enumerate(unknowns):
        for (dy, dx), weight in masking.NEIGHBOUR_WEIGHTS.items():
            y, x = i + dy, j + dx
            if 0 <= y < h and 0 <= x < w:
                matrix[n, n] += weight
                if removed[y, x]:
                    matrix[n, index[y, x]] -= weight
                else:
                    rhs[n] += weight * image[y, x]
    solved = image.astype(np.float64)
    if len(unknowns):
        solved[removed] = sparse_linalg.spsolve(matrix.tocsc(), rhs)
    return solved


IMAGES = (4, 16, 16, 2)  # one shape for the imputation tests: XLA compiles once per shape


def smooth_images(shape, seed):
    """Images with structure (cumulative sums of noise), scaled to 0..255."""
    x = np.cumsum(np.cumsum(np.random.default_rng(seed).normal(size=shape), 1), 2)
    lo, hi = x.min(axis=(1, 2), keepdims=True), x.max(axis=(1, 2), keepdims=True)
    return (255 * (x - lo) / (hi - lo)).astype(np.float32)


def imputation_masks():
    """Masks of IMAGES: the easy, the patchy and the hard cases."""
    rng = np.random.default_rng(17)
    saliency = rng.normal(size=IMAGES).astype(np.float32)
    yield "pixels 0.5", saliency_mask(saliency, 0.5).numpy()
    yield "patches 4, 0.5", saliency_mask(saliency, 0.5, patch_size=4).numpy()
    yield "patches 4, 0.9", saliency_mask(saliency, 0.9, patch_size=4).numpy()
    yield "per channel", saliency_mask(saliency, 0.7, None, patch_size=2).numpy()
    hard = np.ones(IMAGES, bool)
    hard[0, 0, 0] = False  # one kept pixel: the whole image takes its value
    hard[1, :, 0] = False  # one kept column
    hard[2, ::5, ::5] = False  # a sparse grid
    hard[3, 3:13, 3:13] = False  # a kept square inside a removed frame
    hard[3, :, :, 1] = rng.random((16, 16)) < 0.5  # another mask for the second channel
    yield "hard", hard


@pytest.mark.parametrize("dtype", IMAGE_DTYPES)
def test_imputation_is_the_exact_sparse_solve(dtype):
    """The in-graph conjugate gradients against scipy's spsolve of ROAD's system: within
    1e-3 of each channel's value range (the stopping rule asks every equation to hold to
    1e-5 of it; ROAD's own noise is 1e-2), before the iteration cap."""
    x = smooth_images(IMAGES, seed=18)
    values = rounded(x, dtype)
    for name, removed in imputation_masks():
        got = masking.impute(tf.cast(x, dtype), removed, noise_scale=0.0)
        assert got.dtype == dtype
        got = tf.cast(got, tf.float32).numpy()
        _, iterations = masking._linear_imputation(values, removed.astype(np.float32))
        assert int(iterations) < 4 * (16 + 16), name
        for b in range(4):
            for c in range(2):
                image, hole = values[b, :, :, c], removed[b, :, :, c]
                expected = exact_imputation(image, hole)
                if dtype == "bfloat16":  # the result is rounded to bfloat16 once
                    expected[hole] = rounded(expected[hole], dtype)
                span = float(image.max() - image.min())
                tolerance = 1e-3 if dtype == "float32" else 1e-3 + 2**-8
                error = np.abs(got[b, :, :, c] - expected).max() / span
                assert error <= tolerance, (name, b, c, error)
                np.testing.assert_array_equal(got[b][~removed[b]], values[b][~removed[b]])


def test_imputation_solves_each_image_on_its_own():
    """A (sample, channel) stops at its own tolerance: its values do not depend on the other
    images of the batch (a replica's share gives the same imputation as the whole batch)."""
    x = smooth_images(IMAGES, seed=19)
    removed = saliency_mask(np.random.default_rng(20).normal(size=x.shape), 0.6, patch_size=2)
    whole = masking.impute(x, removed, 0.0).numpy()
    for part in (slice(0, 2), slice(2, 4)):
        alone = masking.impute(x[part], removed[part], 0.0).numpy()
        np.testing.assert_array_equal(alone, whole[part])


def test_imputation_noise_range_and_degenerate_channels():
    x = smooth_images(IMAGES, seed=21)
    x[1, :, :, 1] = 7.0  # a constant channel: nothing to impute but the constant
    removed = np.zeros(x.shape, bool)
    removed[:, 4:12, 4:12] = True
    removed[2, :, :, 0] = True  # a channel with no kept pixel: its mean
    noise = np.random.default_rng(22).normal(size=x.shape).astype(np.float32)
    got = masking.impute(x, removed, 0.05, noise=noise).numpy()
    lo, hi = x.min(axis=(1, 2), keepdims=True), x.max(axis=(1, 2), keepdims=True)
    plain = masking.impute(x, removed, 0.0).numpy()
    expected = np.where(removed, np.clip(plain + 0.05 * (hi - lo) * noise, lo, hi), x)
    np.testing.assert_allclose(got, expected, rtol=1e-6, atol=1e-4)
    assert np.all(got >= lo) and np.all(got <= hi)
    np.testing.assert_array_equal(got[1, :, :, 1], 7.0)
    np.testing.assert_allclose(plain[2, :, :, 0], x[2, :, :, 0].mean(), rtol=1e-6)
    # The noise really is there (σ = 0.05 of the range; the clip cuts only the tails).
    assert np.abs(got - plain)[removed].mean() > 0.01 * 255


@pytest.mark.parametrize("dtype", IMAGE_DTYPES)
def test_impute_fill_stays_in_range_and_follows_the_seed(dtype):
    x = smooth_images(IMAGES, seed=23)
    mask = saliency_mask(np.random.default_rng(24).normal(size=x.shape), 0.5, patch_size=4)
    seed = tf.constant([3, 4])
    got = mask_input(tf.cast(x, dtype), mask, "impute", seed=seed)
    assert got.dtype == dtype
    got, values = tf.cast(got, tf.float32).numpy(), rounded(x, dtype)
    mask = mask.numpy()
    np.testing.assert_array_equal(got[~mask], values[~mask])
    lo, hi = values.min(axis=(1, 2), keepdims=True), values.max(axis=(1, 2), keepdims=True)
    assert np.all(got >= lo) and np.all(got <= hi)
    again = tf.cast(mask_input(tf.cast(x, dtype), mask, "impute", seed=seed), tf.float32)
    np.testing.assert_array_equal(again.numpy(), got)
    noise = tf.random.stateless_normal(x.shape, seed=seed)
    given = mask_input(tf.cast(x, dtype), mask, "impute", noise=noise)
    np.testing.assert_array_equal(tf.cast(given, tf.float32).numpy(), got)


def test_fills_under_the_mixed_bfloat16_policy_are_the_float32_ones():
    """The fills are plain TensorFlow ops on the batch: a Keras policy does not change them."""
    x = smooth_images(IMAGES, seed=25)
    mask = saliency_mask(np.random.default_rng(26).normal(size=x.shape), 0.5, patch_size=2)
    fills = ("blur", "impute")
    expected = {f: mask_input(x, mask, f, seed=tf.constant([0, 1])).numpy() for f in fills}
    try:
        keras.mixed_precision.set_global_policy("mixed_bfloat16")
        for fill, values in expected.items():
            got = mask_input(x, mask, fill, seed=tf.constant([0, 1])).numpy()
            np.testing.assert_array_equal(got, values)
    finally:
        keras.mixed_precision.set_global_policy("float32")


def test_noise_distributions_and_bad_fill_arguments():
    assert masking.noise_distribution("random") == "uniform"
    assert masking.noise_distribution("impute") == "normal"
    assert masking.noise_distribution("blur") is None and masking.noise_distribution(abs) is None
    images, mask = tf.ones((1, 4, 4, 1)), tf.ones((1, 4, 4, 1), bool)
    with pytest.raises(ValueError, match=r"`blur_sigma` must be a finite number in \(0, 1000\]"):
        mask_input(images, mask, "blur", blur_sigma=0.0)
    with pytest.raises(ValueError, match=r"`impute_noise` must be a finite number in \[0, 1\]"):
        mask_input(images, mask, "impute", impute_noise=-0.5)
    with pytest.raises(ValueError, match=r"fill='impute' needs the `mask`"):
        fill_values(images, "impute")
    with pytest.raises(ValueError, match=r"takes images \(batch, height, width, channels\)"):
        mask_input(tf.ones((2, 6)), tf.ones((2, 6), bool), "blur")
    with pytest.raises(ValueError, match=r"The imputation takes images .* Received shape"):
        mask_input(tf.ones((2, 6, 3)), tf.ones((2, 6, 3), bool), "impute")
