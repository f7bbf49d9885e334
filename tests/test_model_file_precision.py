"""A user's model file trains under every precision policy, as a built-in model does.

`--mixed_precision auto` is mixed_bfloat16 on a CPU with native bfloat16 and float32
elsewhere; both policies run on any CPU (bfloat16 emulated, slowly), so each test forces the
policy it is about instead of depending on the machine.
"""

import numpy as np
import pytest

from sgt_tfmot import models, quantize_model
from sgt_tfmot.keras import keras
from sgt_tfmot.saving import load_model, with_policy
from sgt_tfmot.training import TrainConfig, train

POLICIES = ("mixed_bfloat16", "float32")


def user_model(sequential: bool = False) -> keras.Model:
    """A tf_keras CNN for the 28x28x1, 10-class `mnist_subset`, built under float32."""
    keras.utils.set_random_seed(0)
    layers = [
        keras.layers.Rescaling(1 / 255.0),
        keras.layers.Conv2D(4, 3, strides=2, use_bias=False),
        keras.layers.BatchNormalization(),
        keras.layers.ReLU(),
        keras.layers.Conv2D(6, 3, strides=2, activation="relu"),
        keras.layers.GlobalAveragePooling2D(),
        keras.layers.Dense(10),
    ]
    if sequential:
        return keras.Sequential([keras.Input((28, 28, 1)), *layers])
    inputs = x = keras.Input((28, 28, 1))
    for layer in layers:
        x = layer(x)
    return keras.Model(inputs, x)


@pytest.fixture
def global_policy():
    """Sets Keras's global policy for one test and restores float32 after it."""
    yield keras.mixed_precision.set_global_policy
    keras.mixed_precision.set_global_policy("float32")


def compute_dtypes(model) -> set[str]:
    return {
        layer.compute_dtype
        for layer in model.layers
        if not isinstance(layer, keras.layers.InputLayer)
    }


@pytest.mark.parametrize("sequential", [False, True], ids=["functional", "sequential"])
def test_a_model_file_is_built_under_the_global_policy(sequential, global_policy, tmp_path):
    path = tmp_path / "mine.h5"
    user_model(sequential).save(path)
    reference = load_model(path)
    images = np.random.default_rng(0).uniform(0, 255, (8, 28, 28, 1)).astype("float32")
    global_policy("mixed_bfloat16")
    model = models.build(str(path), (28, 28, 1), 10)
    assert compute_dtypes(model) == {"bfloat16"}
    assert {v.dtype.name for v in model.weights} == {"float32"}  # variables stay float32
    for a, b in zip(model.get_weights(), reference.get_weights(), strict=True):
        np.testing.assert_array_equal(a, b)
    # The same network in bfloat16 arithmetic: 8 bits of mantissa, about 0.4 % per rounding;
    # seen here at most 0.01 on logits of size ~0.1-1. Tolerance 0.05 absolute.
    np.testing.assert_allclose(
        np.asarray(model(images), np.float32), reference(images).numpy(), atol=0.05
    )
    # Under float32 the loaded model is the file's own, untouched.
    global_policy("float32")
    assert with_policy(reference) is reference


@pytest.mark.parametrize("policy", POLICIES)
def test_a_model_file_quantizes_under_each_policy(policy, global_policy, tmp_path):
    """The crash seen on a bfloat16 CPU: TFMOT's wrappers, made under the global policy,
    cast their inputs to bfloat16 for the float32 layer of the file inside them ("Input
    'filter' of 'Conv2D' Op has type float32 that does not match type bfloat16")."""
    path = tmp_path / "mine.h5"
    user_model().save(path)
    global_policy(policy)
    qat = quantize_model(models.build(str(path), (28, 28, 1), 10), 8, 8)
    images = np.full((2, 28, 28, 1), 128.0, np.float32)
    assert qat(images, training=True).shape == (2, 10)
    wrapped = [layer.layer for layer in qat.layers if hasattr(layer, "layer")]
    assert {layer.compute_dtype for layer in wrapped} == {policy.removeprefix("mixed_")}


class ComputeDtype(keras.callbacks.Callback):
    """The compute dtype of the trained model's wrapped layers, seen at the start of fit."""

    def on_train_begin(self, logs=None):
        model = getattr(self.model, "model", self.model)  # inside SaliencyGuidedModel
        wrapped = [layer.layer for layer in model.layers if hasattr(layer, "layer")]
        self.dtypes = {layer.compute_dtype for layer in wrapped}


def tiny(out, model, **overrides) -> TrainConfig:
    settings = dict(model=str(model), max_steps=2, batch_size=16, progress=0,
                    weight_bits=8, activation_bits=8, out_dir=str(out))  # fmt: skip
    settings.update(overrides)
    return TrainConfig(**settings)


@pytest.mark.slow
@pytest.mark.parametrize("policy", POLICIES)
def test_train_model_file_under_each_policy(policy, tmp_path):
    path = tmp_path / "mine.h5"
    user_model().save(path)
    probe = ComputeDtype()
    metrics = train(tiny(tmp_path / "run", path, mixed_precision=policy), extra_callbacks=[probe])
    assert metrics["precision"] == policy and metrics["optimizer_steps"] == 2
    assert probe.dtypes == {policy.removeprefix("mixed_")}
    saved = load_model(tmp_path / "run")
    assert compute_dtypes(saved) == {"float32"}  # the file converts anywhere
    assert keras.mixed_precision.global_policy().name == "float32"


@pytest.mark.slow
def test_init_from_and_calibration_under_bfloat16(tmp_path):
    """--model FILE --init_from RUN --alpha_init calibrate: the float run's weights copied
    into the file's model rebuilt under bfloat16, α from its bfloat16 activations."""
    path = tmp_path / "mine.h5"
    user_model().save(path)
    float_run = tmp_path / "float"
    train(tiny(float_run, path, float=True, sgt=False, mixed_precision="mixed_bfloat16"))
    metrics = train(
        tiny(tmp_path / "qat", path, init_from=str(float_run), alpha_init="calibrate",
             mixed_precision="mixed_bfloat16", max_steps=1)
    )  # fmt: skip
    assert metrics["precision"] == "mixed_bfloat16"
    alphas = metrics["alpha"]
    assert alphas and all(0 < a < 10 for a in alphas.values())  # from the activations


class Interrupt(keras.callbacks.Callback):
    def on_train_batch_end(self, batch, logs=None):
        if int(self.model.optimizer.iterations.numpy()) == 3:
            raise KeyboardInterrupt


@pytest.mark.slow
def test_resume_under_bfloat16_ends_like_the_straight_run(tmp_path):
    """A bfloat16 run of a model file, interrupted after step 3, resumes from the backup of
    step 2 and ends with the straight run's weights, bit for bit."""
    path = tmp_path / "mine.h5"
    user_model().save(path)
    settings = dict(mixed_precision="mixed_bfloat16", max_steps=4, backup_every=2, sgt=True)
    straight = train(tiny(tmp_path / "straight", path, **settings))
    out = tmp_path / "interrupted"
    with pytest.raises(KeyboardInterrupt):
        train(tiny(out, path, **settings), extra_callbacks=[Interrupt()])
    resumed = train(tiny(out, path, **settings))
    assert resumed["attempts"] == 2 and resumed["optimizer_steps"] == 4
    for a, b in zip(load_model(out).get_weights(), load_model(tmp_path / "straight")
                    .get_weights(), strict=True):  # fmt: skip
        np.testing.assert_array_equal(a, b)
    assert resumed["test_accuracy"] == straight["test_accuracy"]
