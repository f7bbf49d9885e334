"""Tests for sgt_tfmot.models: architecture, normalisation layer, serialisation, errors."""

import collections

import numpy as np
import pytest

from sgt_tfmot import data, models
from sgt_tfmot.keras import keras

CIFAR_MEAN = np.array([0.4914, 0.4822, 0.4465]) * 255
CIFAR_STD = np.array([0.2470, 0.2435, 0.2616]) * 255
NOT_QUANTIZABLE = {"Lambda", "TFOpLambda", "SlicingOpLambda"}


@pytest.fixture(scope="module")
def resnet():
    keras.utils.set_random_seed(0)
    return models.resnet20(mean=CIFAR_MEAN, std=CIFAR_STD)  # the data's statistics


def _layer_counts(model):
    return collections.Counter(type(layer).__name__ for layer in model.layers)


def _normalized(model, x):
    """Output of the model's first layer (the Normalization) for raw pixels `x`."""
    probe = keras.Model(model.input, model.get_layer("normalization").output)
    return probe(np.asarray(x, np.float32)).numpy()


def _random_pixels(shape, n=2, seed=0):
    return np.random.default_rng(seed).uniform(0, 255, size=(n, *shape)).astype(np.float32)


# ----------------------------------------------------------------------------- ResNet-20


def test_resnet20_parameter_count(resnet):
    # Derived by hand for 32x32x3, 10 classes:
    #   convs   3*3*3*16 + 6*(3*3*16*16)                                    = 14,256
    #         + 3*3*16*32 + 5*(3*3*32*32) + 1*1*16*32 (projection)         = 51,200
    #         + 3*3*32*64 + 5*(3*3*64*64) + 1*1*32*64 (projection)         = 204,800
    #   BN      gamma+beta over 16 + 6*16 + (6*32 + 32) + (6*64 + 64) = 784 channels = 1,568
    #   dense   64*10 + 10                                                  = 650
    trainable = sum(int(np.prod(w.shape)) for w in resnet.trainable_weights)
    assert trainable == 14_256 + 51_200 + 204_800 + 1_568 + 650 == 272_474
    # Plus the 1,568 BN moving statistics; the paper quotes 0.27 M (option A shortcuts).
    assert resnet.count_params() == 272_474 + 1_568
    assert 0.26e6 < resnet.count_params() < 0.28e6


def test_resnet20_layers(resnet):
    assert type(resnet).__name__ == "Functional"
    counts = _layer_counts(resnet)
    assert not NOT_QUANTIZABLE & set(counts)
    # 6n+2 = 20 weighted layers for n = 3: 1 stem conv + 9 blocks * 2 convs = 19 3x3 convs,
    # the dense layer, and 2 1x1 projection convs (first block of stages 2 and 3) = 21 Conv2D.
    assert counts == {
        "InputLayer": 1,
        "Rescaling": 1,
        "Conv2D": 21,
        "BatchNormalization": 21,  # one per conv
        "ReLU": 19,  # stem + 2 per block
        "Add": 9,  # one per block
        "GlobalAveragePooling2D": 1,
        "Dense": 1,
    }
    convs = [layer for layer in resnet.layers if isinstance(layer, keras.layers.Conv2D)]
    kernel_sizes = collections.Counter(layer.kernel_size for layer in convs)
    assert kernel_sizes == {(3, 3): 19, (1, 1): 2}
    assert all(not layer.use_bias for layer in convs)
    assert all(layer.activation is keras.activations.linear for layer in convs)
    assert {layer.strides for layer in convs if layer.kernel_size == (1, 1)} == {(2, 2)}
    assert isinstance(resnet.layers[1], keras.layers.Rescaling)
    logits = resnet.get_layer("logits")
    assert logits.activation is keras.activations.linear and logits.units == 10
    # L2 on every conv and dense kernel: one loss each.
    assert len(resnet.losses) == 22
    assert logits.kernel_regularizer.get_config() == {"l2": pytest.approx(1e-4)}


def test_resnet20_output_and_feature_shapes(resnet):
    logits = resnet(_random_pixels((32, 32, 3)), training=False).numpy()
    assert logits.shape == (2, 10) and np.all(np.isfinite(logits))
    assert resnet.get_layer("stage1_block3_relu2").output.shape[1:] == (32, 32, 16)
    assert resnet.get_layer("stage2_block1_relu2").output.shape[1:] == (16, 16, 32)
    assert resnet.get_layer("stage3_block3_relu2").output.shape[1:] == (8, 8, 64)


def test_weight_decay_zero_disables_regularization():
    model = models.resnet20((16, 16, 3), 4, weight_decay=0)
    assert model.losses == []
    assert model.output_shape == (None, 4)


# ----------------------------------------------------------------------------- ResNet-8


