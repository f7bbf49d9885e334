"""BatchNormalization statistics that lag the weights: `refit_stale_batch_norm` re-estimates
them only when that changes the inference-mode top-1 by the margin, and `train` applies it
to a model file (before its ranges are calibrated) and to the trained model (before it is
saved), under either precision policy."""

import numpy as np
import pytest

from sgt_tfmot.data import open_dataset
from sgt_tfmot.keras import keras
from sgt_tfmot.trainers import reestimate_batch_norm, refit_stale_batch_norm
from sgt_tfmot.training import TrainConfig, train
from sgt_tfmot.training.model import calibration_set


def small_cnn() -> keras.Model:
    keras.utils.set_random_seed(0)
    inputs = keras.Input((28, 28, 1))
    x = keras.layers.Rescaling(1 / 255.0)(inputs)
    x = keras.layers.Conv2D(8, 3, strides=2, use_bias=False)(x)
    x = keras.layers.ReLU()(keras.layers.BatchNormalization()(x))
    x = keras.layers.Conv2D(16, 3, strides=2, use_bias=False)(x)
    x = keras.layers.ReLU()(keras.layers.BatchNormalization()(x))
    return keras.Model(inputs, keras.layers.Dense(10)(keras.layers.GlobalAveragePooling2D()(x)))


@pytest.fixture(scope="module")
def trained():
    """A small CNN trained on mnist_subset (~80 % in a few epochs) with statistics
    re-estimated on its images, and 512 of those images and labels."""
    _, arrays = open_dataset("mnist_subset", None)
    x, y = arrays.split("train")
    x = x.astype(np.float32)
    model = small_cnn()
    model.compile(keras.optimizers.Adam(3e-3),
                  keras.losses.SparseCategoricalCrossentropy(from_logits=True))  # fmt: skip
    model.fit(x, y, batch_size=64, epochs=3, verbose=0)
    reestimate_batch_norm(model, x[:512])
    return model.get_weights(), x[:512], y[:512]


def statistics(model) -> list[np.ndarray]:
    norms = [layer for layer in model.layers if isinstance(layer, keras.layers.BatchNormalization)]
    return [v.numpy() for layer in norms for v in (layer.moving_mean, layer.moving_variance)]


def make_stale(model) -> None:
    """Moving means of a model trained on other inputs: shifted by 3 standard deviations."""
    for layer in model.layers:
        if isinstance(layer, keras.layers.BatchNormalization):
            layer.moving_mean.assign(layer.moving_mean + 3 * np.sqrt(layer.moving_variance))


def top1(model, x, y) -> float:
    return float(np.mean(model.predict(x, verbose=0).argmax(-1) == y))


def test_statistics_that_fit_the_data_are_kept_untouched(trained):
    weights, x, y = trained
    model = small_cnn()
    model.set_weights(weights)
    before = statistics(model)
    fit = refit_stale_batch_norm(model, x, y)
    assert not fit.replaced and fit.images == 512
    assert fit.own_accuracy == pytest.approx(top1(model, x, y))
    assert abs(fit.data_accuracy - fit.own_accuracy) < 0.02  # already the data's statistics
    for a, b in zip(statistics(model), before, strict=True):
        np.testing.assert_array_equal(a, b)


def test_stale_statistics_are_replaced_by_the_data_s(trained):
    weights, x, y = trained
    model, reference = small_cnn(), small_cnn()
    for each in (model, reference):
        each.set_weights(weights)
        make_stale(each)
    stale_accuracy = top1(model, x, y)
    fit = refit_stale_batch_norm(model, x, y)
    assert fit.replaced and fit.own_accuracy == pytest.approx(stale_accuracy)
    assert fit.data_accuracy == pytest.approx(top1(model, x, y))
    assert fit.data_accuracy >= stale_accuracy + 0.05
    reestimate_batch_norm(reference, x)  # what was kept: reestimate_batch_norm's statistics
    for a, b in zip(statistics(model), statistics(reference), strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)


