"""Occlusion (Zeiler & Fergus 2014): a linear model in closed form, LiteRT against Keras.

For a linear model f(x) = Wᵀ·flatten(x), filling patch P with the per-channel mean m changes
the logit of class c by d_P = Σ_{(i,j) ∈ P, k} W_c[i, j, k] · (x[i, j, k] − m[k]), so the map
(the mean over the patches covering a pixel of max(d_P, 0)) can be computed in numpy.
"""

import math

import numpy as np
import pytest

import sgt_tfmot  # first: sets Keras 2
from sgt_tfmot._checks import InputError
from sgt_tfmot.explain import attributions
from sgt_tfmot.explain.attributions import AttributionOptions
from sgt_tfmot.explain.attributions.occlusion import Occlusion
from sgt_tfmot.explain.measures import spearman_per_image
from sgt_tfmot.keras import keras
from sgt_tfmot.tflite import TFLiteModel, to_integer_tflite

SHAPE = (7, 6, 2)  # not square, and neither side a multiple of the stride
CLASSES = 3
# patch 3, stride 2: rows start at 0, 2, 4 (4 = 7 − 3 is flush); columns at 0, 2 and the
# flush 3 = 6 − 3 (4 would run past the border): 9 patches.
OPTIONS = AttributionOptions(patch=3, stride=2, batch_size=4)
CORNERS = [(t, s) for t in (0, 2, 4) for s in (0, 2, 3)]


def linear_model(seed=0):
    inputs = keras.Input(SHAPE)
    dense = keras.layers.Dense(CLASSES, use_bias=False, name="linear")
    model = keras.Model(inputs, dense(keras.layers.Flatten()(inputs)))
    kernel = np.random.default_rng(seed).normal(0, 0.5, (math.prod(SHAPE), CLASSES))
    dense.set_weights([kernel.astype(np.float32)])
    return model, kernel


def data(n=5, seed=1):
    rng = np.random.default_rng(seed)
    return rng.random((n, *SHAPE)).astype(np.float32), rng.integers(0, CLASSES, n)


def closed_form(images, targets, kernel, patch=3, corners=CORNERS):
    maps = np.zeros(images.shape[:3])
    for n, (x, y) in enumerate(zip(images.astype(np.float64), targets, strict=True)):
        sums, counts = np.zeros(x.shape[:2]), np.zeros(x.shape[:2])
        for top, left in corners:
            removed = np.zeros_like(x)  # x − occluded x: x − m inside the patch, 0 outside
            removed[top : top + patch, left : left + patch] = x[
                top : top + patch, left : left + patch
            ] - x.mean(axis=(0, 1))
            drop = removed.reshape(-1) @ kernel[:, y]
            sums[top : top + patch, left : left + patch] += max(drop, 0.0)
            counts[top : top + patch, left : left + patch] += 1
        maps[n] = sums / counts
    return maps


def test_linear_model_map_is_the_closed_form_for_every_kind_of_model():
    model, kernel = linear_model()
    images, targets = data()
    expected = closed_form(images, targets, kernel)
    assert (expected > 0).any() and (expected == 0).any()  # both signs of drop occur
    method = attributions.get("occlusion")
    assert isinstance(method, Occlusion) and method.per_pixel and not method.needs_gradients
    assert "occlusion" in attributions.names(gradient_free=True)

    class Predictor:  # an object with .predict, as TFLiteModel
        def predict(self, x):
            return np.asarray(x, np.float64).reshape(len(x), -1) @ kernel

    for kind in (model, Predictor(), Predictor().predict):
        maps = method(kind, images, targets, OPTIONS)
        assert maps.shape == images.shape[:3] and maps.dtype == np.float32
        np.testing.assert_allclose(maps, expected, atol=1e-5)
    features = method.features(model, images, targets, OPTIONS)
    np.testing.assert_allclose(features, np.repeat(expected[..., None], 2, -1), atol=1e-5)


def test_largest_patch_and_stride_1_and_no_side_effects():
    model, kernel = linear_model()
    images, targets = data(3)
    weights = [w.copy() for w in model.get_weights()]
    # Patch 6 on 7 x 6 rows: offsets (0, 0) and (1, 0), whatever the stride.
    for stride in (1, 6):
        options = AttributionOptions(patch=6, stride=stride)
        maps = Occlusion()(model, images, targets, options)
        expected = closed_form(images, targets, kernel, 6, [(0, 0), (1, 0)])
        np.testing.assert_allclose(maps, expected, atol=1e-5)
    for before, after in zip(weights, model.get_weights(), strict=True):
        np.testing.assert_array_equal(before, after)


def test_predict_is_called_in_a_few_batches_of_all_occluded_copies():
    rng = np.random.default_rng(2)
    images, targets = rng.random((3, 32, 32, 3)).astype(np.float32), np.array([0, 1, 2])
    kernel = rng.normal(size=(32 * 32 * 3, CLASSES))
    calls = []

    def predict(x):
        calls.append(len(x))
        return x.reshape(len(x), -1) @ kernel

    options = AttributionOptions(patch=4, stride=2, batch_size=64)
    Occlusion()(predict, images, targets, options)
    # Offsets 0, 2, ..., 28 = 32 − 4 on each axis (the last one flush): 15 × 15 patches.
    patches = len(range(0, 32 - 4 + 1, 2)) ** 2
    assert patches == 225
    assert calls[0] == 3 and sum(calls[1:]) == 3 * patches  # the originals, then the copies
    assert len(calls) == 1 + math.ceil(3 * patches / 64) == 12 and max(calls) == 64


