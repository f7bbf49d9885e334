"""saving: run directories, clear errors, no silent overwrite, float32 files."""

import numpy as np
import pytest

from sgt_tfmot import quantize_model, quantize_scope
from sgt_tfmot.keras import keras
from sgt_tfmot.saving import ModelFileError, float32_model, load_model, save_model
from tests.helpers.models import residual_model

X = np.random.default_rng(0).uniform(0, 255, (4, 8, 8, 3)).astype("float32")


@pytest.mark.parametrize("suffix", [".h5", ".keras"])
def test_float_model_round_trip_and_no_overwrite(tmp_path, suffix):
    model = residual_model()
    path = save_model(model, tmp_path / f"m{suffix}")
    np.testing.assert_array_equal(
        load_model(path).predict(X, verbose=0), model.predict(X, verbose=0)
    )
    with pytest.raises(FileExistsError, match="exists; pass overwrite=True"):
        save_model(model, path)
    save_model(model, path, overwrite=True)
    assert [p.name for p in tmp_path.iterdir()] == [f"m{suffix}"]  # no partial file left


def test_qat_model_from_a_run_directory(tmp_path):
    qat = quantize_model(residual_model())
    save_model(qat, tmp_path / "model.h5")
    np.testing.assert_array_equal(
        load_model(tmp_path).predict(X, verbose=0), qat.predict(X, verbose=0)
    )


def test_mixed_precision_models_are_saved_with_float32_layers(tmp_path):
    keras.mixed_precision.set_global_policy("mixed_bfloat16")
    try:
        qat = quantize_model(residual_model())
    finally:
        keras.mixed_precision.set_global_policy("float32")
    assert qat.layers[2].compute_dtype == "bfloat16"
    rebuilt = float32_model(qat)
    assert {layer.compute_dtype for layer in rebuilt.layers} == {"float32"}
    loaded = load_model(save_model(qat, tmp_path / "model.h5"))
    assert {layer.compute_dtype for layer in loaded.layers} == {"float32"}
    np.testing.assert_allclose(
        loaded.predict(X, verbose=0), qat.predict(X, verbose=0), atol=0.1
    )  # bfloat16 compute vs float32 compute of the same weights
    model = residual_model()
    assert float32_model(model) is model


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (lambda d: d / "missing.h5", "No model at .*the path does not exist"),
        (lambda d: d, "is a directory without model.h5"),
        (lambda d: (d / "notes.txt").write_text("x") and d / "notes.txt", "not a Keras model file"),
        (
            lambda d: (d / "bad.h5").write_bytes(b"not hdf5") and d / "bad.h5",
            r"bad.h5 is truncated or not a Keras model file \(HDF5 cannot read it\)",
        ),
    ],
)
def test_bad_model_paths(tmp_path, make, message):
    with pytest.raises(ModelFileError, match=message):
        load_model(make(tmp_path))


def test_bad_suffix_is_refused(tmp_path):
    with pytest.raises(ValueError, match=r"Model files end in \.h5 or \.keras"):
        save_model(residual_model(), tmp_path / "model.pb")


# ----------------------------------------------------------------------------- every pattern
L = keras.layers


def _head(x):
    x = L.GlobalAveragePooling2D()(x) if x.shape.rank == 4 else x
    return L.Dense(3, name="logits")(x)


# Each builder maps the input tensor (8x8x3) to a hidden tensor; `_head` adds the logits.
PATTERNS = {
    "conv_fused_relu": lambda x: L.Conv2D(6, 3, activation="relu")(x),
    "conv_fused_relu6": lambda x: L.Conv2D(6, 3, activation="relu6")(x),
    "depthwise_fused_relu": lambda x: L.DepthwiseConv2D(3, activation="relu")(x),
    "depthwise_fused_relu6": lambda x: L.DepthwiseConv2D(3, activation="relu6")(x),
    "dense_fused_relu": lambda x: L.Dense(5, activation="relu")(L.Flatten()(x)),
    "dense_fused_relu6": lambda x: L.Dense(5, activation="relu6")(L.Flatten()(x)),
    "conv_then_relu_layer": lambda x: L.ReLU()(L.Conv2D(6, 3)(x)),
    "conv_then_relu6_layer": lambda x: L.ReLU(6.0)(L.Conv2D(6, 3)(x)),
    "conv_then_activation_relu": lambda x: L.Activation("relu")(L.Conv2D(6, 3)(x)),
    "bn_before_conv": lambda x: L.Conv2D(6, 3, activation="relu")(L.BatchNormalization()(x)),
    "conv_bn_relu": lambda x: L.ReLU()(L.BatchNormalization()(L.Conv2D(6, 3, use_bias=False)(x))),
    "add": lambda x: L.ReLU()(L.Add()([L.Conv2D(3, 3, padding="same")(x), x])),
    "concatenate": lambda x: L.Concatenate()([L.Conv2D(4, 1, activation="relu")(x), x]),
    "pooling": lambda x: L.AveragePooling2D()(L.MaxPooling2D(1)(L.Conv2D(4, 3)(x))),
    "dropout": lambda x: L.Dropout(0.5)(L.Conv2D(4, 3, activation="relu")(x)),
    "zero_padding": lambda x: L.DepthwiseConv2D(3, 2)(L.ZeroPadding2D(((0, 1), (0, 1)))(x)),
    "reshape_flatten": lambda x: L.Dense(4)(L.Flatten()(L.Reshape((16, 12))(x))),
}


def _pattern_model(name):
    inputs = keras.Input((8, 8, 3))
    return keras.Model(inputs, _head(PATTERNS[name](inputs)), name=name)


def _move_every_state(model, seed=0):
    """Random, valid values for every weight: α > 0, min < max, variance > 0."""
    rng = np.random.default_rng(seed)
    values = []
    for weight in model.weights:
        name, shape = weight.name, tuple(weight.shape)
        if weight.dtype.is_integer:
            value = np.full(shape, 7, weight.dtype.as_numpy_dtype)
        elif "alpha" in name:
            value = rng.uniform(1.0, 5.0, shape)
        elif name.endswith("min:0"):
            value = -rng.uniform(0.5, 2.0, shape)
        elif name.endswith("max:0") or "variance" in name:
            value = rng.uniform(1.0, 3.0, shape)
        else:
            value = rng.normal(0.0, 0.3, shape)
        values.append(np.asarray(value, weight.dtype.as_numpy_dtype))
    model.set_weights(values)


@pytest.mark.parametrize("pattern", sorted(PATTERNS))
def test_every_quantizable_pattern_saves_and_loads_back(tmp_path, pattern):
    """Both formats, through `sgt_tfmot.saving` and through Keras inside `quantize_scope`.

    Before the wrapper built its inner layer first, a bias beside a trainable α (fused
    activations) failed in .h5 and every quantized layer failed in .keras."""
    qat = quantize_model(_pattern_model(pattern), weight_bits=4, activation_bits=4)
    _move_every_state(qat)
    expected = qat.predict(X, verbose=0)
    for suffix in (".h5", ".keras"):
        path = save_model(qat, tmp_path / f"model{suffix}")
        np.testing.assert_array_equal(load_model(path).predict(X, verbose=0), expected)
        with quantize_scope():
            plain = keras.models.load_model(path, compile=False)
        np.testing.assert_array_equal(plain.predict(X, verbose=0), expected)
