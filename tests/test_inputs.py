"""The inputs a user's model expects: (H, W) images without a channel axis (TFMOT's tutorial
model) on the command line as in the API, and input ranges that are checked, never silently
binarised or clipped (`FixedRangeQuantizer.fits`)."""

import json

import numpy as np
import pytest

from sgt_tfmot import convert as convert_cli, quantize_model, save_model, train as train_cli
from sgt_tfmot._checks import InputError
from sgt_tfmot.explanation import explain_models
from sgt_tfmot.keras import keras, tf
from sgt_tfmot.models import with_channel_axis
from sgt_tfmot.quantize import check_input_fits
from sgt_tfmot.quantizers import FixedRangeQuantizer
from sgt_tfmot.tflite import to_integer_tflite
from sgt_tfmot.tflite.runtime import TFLiteModel
from tests.helpers.data import write_bars_npz

L = keras.layers
SIZE = 12


def tutorial_model(size=SIZE, classes=3):
    """TFMOT's QAT tutorial model, smaller: (H, W) input, Reshape to (H, W, 1), Conv2D-ReLU,
    max pooling, Flatten, Dense logits."""
    return keras.Sequential([
        L.InputLayer(input_shape=(size, size)),
        L.Reshape(target_shape=(size, size, 1)),
        L.Conv2D(filters=4, kernel_size=(3, 3), activation="relu"),
        L.MaxPooling2D(pool_size=(2, 2)),
        L.Flatten(),
        L.Dense(classes),
    ])  # fmt: skip


def pixels(count=5, seed=1):
    return np.random.default_rng(seed).uniform(0, 255, (count, SIZE, SIZE)).astype(np.float32)


@pytest.mark.parametrize("quantized", [False, pytest.param(True, marks=pytest.mark.slow)])
def test_a_model_without_channel_axis_is_rebuilt_with_one_computing_the_same(quantized):
    model = tutorial_model()
    model = quantize_model(model, 8, 8) if quantized else model
    rebuilt = with_channel_axis(model, "tutorial.h5")
    assert tuple(rebuilt.inputs[0].shape) == (None, SIZE, SIZE, 1)
    x = pixels()
    # The same layers and weights on the same values: the same float32 outputs.
    np.testing.assert_array_equal(rebuilt(x[..., None]).numpy(), model(x).numpy())


def test_a_model_with_a_channel_axis_is_left_as_it_is():
    inputs = keras.Input((SIZE, SIZE, 1))
    model = keras.Model(inputs, L.Dense(3)(L.Flatten()(inputs)))
    assert with_channel_axis(model, "m.h5") is model


def test_a_layer_that_needs_the_missing_axis_is_named():
    """A Dense on the rows of (H, W) images has an (W, 4) kernel; on (H, W, 1) it would be
    (1, 4): the model cannot take the channel axis."""
    inputs = keras.Input((SIZE, SIZE))
    rows = L.Dense(4, name="rows")(inputs)
    model = keras.Model(inputs, L.Dense(3)(L.Flatten()(rows)))
    with pytest.raises(InputError, match=r"^rows.h5: the model takes \(12, 12\) images") as error:
        with_channel_axis(model, "rows.h5")
    assert "weights of layer 'rows' (Dense)" in str(error.value)


def test_the_fit_rule_at_its_edges():
    """Default range [0, 255], step 1: images whose largest |value| is at most 2 steps (but
    not all 0) would be binarised; beyond the range by more than its width, clipped."""
    pixel_range, unit_range = FixedRangeQuantizer(0, 255), FixedRangeQuantizer(0, 1)

    def fits(quantizer, values):
        return bool(quantizer.fits(np.asarray(values, np.float32))[0])

    assert not fits(pixel_range, [0.0, 0.5, 1.0])  # images scaled to [0, 1]
    assert not fits(pixel_range, [-1.0, 1.0])  # scaled to [-1, 1]
    assert not fits(pixel_range, [0.0, 2.0])  # 2 steps: three values at most
    assert fits(pixel_range, [0.0, 2.01])
    assert fits(pixel_range, [0.0, 0.0])  # all zero: nothing lost
    assert fits(pixel_range, [0.0, 255.0]) and fits(pixel_range, [-255.0, 510.0])
    assert not fits(pixel_range, [0.0, 510.5])
    assert not fits(unit_range, [0.0, 255.0])  # pixels on a [0, 1] range: clipped
    assert fits(unit_range, [0.0, 1.0]) and fits(unit_range, [-0.5, 1.9])
    _, smallest, largest = pixel_range.fits(np.array([[0.25, 0.75]], np.float32))
    assert (float(smallest), float(largest)) == (0.25, 0.75)


