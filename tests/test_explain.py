"""sgt_tfmot.explain: maps, drop curves, agreement and sanity checks against closed forms.

The models are tiny and their attributions known in closed form:

* linear, f(x) = Wᵀ·flatten(x) + b: the gradient of class y is the weight row W[:, y] for
  every input, so maps, rankings and curves follow from W in numpy;
* conv-pool-dense, f(x) = Vᵀ·mean_ij(A_ij) + c with A = x * K (1x1 convolution): the
  Grad-CAM weights are α_k = V[k, y] / (H·W), so L_ij = ReLU(Σ_k α_k A_ijk), and Grad-CAM++
  (whose α normalise to 1/(H·W) for a linear head) gives exp(f_y) · ReLU(Σ_k ReLU(α_k) A_ijk);
* square-pool, f_c(x) = mean_ij x_ijc² (no weights): its gradient 2 x / (H·W) does not
  depend on any weight, so the randomisation sanity check must flag it.
"""

import dataclasses
import math

import numpy as np
import pytest

from sgt_tfmot import explain, quantize_model
from sgt_tfmot.explain import attributions, report
from sgt_tfmot.keras import keras
from tests.helpers.models import residual_model

GRADIENT_METHODS = attributions.names(gradient_free=False)

L = keras.layers
SHAPE = (4, 5, 2)  # 20 pixels, 2 channels
CLASSES = 3


def linear_model(seed=0, activation=None):
    keras.utils.set_random_seed(seed)
    inputs = keras.Input(SHAPE)
    outputs = L.Dense(CLASSES, activation=activation, name="linear")(L.Flatten()(inputs))
    model = keras.Model(inputs, outputs, name="linear_model")
    rng = np.random.default_rng(seed)
    kernel = rng.normal(size=(math.prod(SHAPE), CLASSES)).astype(np.float32)
    bias = np.array([0.5, -0.2, 0.1], np.float32)
    model.get_layer("linear").set_weights([kernel, bias])
    return model, kernel, bias


def data(n=12, seed=1, shape=SHAPE, classes=CLASSES):
    rng = np.random.default_rng(seed)
    images = rng.integers(1, 256, (n, *shape)).astype(np.float32)
    labels = rng.integers(0, classes, n).astype(np.int64)
    return images, labels


def signed_rows(kernel, labels):
    """The gradient of a linear model: W[:, y] reshaped to the input, per image."""
    return kernel[:, labels].T.reshape(len(labels), *SHAPE)


def cam_model(seed=0):
    """1x1 conv (no bias) -> global average pool -> dense; weights K (2, 3), V (3, 3), c."""
    inputs = keras.Input(SHAPE)
    features = L.Conv2D(3, 1, use_bias=False, name="conv")(inputs)
    outputs = L.Dense(CLASSES, name="head")(L.GlobalAveragePooling2D()(features))
    model = keras.Model(inputs, outputs, name="cam_model")
    rng = np.random.default_rng(seed)
    k = rng.normal(size=(SHAPE[-1], 3)).astype(np.float32)
    v = rng.normal(size=(3, CLASSES)).astype(np.float32)
    c = np.array([0.1, -0.3, 0.2], np.float32)
    model.get_layer("conv").set_weights([k.reshape(1, 1, SHAPE[-1], 3)])
    model.get_layer("head").set_weights([v, c])
    return model, k, v, c


def square_pool_model():
    """f_c(x) = mean_ij x_ijc² for 2 classes (the 2 channels): no weights at all."""
    inputs = keras.Input(SHAPE)
    squared = L.Multiply()([inputs, inputs])
    return keras.Model(inputs, L.GlobalAveragePooling2D()(squared), name="square_pool")


# --- attribution -------------------------------------------------------------------------


