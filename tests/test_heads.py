"""Softmax heads: detected, trained with the matching loss, kept in Keras, one SOFTMAX in the
.tflite (never two), all int8 through the API path; sigmoid heads refused with what to do."""

import numpy as np
import pytest

from sgt_tfmot import align_biases, heads, load_model, quantize_model, save_model
from sgt_tfmot._checks import InputError
from sgt_tfmot.conversion import CheckOptions, stages
from sgt_tfmot.keras import keras
from sgt_tfmot.models import check_classifier
from sgt_tfmot.tflite import TFLiteModel, check_edgetpu, to_integer_tflite
from sgt_tfmot.tflite.flatbuffer import read_model
from sgt_tfmot.trainers import SaliencyGuidedModel
from sgt_tfmot.training import TrainConfig, train

L = keras.layers
RNG = np.random.default_rng(0)
X = RNG.integers(0, 256, (128, 8, 8, 3)).astype("float32")
Y = (X[:, :4, :4].mean(axis=(1, 2, 3)) > 127).astype("int64") + 2 * (X[..., 0].mean((1, 2)) > 127)


def classifier(head: str, input_shape=(8, 8, 3), classes=4):
    """Rescaling, Conv-ReLU, pooling, then the head: "dense" (Dense softmax), "activation"
    (Dense, Activation softmax), "layer" (Dense, Softmax), "reshape" (MobileNet's: a 1x1
    conv, Reshape, Activation softmax), "logits", or "sigmoid"."""
    inputs = keras.Input(input_shape)
    x = L.Rescaling(1 / 127.5, offset=-1.0)(inputs)
    x = L.Conv2D(8, 3, activation="relu")(x)
    if head == "reshape":
        x = L.GlobalAveragePooling2D(keepdims=True)(x)
        x = L.Reshape((classes,))(L.Conv2D(classes, 1, name="preds")(x))
        return keras.Model(inputs, L.Activation("softmax", name="predictions")(x))
    x = L.GlobalAveragePooling2D()(x)
    if head in ("dense", "sigmoid"):
        activation = "softmax" if head == "dense" else "sigmoid"
        return keras.Model(inputs, L.Dense(classes, activation=activation, name="predictions")(x))
    x = L.Dense(classes, name="logits")(x)
    if head == "activation":
        x = L.Activation("softmax", name="predictions")(x)
    elif head == "layer":
        x = L.Softmax(name="predictions")(x)
    return keras.Model(inputs, x)


def mnist_classifier(activation):
    """Two stride-2 Conv-BN-ReLUs, pooling, Dense(10, activation) (a tutorial's classifier)."""
    inputs = keras.Input((28, 28, 1))
    x = L.Rescaling(1 / 255.0)(inputs)
    for filters in (16, 32):
        x = L.Conv2D(filters, 3, strides=2, padding="same", use_bias=False)(x)
        x = L.ReLU()(L.BatchNormalization(momentum=0.9)(x))
    x = L.GlobalAveragePooling2D()(x)
    return keras.Model(inputs, L.Dense(10, activation=activation, name="predictions")(x))


def softmax(z):
    e = np.exp(z - z.max(axis=1, keepdims=True))
    return e / e.sum(axis=1, keepdims=True)


def op_names(flatbuffer):
    return [op.name for op in read_model(flatbuffer).ops]


@pytest.mark.parametrize("head", ["dense", "activation", "layer", "reshape"])
def test_softmax_heads_are_detected_in_the_float_and_the_qat_model(head):
    model = classifier(head)
    assert heads.output_head(model) == heads.SOFTMAX
    qat = quantize_model(model, weight_bits=8, activation_bits=8)
    assert heads.output_head(qat) == heads.SOFTMAX
    assert not heads.loss(qat).get_config()["from_logits"]
    assert SaliencyGuidedModel(qat).from_logits is False
    np.testing.assert_allclose(qat.predict(X[:8], verbose=0).sum(axis=1), 1.0, atol=1e-5)


def test_logits_heads_keep_from_logits():
    model = classifier("logits")
    assert heads.output_head(model) == heads.LOGITS
    assert heads.loss(model).get_config()["from_logits"]
    assert heads.logits_model(model) is model


def test_a_sigmoid_head_is_refused_with_what_to_do():
    with pytest.raises(InputError, match=r"'predictions' ends in a sigmoid .*\(2 for a binary"):
        check_classifier(classifier("sigmoid"), "--model mine.h5")


