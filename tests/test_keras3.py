"""Keras 3 models in: files written by Keras 3 and Keras 3 model objects become equivalent
tf_keras Functional models (`sgt_tfmot.keras3`).

The files are made in a subprocess without TF_USE_LEGACY_KERAS (tests/_keras3_models.py),
as a user of TensorFlow 2.21 makes them; the objects in this process with `import keras`,
which stays Keras 3 beside tf_keras.
"""

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from sgt_tfmot import from_keras3, keras3, load_model, models, quantize_model
from sgt_tfmot.keras import keras, tf
from sgt_tfmot.trainers import SaliencyGuidedModel

MAKER = Path(__file__).resolve().parent / "_keras3_models.py"
MNIST_SUBSET = Path(__file__).resolve().parents[1] / "sgt_tfmot" / "data_files" / "mnist_subset.npz"
SUFFIXES = (".keras", ".h5")
# Translated and Keras 3 outputs: the same kernels in the same order; seen here at most
# 3e-8 on softmax outputs and 2.4e-7 on outputs of size ~2. Tolerance 1e-5.
TOLERANCE = 1e-5


@pytest.fixture(scope="module")
def made(tmp_path_factory):
    """The Keras 3 files and their outputs (one subprocess for the module, about 30-60 s)."""
    out = tmp_path_factory.mktemp("keras3")
    env = {k: v for k, v in os.environ.items() if k != "TF_USE_LEGACY_KERAS"}
    result = subprocess.run(
        [sys.executable, str(MAKER), str(out), str(MNIST_SUBSET)],
        env=env, capture_output=True, text=True, timeout=900,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    return out, dict(np.load(out / "outputs.npz"))


@pytest.mark.slow
@pytest.mark.parametrize("suffix", SUFFIXES)
@pytest.mark.parametrize("name", ["cnn", "sequential", "graph", "augmented", "hard"])
def test_a_keras3_file_becomes_the_same_tf_keras_model(made, name, suffix):
    out, outputs = made
    assert keras3.is_keras3_file(out / f"{name}{suffix}")
    model = load_model(out / f"{name}{suffix}")
    assert isinstance(model, keras.Model) and type(model).__name__ == "Functional"
    got = model.predict(outputs["images"], verbose=0)
    np.testing.assert_allclose(got, outputs[name], atol=TOLERANCE)
    if name == "cnn":  # the trained one, on the whole test split
        test = np.load(MNIST_SUBSET)["x_test"][..., None].astype("float32")
        got = model.predict(test, verbose=0)
        np.testing.assert_allclose(got, outputs["cnn_test"], atol=TOLERANCE)
        assert np.array_equal(got.argmax(-1), outputs["cnn_test"].argmax(-1))


@pytest.mark.slow
@pytest.mark.parametrize("suffix", SUFFIXES)
def test_a_keras3_files_augmentation_layers_are_taken_out_and_the_rest_quantizes(made, suffix):
    out, outputs = made
    model, removed = models.without_augmentation(load_model(out / f"augmented{suffix}"), "file")
    assert removed == ["random_flip", "random_rotation", "augment", "gaussian_noise"]
    kinds = {type(layer).__name__ for layer in model.layers}
    assert kinds == {"InputLayer", "Rescaling", "Conv2D", "BatchNormalization",
                     "GlobalAveragePooling2D", "Dense"}  # fmt: skip
    got = model.predict(outputs["images"], verbose=0)
    np.testing.assert_allclose(got, outputs["augmented"], atol=TOLERANCE)
    quantize_model(model)  # nothing left that quantization refuses


@pytest.mark.slow
@pytest.mark.parametrize("suffix", SUFFIXES)
def test_every_layer_without_a_counterpart_is_named_in_one_message(made, suffix):
    out, _ = made
    with pytest.raises(keras3.Keras3Error) as error:
        load_model(out / f"unsupported{suffix}")
    message = str(error.value)
    assert "with 3 layers that tf_keras has no counterpart for" in message
    for named in (
        "'scale_by_code' (class Lambda)",
        "'conv_celu' (activation 'celu')",
        "'dense_hard_tanh' (activation 'hard_tanh')",
    ):
        assert named in message


def test_tf_keras_files_are_not_taken_for_keras3(tmp_path):
    model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(2)])
    for suffix in SUFFIXES:
        model.save(tmp_path / f"m{suffix}")
        assert not keras3.is_keras3_file(tmp_path / f"m{suffix}")


