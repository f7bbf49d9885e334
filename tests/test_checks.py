"""Deployment checks (sgt_tfmot.tflite.checks) and the float baseline of the converter.

The fidelity tests use a tiny conv net trained for a few seconds on the `mnist_subset` that
ships with the package (about 93 % test accuracy), converted to int8 and run in LiteRT:

* faithful: the integer model of that network. Measured: top-1 agreement 100 % and a
  fidelity gap of 0.5 pp on 100 images; the default gate (5 pp) passes.
* planted unfaithful: the integer model of a copy whose kernels were shuffled (a fixed
  permutation of every kernel's entries), checked against the original Keras model. It sits
  near chance on clean and masked images alike, so its curves miss the Keras ones by tens
  of points.
"""

import json

import numpy as np
import pytest

from sgt_tfmot import data, explain, quantize_model
from sgt_tfmot.conversion import checks
from sgt_tfmot.conversion.report import ConversionReport, format_summary
from sgt_tfmot.explain import fidelity
from sgt_tfmot.export import export_model
from sgt_tfmot.keras import keras
from sgt_tfmot.saving import load_model
from sgt_tfmot.tflite.converter import float_tflite, strip_quantization, to_integer_tflite
from sgt_tfmot.tflite.edgetpu import EdgeTpu
from sgt_tfmot.tflite.flatbuffer import read_model
from sgt_tfmot.tflite.runtime import TFLiteModel
from sgt_tfmot.tflite.targets import TargetContext
from tests.helpers.models import residual_model, tiny_mnist_classifier

L = keras.layers
FIDELITY_IMAGES = 100


@pytest.fixture(scope="module")
def mnist():
    x_train, _ = data.load_arrays("mnist_subset", "train")
    x_test, y_test = data.load_arrays("mnist_subset", "test")
    return x_train[:200].astype(np.float32), x_test.astype(np.float32), y_test


@pytest.fixture(scope="module")
def faithful(mnist_qat, mnist):
    """The session's tiny MNIST QAT model (biases aligned) and its integer model."""
    calibration, _, _ = mnist
    return mnist_qat, TFLiteModel(to_integer_tflite(mnist_qat, calibration))


@pytest.fixture(scope="module")
def shuffled_tflite(faithful, mnist):
    """The integer model of a copy of the network whose kernels were shuffled."""
    qat, _ = faithful
    calibration, _, _ = mnist
    rng = np.random.default_rng(0)
    copy = keras.models.clone_model(export_model(qat))  # same architecture, fresh weights
    values = []
    for weight, value in zip(copy.weights, export_model(qat).get_weights(), strict=True):
        if weight.name.endswith("kernel:0"):
            value = rng.permutation(value.reshape(-1)).reshape(value.shape)
        values.append(value)
    copy.set_weights(values)
    return TFLiteModel(to_integer_tflite(copy, calibration))


# ----------------------------------------------------------------------------- thresholds
def test_default_thresholds_are_the_release_targets():
    thresholds = checks.Thresholds()
    assert thresholds.to_dict() == {
        "max_accuracy_drop": 0.3,
        "min_agreement": 0.995,
        "max_fidelity_gap": 5.0,
        "require_edgetpu": False,
        "require": (),
    }


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"max_accuracy_drop": -0.1}, r"`max_accuracy_drop` must be a finite number in \[0, 100\]"),
        ({"min_agreement": 99.5}, r"`min_agreement` must be .*\[0, 1\]. Received: .*=99.5"),
        ({"max_fidelity_gap": float("nan")}, r"`max_fidelity_gap` must be a finite number"),
        ({"max_fidelity_gap": "5"}, r"Received: max_fidelity_gap='5'"),
        ({"require_edgetpu": "yes"}, r"`require_edgetpu` must be True or False.*'yes'"),
    ],
)
def test_thresholds_reject_bad_values(kwargs, match):
    with pytest.raises(ValueError, match=match):
        checks.Thresholds(**kwargs)


