"""QAT from a trained float model: --init_from, calibrated α and ranges, --model FILE."""

import numpy as np
import pytest

from sgt_tfmot import quantize_model, save_model
from sgt_tfmot._checks import InputError
from sgt_tfmot.keras import keras
from sgt_tfmot.models import copy_weights
from sgt_tfmot.quantize import calibrate_ranges, output_range_variables, pact_alphas
from sgt_tfmot.training import TrainConfig, train
from tests.helpers.models import residual_model

RNG = np.random.default_rng(0)
X = RNG.uniform(0, 255, (64, 8, 8, 3)).astype("float32")


def trained_float():
    keras.utils.set_random_seed(0)
    model = residual_model()
    model.compile(keras.optimizers.Adam(1e-2), keras.losses.MeanSquaredError())
    model.fit(X, RNG.normal(size=(64, 4)), epochs=3, verbose=0)  # BN statistics move
    return model


def test_calibrated_alpha_is_the_percentile_of_the_float_activations():
    model = trained_float()
    qat = quantize_model(model, weight_bits=8, activation_bits=4)
    alphas = calibrate_ranges(qat, model, X, percentile=99.0)
    for name in ("quant_stem_relu", "quant_add_relu"):
        inner = qat.get_layer(name).layer.name
        recorded = keras.Model(model.inputs, model.get_layer(inner).output).predict(X, verbose=0)
        expected = np.percentile(recorded.astype(np.float64), 99.0)
        assert alphas[name] == pytest.approx(expected, rel=1e-6)
        assert float(pact_alphas(qat)[name].numpy()) == pytest.approx(expected, rel=1e-6)
    # An 8-bit range covers the recorded values, with 0 on its grid (not a rounding tie).
    variables = output_range_variables(qat.get_layer("quant_pool"))
    pooled = keras.Model(model.inputs, model.get_layer("pool").output).predict(X, verbose=0)
    low, high = float(variables["min_var"].numpy()), float(variables["max_var"].numpy())
    assert low <= min(0.0, pooled.min()) + 1e-6 and high >= pooled.max() - (high - low) / 255
    zero_point = -low / ((high - low) / 255)
    assert abs(zero_point - round(zero_point)) < 1e-3


def test_first_outputs_of_the_qat_model_are_the_float_model_within_quantization():
    model = trained_float()
    qat = quantize_model(model, weight_bits=8, activation_bits=8)
    calibrate_ranges(qat, model, X, percentile=100.0)
    logits = output_range_variables(qat.get_layer("quant_logits"))
    step = float(logits["max_var"].numpy() - logits["min_var"].numpy()) / 255
    difference = np.abs(qat.predict(X, verbose=0) - model.predict(X, verbose=0))
    # Each of the seven quantized tensors of the chain (input, two PACT, add, pool, logits,
    # the 8-bit kernels) is rounded by half a step of its own grid; measured here: 3.2 steps
    # of the logits' grid at most. Before calibration (α = 10, ranges [−6, 6]) far more.
    assert difference.max() <= 4 * step
    uncalibrated = quantize_model(model, weight_bits=8, activation_bits=8)
    before = np.abs(uncalibrated.predict(X, verbose=0) - model.predict(X, verbose=0)).max()
    assert before > 10 * difference.max()


def tiny(out, **overrides):
    settings = dict(model="mobilenet_tiny", max_steps=2, batch_size=16, progress=0,
                    mixed_precision="float32", out_dir=str(out))  # fmt: skip
    settings.update(overrides)
    return TrainConfig(**settings)


@pytest.mark.slow
def test_init_from_a_float_run_starts_qat_from_its_weights(tmp_path):
    train(tiny(tmp_path / "float", float=True, sgt=False))
    metrics = train(
        tiny(tmp_path / "qat", init_from=str(tmp_path / "float"), alpha_init="calibrate",
             weight_bits=4, activation_bits=4, max_steps=1)
    )  # fmt: skip
    alphas = metrics["alpha"]
    assert alphas and all(0 < a <= 6.0 for a in alphas.values())  # ReLU6: α <= 6
    assert len(set(alphas.values())) > 1  # one per layer, from the activations


def test_a_qat_models_float_weights_start_a_float_model():
    """Progressive quantization: the float kernels, biases and BN statistics a QAT model's
    wrappers hold (trained at 4 bits here) go into the float model that a lower bit width
    quantizes; the quantizers' state stays behind."""
    model = trained_float()
    qat = quantize_model(model, weight_bits=4, activation_bits=4)
    qat.compile(keras.optimizers.Adam(1e-2), keras.losses.MeanSquaredError())
    qat.fit(X, RNG.normal(size=(64, 4)), epochs=2, verbose=0)  # the latent weights move
    keras.utils.set_random_seed(1)
    fresh = residual_model()
    copy_weights(qat, fresh, "qat")
    copied = 0
    for layer in (layer for layer in fresh.layers if layer.weights):
        wrapper = next(w for w in qat.layers if getattr(w, "layer", w).name == layer.name)
        held = {v.name.rsplit("/", 1)[-1]: v.numpy() for v in wrapper.weights}
        for weight in layer.weights:
            np.testing.assert_array_equal(weight.numpy(), held[weight.name.rsplit("/", 1)[-1]])
            copied += 1
    assert copied == len(fresh.weights)
    assert not np.allclose(fresh.get_layer("logits").kernel.numpy(),
                           model.get_layer("logits").kernel.numpy())  # fmt: skip
    other = quantize_model(residual_model((28, 28, 1), 10))
    with pytest.raises(InputError, match=r"qat 28 has another architecture .* its layer "
                       r"'stem' holds 'kernel' with shape \(3, 3, 1, 8\), expected"):  # fmt: skip
        copy_weights(other, residual_model(), "qat 28")