def small_cnn():
    inputs = keras.Input((8, 8, 1))
    x = L.Conv2D(2, 3, activation="relu")(inputs)
    return keras.Model(inputs, L.Dense(3)(L.Flatten()(x)))


@pytest.mark.slow
def test_training_images_the_input_range_would_binarise_stop_the_training():
    """quantize_model's default input range is 0..255 in steps of 1: images in [0, 1] (the
    tutorial way) became 0 or 1. Training on them now stops with the message; on pixels, or
    on [0, 1] images with input_range=(0, 1), it runs."""
    images = np.random.default_rng(0).uniform(0, 1, (16, 8, 8, 1)).astype(np.float32)
    labels = np.arange(16) % 3
    loss = keras.losses.SparseCategoricalCrossentropy(from_logits=True)
    model = quantize_model(small_cnn(), 8, 8)
    model.compile("sgd", loss)
    with pytest.raises(tf.errors.InvalidArgumentError) as error:
        model.fit(images, labels, epochs=1, verbose=0)
    assert "input_range (0, 255) in steps of 1, which would binarise" in str(error.value)
    assert "input_range=(0, 1) for images scaled to [0, 1]" in str(error.value)
    model.fit(255 * images, labels, epochs=1, verbose=0)
    unit = quantize_model(small_cnn(), 8, 8, input_range=(0, 1))
    unit.compile("sgd", loss)
    history = unit.fit(images, labels, epochs=1, verbose=0)
    assert np.isfinite(history.history["loss"][0])