def conv_model():
    keras.utils.set_random_seed(0)
    inputs = keras.Input((12, 12, 3))
    x = keras.layers.Rescaling(1 / 127.5, offset=-1.0)(inputs)
    x = keras.layers.Conv2D(8, 3, padding="same", activation="relu")(x)
    x = keras.layers.Conv2D(8, 3, strides=2, padding="same", activation="relu")(x)
    return keras.Model(inputs, keras.layers.Dense(4)(keras.layers.Flatten()(x)))


def test_litert_occlusion_of_the_int8_model_ranks_like_the_keras_qat_model():
    rng = np.random.default_rng(3)
    images = rng.integers(0, 256, (256, 12, 12, 3)).astype(np.float32)
    # A class that depends on two quadrants, so that patches there matter.
    labels = (images[:, :6, :6, 0].mean((1, 2)) > 127) + 2 * (
        images[:, 6:, 6:, 1].mean((1, 2)) > 127
    )
    qat = sgt_tfmot.quantize_model(conv_model(), weight_bits=8, activation_bits=8, alpha_init=4.0)
    qat.compile(keras.optimizers.Adam(1e-2), keras.losses.SparseCategoricalCrossentropy(True))
    qat.fit(images, labels, epochs=5, batch_size=32, verbose=0)
    sgt_tfmot.align_biases(qat)
    tflite = TFLiteModel(to_integer_tflite(qat, images[:32]))
    x, y = images[:8], labels[:8]
    options = AttributionOptions(patch=4, stride=2)
    keras_maps = Occlusion()(qat, x, y, options)
    litert_maps = Occlusion()(tflite, x, y, options)
    step = tflite.output["quantization"][0]
    assert keras_maps.max() > 10 * step  # drops of many output steps: the ranking is not ties
    rho = spearman_per_image(keras_maps, litert_maps)
    assert np.isfinite(rho).all() and rho.mean() >= 0.99, rho
    # The aligned QAT model computes the integer model to one output step, so a drop (a
    # difference of two outputs) is at most 2 steps off, and so is a mean of drops.
    np.testing.assert_allclose(litert_maps, keras_maps, atol=2 * step + 1e-6)


BAD_INPUTS = [  # (images shape, targets, options, message)
    ((2, 7, 6), [0, 1], OPTIONS,
     r"`images` must have shape \(N, height, width, channels\). Received: shape \(2, 7, 6\)"),
    ((2, 6, 7, 2), [0, 1], OPTIONS,
     r"`images` of shape \(6, 7, 2\) do not fit the model input \(7, 6, 2\)"),
    ((2, *SHAPE), [0], OPTIONS,
     r"`targets` must be integer class ids of shape \(2,\), one per image. Received: shape \(1,\)"),
    ((2, *SHAPE), [0.0, 1.0], OPTIONS, r"`targets` must be integer class ids .* dtype float64"),
    ((2, *SHAPE), [0, 3], OPTIONS,
     r"`targets` must be class ids in \[0, 3\) for a model with 3 outputs. Received: targets "
     r"in \[0, 3\]"),
    ((2, *SHAPE), [0, 1], AttributionOptions(patch=7),
     r"`patch` must be at most the image size 7x6. Received: patch=7"),
    ((2, *SHAPE), [0, 1], AttributionOptions(patch=0),
     r"`patch` must be an integer >= 1. Received: patch=0"),
    ((2, *SHAPE), [0, 1], AttributionOptions(stride=0),
     r"`stride` must be an integer >= 1. Received: stride=0"),
    ((2, *SHAPE), [0, 1], AttributionOptions(patch=2, stride=3),
     r"`stride` must be <= patch=2, so that the patches cover every pixel. Received: stride=3"),
    ((2, *SHAPE), [0, 1], AttributionOptions(batch_size=0),
     r"`batch_size` must be an integer >= 1. Received: batch_size=0"),
]  # fmt: skip


@pytest.mark.parametrize("shape, targets, options, match", BAD_INPUTS)
def test_bad_input_raises_input_error(shape, targets, options, match):
    model, _ = linear_model()
    with pytest.raises(InputError, match=match):
        Occlusion()(model, np.zeros(shape, np.float32), targets, options)


def test_a_model_that_is_not_a_classifier_is_refused():
    images, targets = data(2)
    with pytest.raises(
        InputError,
        match=r"`model` must be a classifier returning scores of shape \(N, num_classes\); for 2 "
        r"images it returned shape \(2, 7, 6, 2\)",
    ):
        Occlusion()(lambda x: x, images, targets, OPTIONS)
    with pytest.raises(
        InputError,
        match=r"`model` must be a tf_keras model, an object with \.predict\(images\) or a "
        r"function images -> scores. Received: model='str'",
    ):
        Occlusion()("model.tflite", images, targets, OPTIONS)
