"""Images a tool uses are a stratified, seeded choice of the split, never its first N
(`sgt_tfmot.data.stratified_order`): convert's test and calibration images, explain's curve
and agreement images, train's --init_from calibration images."""

import numpy as np
import pytest

from sgt_tfmot import data, training
from sgt_tfmot.conversion import stages
from sgt_tfmot.explain.evaluate import evaluate_models
from sgt_tfmot.keras import keras
from sgt_tfmot.saving import save_model


def class_counts(labels, classes):
    return np.bincount(np.asarray(labels), minlength=classes)


@pytest.mark.parametrize("seed", range(6))
def test_every_prefix_holds_each_class_in_its_share(seed):
    """Brute force over every prefix of imbalanced, class-sorted label sets: each class's
    count is within 2 of its share (the rule bounds it by about one per side)."""
    rng = np.random.default_rng(seed)
    classes = int(rng.integers(2, 12))
    labels = np.sort(
        rng.choice(classes, int(rng.integers(50, 400)), p=rng.dirichlet(np.ones(classes)))
    )
    order = data.stratified_order(labels, seed)
    assert np.array_equal(np.sort(order), np.arange(len(labels)))  # a permutation
    share = class_counts(labels, classes) / len(labels)
    counts = np.zeros(classes)
    for size, index in enumerate(order, start=1):
        counts[labels[index]] += 1
        assert np.abs(counts - size * share).max() < 2, (size, counts)


def test_the_order_is_a_function_of_the_seed():
    labels = np.repeat(np.arange(4), 25)
    a, b = data.stratified_order(labels, 0), data.stratified_order(labels, 0)
    assert np.array_equal(a, b)
    assert not np.array_equal(a, data.stratified_order(labels, 1))
    assert class_counts(labels[a[:8]], 4).tolist() == [2, 2, 2, 2]


def test_the_choice_is_described():
    assert data.describe_choice(300, 1000, "mnist test", 0) == (
        "300 of the 1000 mnist test images, stratified by class (seed 0)"
    )
    assert data.describe_choice(1000, 1000, "mnist test", 0) == "all 1000 mnist test images"


def sorted_dataset(path, per_class=(40, 40, 40, 40, 40), size=8):
    """An .npz whose splits arrive sorted by class, like an image folder's; the image of
    class c is a flat grey 20·(c mod 3) (+ 1 for the training split)."""
    labels = np.repeat(np.arange(len(per_class)), per_class)
    images = np.repeat((20 * (labels % 3)).astype(np.uint8)[:, None, None, None], size, axis=1)
    images = np.repeat(images, size, axis=2)
    np.savez(path, x_train=images + 1, y_train=labels, x_test=images, y_test=labels)
    return path, len(per_class)


def nearest_grey_classifier(size, classes):
    """Logits c·m − 10c² of the mean pixel m: the class c whose grey 20c is nearest. Right
    on classes 0-2 of `sorted_dataset`, wrong on 3 and 4 (their greys are 0 and 20)."""
    inputs = keras.Input((size, size, 1))
    mean = keras.layers.GlobalAveragePooling2D()(inputs)
    dense = keras.layers.Dense(classes)
    model = keras.Model(inputs, dense(mean))
    c = np.arange(classes, dtype=np.float32)
    dense.set_weights([c[None, :], -10 * c**2])
    return model


def test_convert_checks_and_calibrates_on_stratified_images(tmp_path):
    npz, classes = sorted_dataset(tmp_path / "sorted.npz")
    model = save_model(nearest_grey_classifier(8, classes), tmp_path / "m.h5")
    loaded = stages.load(model, 20, False)
    samples = stages.load_data(loaded, str(npz), None, num_test=20, calibration_samples=10)
    assert class_counts(samples.y_test, classes).tolist() == [4] * classes
    assert samples.test_images == (f"20 of the 200 {npz} test images, stratified by class (seed 0)")
    # Calibration images: two per class (their greys tell the class: 20·(c mod 3) + 1).
    greys = sorted(samples.calibration[:, 0, 0, 0].tolist())
    assert greys == [1.0] * 4 + [21.0] * 4 + [41.0] * 2
    assert samples.calibration_images.startswith("10 of the 200 ")
    # The figure's and the targets' images are a prefix of the same order: stratified too.
    assert len(set(samples.y_test[:5].tolist())) == classes


@pytest.mark.slow
def test_explain_curves_and_agreement_use_stratified_images(tmp_path):
    """The issue's case: on data sorted by class, 'the first 40 images' are one class and
    the accuracy says 100 %; stratified, the classifier is right on 3 of 5 classes."""
    npz, classes = sorted_dataset(tmp_path / "sorted.npz")
    arrays = np.load(npz)
    model = nearest_grey_classifier(8, classes)
    evaluation = evaluate_models(
        {"m": model}, arrays["x_test"].astype("float32"), arrays["y_test"],
        methods=["vanilla"], curve_images=40, agreement_images=10, num_images=2,
        protocols=["pixel"],
    )  # fmt: skip
    assert evaluation.models[0].accuracy == pytest.approx(24 / 40)  # classes 0-2 of 5
    settings = evaluation.settings
    assert settings["curve_images_chosen"] == (
        "40 of the 200 test images, stratified by class (seed 0)"
    )
    assert settings["agreement_images_chosen"].startswith("10 of the 200 test images")
    # Not stratified (--nostratify): the first 40 are all class 0, which the model gets right.
    first = evaluate_models(
        {"m": model}, arrays["x_test"].astype("float32"), arrays["y_test"],
        methods=["vanilla"], curve_images=40, agreement_images=10, num_images=2,
        stratify=False, protocols=["pixel"],
    )  # fmt: skip
    assert first.models[0].accuracy == 1.0
    assert first.settings["curve_images_chosen"] == (
        "the first 40 of the 200 test images (not stratified)"
    )


@pytest.mark.slow
def test_init_from_calibrates_on_stratified_training_images(tmp_path, monkeypatch):
    """`train --init_from` sets the ranges on 1024 training images: of 1500 sorted by class,
    the first 1024 would hold no image of the last class."""
    labels = np.repeat(np.arange(5), 300)
    images = np.repeat((10 * labels).astype(np.uint8)[:, None, None, None], 8, axis=1)
    images = np.repeat(images, 8, axis=2)
    npz = tmp_path / "sorted.npz"
    np.savez(npz, x_train=images, y_train=labels, x_test=images[::30], y_test=labels[::30])
    model = save_model(nearest_grey_classifier(8, 5), tmp_path / "m.h5")
    seen = {}
    build = training.build_model

    def spy(config, info, calibration_images=None, calibration_labels=None):
        seen["greys"], seen["labels"] = calibration_images[:, 0, 0, 0], calibration_labels
        return build(config, info, calibration_images, calibration_labels)

    monkeypatch.setattr(training.model, "build_model", spy)  # where `train` looks it up
    training.train(
        training.TrainConfig(
            dataset=str(npz), model=str(model), init_from=str(model), sgt=False, max_steps=1,
            batch_size=50, progress=0, mixed_precision="float32", out_dir=str(tmp_path / "run"),
        )
    )  # fmt: skip
    per_class = class_counts((seen["greys"] / 10).astype(int), 5)
    np.testing.assert_array_equal(seen["labels"], (seen["greys"] / 10).astype(int))  # its labels
    assert per_class.sum() == training.CALIBRATION_IMAGES
    assert per_class.min() >= 1024 // 5 - 1 and per_class.max() <= 1024 // 5 + 2, per_class