def test_input_gradients_of_a_linear_model_are_its_weight_rows():
    model, kernel, _ = linear_model()
    images, labels = data(11)
    signed = explain.input_gradients(model, images, labels, batch_size=4, absolute=False)
    assert signed.shape == images.shape and signed.dtype == np.float32
    np.testing.assert_allclose(signed, signed_rows(kernel, labels), rtol=1e-6)
    absolute = explain.input_gradients(model, images, labels)
    np.testing.assert_allclose(absolute, np.abs(signed_rows(kernel, labels)), rtol=1e-6)


def test_input_gradients_equal_tf_keras_vis_on_a_nonlinear_model():
    keras.utils.set_random_seed(3)
    model = residual_model()
    images, labels = data(6, shape=(8, 8, 3), classes=4)
    fast = explain.input_gradients(model, images, labels, batch_size=4)
    np.testing.assert_allclose(fast, explain.saliency_maps(model, images, labels), rtol=1e-4)


def test_attribution_maps_of_gradients_are_the_channel_mean_of_their_magnitude():
    model, kernel, _ = linear_model()
    images, labels = data(5)
    expected = np.abs(signed_rows(kernel, labels)).mean(axis=-1)
    for method in ("vanilla", "smoothgrad"):
        maps = explain.attribution_maps(model, images, labels, method, smooth_samples=2)
        assert maps.shape == (5, 4, 5)
        np.testing.assert_allclose(maps, expected, rtol=1e-5)


def cam_expected(images, labels, k, v, c, plus_plus=False):
    activations = images @ k  # (N, H, W, 3): the 1x1 convolution
    alphas = v[:, labels].T / (SHAPE[0] * SHAPE[1])  # (N, 3)
    if not plus_plus:
        return np.maximum(np.einsum("nhwk,nk->nhw", activations, alphas), 0)
    score = activations.mean(axis=(1, 2)) @ v + c
    true_score = score[np.arange(len(labels)), labels]
    cam = np.maximum(np.einsum("nhwk,nk->nhw", activations, np.maximum(alphas, 0)), 0)
    return np.exp(true_score)[:, None, None] * cam


@pytest.mark.parametrize("method", ["gradcam", "gradcampp"])
def test_gradcam_maps_match_their_closed_form(method):
    model, k, v, c = cam_model()
    images, labels = data(7)
    images = images / 255.0  # small logits: exp(f_y) of Grad-CAM++ stays moderate
    maps = explain.gradcam_maps(model, images, labels, method, batch_size=3)
    assert maps.shape == (7, 4, 5) and maps.dtype == np.float32
    expected = cam_expected(images, labels, k, v, c, plus_plus=method == "gradcampp")
    assert expected.max() > 0
    np.testing.assert_allclose(maps, expected, rtol=1e-4, atol=1e-6)
    via_any = explain.attribution_maps(model, images, labels, method, penultimate_layer="conv")
    np.testing.assert_array_equal(via_any, maps)


def test_last_conv_layer_looks_inside_quantize_wrappers():
    float_model = residual_model()
    qat = quantize_model(residual_model())
    assert explain.last_conv_layer(float_model) == "conv"
    assert explain.last_conv_layer(qat) == "quant_conv"
    images, labels = data(3, shape=(8, 8, 3), classes=4)
    # The wrapped layer's own name works too.
    by_inner = explain.gradcam_maps(qat, images, labels, penultimate_layer="stem")
    by_wrapper = explain.gradcam_maps(qat, images, labels, penultimate_layer="quant_stem")
    np.testing.assert_array_equal(by_inner, by_wrapper)


def test_gradcam_on_a_model_without_convolution_names_the_model():
    model, _, _ = linear_model()
    images, labels = data(2)
    with pytest.raises(ValueError, match=r"model 'linear_model' has no Conv2D"):
        explain.last_conv_layer(model)
    with pytest.raises(ValueError, match=r"Grad-CAM needs a convolution, but model 'linear_model'"):
        explain.attribution_maps(model, images, labels, "gradcampp")