# ------------------------------------------------------------------- accuracy and the gate
def one_hot(classes, num_classes=4):
    return np.eye(num_classes, dtype=np.float32)[classes]


def test_compare_accuracy_counts_hits_and_agreement():
    labels = np.array([0, 1, 2, 3])
    images = np.zeros((4, 2, 2, 1), np.float32)
    accuracy = checks.compare_accuracy(
        lambda x: one_hot([0, 1, 2, 0]), lambda x: one_hot([0, 1, 1, 0]), images, labels
    )
    # Keras right on 3 of 4, TFLite on 2 of 4; they agree on images 0, 1 and 3.
    assert accuracy == checks.AccuracyComparison(0.75, 0.5, 0.75, 4)
    assert accuracy.accuracy_drop_pp == pytest.approx(25.0)
    assert accuracy.to_dict()["accuracy_drop_pp"] == pytest.approx(25.0)


def test_compare_accuracy_counts_disagreements_on_a_tied_top_score():
    labels = np.zeros(4, int)
    keras_scores = np.array([[0.2, 0.5, 0.3], [0.5, 0.3, 0.2], [0.34, 0.33, 0.33], [0.1, 0.1, 0.8]])
    # Integer probabilities on a 1/256 grid: images 0 and 2 tie at the top (argmax: the
    # first); image 0 disagrees on a tie, image 1 disagrees without one, images 2, 3 agree.
    tflite_scores = np.array([[100, 100, 56], [50, 150, 56], [90, 90, 76], [0, 0, 256]]) / 256
    images = np.zeros((4, 2, 2, 1), np.float32)
    accuracy = checks.compare_accuracy(
        lambda x: keras_scores, lambda x: tflite_scores, images, labels
    )
    assert (accuracy.agreement, accuracy.tied_disagreements) == (0.5, 1)
    assert accuracy.to_dict()["tied_disagreements"] == 1


def test_compare_accuracy_rejects_bad_input():
    images = np.zeros((4, 2, 2, 1), np.float32)
    with pytest.raises(ValueError, match=r"one label per image. Received: 4 images, labels of"):
        checks.compare_accuracy(lambda x: x, lambda x: x, images, np.zeros(3, int))
    with pytest.raises(ValueError, match=r"The TFLite model must return class scores of shape"):
        checks.compare_accuracy(
            lambda x: one_hot([0, 0, 0, 0]), lambda x: np.zeros(4), images, np.zeros(4, int)
        )


def test_ulp_agreement_is_one_for_a_well_conditioned_model_and_restores_the_weights(mnist):
    _, x_test, _ = mnist
    model = tiny_mnist_classifier()
    before = [w.copy() for w in model.get_weights()]
    assert checks.ulp_agreement(model, x_test[:64]) == 1.0
    for original, restored in zip(before, model.get_weights(), strict=True):
        np.testing.assert_array_equal(original, restored)


def test_ulp_agreement_finds_a_model_on_the_edge_of_every_decision():
    # Two logits computed by identical weights tie exactly: argmax picks class 0, and a
    # one-ulp change of the weights decides each tie by the sign of a random sum.
    inputs = keras.Input((64,))
    model = keras.Model(inputs, L.Dense(2, kernel_initializer="ones")(inputs))
    images = np.random.default_rng(1).uniform(-1, 1, (400, 64)).astype(np.float32)
    single = [checks.ulp_agreement(model, images, seed=seed, draws=1) for seed in (3, 4, 5)]
    assert all(0.1 < agreement < 0.9 for agreement in single), single
    assert len(set(single)) > 1, single  # each draw decides the ties its own way
    assert checks.ulp_agreement(model, images, seed=3, draws=3) == min(single)
    assert checks.ulp_agreement(model, images, seed=3) == min(single)  # ULP_DRAWS = 3
    with pytest.raises(ValueError, match="at least one image"):
        checks.ulp_agreement(model, images[:0])
    for draws in (0, 1.5, True):
        with pytest.raises(ValueError, match=f"draws={draws!r}"):
            checks.ulp_agreement(model, images, draws=draws)