def test_resnet8_matches_the_mlperf_tiny_reference():
    model = models.resnet8(mean=CIFAR_MEAN, std=CIFAR_STD)
    # Derived by hand for 32x32x3, 10 classes (MLPerf Tiny's resnet_v1_eembc, 16 filters):
    #   3x3 convs  3*3*3*16 + 2*(3*3*16*16) + 3*3*16*32 + 3*3*32*32
    #              + 3*3*32*64 + 3*3*64*64                               = 74,160
    #   shortcuts  (1*1*16*32 + 32) + (1*1*32*64 + 64)                    = 2,656
    #   BN         gamma+beta over 16 + 16 + 16 + 32 + 32 + 64 + 64 = 240   = 480
    #   dense      64*10 + 10                                            = 650
    trainable = sum(int(np.prod(w.shape)) for w in model.trainable_weights)
    assert trainable == 74_160 + 2_656 + 480 + 650 == 77_946
    assert model.count_params() == 77_946 + 480  # the BN moving statistics
    # The reference's 3x3 convs also carry biases (240 more, made redundant by BN): 78,666.
    assert model.count_params() + 240 == 78_666
    counts = _layer_counts(model)
    assert not NOT_QUANTIZABLE & set(counts)
    assert counts == {"InputLayer": 1, "Rescaling": 1, "Conv2D": 9, "BatchNormalization": 7,
                      "ReLU": 7, "Add": 3, "GlobalAveragePooling2D": 1, "Dense": 1}  # fmt: skip
    shortcuts = [model.get_layer(f"stage{s}_shortcut_conv") for s in (2, 3)]
    assert all(c.use_bias and c.kernel_size == (1, 1) and c.strides == (2, 2) for c in shortcuts)
    assert model.get_layer("stage1_relu2").output.shape[1:] == (32, 32, 16)
    assert model.get_layer("stage3_relu2").output.shape[1:] == (8, 8, 64)
    assert len(model.losses) == 10  # 9 conv kernels + the dense kernel
    logits = model(_random_pixels((32, 32, 3)), training=False).numpy()
    assert logits.shape == (2, 10) and np.all(np.isfinite(logits))


def test_resnet8_every_kernel_is_quantized():
    import sgt_tfmot

    qat = sgt_tfmot.quantize_model(models.resnet8((16, 16, 3), 4), weight_bits=4,
                                   activation_bits=4)  # fmt: skip
    bits = {
        layer.layer.name: layer.quantize_config.weight_quantizer.num_bits
        for layer in qat.layers
        if getattr(getattr(layer, "quantize_config", None), "weight_quantizer", None)
    }
    convs = {layer.name for layer in models.resnet8((16, 16, 3), 4).layers
             if isinstance(layer, keras.layers.Conv2D | keras.layers.Dense)}  # fmt: skip
    assert set(bits) == convs
    assert bits["conv1"] == bits["logits"] == 8  # first and last layer: first_last_bits
    assert {bits[name] for name in convs - {"conv1", "logits"}} == {4}


# ----------------------------------------------------------------------------- normalisation


def test_normalization_maps_cifar_statistics(resnet):
    pixels = np.stack([np.broadcast_to(CIFAR_MEAN, (32, 32, 3))] * 2)
    pixels[1] += CIFAR_STD  # mean + one std maps to 1
    out = _normalized(resnet, pixels)
    np.testing.assert_allclose(out[0], 0.0, atol=1e-5)
    np.testing.assert_allclose(out[1], 1.0, atol=1e-5)
    layer = resnet.get_layer("normalization")
    np.testing.assert_allclose(np.ravel(layer.scale), 1 / CIFAR_STD, rtol=1e-6)
    np.testing.assert_allclose(np.ravel(layer.offset), -CIFAR_MEAN / CIFAR_STD, rtol=1e-6)


@pytest.mark.parametrize(
    "shape, kwargs, mean, std",
    [
        ((28, 28, 1), {}, 127.5, 127.5),  # no statistics: 0..255 -> -1..1, whatever the shape
        ((16, 16, 2), {}, 127.5, 127.5),
        ((8, 8, 2), {"mean": (10.0, 20.0), "std": 2.0}, np.array([10.0, 20.0]), 2.0),
    ],
)
def test_normalization_defaults_and_given_statistics(shape, kwargs, mean, std):
    model = models.mobilenet_tiny(shape, 3, **kwargs)
    pixels = np.stack([np.broadcast_to(mean, shape), np.broadcast_to(np.add(mean, std), shape)])
    out = _normalized(model, pixels)
    np.testing.assert_allclose(out[0], 0.0, atol=1e-5)
    np.testing.assert_allclose(out[1], 1.0, atol=1e-5)