@pytest.fixture(scope="module")
def w8_run(tmp_path_factory):
    """A finished W8A8 run, to start lower bit widths from. Trained once, in float32: its
    model.h5 is float32 whatever the precision of its training, and the precision under
    test is that of the run started from it."""
    out = tmp_path_factory.mktemp("init_from") / "w8"
    train(tiny(out, weight_bits=8, activation_bits=8, sgt=False))
    return out


@pytest.mark.slow
@pytest.mark.parametrize("precision", ["float32", "mixed_bfloat16"])  # both CPUs' paths
def test_init_from_a_qat_run_starts_a_lower_bit_width(w8_run, tmp_path, precision):
    metrics = train(tiny(tmp_path / "w4", init_from=str(w8_run), weight_bits=4,
                         activation_bits=4, max_steps=1, mixed_precision=precision))  # fmt: skip
    assert metrics["optimizer_steps"] == 1 and metrics["flags"]["alpha_init"] == "calibrate"


@pytest.mark.parametrize("case", ["architecture", "missing"])
def test_init_from_refuses_what_it_cannot_start_from(case, tmp_path):
    if case == "architecture":
        path = save_model(residual_model((28, 28, 1), 10), tmp_path / "other.h5")
        message = "has another architecture than the model being trained"
    else:
        path, message = tmp_path / "nothing.h5", "No model at"
    with pytest.raises(InputError if case != "missing" else ValueError, match=message):
        train(tiny(tmp_path / "run", init_from=str(path)))


def test_a_users_model_file_is_trained_and_checked_against_the_data(tmp_path):
    path = save_model(residual_model((28, 28, 1), 10), tmp_path / "mine.h5")
    metrics = train(tiny(tmp_path / "run", model=str(path), sgt=False, max_steps=1))
    assert metrics["optimizer_steps"] == 1
    wrong = save_model(residual_model((28, 28, 1), 3), tmp_path / "three.h5")
    with pytest.raises(InputError, match="has 3 outputs but the data has 10 classes"):
        train(tiny(tmp_path / "run2", model=str(wrong)))
    with pytest.raises(InputError, match="--alpha_init calibrate sets each α"):
        tiny(tmp_path / "run3", alpha_init="calibrate").check()


def test_alpha_init_defaults_to_calibrate_from_trained_weights_else_10(tmp_path):
    path = save_model(residual_model((28, 28, 1), 10), tmp_path / "mine.h5")
    assert tiny(tmp_path / "a").check().alpha_init == 10.0  # a fresh model: the PACT paper's
    assert tiny(tmp_path / "b", model=str(path)).check().alpha_init == "calibrate"
    assert tiny(tmp_path / "c", init_from=str(path)).check().alpha_init == "calibrate"
    assert tiny(tmp_path / "d", model=str(path), alpha_init=4.0).check().alpha_init == 4.0


@pytest.mark.slow
@pytest.mark.parametrize("precision", ["float32", "mixed_bfloat16"])  # both CPUs' paths
def test_a_model_file_starts_qat_from_its_own_activations(tmp_path, precision):
    """A user's trained file fine-tuned with the defaults: α and the 8-bit ranges come from
    the file's own float activations (with α 10 and default ranges, the TFMOT tutorial's
    model on raw pixels collapsed to α 0.018 and 14 % accuracy), unless --alpha_init gives a
    number."""
    keras.utils.set_random_seed(0)
    inputs = keras.Input((28, 28, 1))
    x = keras.layers.Conv2D(6, 3, activation="relu", name="conv")(inputs)  # raw 0..255 pixels
    model = keras.Model(inputs, keras.layers.Dense(10)(keras.layers.Flatten()(x)))
    path = save_model(model, tmp_path / "mine.h5")
    metrics = train(tiny(tmp_path / "run", model=str(path), sgt=False, max_steps=1,
                         learning_rate=1e-9, mixed_precision=precision))  # fmt: skip
    (alpha,) = metrics["alpha"].values()
    assert alpha > 100  # the conv's outputs on 0..255 pixels, not the default 10
    if precision != "float32":
        return  # --alpha_init's number: the same code under either precision
    fixed = train(tiny(tmp_path / "run2", model=str(path), sgt=False, max_steps=1,
                       learning_rate=1e-9, alpha_init=10.0, mixed_precision=precision))  # fmt: skip
    assert list(fixed["alpha"].values()) == [pytest.approx(10.0, abs=1e-3)]
