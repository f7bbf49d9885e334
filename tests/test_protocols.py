"""Removal protocols (sgt_tfmot.explain.protocols) and the fills of sgt_tfmot.imputation.

The imputation is checked against a dense solve of its defining equations built pixel by
pixel, and by hand on a 3x3 image; the protocols' masks against brute-force rankings, on
tiny linear models whose predictions numpy reproduces.
"""

import math

import numpy as np
import pytest

from sgt_tfmot import imputation
from sgt_tfmot._checks import InputError
from sgt_tfmot.explain import curves as drop, protocols
from sgt_tfmot.explain.evaluate import EvaluationOptions
from sgt_tfmot.explain.protocols import base
from sgt_tfmot.keras import keras


def dense_imputation(image: np.ndarray, removed: np.ndarray) -> np.ndarray:
    """ROAD's system for one (H, W, C) image, built pixel by pixel and solved densely."""
    h, w, _ = image.shape
    unknown = {p: i for i, p in enumerate(zip(*np.nonzero(removed), strict=True))}
    a = np.zeros((len(unknown), len(unknown)))
    b = np.zeros((len(unknown), image.shape[-1]))
    for (y, x), i in unknown.items():
        for (dy, dx), weight in imputation.NEIGHBOUR_WEIGHTS.items():
            ny, nx = y + dy, x + dx
            if not (0 <= ny < h and 0 <= nx < w):
                continue
            a[i, i] += weight
            if (ny, nx) in unknown:
                a[i, unknown[ny, nx]] -= weight
            else:
                b[i] += weight * image[ny, nx]
    out = image.astype(np.float64).copy()
    if unknown:
        solved = np.linalg.solve(a, b)
        for (y, x), i in unknown.items():
            out[y, x] = solved[i]
    return out


def test_a_lone_removed_pixel_takes_the_road_weighted_mean_of_its_neighbours():
    image = np.arange(9, dtype=np.float64).reshape(1, 3, 3)
    removed = np.zeros((1, 3, 3), bool)
    removed[0, 1, 1] = True
    # direct neighbours 1, 3, 5, 7 (weight 1/6), diagonal 0, 2, 6, 8 (1/12): 16/6 + 16/12 = 4
    filled = imputation.linear_imputation(image, removed)
    assert filled[0, 1, 1] == pytest.approx(4.0, abs=1e-6)
    np.testing.assert_array_equal(filled[~removed], image[~removed])


def test_a_corner_pixel_renormalises_over_its_three_neighbours():
    image = np.array([[[0.0, 6.0], [12.0, 24.0]]])
    removed = np.array([[[True, False], [False, False]]])
    # neighbours 6 (1/6), 12 (1/6), 24 (1/12): (1 + 2 + 2) / (5/12) = 12
    assert imputation.linear_imputation(image, removed)[0, 0, 0] == pytest.approx(12.0)


@pytest.mark.parametrize("share", [0.1, 0.5, 0.95])
def test_linear_imputation_solves_the_road_system_of_every_image(share):
    rng = np.random.default_rng(3)
    images = rng.uniform(0, 255, (7, 6, 9, 3))
    removed = rng.uniform(size=(7, 6, 9)) < share
    removed[:, 0, 0] = False  # every image keeps a pixel
    removed[3] = False  # one image with nothing removed
    filled = imputation.linear_imputation(images, removed)
    assert filled.dtype == np.float32 and filled.shape == images.shape
    for image, mask, result in zip(images, removed, filled, strict=True):
        # float32 solve of a diagonally dominant system: about 1e-4 on values up to 255
        np.testing.assert_allclose(result, dense_imputation(image, mask), rtol=0, atol=2e-3)


def test_imputation_is_the_same_in_chunks_and_without_channels(monkeypatch):
    rng = np.random.default_rng(4)
    images = rng.uniform(0, 1, (5, 8, 8))
    removed = rng.uniform(size=(5, 8, 8)) < 0.6
    removed[:, 4, 4] = False
    whole = imputation.noisy_linear_imputation(images, removed, noise=0.05, seed=1)
    monkeypatch.setattr(imputation, "_CHUNK", 2)
    chunked = imputation.noisy_linear_imputation(images, removed, noise=0.05, seed=1)
    np.testing.assert_array_equal(whole, chunked)
    with_channel = imputation.noisy_linear_imputation(images[..., None], removed, 0.05, seed=1)
    np.testing.assert_array_equal(whole, with_channel[..., 0])


def test_the_noise_has_the_asked_spread_and_only_on_removed_pixels():
    rng = np.random.default_rng(5)
    images = rng.uniform(0, 255, (40, 16, 16, 3))
    removed = rng.uniform(size=(40, 16, 16)) < 0.5
    plain = imputation.linear_imputation(images, removed)
    noisy = imputation.noisy_linear_imputation(images, removed, 0.01, value_range=255, seed=0)
    residual = (noisy - plain)[removed]
    assert residual.size > 10_000
    assert residual.std() == pytest.approx(2.55, rel=0.03)  # 3 % ~ 4 standard errors
    assert abs(residual.mean()) < 0.05
    np.testing.assert_array_equal(noisy[~removed], images[~removed].astype(np.float32))
    again = imputation.noisy_linear_imputation(images, removed, 0.01, value_range=255, seed=0)
    np.testing.assert_array_equal(noisy, again)