def test_normalization_is_a_fixed_rescaling():
    layer = models.resnet20((8, 8, 1), 2).get_layer("normalization")
    assert isinstance(layer, keras.layers.Rescaling) and not layer.weights
    assert layer.get_config()["scale"] == pytest.approx([1 / 127.5])
    assert layer.get_config()["offset"] == pytest.approx([-1.0])


# ----------------------------------------------------------------------------- serialisation


@pytest.mark.parametrize("builder", ["resnet20", "resnet8", "mobilenet_tiny"])
def test_save_load_round_trip(tmp_path, builder):
    keras.utils.set_random_seed(1)
    model = models.build(builder, (32, 32, 3), 10)
    path = tmp_path / f"{builder}.keras"
    model.save(path)
    loaded = keras.models.load_model(path)
    x = _random_pixels((32, 32, 3), n=3, seed=2)
    np.testing.assert_array_equal(loaded(x, training=False), model(x, training=False))
    assert [type(layer) for layer in loaded.layers] == [type(layer) for layer in model.layers]
    assert (
        loaded.get_layer("normalization").get_config()
        == model.get_layer("normalization").get_config()
    )


# ----------------------------------------------------------------------------- MobileNet


def test_mobilenet_tiny_builds_and_runs():
    model = models.mobilenet_tiny((32, 32, 3), 10)
    assert type(model).__name__ == "Functional"
    counts = _layer_counts(model)
    assert not NOT_QUANTIZABLE & set(counts)
    assert counts["DepthwiseConv2D"] == 4 and counts["Conv2D"] == 5  # stem + 4 pointwise
    assert counts["BatchNormalization"] == counts["ReLU"] == 9
    assert all(
        layer.max_value == 6.0 for layer in model.layers if isinstance(layer, keras.layers.ReLU)
    )
    assert model.count_params() < 50_000
    assert len(model.losses) == 6  # 5 conv kernels + the dense kernel; depthwise: none
    logits = model(_random_pixels((32, 32, 3)), training=False).numpy()
    assert logits.shape == (2, 10) and np.all(np.isfinite(logits))


def test_models_take_the_data_pipeline_output():
    images, _ = next(iter(data.load("mnist_subset", "test", batch_size=4)))
    for name in ("resnet20", "mobilenet_tiny"):
        model = models.build(name, data.info("mnist_subset").image_shape, 10)
        assert model(images, training=False).shape == (4, 10)


# ----------------------------------------------------------------------------- errors


def test_build_unknown_model():
    match = (
        r"Unknown model 'vgg16'\. Known models: 'mobilenet_tiny', 'mobilenet_v2', 'resnet20', "
        r"'resnet8', or"
    )
    with pytest.raises(ValueError, match=match):
        models.build("vgg16", (32, 32, 3), 10)


@pytest.mark.parametrize("builder", ["resnet20", "resnet8", "mobilenet_tiny"])
@pytest.mark.parametrize("shape", [(32, 32), (0, 32, 3), (32, 32, 3.0), (32, 32, True), None])
def test_bad_input_shape(builder, shape):
    match = r"`input_shape` must be \(height, width, channels\) with positive integers\. Received"
    with pytest.raises(ValueError, match=match):
        models.build(builder, shape, 10)


@pytest.mark.parametrize("num_classes", [1, 0, 2.0, True])
def test_bad_num_classes(num_classes):
    with pytest.raises(ValueError, match=r"`num_classes` must be an integer >= 2\. Received: "):
        models.resnet20((32, 32, 3), num_classes)


@pytest.mark.parametrize("weight_decay", [-1e-4, float("nan"), "1e-4"])
def test_bad_weight_decay(weight_decay):
    with pytest.raises(ValueError, match=r"`weight_decay` must be a finite number >= 0"):
        models.mobilenet_tiny((32, 32, 3), 10, weight_decay=weight_decay)


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"mean": 0.5}, r"Give `mean` and `std` together, or neither\. Received: mean=0\.5"),
        ({"mean": (1, 2), "std": 1}, r"`mean` must be one finite number or one per channel \(3\)"),
        ({"mean": 1, "std": (1, 0, 1)}, r"`std` must be > 0 for every channel\. Received: "),
        ({"mean": 1, "std": "a"}, r"`std` must be one finite number or one per channel"),
    ],
)
def test_bad_statistics(kwargs, match):
    with pytest.raises(ValueError, match=match):
        models.mobilenet_tiny((32, 32, 3), 10, **kwargs)


# ---------------------------------------------------------------- data-augmentation layers
L = keras.layers


