"""sgt_tfmot.explain: tf-keras-vis saliency maps and accuracy-drop curves, on linear models.

For a linear model f(x) = Wᵀ·flatten(x) + b the saliency of class y is |W[:, y]| whatever the
input, and SmoothGrad averages that same constant, so maps, rankings and curves can be
derived in numpy and compared exactly.
"""

import math

import numpy as np
import pytest

from sgt_tfmot import explain
from sgt_tfmot.keras import keras

SHAPE = (4, 5, 2)  # 20 pixels, 2 channels
CLASSES = 3


def linear_model(seed=0):
    keras.utils.set_random_seed(seed)
    inputs = keras.Input(SHAPE)
    outputs = keras.layers.Dense(CLASSES, name="linear")(keras.layers.Flatten()(inputs))
    model = keras.Model(inputs, outputs)
    rng = np.random.default_rng(seed)
    kernel = rng.normal(size=(math.prod(SHAPE), CLASSES)).astype(np.float32)
    bias = np.array([0.5, -0.2, 0.1], np.float32)
    model.get_layer("linear").set_weights([kernel, bias])
    return model, kernel, bias


def numpy_logits(images, kernel, bias):
    return images.reshape(len(images), -1) @ kernel + bias


def data(n=12, seed=1):
    rng = np.random.default_rng(seed)
    images = rng.integers(1, 256, (n, *SHAPE)).astype(np.float32)  # > 0: a 0 marks a fill
    labels = rng.integers(0, CLASSES, n).astype(np.int64)
    return images, labels


def weight_rows(kernel, labels):
    """The expected saliency: |W[:, y]| reshaped to the input, per image."""
    return np.abs(kernel[:, labels].T).reshape(len(labels), *SHAPE)


def test_vanilla_saliency_of_a_linear_model_is_its_weight_row():
    model, kernel, _ = linear_model()
    images, labels = data()
    maps = explain.saliency_maps(model, images, labels, batch_size=5)  # 3 batches, one short
    assert maps.shape == images.shape and maps.dtype == np.float32
    np.testing.assert_allclose(maps, weight_rows(kernel, labels), rtol=1e-6)


def test_smoothgrad_of_a_linear_model_equals_vanilla_and_has_no_side_effects():
    model, kernel, _ = linear_model()
    images, labels = data(4)
    weights = [w.copy() for w in model.get_weights()]
    np.random.seed(123)
    expected_draw = np.random.random(3)
    np.random.seed(123)
    maps = explain.saliency_maps(model, images, labels, method="smoothgrad", smooth_samples=3)
    # The noise moves x, not the gradient of a linear model.
    np.testing.assert_allclose(maps, weight_rows(kernel, labels), rtol=1e-5)
    np.testing.assert_array_equal(np.random.random(3), expected_draw)  # RNG state restored
    for before, after in zip(weights, model.get_weights(), strict=True):
        np.testing.assert_array_equal(before, after)


def test_saliency_follows_the_model_output_through_a_softmax():
    """With a softmax output the score is the probability p_y: ∂p_y/∂x = p_y (w_y − Σ p_k w_k)."""
    model, kernel, bias = linear_model()
    softmax = keras.Model(model.inputs, keras.layers.Softmax()(model.outputs[0]))
    images, labels = data(3)
    logits = numpy_logits(images, kernel, bias)
    p = np.exp(logits - logits.max(1, keepdims=True))
    p /= p.sum(1, keepdims=True)
    expected = []
    for i, y in enumerate(labels):
        grad = p[i, y] * (kernel[:, y] - kernel @ p[i])
        expected.append(np.abs(grad).reshape(SHAPE))
    maps = explain.saliency_maps(softmax, images, labels)
    np.testing.assert_allclose(maps, np.stack(expected), rtol=1e-4, atol=1e-7)


def test_curve_at_zero_is_the_plain_accuracy():
    model, kernel, bias = linear_model()
    images, labels = data(40)
    accuracy = np.mean(numpy_logits(images, kernel, bias).argmax(1) == labels)
    curve = explain.accuracy_drop_curve(
        lambda x: numpy_logits(x, kernel, bias), images, labels, weight_rows(kernel, labels)
    )
    assert curve.shape == (len(explain.DEFAULT_FRACTIONS),)
    assert curve[0] == accuracy