@pytest.mark.parametrize(
    "kwargs, match",
    [
        (
            {"method": "lime"},
            r"`method` must be one of 'vanilla', 'smoothgrad', 'gradcam', 'gradcampp', "
            r"'occlusion'. Received: method='lime'",
        ),
        (
            {"method": "gradcam", "penultimate_layer": "nope"},
            r"penultimate_layer='nope'; its convolutions are: conv",
        ),
        (
            {"method": "gradcam", "penultimate_layer": "head"},
            r"4-D output .*penultimate_layer='head' with output rank 2",
        ),
        ({"method": "gradcam", "batch_size": 0}, r"`batch_size` must be an integer >= 1"),
    ],
)
def test_attribution_maps_reject_bad_arguments(kwargs, match):
    model, _, _, _ = cam_model()
    images, labels = data(2)
    with pytest.raises(ValueError, match=match):
        explain.attribution_maps(model, images, labels, **kwargs)


def test_maps_have_no_side_effects_on_the_model():
    model, _, _, _ = cam_model()
    images, labels = data(3)
    before = [w.copy() for w in model.get_weights()]
    for method in attributions.names():
        explain.attribution_maps(model, images, labels, method, smooth_samples=2)
    explain.sanity_check(model, images, labels)
    for old, new in zip(before, model.get_weights(), strict=True):
        np.testing.assert_array_equal(old, new)


# --- drop curves -------------------------------------------------------------------------


def test_drop_curves_rank_by_the_weight_row_and_start_at_the_plain_accuracy():
    model, kernel, bias = linear_model()
    images, labels = data(40)
    logits = images.reshape(40, -1) @ kernel + bias
    curves = explain.drop_curves(model, images, labels, name="linear")
    assert curves.accuracy == np.mean(logits.argmax(1) == labels)
    # The same curves as ranking by |W[:, y]| in numpy (tests/test_explain_core.py checks
    # that ranking feature by feature).
    for order in explain.ORDERS:
        expected = explain.accuracy_drop_curve(
            lambda x: x.reshape(len(x), -1) @ kernel + bias,
            images,
            labels,
            np.abs(signed_rows(kernel, labels)),
            order=order,
        )
        np.testing.assert_array_equal(curves.curves[order], expected)
    assert curves.zero_saliency_images == 0
    assert set(curves.areas()) == {"top", "bottom", "random"}
    assert curves.to_dict()["areas"]["top"] == explain.curve_area(
        explain.DEFAULT_FRACTIONS, curves.curves["top"]
    )


def test_removing_everything_gives_the_accuracy_of_the_constant_image():
    model, _, bias = linear_model()
    images, labels = data(30)
    curves = explain.drop_curves(model, images, labels, fractions=(0.0, 1.0), fill="zero")
    # The zero image has logits b, class argmax(b) = 0, for every order.
    for curve in curves.curves.values():
        assert curve[1] == np.mean(labels == np.argmax(bias))


def test_drop_curves_count_the_all_zero_saliency_maps():
    """Dense + ReLU output: no gradient where the true-class pre-activation is negative."""
    model, kernel, bias = linear_model(activation="relu")
    images, labels = data(40)
    images = images - 128.0  # both signs of the logits
    logits = images.reshape(40, -1) @ kernel + bias
    expected = int(np.sum(logits[np.arange(40), labels] < 0))
    assert 0 < expected < 40
    curves = explain.drop_curves(model, images, labels, orders=("top",))
    assert curves.zero_saliency_images == expected
    assert list(curves.curves) == ["top"]


def test_curves_csv_has_one_row_per_point():
    model, _, _ = linear_model()
    images, labels = data(8)
    curves = explain.drop_curves(model, images, labels, name="a,b", fractions=(0.0, 0.5))
    lines = explain.curves_csv([curves]).splitlines()
    assert lines[0] == "model,protocol,fill,order,fraction,accuracy,probability"
    assert len(lines) == 1 + 3 * 2
    top = curves.curves["top"][0], curves.probabilities["top"][0]
    assert lines[1] == f'"a,b",pixel,mean,top,0,{top[0]:.6f},{top[1]:.6f}'