@pytest.mark.slow
def test_conversion_refuses_representative_data_the_input_range_would_binarise():
    images = np.random.default_rng(0).uniform(0, 1, (16, 8, 8, 1)).astype(np.float32)
    model = quantize_model(small_cnn(), 8, 8)
    with pytest.raises(InputError, match=r"input_range \(0, 255\) .* They span \[0\.0"):
        to_integer_tflite(model, images)
    # A range learned from [0, 1] images (input_range=None) refuses 0..255 pixels.
    learned = quantize_model(small_cnn(), 8, 8, input_range=None)
    learned.compile("sgd", keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    learned.fit(images, np.arange(16) % 3, epochs=3, verbose=0)
    check_input_fits(learned, images, "the images")
    with pytest.raises(InputError, match=r"would binarise or clip the pixels: .* span \[0, 255\]"):
        check_input_fits(learned, np.array([0.0, 255.0]), "the pixels")


@pytest.fixture(scope="module")
def tutorial_files(tmp_path_factory):
    """A trained tutorial model (.h5), its grey 12x12 data, a .tflite of it made with the API
    on (H, W) images, and one converted on [0, 1] images."""
    root = tmp_path_factory.mktemp("inputs")
    npz = write_bars_npz(root / "bars.npz", train=128, test=48)
    arrays = np.load(npz)
    keras.utils.set_random_seed(0)
    model = tutorial_model()
    model.compile(keras.optimizers.Adam(1e-2),
                  keras.losses.SparseCategoricalCrossentropy(from_logits=True))  # fmt: skip
    model.fit(arrays["x_train"].astype(np.float32), arrays["y_train"], epochs=15, verbose=0)
    save_model(model, root / "tutorial.h5")
    x_train = arrays["x_train"].astype(np.float32)
    (root / "rank3.tflite").write_bytes(to_integer_tflite(model, x_train, io_dtype="uint8"))
    scaled = to_integer_tflite(model, x_train / 255.0, io_dtype="uint8")
    (root / "scaled.tflite").write_bytes(scaled)
    return root, npz, model


@pytest.mark.slow
def test_convert_takes_a_model_without_channel_axis(tutorial_files, capsys):
    root, npz, model = tutorial_files
    out = root / "convert"
    code = convert_cli.main([
        "convert", "--int8", str(root / "tutorial.h5"), f"--dataset={npz}",
        f"--output={out / 'm.tflite'}", f"--report={out / 'm.json'}", "--fidelity_images=0",
        "--occlusion_images=0", "--calibration_samples=128",
    ])  # fmt: skip
    err = capsys.readouterr().err
    assert code in (0, 1), err  # 1: a check failed; the numbers are what this test checks
    converted = TFLiteModel((out / "m.tflite").read_bytes())
    assert converted.input_shape == (SIZE, SIZE, 1)
    x_test = np.load(npz)["x_test"].astype(np.float32)
    keras_scores = model.predict(x_test[..., 0], verbose=0)
    agreement = np.mean(converted.predict(x_test).argmax(1) == keras_scores.argmax(1))
    report = json.loads((out / "m.json").read_text())
    assert report["agreement"] == pytest.approx(agreement)  # the file's, against the model's
    assert agreement >= 0.95


@pytest.mark.slow
def test_train_takes_a_model_without_channel_axis(tutorial_files, capsys):
    root, npz, _ = tutorial_files
    code = train_cli.main([
        "train", f"--model={root / 'tutorial.h5'}", f"--dataset={npz}",
        f"--out_dir={root / 'run'}", "--max_steps=2", "--batch_size=16", "--progress=0",
        "--mixed_precision=float32", "--nosgt",
    ])  # fmt: skip
    assert code == 0, capsys.readouterr().err
    metrics = json.loads((root / "run" / "metrics.json").read_text())
    assert np.isfinite(metrics["test_loss"])


@pytest.mark.slow
def test_explain_feeds_a_file_without_channel_axis_and_refuses_one_that_clips(tutorial_files):
    root, npz, _ = tutorial_files
    arrays = np.load(npz)
    runtime = TFLiteModel((root / "rank3.tflite").read_bytes())
    assert runtime.input_shape == (SIZE, SIZE)
    explanation = explain_models(
        [root / "rank3.tflite"], root / "explain", dataset=str(npz), curve_images=48,
        agreement_images=4, num_images=2, protocols="pixel",
    )  # fmt: skip
    x_test, y_test = arrays["x_test"].astype(np.float32), arrays["y_test"]
    expected = np.mean(runtime.predict(x_test[..., 0]).argmax(1) == y_test)
    assert explanation.evaluation.models[0].accuracy == pytest.approx(expected)
    # Converted on [0, 1] images (their largest 209/255), the file's input range is
    # (0, 0.8196): pixels would all clip to its top.
    match = r"scaled.tflite: The model's input is quantized over input_range \(0, 0\.8196\d*\)"
    with pytest.raises(InputError, match=match):
        explain_models([root / "scaled.tflite"], root / "explain2", dataset=str(npz))


@pytest.mark.slow
def test_convert_refuses_a_qat_model_whose_input_range_would_clip_the_pixels(tmp_path, capsys):
    npz = write_bars_npz(tmp_path / "bars.npz", train=32, test=16)
    model = quantize_model(tutorial_model(), 8, 8, input_range=(0, 1))
    save_model(model, tmp_path / "unit.h5")
    code = convert_cli.main([
        "convert", "--int8", str(tmp_path / "unit.h5"), f"--dataset={npz}",
        f"--output={tmp_path / 'm.tflite'}", "--calibration_samples=0",
    ])  # fmt: skip
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1, err
    assert "input_range (0, 1) in steps of 0.003922, which would binarise or clip" in err
    x_test = np.load(npz)["x_test"]
    assert "the command-line tools feed 0..255 pixels" in err
    assert f"They span [{x_test.min():g}, {x_test.max():g}]." in err
    assert not (tmp_path / "m.tflite").exists()