def test_gate_names_the_numerical_floor_when_agreement_cannot_be_reached():
    accuracy = checks.AccuracyComparison(0.9, 0.9, 0.99, 1000, ulp_agreement=0.985)
    (failure,) = checks.gate(checks.Thresholds(), accuracy)
    assert failure.startswith("top-1 agreement 99.00 % is below --min_agreement 99.5 % (the")
    assert "one-ulp change of its weights on only 98.50 %" in failure
    # A well-conditioned model's failure is the plain message.
    sound = checks.AccuracyComparison(0.9, 0.9, 0.99, 1000, ulp_agreement=1.0)
    assert checks.gate(checks.Thresholds(), sound) == [
        "top-1 agreement 99.00 % is below --min_agreement 99.5 %"
    ]


def test_gate_says_when_agreement_lies_far_below_the_numerical_floor():
    """EfficientNetB0 of the compatibility matrix: 77.25 % against a floor of 93.25 % was an
    inexact layer, not rounding (the message said it was); the message now names both
    causes. A 97 % against a floor of 100 % too."""
    far = checks.AccuracyComparison(0.19, 0.20, 0.7725, 2000, ulp_agreement=0.9325)
    (failure,) = checks.gate(checks.Thresholds(), far)
    assert "too sensitive to rounding for any integer model" not in failure
    assert (
        "(below what rounding alone costs: the Keras model agrees with itself after a "
        "one-ulp change of its weights on only 93.25 %; either a layer the integer model "
        "does not compute exactly, or a model so sensitive" in failure
    )
    sound_floor = checks.AccuracyComparison(0.9, 0.9, 0.97, 2000, ulp_agreement=1.0)
    (failure,) = checks.gate(checks.Thresholds(), sound_floor)
    assert "on 100.00 %; either a layer the integer model does not compute exactly" in failure
    near = checks.AccuracyComparison(0.41, 0.41, 0.9835, 2000, ulp_agreement=0.989)
    (failure,) = checks.gate(checks.Thresholds(), near)
    assert "too sensitive to rounding" in failure


def test_gate_says_when_most_disagreements_are_ties_at_the_integer_models_top():
    """A softmax model near chance (a Keras 3 CNN after 60 steps: 7.4 % accuracy) agreed on
    5.3 %: its probabilities all sat within one output step, so the integer model's top was a
    tie broken by class order; the message blamed a layer or the floor."""
    tied = checks.AccuracyComparison(0.074, 0.1, 0.053, 1000, 1.0, tied_disagreements=940)
    (tied_failure,) = checks.gate(checks.Thresholds(), tied)
    assert (
        "; on 940 of the 947 images the models classify differently, the integer model's "
        "top score is shared by two or more classes" in tied_failure
    )
    assert "below what rounding alone costs" not in tied_failure  # the ties explain it
    few = checks.AccuracyComparison(0.9, 0.9, 0.99, 1000, 1.0, tied_disagreements=4)
    (failure,) = checks.gate(checks.Thresholds(), few)
    assert "shared by two or more classes" not in failure
    # convert's summary gives the count a line, the JSON report a key.
    report = ConversionReport(
        model="m.h5", output="m.tflite", quantization="qat", keras_compute_dtype="float32",
        io_dtype="uint8", dataset="mnist", dataset_source="--dataset", data_dir=None,
        calibration_samples=0, size_bytes=1000, float_size_bytes=4000, accuracy=tied,
        biases_aligned=True, export_model=None, fidelity=None, targets={}, deployment={},
        thresholds=checks.Thresholds(), failures=(tied_failure,),
    )  # fmt: skip
    assert (
        "  (ties at the top: on 940 of the 947 images the models classify differently, the "
        "integer model's top score is shared by two or more classes)"
    ) in format_summary(report).splitlines()
    assert report.to_dict()["tied_disagreements"] == 940