@pytest.mark.parametrize(
    "kwargs, match",
    [
        (
            {"orders": ("top", "top")},
            r"`orders` must hold each of .*Received: orders=\['top', 'top'\]",
        ),
        ({"orders": ("middle",)}, r"`order` must be one of 'top', 'bottom', 'random'"),
        ({"images": np.zeros((0, *SHAPE))}, r"at least one image"),
    ],
)
def test_drop_curves_reject_bad_arguments(kwargs, match):
    model, _, _ = linear_model()
    images, labels = data(4)
    args = {"images": images, "labels": labels, **kwargs}
    if len(args["images"]) == 0:
        args["labels"] = np.zeros(0, np.int64)
    with pytest.raises(ValueError, match=match):
        explain.drop_curves(model, args.pop("images"), args.pop("labels"), **args)


# --- agreement and concentration ---------------------------------------------------------


def test_spearman_matches_hand_computed_values():
    a = np.array([[1.0, 2.0, 3.0, 4.0]] * 4)
    b = np.array(
        [
            [1.0, 2.0, 3.0, 4.0],  # same ranking: 1
            [4.0, 3.0, 2.0, 1.0],  # reversed: -1
            [1.0, 1.0, 2.0, 3.0],  # ranks 1.5 1.5 3 4: 4.5 / sqrt(5 · 4.5) = sqrt(0.9)
            [2.0, 2.0, 2.0, 2.0],  # constant: undefined
        ]
    )
    rho = explain.spearman_per_image(a, b)
    np.testing.assert_allclose(rho[:3], [1.0, -1.0, math.sqrt(0.9)], rtol=1e-12)
    assert np.isnan(rho[3])


def test_top_fraction_iou_and_concentration_by_hand():
    a = np.zeros((1, 20))
    b = np.zeros((1, 20))
    a[0, [0, 1]] = [5.0, 4.0]  # top 10 % = k = 2 features: {0, 1}
    b[0, [1, 2]] = [5.0, 4.0]  # {1, 2}
    assert explain.top_fraction_iou(a, b)[0] == pytest.approx(1 / 3)  # |{1}| / |{0, 1, 2}|
    assert explain.top_fraction_iou(a, a)[0] == 1.0
    maps = np.array(
        [
            [5.0] + [1.0] * 5 + [0.0] * 4,  # top 1 of 10 holds 5 of 10
            [1.0] * 10,  # flat: k / n
            [0.0] * 10,  # no saliency: undefined
        ]
    )
    share = explain.concentration(maps, 0.1)
    np.testing.assert_allclose(share[:2], [0.5, 0.1])
    assert np.isnan(share[2])


def test_agreement_of_a_model_with_itself_is_one():
    keras.utils.set_random_seed(1)
    model = residual_model()
    images, labels = data(8, shape=(8, 8, 3), classes=4)
    for method in ("vanilla", "gradcam"):
        maps = explain.attribution_maps(model, images, labels, method)
        result = explain.agreement(maps, maps.copy(), model_a="m", model_b="m", method=method)
        assert result.spearman_mean == pytest.approx(1.0)
        assert result.spearman_std == pytest.approx(0.0, abs=1e-12)
        assert result.iou_mean == 1.0 and result.undefined == 0 and result.num_images == 8


def test_agreement_averages_over_the_images_with_a_defined_rho():
    a = np.array([[1.0, 2.0, 3.0, 4.0], [1.0, 2.0, 3.0, 4.0], [0.0, 0.0, 0.0, 0.0]])
    b = np.array([[1.0, 2.0, 3.0, 4.0], [4.0, 3.0, 2.0, 1.0], [1.0, 2.0, 3.0, 4.0]])
    result = explain.agreement(a.reshape(3, 2, 2), b.reshape(3, 2, 2), fraction=0.5)
    assert result.spearman_mean == 0.0 and result.spearman_std == 1.0  # mean of 1 and -1
    assert result.undefined == 1
    # Top 2 of 4: {3, 2} vs {3, 2}, {3, 2} vs {0, 1}, {0, 1} (ties, lower index) vs {3, 2}.
    assert result.iou_mean == pytest.approx(1 / 3)