def numpy_masked(images, saliency, fraction, order, reduce_channels):
    """Brute force: rank pixels by the channel reduction of |S|, zero the first k."""
    score = np.abs(saliency)
    if reduce_channels == "mean":
        score = np.repeat(score.mean(-1, keepdims=True), SHAPE[-1], axis=-1)
    elif reduce_channels == "max":
        score = np.repeat(score.max(-1, keepdims=True), SHAPE[-1], axis=-1)
    per_pixel = reduce_channels is not None
    flat_score = (
        score[..., 0].reshape(len(images), -1) if per_pixel else score.reshape(len(images), -1)
    )
    n = flat_score.shape[1]
    k = math.floor(round(fraction * n, 9))
    masked = images.copy()
    for b in range(len(images)):
        key = -flat_score[b] if order == "top" else flat_score[b]
        chosen = np.argsort(key, kind="stable")[:k]
        if per_pixel:
            rows, cols = np.unravel_index(chosen, SHAPE[:2])
            masked[b, rows, cols, :] = 0.0
        else:
            flat = masked[b].reshape(-1)
            flat[chosen] = 0.0
            masked[b] = flat.reshape(SHAPE)
    return masked


@pytest.mark.parametrize("order", ["top", "bottom"])
@pytest.mark.parametrize("reduce_channels", ["mean", "max", None])
def test_masking_order_matches_a_numpy_ranking_of_the_weight_row(order, reduce_channels):
    model, kernel, bias = linear_model()
    images, labels = data()
    saliency = explain.saliency_maps(model, images, labels)
    fractions = (0.0, 0.1, 0.25, 0.5, 0.9)
    seen = []

    def recording_predict(x):
        seen.append(x.copy())
        return numpy_logits(x, kernel, bias)

    curve = explain.accuracy_drop_curve(
        recording_predict,
        images,
        labels,
        saliency,
        fractions=fractions,
        order=order,
        fill="zero",
        reduce_channels=reduce_channels,
    )
    for fraction, got, accuracy in zip(fractions, seen, curve, strict=True):
        expected = numpy_masked(images, saliency, fraction, order, reduce_channels)
        np.testing.assert_array_equal(got, expected)
        assert accuracy == np.mean(numpy_logits(expected, kernel, bias).argmax(1) == labels)


def test_top_removal_hurts_more_than_random_and_bottom_removal():
    model, kernel, bias = linear_model()
    # Zero-mean features and a zero fill: removing a feature removes its term w_j x_j.
    images = np.random.default_rng(2).normal(size=(200, *SHAPE)).astype(np.float32)
    labels = numpy_logits(images, kernel, bias).argmax(1)  # clean accuracy 1
    saliency = explain.saliency_maps(model, images, labels)

    def predict(x):
        return numpy_logits(x, kernel, bias)

    kwargs = {"fill": "zero", "reduce_channels": None}
    top = explain.accuracy_drop_curve(predict, images, labels, saliency, order="top", **kwargs)
    bottom = explain.accuracy_drop_curve(
        predict, images, labels, saliency, order="bottom", **kwargs
    )
    random = explain.accuracy_drop_curve(
        predict, images, labels, saliency, order="random", **kwargs
    )
    assert top[0] == bottom[0] == random[0] == 1.0
    # Measured areas: top 0.52, random 0.64, bottom 0.70.
    areas = [explain.curve_area(explain.DEFAULT_FRACTIONS, c) for c in (top, random, bottom)]
    assert areas[0] + 0.05 < areas[1] < areas[2] - 0.05


def test_removing_everything_with_a_constant_fill_gives_the_accuracy_of_the_constant_image():
    _, kernel, bias = linear_model()
    images, labels = data(30)
    # A zero image has logits b: every image is classified argmax(b) = 0.
    expected = np.mean(labels == np.argmax(bias))
    curve = explain.accuracy_drop_curve(
        lambda x: numpy_logits(x, kernel, bias),
        images,
        labels,
        weight_rows(kernel, labels),
        fractions=(0.0, 1.0),
        fill="zero",
    )
    assert curve[1] == expected


def test_mean_fill_replaces_with_the_image_channel_mean():
    _, kernel, bias = linear_model()
    images, labels = data(3)
    seen = []

    def recording_predict(x):
        seen.append(x)
        return numpy_logits(x, kernel, bias)

    explain.accuracy_drop_curve(
        recording_predict, images, labels, weight_rows(kernel, labels), fractions=(1.0,)
    )
    expected = np.broadcast_to(images.mean(axis=(1, 2), keepdims=True), images.shape)
    np.testing.assert_allclose(seen[0], expected, rtol=1e-6)