def edgetpu_report(compatible):
    """The Edge TPU target's report on a real file: a LEAKY_RELU model or a ReLU model."""
    inputs = keras.Input((4, 4, 1))
    hidden = keras.layers.Conv2D(2, 3)(inputs)
    hidden = (keras.layers.ReLU() if compatible else keras.layers.LeakyReLU())(hidden)
    model = keras.Model(inputs, keras.layers.Dense(2)(keras.layers.Flatten()(hidden)))
    images = np.random.default_rng(0).uniform(0, 1, (8, 4, 4, 1)).astype("float32")
    flatbuffer = to_integer_tflite(model, images)
    context = TargetContext(flatbuffer, "m.tflite", images[:0], None, None)
    return [EdgeTpu().check(context)]


def test_gate_lists_each_failed_check():
    accuracy = checks.AccuracyComparison(0.95, 0.94, 0.99, 1000)  # 1 pp drop, 99 % agreement
    result = fidelity.FidelityResult(
        (0.0, 0.5), (0.9, 0.5), (0.9, 0.3), (0.9, 0.8), (0.9, 0.8), 0.2, "vanilla", "mean", 10
    )
    failures = checks.gate(
        checks.Thresholds(require_edgetpu=True), accuracy, result, edgetpu_report(False)
    )
    assert len(failures) == 4
    assert failures[0] == (
        "accuracy drop 1.00 pp (Keras 95.00 % -> TFLite 94.00 %) exceeds --max_accuracy_drop 0.3 pp"
    )
    assert failures[1] == "top-1 agreement 99.00 % is below --min_agreement 99.5 %"
    assert failures[2].startswith("saliency fidelity gap 20.00 pp exceeds --max_fidelity_gap 5")
    assert failures[3] == (
        "not Edge TPU compatible (first CPU op: #1 LEAKY_RELU) and --require edgetpu is set"
    )
    # Looser thresholds pass; the Edge TPU verdict only counts when required.
    loose = checks.Thresholds(max_accuracy_drop=1.0, min_agreement=0.99, max_fidelity_gap=20)
    assert checks.gate(loose, accuracy, result, edgetpu_report(False)) == []
    # A TFLite model more accurate than the Keras model never fails the accuracy check.
    better = checks.AccuracyComparison(0.90, 0.95, 1.0, 20)
    assert checks.gate(checks.Thresholds(), better) == []


# ------------------------------------------------------------------------------- fidelity
@pytest.mark.slow
@pytest.mark.parametrize("protocol", ["road", "pixel"])
def test_fidelity_check_passes_on_the_faithful_integer_model(faithful, mnist, protocol):
    qat, tflite = faithful
    _, x_test, y_test = mnist
    images, labels = x_test[:FIDELITY_IMAGES], y_test[:FIDELITY_IMAGES]
    result = fidelity.fidelity_check(
        qat, tflite, images, labels, export_model=export_model(qat), protocol=protocol
    )
    assert result.fractions == explain.DEFAULT_FRACTIONS and result.protocol == protocol
    assert result.fill == (
        "mean" if protocol == "pixel" else "noisy linear imputation (noise 0.01)"
    )
    # x = 0 is the plain accuracy of each model on these images.
    accuracy = checks.compare_accuracy(
        lambda x: qat.predict(x, verbose=0), tflite.predict, images, labels
    )
    assert result.keras_top[0] == result.keras_bottom[0] == accuracy.keras_accuracy
    assert result.tflite_top[0] == accuracy.tflite_accuracy
    assert accuracy.keras_accuracy >= 0.85  # the model learned something
    # The saliency means something: removing the salient half hurts more than the rest.
    assert result.keras_top[5] < result.keras_bottom[5] - 0.2
    assert result.gap_pp <= checks.Thresholds().max_fidelity_gap
    # An 8-bit QAT model is its own export model: identical curves.
    assert result.export_top == result.keras_top and result.export_bottom == result.keras_bottom
    assert checks.gate(checks.Thresholds(), accuracy, result) == []
    report = json.loads(json.dumps(result.to_dict()))
    assert report["gap_pp"] == pytest.approx(result.gap_pp)
    assert set(report["areas"]) == {
        "keras_top",
        "tflite_top",
        "keras_bottom",
        "tflite_bottom",
        "export_top",
        "export_bottom",
    }