@pytest.mark.parametrize(
    "call, match",
    [
        (lambda: explain.spearman_per_image(np.zeros((2, 4)), np.zeros((3, 4))), r"same shape"),
        (lambda: explain.top_fraction_iou(np.zeros((1, 5)), np.zeros((1, 5))), r"⌊0.1 · 5⌋ = 0"),
        (lambda: explain.concentration(np.ones((1, 5)), 1.0), r"in \(0, 1\)"),
        (lambda: explain.agreement(np.zeros((0, 4)), np.zeros((0, 4))), r"at least one image"),
    ],
)
def test_agreement_measures_reject_bad_input(call, match):
    with pytest.raises(ValueError, match=match):
        call()


# --- randomisation sanity check ----------------------------------------------------------


def test_randomize_weights_redraws_kernels_and_keeps_quantizer_ranges():
    keras.utils.set_random_seed(0)
    qat = quantize_model(residual_model())
    qat.set_weights([w + 0.5 for w in qat.get_weights()])  # away from the initial values
    before = [(w.name, w.numpy().copy()) for w in qat.weights]
    randomized = explain.randomize_weights(qat, seed=1)
    after = [w.numpy() for w in randomized.weights]  # same order (`set_weights` relies on it)
    assert len(after) == len(before)
    changed = set()
    for (name, old), new in zip(before, after, strict=True):
        assert old.shape == new.shape
        if not np.array_equal(old, new):
            changed.add(name)
    # Kernels, biases and BN γ/β are drawn again; PACT α, moving-average ranges and BN
    # statistics stay.
    assert changed == {
        "stem/kernel:0",
        "conv/kernel:0",
        "logits/kernel:0",
        "logits/bias:0",
        "stem_bn/gamma:0",
        "stem_bn/beta:0",
        "conv_bn/gamma:0",
        "conv_bn/beta:0",
    }
    for w in qat.weights:  # the original is untouched
        np.testing.assert_array_equal(w.numpy(), dict(before)[w.name])
    images, _ = data(2, shape=(8, 8, 3), classes=4)
    assert np.isfinite(randomized.predict(images, verbose=0)).all()


def test_sanity_check_passes_when_the_maps_depend_on_the_weights():
    model, _, _ = linear_model()
    images, labels = data(16)
    check = explain.sanity_check(model, images, labels, threshold=0.5, seed=0)
    # Fresh Glorot rows are independent of W: measured mean ρ 0.10 ± 0.18 over 16 images.
    assert check.passed and check.verdict == "passed"
    assert abs(check.similarity_mean) < 0.3
    assert check.reinitialized_weights == 2 and check.undefined == 0 and check.num_images == 16


class RestoringInitializer(keras.initializers.Initializer):
    """'Re-initialises' to the given values: the weights, and so the maps, stay the same."""

    def __init__(self, value):
        self.value = np.asarray(value, np.float32)

    def __call__(self, shape, dtype=None, **kwargs):
        return keras.backend.constant(self.value, dtype=dtype)

    def get_config(self):
        return {"value": self.value.tolist()}


def test_sanity_check_flags_maps_that_do_not_change():
    images, labels = data(8)
    # A model without weights: the maps 2|x| / (H·W) only depend on the input.
    check = explain.sanity_check(square_pool_model(), images, labels % 2)
    assert not check.passed and check.reinitialized_weights == 0
    assert check.similarity_mean == pytest.approx(1.0)
    assert check.verdict == "FAILED: maps do not depend on the weights (Spearman 1.00 >= 0.5)"
    # A model whose re-initialisation restores its trained weights.
    _, kernel, bias = linear_model()
    inputs = keras.Input(SHAPE)
    dense = L.Dense(
        CLASSES,
        kernel_initializer=RestoringInitializer(kernel),
        bias_initializer=RestoringInitializer(bias),
    )
    model = keras.Model(inputs, dense(L.Flatten()(inputs)))
    with keras.utils.custom_object_scope({"RestoringInitializer": RestoringInitializer}):
        check = explain.sanity_check(model, images, labels, "smoothgrad", smooth_samples=2)
    assert not check.passed and check.reinitialized_weights == 2
    assert check.similarity_mean == pytest.approx(1.0)