@pytest.mark.slow
def test_train_and_convert_a_keras3_file(made, tmp_path):
    """`train --model my.keras` and `convert` of the run and of the Keras 3 file itself."""
    from sgt_tfmot import convert, train

    out, _ = made
    run = tmp_path / "run"
    code = train.main(["train", f"--model={out / 'cnn.keras'}", "--dataset=mnist_subset",
                       "--max_steps=3", "--batch_size=32", "--weight_bits=8",
                       "--activation_bits=8", "--mixed_precision=float32", "--progress=0",
                       f"--out_dir={run}"])  # fmt: skip
    assert code == 0
    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics["optimizer_steps"] == 3
    for model, extra in ((run, []), (out / "cnn.keras", ["--dataset=mnist_subset"])):
        report = tmp_path / f"{Path(model).stem}.json"
        code = convert.main(["convert", "--int8", str(model), f"--output={report}.tflite",
                             f"--report={report}", "--fidelity_images=0",
                             "--occlusion_images=0", "--logits", *extra])  # fmt: skip
        found = json.loads(report.read_text())
        assert code == (0 if not found["failures"] else 1)
        assert Path(f"{report}.tflite").stat().st_size > 0
    # The run's QAT model trained 3 steps through its softmax head: its agreement is not
    # checked here. The float Keras 3 model, quantized after training, agrees, and its
    # Keras accuracy on the test split is the Keras 3 model's.
    assert found["agreement"] >= 0.98, found
    outputs = np.load(out / "outputs.npz")["cnn_test"]
    labels = np.load(MNIST_SUBSET)["y_test"]
    keras3_accuracy = float(np.mean(outputs.argmax(-1) == labels))
    assert found["keras_accuracy"] == pytest.approx(keras3_accuracy, abs=1e-9)
    assert keras3_accuracy > 0.5  # a trained model, so agreement means something


# ----------------------------------------------------------------------------- objects
def keras3_cnn():
    import keras as k3  # Keras 3: TF_USE_LEGACY_KERAS only changes tf.keras

    k3.utils.set_random_seed(0)
    inputs = k3.Input((12, 12, 1))
    x = k3.layers.Rescaling(1 / 255.0)(inputs)
    x = k3.layers.Conv2D(4, 3, use_bias=False)(x)
    x = k3.layers.BatchNormalization()(x)
    x = k3.layers.ReLU()(x)
    x = k3.layers.Concatenate()([x, k3.layers.Conv2D(4, 3, activation="relu")(inputs)])
    x = k3.layers.GlobalAveragePooling2D()(x)
    model = k3.Model(inputs, k3.layers.Dense(3)(x))
    bn = model.layers[3]
    bn.moving_mean.assign(np.linspace(-1, 1, 4))
    bn.moving_variance.assign(np.linspace(0.5, 2, 4))
    return model


IMAGES = np.random.default_rng(0).uniform(0, 255, (8, 12, 12, 1)).astype("float32")


def test_a_keras3_object_becomes_the_same_tf_keras_model():
    mine = keras3_cnn()
    assert keras3.is_keras3_model(mine) and not keras3.is_keras3_model(keras.Sequential())
    model = from_keras3(mine)
    assert isinstance(model, keras.Model)
    assert [layer.name for layer in model.layers] == [layer.name for layer in mine.layers]
    np.testing.assert_allclose(
        model.predict(IMAGES, verbose=0),
        np.asarray(mine.predict(IMAGES, verbose=0)),
        atol=TOLERANCE,
    )