@pytest.mark.slow
def test_fidelity_check_fails_on_a_planted_unfaithful_integer_model(
    faithful, shuffled_tflite, mnist
):
    qat, tflite = faithful
    _, x_test, y_test = mnist
    images, labels = x_test[:FIDELITY_IMAGES], y_test[:FIDELITY_IMAGES]
    saliency = explain.saliency_maps(qat, images, labels)
    good = fidelity.fidelity_check(qat, tflite, images, labels, saliency=saliency)
    bad = fidelity.fidelity_check(qat, shuffled_tflite, images, labels, saliency=saliency)
    assert good.keras_top == bad.keras_top  # same Keras model, same masks
    assert bad.gap_pp > 30.0  # measured: about 75 pp
    failures = checks.gate(checks.Thresholds(), checks.AccuracyComparison(1, 1, 1, 1), bad)
    assert len(failures) == 1 and failures[0].startswith("saliency fidelity gap")


def test_fidelity_check_counts_all_zero_saliency_maps(faithful, mnist):
    qat, tflite = faithful
    _, x_test, y_test = mnist
    images, labels = x_test[:8], y_test[:8]
    saliency = explain.saliency_maps(qat, images, labels)
    saliency[:3] = 0.0
    result = fidelity.fidelity_check(
        qat, tflite, images, labels, saliency=saliency, fractions=(0.5,)
    )
    assert result.zero_saliency_images >= 3
    assert result.areas() == {}  # one point has no area


def test_fidelity_check_rejects_bad_input(faithful, mnist):
    qat, tflite = faithful
    _, x_test, y_test = mnist
    with pytest.raises(ValueError, match=r"`images` must hold at least one image"):
        fidelity.fidelity_check(qat, tflite, x_test[:0], y_test[:0])
    with pytest.raises(ValueError, match=r"`saliency` must be shaped like `images`"):
        fidelity.fidelity_check(qat, tflite, x_test[:4], y_test[:4], saliency=np.zeros((4, 28, 28)))
    with pytest.raises(ValueError, match=r"`method` must be one of 'vanilla', 'smoothgrad'"):
        fidelity.fidelity_check(
            qat, tflite, x_test[:4], y_test[:4], saliency=x_test[:4], method="lime"
        )


def test_saliency_figure_is_a_png(tmp_path, faithful, mnist):
    qat, tflite = faithful
    _, x_test, y_test = mnist
    images, labels = x_test[:3], y_test[:3]
    saliency = explain.saliency_maps(qat, images, labels)
    path = tmp_path / "saliency.png"
    fidelity.save_saliency_figure(path, images, saliency, labels, tflite.predict(images))
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    with pytest.raises(ValueError, match=r"`max_images` must be an integer >= 1. Received: 0"):
        fidelity.save_saliency_figure(path, images, saliency, labels, labels, max_images=0)
    with pytest.raises(ValueError, match=r"`images` must be \(N, H, W, C\)"):
        fidelity.save_saliency_figure(path, images, saliency[:, :, :, 0], labels, labels)


# ------------------------------------------------------------ float baseline of the converter
def trained_residual_qat(bits):
    rng = np.random.default_rng(0)
    x = rng.integers(0, 256, (32, 8, 8, 3)).astype(np.float32)
    y = (x.mean(axis=(1, 2, 3)) > 127).astype(np.int64)
    keras.utils.set_random_seed(1)
    float_model = residual_model()
    qat = quantize_model(float_model, weight_bits=bits, activation_bits=bits)
    qat.compile(keras.optimizers.Adam(1e-2), keras.losses.SparseCategoricalCrossentropy(True))
    qat.fit(x, y, epochs=2, batch_size=16, verbose=0)
    return float_model, qat, x