def test_sanity_check_without_any_defined_similarity_fails():
    """Zero images: the square-pool gradient 2x / (H·W) is all zero, so ρ is undefined."""
    images, labels = data(3)
    check = explain.sanity_check(square_pool_model(), np.zeros_like(images), labels % 2)
    assert check.similarity_mean is None and check.undefined == 3 and not check.passed
    assert check.verdict == "FAILED: no image has a non-constant map in both models"


def test_sanity_check_rejects_bad_arguments():
    model, _, _ = linear_model()
    images, labels = data(2)
    with pytest.raises(ValueError, match=r"`threshold` must be a finite number in \(0, 1\)"):
        explain.sanity_check(model, images, labels, threshold=1.5)
    with pytest.raises(ValueError, match=r"`method` must be one of .*Received: method='x'"):
        explain.sanity_check(model, images, labels, method="x")
    with pytest.raises(ValueError, match=r"`maps` must be the vanilla maps .*\(2, 4, 5\)"):
        explain.sanity_check(model, images, labels, maps=np.zeros((2, 3)))


# --- evaluation and report ---------------------------------------------------------------


@pytest.fixture(scope="module")
def evaluation():
    keras.utils.set_random_seed(2)
    model = residual_model()
    other = residual_model()
    images, labels = data(24, shape=(8, 8, 3), classes=4)
    return explain.evaluate_models(
        {"a": model, "same as a": model, "b": other},
        images,
        labels,
        num_images=3,
        curve_images=20,
        agreement_images=10,
        smooth_samples=2,
        fractions=(0.0, 0.5, 0.9),
    ), (model, images, labels)


@pytest.mark.slow
def test_evaluate_models_measures_every_model_pair_and_method(evaluation):
    result, (model, images, labels) = evaluation
    assert [m.name for m in result.models] == ["a", "same as a", "b"]
    accuracy = np.mean(model.predict(images[:20], verbose=0).argmax(1) == labels[:20])
    assert result.models[0].accuracy == accuracy
    assert result.models[0].penultimate_layer == "conv"
    assert len(result.agreements) == 3 * len(GRADIENT_METHODS)  # 3 pairs x 4 methods
    for item in result.agreements:
        assert item.num_images == 10
        if {item.model_a, item.model_b} == {"a", "same as a"} and item.method != "smoothgrad":
            assert item.spearman_mean == pytest.approx(1.0) and item.iou_mean == 1.0
    assert len(result.map_indices) == 3 and len(set(result.map_indices)) == 3
    assert result.maps["b", "gradcampp"].shape == (3, 8, 8)
    np.testing.assert_array_equal(result.map_images, images[list(result.map_indices)])
    assert set(result.models[2].sanity) == set(GRADIENT_METHODS)
    share = result.models[0].concentration["vanilla"]
    assert 0.1 <= share["mean"] <= 1.0 and share["zero_maps"] == 0