def test_imputation_rejects_a_fully_removed_image_and_bad_masks():
    images = np.zeros((2, 3, 3))
    removed = np.zeros((2, 3, 3), bool)
    removed[1] = True
    with pytest.raises(ValueError, match=r"every pixel removed in image 1"):
        imputation.linear_imputation(images, removed)
    with pytest.raises(ValueError, match=r"boolean \(N, H, W\) mask"):
        imputation.linear_imputation(images, removed.astype(int))
    with pytest.raises(ValueError, match=r"`noise` must be a number >= 0"):
        imputation.noisy_linear_imputation(images, removed & False, noise=-1)
    with pytest.raises(ValueError, match=r"`sigma` must be a number > 0"):
        imputation.blur(images, 0)


# ---------------------------------------------------------------------- units and orders
def test_first_units_take_the_highest_lowest_or_a_seeded_permutation():
    scores = np.array([[0.5, 3.0, 1.0, 3.0, 0.0, 2.0]])
    top = base.first_units(scores, 0.5, "top", 0)  # ⌊0.5 · 6⌋ = 3; the tie at 3.0: index 1 first
    assert np.flatnonzero(top[0]).tolist() == [1, 3, 5]
    bottom = base.first_units(scores, 0.34, "bottom", 0)  # ⌊0.34 · 6⌋ = 2
    assert np.flatnonzero(bottom[0]).tolist() == [0, 4]
    small = base.first_units(np.zeros((4, 20)), 0.2, "random", 7)
    large = base.first_units(np.zeros((4, 20)), 0.6, "random", 7)
    assert small.sum(axis=1).tolist() == [4] * 4 and large.sum(axis=1).tolist() == [12] * 4
    assert np.all(large[small])  # one permutation per image: the sets grow with the fraction
    assert (
        base.first_units(scores, 1.0, "top", 0).all()
        and not base.first_units(scores, 0.0, "top", 0).any()
    )


def test_patch_scores_sum_the_pixels_and_cut_patches_at_the_border():
    score = np.arange(25, dtype=np.float64).reshape(1, 5, 5)
    sums = base._patch_sums(score, 2)  # a 3x3 grid, the last row and column one pixel wide
    expected = [
        [score[0, y : y + 2, x : x + 2].sum() for x in range(0, 5, 2)] for y in range(0, 5, 2)
    ]
    np.testing.assert_array_equal(sums[0], expected)
    removed = np.zeros((1, 9), bool)
    removed[0, 8] = True  # the corner patch: one pixel
    pixels = base._patch_pixels(removed, 2, (5, 5))
    assert np.flatnonzero(pixels[0]).tolist() == [24]


def test_region_protocol_fills_the_top_patches_with_the_image_minimum():
    rng = np.random.default_rng(0)
    images = rng.uniform(10, 20, (2, 4, 4, 1)).astype(np.float32)
    saliency = np.zeros((2, 4, 4, 1), np.float32)
    saliency[0, 2:, 2:] = 1.0  # image 0: the bottom-right patch is the most relevant
    saliency[1, :2, :2] = 1.0
    region = protocols.get("region")
    options = protocols.ProtocolOptions(fill="black", patch=2)
    out = region.apply(images, saliency, 0.25, "top", options, seed=0)  # ⌊0.25 · 4⌋ = 1 patch
    expected = images.copy()
    expected[0, 2:, 2:] = images[0].min()
    expected[1, :2, :2] = images[1].min()
    np.testing.assert_array_equal(out, expected)


def test_insertion_starts_from_the_blurred_image_and_ends_at_the_image():
    rng = np.random.default_rng(1)
    images = rng.uniform(0, 255, (3, 8, 8, 2)).astype(np.float32)
    saliency = rng.uniform(size=images.shape).astype(np.float32)
    options = protocols.ProtocolOptions(blur_sigma=1.5)
    blurred = imputation.blur(images, 1.5)
    insertion, deletion = protocols.get("insertion"), protocols.get("deletion")
    np.testing.assert_allclose(insertion.apply(images, saliency, 0.0, "top", options, 0), blurred)
    np.testing.assert_array_equal(insertion.apply(images, saliency, 1.0, "top", options, 0), images)
    np.testing.assert_allclose(deletion.apply(images, saliency, 1.0, "top", options, 0), blurred)
    # at x the inserted pixels are the top ones: exactly those deletion removes at x
    inserted = insertion.apply(images, saliency, 0.25, "top", options, 0)
    deleted = deletion.apply(images, saliency, 0.25, "top", options, 0)
    own = np.all(inserted == images, axis=-1)
    np.testing.assert_array_equal(own, np.any(deleted != images, axis=-1))