def test_a_gain_below_the_margin_keeps_the_model_s_own(trained):
    weights, x, y = trained
    model = small_cnn()
    model.set_weights(weights)
    make_stale(model)
    stale = statistics(model)
    fit = refit_stale_batch_norm(model, x, y, margin=1.01)  # no gain can reach it
    assert not fit.replaced and fit.data_accuracy > fit.own_accuracy
    for a, b in zip(statistics(model), stale, strict=True):
        np.testing.assert_array_equal(a, b)


def test_no_batch_norm_and_bad_labels():
    inputs = keras.Input((4,))
    model = keras.Model(inputs, keras.layers.Dense(2)(inputs))
    assert refit_stale_batch_norm(model, np.zeros((4, 4)), np.zeros(4)) is None
    with pytest.raises(ValueError, match="labels: 3 for 4 images"):
        refit_stale_batch_norm(small_cnn(), np.zeros((4, 28, 28, 1)), np.zeros(3))


def relu_percentile(model, images, name: str) -> float:
    """The 99.9th percentile of layer `name`'s activations (what --alpha_init calibrate
    makes PACT's α)."""
    probe = keras.Model(model.inputs, model.get_layer(name).output)
    return float(np.percentile(probe.predict(images, verbose=0), 99.9))


@pytest.mark.slow
@pytest.mark.parametrize("policy", ["float32", "mixed_bfloat16"])
def test_train_refits_a_model_file_s_stale_statistics(policy, trained, tmp_path, capsys):
    """A trained file whose moving means are off: `train --model` says so and calibrates its
    PACT α from the re-estimated model's activations, not from the stale ones (which the
    shifted means mostly zero); the metrics record the end-of-run measurement."""
    weights, _, _ = trained
    model = small_cnn()
    model.set_weights(weights)
    make_stale(model)
    path = tmp_path / "stale.h5"
    model.save(path)
    config = TrainConfig(model=str(path), max_steps=2, batch_size=32, progress=0,
                         learning_rate=1e-4, mixed_precision=policy, sgt=False,
                         out_dir=str(tmp_path / "run"))  # fmt: skip
    metrics = train(config)
    said = capsys.readouterr().out
    assert f"BatchNormalization statistics of --model {path} do not fit" in said
    assert metrics["precision"] == policy
    refit = metrics["batch_norm_refit"]
    assert refit["images"] == 1024 and not refit["replaced"]  # still fitting after 2 steps
    # α of the last ReLU: the re-estimated model's percentile (to bfloat16's 0.4 % and two
    # steps at 1e-4), not the stale model's
    _, arrays = open_dataset("mnist_subset", None)
    images, labels = calibration_set(arrays, seed=0)
    last_relu = [layer.name for layer in model.layers if isinstance(layer, keras.layers.ReLU)][-1]
    stale = relu_percentile(model, images, last_relu)
    reestimate_batch_norm(model, images)
    fitted = relu_percentile(model, images, last_relu)
    assert fitted > 2 * stale
    assert metrics["alpha"][f"quant_{last_relu}"] == pytest.approx(fitted, rel=0.02)


def test_batches_count_by_their_size(trained):
    """130 images in batches of 128 and 2: the moving means are those of the 130 images
    (the 2-image batch weighs 2/130, not half); uint8 images are cast batch by batch."""
    weights, x, _ = trained
    split, whole = small_cnn(), small_cnn()
    for each in (split, whole):
        each.set_weights(weights)
    images = x[:130].astype(np.uint8)
    reestimate_batch_norm(split, images, batch_size=128)
    reestimate_batch_norm(whole, images, batch_size=130)
    # The first layer's moving mean is the mean of its inputs over the 130 images (the later
    # layers' inputs are normalised by each batch's own statistics, so they differ slightly)
    np.testing.assert_allclose(statistics(split)[0], statistics(whole)[0], rtol=1e-5, atol=1e-6)