def test_report_files_are_pngs_json_and_markdown(evaluation):
    result, _ = evaluation
    assert report.maps_figure(result)[:8] == b"\x89PNG\r\n\x1a\n"
    assert report.curves_figure(result)[:8] == b"\x89PNG\r\n\x1a\n"
    curves = report.curves_json(result)
    assert curves["fractions"] == [0.0, 0.5, 0.9] and len(curves["models"]) == 3
    assert curves["models"][0]["curves"]["top"][0] == result.models[0].accuracy
    text = report.markdown_report(result, {"maps": "maps.png", "curves": "drop_curves.png"})
    assert (
        "![saliency maps](maps.png)" in text and "![removal curves: pixel](drop_curves.png)" in text
    )
    assert "| a | same as a | Grad-CAM | 1.00 ± 0.00 | 1.00 ± 0.00 | 10 (0) |" in text
    assert text.count("| a | ") >= 1 + 3 + 4  # models, curve and sanity tables
    assert result.to_dict()["agreements"][0]["model_a"] == "a"


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"methods": ["vanilla", "lime"]}, r"`methods` must each be one of .*Received: .*'lime'"),
        ({"methods": []}, r"`methods` must name each of"),
        ({"num_images": 0}, r"`num_images` must be an integer >= 1. Received: num_images=0"),
        ({"map_indices": [0, 99]}, r"`map_indices` must be .*in \[0, 4\)"),
        ({"curve_images": -1}, r"`curve_images` must be an integer >= 1"),
        ({"curve_method": "lrp"}, r"`curve_method` must be one of"),
        ({"sanity_threshold": 0}, r"`sanity_threshold` must be a finite number in \(0, 1\)"),
        ({"models": {}}, r"`models` must hold at least one model"),
        ({"models": "linear"}, r"Model 'm': Grad-CAM needs a convolution, but model 'linear_m"),
        ({"images": np.zeros((4, 8, 8, 3))}, r"Model 'm': `images` of shape \(8, 8, 3\) do not"),
    ],
)
def test_evaluate_models_rejects_bad_input(kwargs, match):
    model, _, _ = linear_model()
    images, labels = data(4)
    args = {"models": {"m": model}, "images": images, "methods": ["vanilla"], **kwargs}
    if args["models"] == "linear":
        args["models"], args["methods"] = {"m": model}, ["gradcam"]
    with pytest.raises(ValueError, match=match):
        explain.evaluate_models(args.pop("models"), args.pop("images"), labels, **args)


def test_evaluation_options_are_checked_once_and_equal_the_keywords():
    model, _, _ = linear_model()
    images, labels = data(6)
    options = explain.EvaluationOptions(
        methods="vanilla", num_images=2, curve_images=4, agreement_images=3, fractions=[0, 0.5]
    )
    assert options.methods == ("vanilla",) and options.fractions == (0.0, 0.5)
    assert not options.needs_cam and dataclasses.replace(options, curve_method="gradcam").needs_cam
    by_options = explain.evaluate_models({"m": model}, images, labels, options)
    by_keywords = explain.evaluate_models(
        {"m": model}, images, labels, methods=["vanilla"], num_images=2, curve_images=4,
        agreement_images=3, fractions=(0.0, 0.5),
    )  # fmt: skip
    assert by_options.to_dict() == by_keywords.to_dict()
    replaced = explain.evaluate_models({"m": model}, images, labels, options, curve_images=2)
    assert replaced.settings["curve_images"] == 2 and replaced.settings["agreement_images"] == 3
    with pytest.raises(ValueError, match=r"`noise` must be a number > 0. Received: noise=0"):
        explain.EvaluationOptions(noise=0)
    with pytest.raises(TypeError, match="curve_imgs"):
        explain.evaluate_models({"m": model}, images, labels, curve_imgs=2)


def test_evaluate_models_can_rank_the_curves_by_grad_cam():
    model, _, _, _ = cam_model()
    images, labels = data(10)
    images = images / 255.0
    result = explain.evaluate_models(
        {"cam": model},
        images,
        labels,
        methods=["gradcam"],
        curve_method="gradcam",
        fractions=(0.5,),  # no x = 0 point: the accuracy is measured on its own
        num_images=2,
        agreement_images=4,
    )
    cam = explain.gradcam_maps(model, images, labels)
    expected = explain.accuracy_drop_curve(
        lambda x: model.predict(x, verbose=0),
        images,
        labels,
        np.broadcast_to(cam[..., None], images.shape),
        fractions=(0.5,),
    )
    curves = result.models[0].curves
    assert curves.method == "gradcam" and curves.curves["top"] == tuple(expected)
    plain = np.mean(model.predict(images, verbose=0).argmax(1) == labels)
    assert result.models[0].accuracy == plain and curves.accuracy is None
    assert result.agreements == []