# ---------------------------------------------------------------------- curves on a model
SHAPE = (6, 6, 1)


def linear_model(seed=0):
    keras.utils.set_random_seed(seed)
    inputs = keras.Input(SHAPE)
    outputs = keras.layers.Dense(3, name="linear")(keras.layers.Flatten()(inputs))
    model = keras.Model(inputs, outputs)
    kernel = np.random.default_rng(seed).normal(size=(math.prod(SHAPE), 3)).astype(np.float32)
    model.get_layer("linear").set_weights([kernel, np.zeros(3, np.float32)])
    return model, kernel


def data(n=10, seed=2):
    rng = np.random.default_rng(seed)
    return rng.uniform(0, 255, (n, *SHAPE)).astype(np.float32), rng.integers(0, 3, n)


def test_the_pixel_protocol_is_the_trainers_per_pixel_curve():
    model, _ = linear_model()
    images, labels = data()
    saliency = np.random.default_rng(3).uniform(size=images.shape).astype(np.float32)
    measured = drop.drop_curves(model, images, labels, saliency, fill="random", seed=4)
    predict = lambda x: model.predict(x, verbose=0)  # noqa: E731
    for order in ("top", "bottom", "random"):
        old = drop.accuracy_drop_curve(predict, images, labels, saliency, order=order,
                                       fill="random", seed=4)  # fmt: skip
        np.testing.assert_array_equal(measured.curves[order], old)
    assert measured.protocol == "pixel" and measured.fill == "random"


@pytest.mark.parametrize("name", ["road", "deletion", "insertion", "region"])
def test_curves_are_the_numpy_predictions_of_the_perturbed_images(name):
    model, kernel = linear_model()
    images, labels = data()
    saliency = np.random.default_rng(5).uniform(size=images.shape).astype(np.float32)
    options = protocols.ProtocolOptions(patch=3, seed=2)
    fractions = (0.0, 0.3, 0.6)
    measured = drop.drop_curves(
        model, images, labels, saliency, fractions=fractions, protocol=name, seed=2,
        protocol_options=options,
    )  # fmt: skip
    protocol = protocols.get(name)
    for o, order in enumerate(("top", "bottom", "random")):
        for f, fraction in enumerate(fractions):
            perturbed = protocol.apply(images, saliency, fraction, order, options, 2 * 1_000_003
                                       + 1000 * f + o)  # fmt: skip
            logits = perturbed.reshape(len(images), -1) @ kernel
            p = np.exp(logits - logits.max(1, keepdims=True))
            p /= p.sum(1, keepdims=True)
            assert measured.curves[order][f] == pytest.approx(np.mean(logits.argmax(1) == labels))
            assert measured.probabilities[order][f] == pytest.approx(
                p[np.arange(len(labels)), labels].mean(), rel=1e-4
            )
    assert measured.protocol == name and measured.measure == protocol.measure
    assert measured.unit == ("3x3 patches" if name == "region" else "pixels")
    assert measured.aopc()["top"] == pytest.approx(
        measured.probabilities["top"][0] - np.mean(measured.probabilities["top"][1:])
    )


def test_probabilities_pass_a_softmax_output_and_convert_logits():
    p = np.array([[0.2, 0.8], [1.0, 0.0]])
    np.testing.assert_array_equal(base.probabilities(p), p)
    logits = np.array([[0.0, np.log(4.0)]])
    np.testing.assert_allclose(base.probabilities(logits), [[0.2, 0.8]])


def test_the_registry_is_read_at_call_time():
    class Everything(protocols.Protocol):
        name, title, measure, fills = "everything-black", "all black", "accuracy", ("black",)

    assert not protocols.supports("everything-black")
    with pytest.raises(InputError, match=r"`protocols` must be one of 'pixel', 'road'"):
        EvaluationOptions(protocols=["everything-black"])
    protocols.register(Everything())
    try:
        assert protocols.names()[-1] == "everything-black"
        assert EvaluationOptions(protocols="road,everything-black").protocols == (
            "road",
            "everything-black",
        )
    finally:
        protocols.REGISTRY._entries.pop("everything-black")


@pytest.mark.parametrize(
    "call, match",
    [
        (lambda: protocols.get("lime"), r"`protocol` must be one of 'pixel', 'road', 'deletion'"),
        (lambda: protocols.parse("road,road"), r"must name each of .* at most once"),
        (lambda: EvaluationOptions(region_fill="zero"), r"`region_fill` must be one of 'uniform'"),
        (lambda: EvaluationOptions(fractions=(0.0, 1.0)), r"`fractions` must be < 1 with .*road"),
        (lambda: EvaluationOptions(patch=0), r"`patch` must be an integer >= 1"),
        (lambda: EvaluationOptions(blur_sigma=0), r"`blur_sigma` must be a number > 0"),
        (lambda: protocols.ProtocolOptions(noise=-0.1), r"`noise` must be a number >= 0"),
    ],
)
def test_bad_protocol_settings_name_the_setting(call, match):
    with pytest.raises(InputError, match=match):
        call()