@pytest.mark.slow
def test_quantize_model_and_sgt_take_a_keras3_model():
    mine = keras3_cnn()
    before = [np.array(w) for w in mine.get_weights()]
    qat = quantize_model(mine, weight_bits=8, activation_bits=8)
    assert qat(IMAGES).shape == (8, 3)
    sgt = SaliencyGuidedModel(mine, kl_weight=0.1, seed=0)
    assert isinstance(sgt.model, keras.Model)
    sgt.compile(keras.optimizers.SGD(0.1),
                keras.losses.SparseCategoricalCrossentropy(from_logits=True))  # fmt: skip
    sgt.fit(IMAGES, np.arange(8) % 3, epochs=1, verbose=0)
    moved = max(float(np.abs(a - b).max()) for a, b in
                zip(sgt.model.get_weights(), before, strict=True))  # fmt: skip
    assert moved > 0  # the translation trained ...
    for a, b in zip(mine.get_weights(), before, strict=True):
        np.testing.assert_array_equal(a, b)  # ... the Keras 3 object is left as it was


def test_a_keras3_object_without_counterparts_is_refused_in_one_message():
    import keras as k3

    inputs = k3.Input((8, 8, 1))
    x = k3.layers.Conv2D(2, 3, activation="celu", name="c")(inputs)
    x = k3.layers.UpSampling2D(name="up")(x)
    outputs = k3.layers.Dense(2)(k3.layers.Flatten()(x))
    named = r"for: 'c' \(activation 'celu'\); 'up' \(class UpSampling2D\)"
    with pytest.raises(ValueError, match="with 2 layers that tf_keras has no counterpart " + named):
        quantize_model(k3.Model(inputs, outputs))


def test_keras3_hard_activations_become_the_layers_mobilenet_v3_writes_them_with():
    """hard_silu / hard_swish / hard_sigmoid (Keras 3's: relu6(x + 3) / 6, not tf_keras's
    0.2 x + 0.5) become a linear layer, Rescaling(offset 3), ReLU(6), Rescaling(1 / 6) (and
    a Multiply for the silu): the same outputs, and a model quantize_model takes."""
    import keras as k3

    keras.utils.set_random_seed(6)
    mine = k3.Sequential([k3.Input((6, 6, 2)), k3.layers.Conv2D(3, 3, activation="hard_silu"),
                          k3.layers.Activation("hard_swish"), k3.layers.Flatten(),
                          k3.layers.Dense(4, activation="hard_sigmoid")])  # fmt: skip
    images = np.random.default_rng(0).normal(0, 3, (16, 6, 6, 2)).astype(np.float32)
    model = from_keras3(mine)
    np.testing.assert_allclose(model.predict(images, verbose=0), mine.predict(images, verbose=0),
                               atol=TOLERANCE)  # fmt: skip
    kinds = [type(layer).__name__ for layer in model.layers]
    chain = ["Rescaling", "ReLU", "Rescaling"]
    assert kinds == ["InputLayer", "Conv2D", *chain, "Multiply", "Activation", *chain,
                     "Multiply", "Flatten", "Dense", *chain]  # fmt: skip
    assert {layer.get_config().get("activation") for layer in model.layers} <= {None, "linear"}
    quantize_model(model)

    # A layer called twice cannot be followed by one chain: named, not mistranslated.
    shared = k3.layers.Dense(2, activation="hard_silu", name="shared")
    inputs = k3.Input((2,))
    twice = k3.Model(inputs, shared(shared(inputs)))
    called_twice = r"'shared' \(activation 'hard_silu' in a layer called more"
    with pytest.raises(ValueError, match=called_twice):
        from_keras3(twice)


def test_translated_activations_compute_the_same_formula():
    """Each activation name maps to a tf_keras activation with the same values; the names
    left out compute something else in tf_keras (why they are refused)."""
    import keras as k3

    x = np.linspace(-8, 8, 161, dtype=np.float32).reshape(7, 23)
    for name, target in keras3.ACTIVATIONS.items():
        expected = np.asarray(k3.activations.get(name)(x))
        got = np.asarray(keras.activations.get(target)(tf.constant(x)))
        np.testing.assert_allclose(got, expected, rtol=1e-6, atol=1e-6, err_msg=name)
    expected = np.asarray(k3.activations.get("hard_sigmoid")(x))
    got = np.asarray(keras.activations.get("hard_sigmoid")(tf.constant(x)))
    assert np.abs(got - expected).max() > 0.05  # 0.2x + 0.5 against (x + 3) / 6
