"""Tests of the SGT masking rule (`sgt_tfmot.saliency`) against a brute-force numpy ranking."""

import math

import numpy as np
import pytest

from sgt_tfmot.keras import tf
from sgt_tfmot.masking import fill_values, mask_input, masked_count, saliency_mask


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
    with pytest.raises(ValueError, match=r"`fill` must be one of 'random', 'zero', 'mean'"):
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