@pytest.mark.slow
def test_dense_softmax_head_quantizes_to_int8_ops_only_and_one_softmax(tmp_path):
    """Through the API (quantize_model -> fit -> to_integer_tflite): the Dense's logits get an
    8-bit range in front of the softmax, so no DEQUANTIZE/QUANTIZE is left in the graph (the
    softmax used to be quantized after the Dense, on probabilities: a float FULLY_CONNECTED
    output, DEQUANTIZE and QUANTIZE around the SOFTMAX, no Edge TPU)."""
    keras.utils.set_random_seed(0)
    qat = quantize_model(classifier("dense"), weight_bits=8, activation_bits=8)
    qat.compile(keras.optimizers.Adam(1e-2), heads.loss(qat))
    qat.fit(X, Y, epochs=3, batch_size=32, verbose=0)
    loaded = load_model(save_model(qat, tmp_path / "softmax.h5"))
    assert heads.output_head(loaded) == heads.SOFTMAX
    align_biases(loaded)
    for add in (False, True):  # the model's own softmax, never a second one
        flatbuffer = to_integer_tflite(loaded, softmax=add)
        assert op_names(flatbuffer) == ["CONV_2D", "CONV_2D", "MEAN", "FULLY_CONNECTED", "SOFTMAX"]
        assert check_edgetpu(flatbuffer).compatible
    expected, actual = loaded.predict(X, verbose=0), TFLiteModel(flatbuffer).predict(X)
    # int8 SOFTMAX: output scale 1/256, zero point -128 (TFLite's fixed output grid).
    np.testing.assert_allclose(actual, expected, atol=1 / 256)
    np.testing.assert_array_equal(actual.argmax(1), expected.argmax(1))

    logits = heads.logits_model(loaded)  # convert --logits: the same graph without it
    np.testing.assert_allclose(softmax(logits.predict(X, verbose=0)), expected, atol=1e-6)
    flatbuffer = to_integer_tflite(logits)
    assert op_names(flatbuffer) == ["CONV_2D", "CONV_2D", "MEAN", "FULLY_CONNECTED"]
    step = TFLiteModel(flatbuffer).output["quantization"][0]
    np.testing.assert_allclose(
        TFLiteModel(flatbuffer).predict(X), logits.predict(X, verbose=0), atol=step + 1e-6
    )


def test_a_float_softmax_model_loses_its_fused_softmax_for_logits():
    model = classifier("dense")
    logits = heads.logits_model(model)
    assert heads.output_head(logits) == heads.LOGITS
    np.testing.assert_allclose(
        softmax(logits.predict(X[:8], verbose=0)),
        model.predict(X[:8], verbose=0),
        atol=1e-6,
    )


@pytest.mark.slow
def test_train_and_convert_a_softmax_model_file(tmp_path):
    """`train --model FILE` with a softmax head, then `convert`: trained on probabilities with
    the matching loss, saved with its softmax, converted with exactly one SOFTMAX (two
    stacked ones gave scores of about 0.10 everywhere and 0 % agreement), checks passing."""
    keras.utils.set_random_seed(0)
    path = save_model(mnist_classifier("softmax"), tmp_path / "mine.h5")
    run = tmp_path / "run"
    # The file's weights are untrained: α from 10 (not calibrated from their activations).
    config = TrainConfig(model=str(path), max_steps=150, batch_size=32, progress=0, sgt=False,
                         weight_bits=8, activation_bits=8, mixed_precision="float32",
                         learning_rate=0.05, out_dir=str(run), alpha_init=10.0)  # fmt: skip
    metrics = train(config)
    assert metrics["test_accuracy"] > 0.3  # learned (16 % with the loss on logits)
    saved = load_model(run / "model.h5")
    assert heads.output_head(saved) == heads.SOFTMAX  # the user's Keras semantics kept
    probabilities = saved.predict(np.zeros((2, 28, 28, 1), np.float32), verbose=0)
    np.testing.assert_allclose(probabilities.sum(axis=1), 1.0, atol=1e-5)
    checks = CheckOptions(num_test=300, fidelity_images=0, occlusion_images=0)
    result = stages.convert_and_check(run, tmp_path / "mine.tflite", checks=checks)
    flatbuffer = (tmp_path / "mine.tflite").read_bytes()
    assert op_names(flatbuffer).count("SOFTMAX") == 1
    assert result.result.accuracy.agreement >= 0.99
    assert result.report["deployment"]["scores"] == "probabilities (softmax)"
    scores = TFLiteModel(flatbuffer).predict(np.zeros((1, 28, 28, 1), np.float32))
    assert scores.max() > 0.2  # not ~0.10 everywhere (softmax of probabilities)
