"""saving: run directories, clear errors, no silent overwrite, float32 files."""

import numpy as np
import pytest

from sgt_tfmot import quantize_model
from sgt_tfmot._keras import keras
from sgt_tfmot.saving import ModelFileError, float32_model, load_model, save_model
from tests.test_quantize import residual_model

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
        (lambda d: (d / "bad.h5").write_bytes(b"not hdf5") and d / "bad.h5", "Could not load"),
    ],
)
def test_bad_model_paths(tmp_path, make, message):
    with pytest.raises(ModelFileError, match=message):
        load_model(make(tmp_path))


def test_bad_suffix_is_refused(tmp_path):
    with pytest.raises(ValueError, match=r"Model files end in \.h5 or \.keras"):
        save_model(residual_model(), tmp_path / "model.pb")