def _augmented_functional():
    keras.utils.set_random_seed(0)
    augment = keras.Sequential([L.RandomZoom(0.1), L.RandomContrast(0.2)], name="augment")
    inputs = keras.Input((12, 12, 3))
    x = augment(L.RandomRotation(0.1)(L.RandomFlip("horizontal")(inputs)))
    x = L.Conv2D(4, 3, activation="relu", name="conv")(L.Rescaling(1 / 255)(x))
    x = L.GaussianNoise(0.5)(x)  # inside the network too
    outputs = L.Dense(3, activation="softmax", name="head")(L.GlobalAveragePooling2D()(x))
    return keras.Model(inputs, outputs)


def test_without_augmentation_takes_out_the_layers_that_are_the_identity_at_inference():
    model = _augmented_functional()
    images = np.random.default_rng(1).uniform(0, 255, (4, 12, 12, 3)).astype(np.float32)
    stripped, removed = models.without_augmentation(model, "--model mine.h5")
    assert removed == ["random_flip", "random_rotation", "augment", "gaussian_noise"]
    assert [type(layer).__name__ for layer in stripped.layers] == [
        "InputLayer", "Rescaling", "Conv2D", "GlobalAveragePooling2D", "Dense",
    ]  # fmt: skip
    np.testing.assert_array_equal(stripped.predict(images, verbose=0),
                                  model.predict(images, verbose=0))  # fmt: skip
    for name in ("conv", "head"):  # the weights are the model's
        for kept, original in zip(stripped.get_layer(name).get_weights(),
                                  model.get_layer(name).get_weights(), strict=True):  # fmt: skip
            np.testing.assert_array_equal(kept, original)
    assert models.without_augmentation(stripped, "x") == (stripped, [])  # nothing to take out
    from sgt_tfmot import quantize_model

    refused = r"RandomFlip: 'random_flip' \(data augmentation, the identity at inference: "
    with pytest.raises(ValueError, match=refused + ".* sgt_tfmot.models.without_augmentation"):
        quantize_model(model)
    quantize_model(stripped)


def test_without_augmentation_of_a_sequential_model():
    model = keras.Sequential([
        keras.Input((8, 8, 1)), L.RandomFlip(), L.RandomTranslation(0.1, 0.1),
        L.Conv2D(2, 3), L.Flatten(), L.GaussianDropout(0.2), L.Dense(2),
    ])  # fmt: skip
    images = np.random.default_rng(2).uniform(0, 255, (3, 8, 8, 1)).astype(np.float32)
    stripped, removed = models.without_augmentation(model, "x")
    assert removed == [model.layers[0].name, model.layers[1].name, model.layers[4].name]
    assert [type(layer).__name__ for layer in stripped.layers] == ["Conv2D", "Flatten", "Dense"]
    np.testing.assert_array_equal(stripped(images), model(images, training=False))


def test_an_augmentation_layer_called_twice_is_refused_in_one_line():
    flip = L.RandomFlip(name="flip")
    inputs = keras.Input((8, 8, 1))
    x = L.Concatenate()([flip(inputs), flip(L.Rescaling(0.5)(inputs))])
    model = keras.Model(inputs, L.Dense(2)(L.Flatten()(x)))
    with pytest.raises(ValueError, match=r"^--model m.h5: the data-augmentation layer 'flip' is "
                       r"called 2 times or on several tensors; take it out"):  # fmt: skip
        models.without_augmentation(model, "--model m.h5")


@pytest.mark.slow
@pytest.mark.parametrize("precision", ["float32", "mixed_bfloat16"])  # both CPUs' paths
def test_train_takes_a_model_files_augmentation_out_and_says_so(tmp_path, capsys, precision):
    from sgt_tfmot import load_model, save_model
    from sgt_tfmot.training import TrainConfig, train

    keras.utils.set_random_seed(0)
    inputs = keras.Input((28, 28, 1))
    x = L.RandomRotation(0.1, name="rotate")(L.RandomFlip("horizontal", name="flip")(inputs))
    x = L.Conv2D(4, 3, strides=2, activation="relu")(L.Rescaling(1 / 255)(x))
    model = keras.Model(inputs, L.Dense(10)(L.GlobalAveragePooling2D()(x)))
    path = save_model(model, tmp_path / "mine.h5")
    config = TrainConfig(model=str(path), max_steps=2, batch_size=16, progress=0,
                         mixed_precision=precision, out_dir=str(tmp_path / "run"))  # fmt: skip
    train(config)
    out = capsys.readouterr().out
    assert (
        f"Note: the data-augmentation layers of --model {path} (flip, rotate) are taken out: "
        "the identity at inference, they would draw another augmentation at each forward pass "
        "of a training step; the training images are augmented by --augment instead (now: "
        "none)." in out
    )
    saved = load_model(tmp_path / "run" / "model.h5")
    assert not {"flip", "rotate"} & {layer.name for layer in saved.layers}