def test_random_order_is_seeded_and_masks_k_pixels():
    _, kernel, bias = linear_model()
    images, labels = data(6)
    runs = {}
    for seed in (0, 0, 1):
        seen = []

        def recording_predict(x, seen=seen):
            seen.append(x)
            return numpy_logits(x, kernel, bias)

        explain.accuracy_drop_curve(
            recording_predict,
            images,
            labels,
            weight_rows(kernel, labels),
            fractions=(0.5,),
            order="random",
            fill="zero",
            seed=seed,
        )
        zeros = seen[0] == 0.0
        # Whole pixels: both channels of a pixel go together; k = floor(0.5 · 20) = 10.
        np.testing.assert_array_equal(zeros[..., 0], zeros[..., 1])
        assert (zeros[..., 0].reshape(6, -1).sum(1) == 10).all()
        runs.setdefault(seed, []).append(zeros)
    np.testing.assert_array_equal(runs[0][0], runs[0][1])
    assert not np.array_equal(runs[0][0], runs[1][0])


def test_curve_area_is_the_trapezoid_rule():
    # (0.5 - 0)·(1 + 0.5)/2 + (1 - 0.5)·(0.5 + 0)/2 = 0.375 + 0.125
    assert explain.curve_area([0.0, 0.5, 1.0], [1.0, 0.5, 0.0]) == pytest.approx(0.5)
    # A flat curve at 1 over the default fractions 0 .. 0.9.
    flat = explain.curve_area(explain.DEFAULT_FRACTIONS, np.ones(10))
    assert flat == pytest.approx(0.9)


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"order": "middle"}, r"`order` must be one of 'top', 'bottom', 'random'.*'middle'"),
        ({"fill": "noise"}, r"`fill` must be one of .*Received: fill='noise'"),
        ({"fractions": (0.0, 1.5)}, r"`fractions` must lie in \[0, 1\].*1.5"),
        ({"fractions": ()}, r"`fractions` must be a non-empty sequence"),
        ({"reduce_channels": "sum"}, r"`reduce_channels` must be one of .*'sum'"),
        ({"saliency": np.zeros((2, 3))}, r"`saliency` must be shaped like `images`"),
        ({"labels": np.zeros(5, np.int64)}, r"same length. Received: 12 images and 5 labels"),
    ],
)
def test_curve_rejects_bad_arguments(kwargs, match):
    _, kernel, bias = linear_model()
    images, labels = data()
    args = {"labels": labels, "saliency": weight_rows(kernel, labels), **kwargs}
    with pytest.raises(ValueError, match=match):
        explain.accuracy_drop_curve(
            lambda x: numpy_logits(x, kernel, bias),
            images,
            args.pop("labels"),
            args.pop("saliency"),
            **args,
        )


def test_curve_rejects_predictions_of_the_wrong_shape():
    images, labels = data()
    with pytest.raises(ValueError, match=r"`predict_fn` must return class scores of shape \(12"):
        explain.accuracy_drop_curve(lambda x: np.zeros(len(x)), images, labels, images)


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"method": "gradcam"}, r"`method` must be one of 'vanilla', 'smoothgrad'.*'gradcam'"),
        ({"smooth_samples": 0}, r"`smooth_samples` must be an integer >= 1. Received: .*0"),
        ({"noise": 0.0}, r"`noise` must be a number > 0. Received: noise=0.0"),
        ({"batch_size": 0}, r"`batch_size` must be an integer >= 1"),
        ({"labels": np.array([0, 1, 7])}, r"class ids in \[0, 3\).*Received labels in \[0, 7\]"),
        ({"images": np.zeros((3, 2, 2, 2))}, r"do not fit the model input \(4, 5, 2\)"),
    ],
)
def test_saliency_maps_rejects_bad_arguments(kwargs, match):
    model, _, _ = linear_model()
    images, labels = data(3)
    args = {"images": images, "labels": labels, **kwargs}
    with pytest.raises(ValueError, match=match):
        explain.saliency_maps(model, args.pop("images"), args.pop("labels"), **args)


def test_curve_area_rejects_bad_input():
    with pytest.raises(ValueError, match=r"same length >= 2. Received: \(2,\) and \(3,\)"):
        explain.curve_area([0.0, 1.0], [1.0, 0.5, 0.0])
    with pytest.raises(ValueError, match=r"strictly increasing. Received: \[0.5, 0.1\]"):
        explain.curve_area([0.5, 0.1], [1.0, 0.5])