def test_strip_quantization_copies_the_float_weights_under_the_wrappers(tmp_path):
    float_model, qat, x = trained_residual_qat(4)
    # Save and load: the loaded wrappers name their variables differently.
    path = tmp_path / "qat.h5"
    qat.save(path)
    stripped = strip_quantization(load_model(path))
    assert [layer.name for layer in stripped.layers] == [layer.name for layer in float_model.layers]
    by_name = {w.name.split("/")[-1]: w for w in qat.get_layer("quant_conv").weights}
    np.testing.assert_array_equal(stripped.get_layer("conv").kernel.numpy(), by_name["kernel:0"])
    bn = qat.get_layer("quant_conv_bn")  # BN -> Add: wrapped for its output range
    np.testing.assert_array_equal(
        stripped.get_layer("conv_bn").moving_variance.numpy(),
        [w for w in bn.weights if w.name.endswith("moving_variance:0")][0].numpy(),
    )
    # The stripped model is the float network: with the float model's (trained) weights
    # copied in, it computes the same function.
    float_model.set_weights(stripped.get_weights())
    np.testing.assert_allclose(stripped.predict(x), float_model.predict(x), rtol=1e-6)
    # No quantizer left.
    assert not any(hasattr(layer, "quantize_config") for layer in stripped.layers)


def test_untrained_qat_strips_to_the_original_float_model():
    keras.utils.set_random_seed(2)
    float_model = residual_model()
    stripped = strip_quantization(quantize_model(float_model))
    x = np.random.default_rng(1).integers(0, 256, (4, 8, 8, 3)).astype(np.float32)
    np.testing.assert_array_equal(stripped.predict(x, verbose=0), float_model.predict(x, verbose=0))


@pytest.mark.slow
def test_float_tflite_is_float32_with_a_static_batch_and_matches_keras():
    float_model, qat, x = trained_residual_qat(8)
    flatbuffer = float_tflite(qat)  # a QAT model is stripped first
    summary = read_model(flatbuffer)
    assert summary.inputs[0].type == "FLOAT32" and summary.outputs[0].type == "FLOAT32"
    assert summary.inputs[0].shape_signature == (1, 8, 8, 3)
    assert "QUANTIZE" not in summary.op_names and "DEQUANTIZE" not in summary.op_names
    expected = strip_quantization(qat).predict(x, verbose=0)
    # float32 kernels in another order of summation: a few ulps of the logits.
    np.testing.assert_allclose(TFLiteModel(flatbuffer).predict(x), expected, atol=1e-4)
    # Same network, float32 weights: about 4x the int8 model's weight bytes.
    assert len(to_integer_tflite(qat, x)) < len(flatbuffer)
    assert read_model(float_tflite(float_model, batch_size=4)).inputs[0].shape == (4, 8, 8, 3)


def test_float_tflite_and_strip_reject_bad_input():
    with pytest.raises(ValueError, match=r"`batch_size` must be a positive int. Received: 0"):
        float_tflite(residual_model(), batch_size=0)
    with pytest.raises(ValueError, match=r"must be a Functional or Sequential tf_keras model"):
        strip_quantization("model.h5")


def test_an_accuracy_check_finer_than_one_image_says_so():
    """On 200 images one image is 0.5 pp: a 0.3 pp limit fails on any single image."""
    accuracy = checks.AccuracyComparison(0.32, 0.315, 0.985, 200)
    (failure,) = checks.gate(checks.Thresholds(min_agreement=0.98), accuracy, None)
    assert failure == (
        "accuracy drop 0.50 pp (Keras 32.00 % -> TFLite 31.50 %) exceeds --max_accuracy_drop "
        "0.3 pp (one image is 0.50 pp of these 200: test on --num_test 334 or more images, or "
        "allow a larger drop)"
    )
    # 334 images: one image is 0.2994 pp, within 0.3
    assert 100 / 334 <= 0.3 < 100 / 333
    assert checks.gate(checks.Thresholds(max_accuracy_drop=1.0, min_agreement=0.98), accuracy,
                       None) == []  # fmt: skip
