"""`sgt_tfmot.decompose`: float-equivalent rewrites into the layers of the integer model.

Each rewritten model computes the original's outputs to float32 precision (1e-5 relative),
keeps its weights, regularizers and layer names, and leaves what it cannot rewrite as it is.
"""

import numpy as np
import pytest

from sgt_tfmot import quantize_model
from sgt_tfmot.decompose import decompose_model
from sgt_tfmot.keras import keras, tf
from sgt_tfmot.quantizers import FixedRangeQuantizer, PACTQuantizer, RangeQuantizer

L = keras.layers
X = np.random.default_rng(0).uniform(-3, 3, (6, 8, 8, 3)).astype("float32")


def rewritten(model):
    flat = decompose_model(model)
    np.testing.assert_allclose(
        flat.predict(X, verbose=0), model.predict(X, verbose=0), rtol=1e-5, atol=1e-5
    )
    return flat


def kinds(model):
    return {layer.name: type(layer).__name__ for layer in model.layers}


def test_separable_conv_is_depthwise_then_pointwise():
    keras.utils.set_random_seed(0)
    inputs = keras.Input((8, 8, 3))
    outputs = L.SeparableConv2D(
        5, 3, strides=2, padding="same", depth_multiplier=2, activation="relu",
        bias_initializer="uniform", depthwise_regularizer=keras.regularizers.L2(0.1),
        pointwise_regularizer=keras.regularizers.L2(0.2), name="sep",
    )(inputs)  # fmt: skip
    model = keras.Model(inputs, outputs)
    flat = rewritten(model)
    assert list(kinds(flat).values()) == ["InputLayer", "DepthwiseConv2D", "Conv2D"]
    depthwise, pointwise = flat.get_layer("sep_depthwise"), flat.get_layer("sep")
    assert depthwise.strides == (2, 2) and depthwise.depth_multiplier == 2
    assert not depthwise.use_bias and pointwise.kernel_size == (1, 1)
    assert pointwise.activation.__name__ == "relu"  # fused: PACT on the pointwise conv
    source = model.get_layer("sep")
    np.testing.assert_array_equal(depthwise.depthwise_kernel.numpy(), source.depthwise_kernel)
    np.testing.assert_array_equal(pointwise.kernel.numpy(), source.pointwise_kernel)
    np.testing.assert_allclose(sorted(flat.losses), sorted(model.losses), rtol=1e-6)


def test_swish_is_a_sigmoid_gate_times_its_input():
    inputs = keras.Input((8, 8, 3))
    x = L.Activation("swish", name="act")(L.Conv2D(4, 1, name="conv")(inputs))
    x = L.SeparableConv2D(4, 3, activation="swish", name="sep")(x)
    model = keras.Model(inputs, L.Dense(2, activation="swish", name="dense")(x))
    found = kinds(rewritten(model))
    assert found["act"] == "Multiply" and found["act_sigmoid"] == "Activation"
    assert found["sep"] == "Conv2D" and found["sep_sigmoid"] == "Activation"
    assert found["sep_swish"] == "Multiply" and found["dense_swish"] == "Multiply"


@pytest.mark.parametrize(
    ("function", "scale", "offset"),
    [(lambda x: x + 3.0, 1.0, 3.0), (lambda x: x - 1.5, 1.0, -1.5),
     (lambda x: 2.0 - x, -1.0, 2.0), (lambda x: x * (1 / 6), 1 / 6, 0.0),
     (lambda x: 0.5 * x, 0.5, 0.0), (lambda x: x / 4.0, 0.25, 0.0),
     (lambda x: tf.math.multiply(x, np.float32(3.0)), 3.0, 0.0)],
)  # fmt: skip
def test_arithmetic_with_a_number_is_a_rescaling(function, scale, offset):
    inputs = keras.Input((8, 8, 3))
    flat = rewritten(keras.Model(inputs, function(inputs)))
    (rescaling,) = [layer for layer in flat.layers if isinstance(layer, L.Rescaling)]
    assert rescaling.scale == pytest.approx(scale) and rescaling.offset == pytest.approx(offset)


def test_other_tensorflow_functions_are_left_as_they_are():
    inputs = keras.Input((8, 8, 3))
    x = inputs * inputs + tf.math.pow(inputs, 2.0)  # two tensors; not arithmetic
    model = keras.Model(inputs, 1.0 / (x + 1.0))  # a number divided by a tensor
    flat = decompose_model(model)
    assert sum(isinstance(layer, L.Rescaling) for layer in flat.layers) == 1  # x + 1.0
    assert [type(layer).__name__ for layer in flat.layers].count("TFOpLambda") == 4


def test_normalization_is_a_rescaling():
    inputs = keras.Input((8, 8, 3))
    norm = L.Normalization(mean=[1.0, -2.0, 0.5], variance=[4.0, 0.25, 1e-20], name="norm")
    flat = rewritten(keras.Model(inputs, norm(inputs)))
    rescaling = flat.get_layer("norm")
    assert isinstance(rescaling, L.Rescaling)
    std = np.array([2.0, 0.5, keras.backend.epsilon()])  # √var, at least epsilon
    np.testing.assert_allclose(rescaling.scale, 1 / std, rtol=1e-6)
    np.testing.assert_allclose(rescaling.offset, -np.array([1.0, -2.0, 0.5]) / std, rtol=1e-6)


def test_mobilenet_v3_hard_swish_and_gates_get_their_quantizers():
    """ReLU6(x + 3) / 6 · x (MobileNetV3) and sigmoid gates (EfficientNet): the + 3 is not
    rounded (ReLU6's PACT is), the / 6 and the products get 8-bit ranges, a sigmoid the
    fixed 1/256 grid of TFLite's LOGISTIC."""
    inputs = keras.Input((8, 8, 3))
    x = L.Conv2D(4, 1, name="conv")(inputs)
    gate = L.ReLU(6.0, name="relu6")(x + 3.0) * (1.0 / 6.0)
    x = L.Multiply(name="hard_swish")([x, gate])
    x = L.Multiply(name="se")([x, L.Conv2D(4, 1, activation="sigmoid", name="squeeze")(x)])
    qat = quantize_model(keras.Model(inputs, L.Dense(2)(L.Flatten()(x))), activation_bits=4)
    found = {
        layer.layer.name: layer.quantize_config.output_quantizer
        for layer in qat.layers
        if hasattr(layer, "quantize_config")
    }
    assert not [name for name in found if name.startswith("tf.__operators__.add")]  # x + 3:
    # rounded by the ReLU6 only
    (times,) = [name for name in found if name.startswith("tf.math.multiply")]  # · (1 / 6)
    assert isinstance(found[times], RangeQuantizer)
    assert isinstance(found["relu6"], PACTQuantizer) and found["relu6"].max_alpha == 6.0
    assert isinstance(found["hard_swish"], RangeQuantizer)
    assert found["squeeze_sigmoid"] == FixedRangeQuantizer(0.0, 255.0 / 256.0)
    assert isinstance(found["se"], RangeQuantizer)


def test_a_model_file_with_arithmetic_loads_without_trusting_its_code(tmp_path):
    """A TFOpLambda adding or multiplying by a number names a TensorFlow function and no
    code (MobileNetV3's files are full of them): it loads; any other function still needs
    trust_code."""
    from sgt_tfmot.saving import ModelFileError, load_model, save_model

    inputs = keras.Input((8, 8, 3))
    model = keras.Model(inputs, L.ReLU(6.0)(inputs + 3.0) * (1.0 / 6.0))
    loaded = load_model(save_model(model, tmp_path / "hard_sigmoid.h5"))
    np.testing.assert_array_equal(loaded.predict(X, verbose=0), model.predict(X, verbose=0))
    power = keras.Model(inputs, tf.math.pow(inputs, 2.0))
    with pytest.raises(ModelFileError, match="'tf.math.pow.*' is a TFOpLambda layer"):
        load_model(save_model(power, tmp_path / "power.h5"))


def test_activations_of_one_function_on_one_tensor_become_one_layer():
    """NASNet's stem: one tensor read by several ReLUs, one per path. The converter merges
    identical ops on a tensor into one, which has one output grid; the QAT model must have
    one layer (one PACT α) there too. Other activations of the tensor stay."""
    keras.utils.set_random_seed(0)
    inputs = keras.Input((8, 8, 3))
    x = L.Conv2D(4, 3, padding="same", name="conv")(inputs)
    paths = [
        L.Conv2D(4, 1, name="a")(L.ReLU(name="relu_a")(x)),
        L.Conv2D(4, 1, name="b")(L.Activation("relu", name="relu_b")(x)),
        L.Conv2D(4, 1, name="c")(L.ReLU(6.0, name="relu6_c")(x)),
        L.Conv2D(4, 1, name="d")(L.Activation("relu6", name="relu6_d")(x)),
        L.Conv2D(4, 1, name="e")(L.LeakyReLU(0.1, name="leaky_e")(x)),
        L.Conv2D(4, 1, name="f")(L.LeakyReLU(0.2, name="leaky_f")(x)),
        L.Conv2D(4, 1, name="g")(L.ReLU(name="relu_g")(L.Conv2D(4, 1, name="g0")(x))),
    ]
    model = keras.Model(inputs, L.Add()(paths))
    flat = rewritten(model)
    names = kinds(flat)
    for pair, (first, second) in {("relu_a", "relu_b"): "ab", ("relu6_c", "relu6_d"): "cd"}.items():
        (kept,) = [name for name in pair if name in names]  # one of the twins
        assert flat.get_layer(first).input is flat.get_layer(second).input
        assert flat.get_layer(first).input is flat.get_layer(kept).output
    for kept in ("leaky_e", "leaky_f", "relu_g"):  # other functions, another tensor
        assert kept in names, kept
    qat = quantize_model(model, weight_bits=8, activation_bits=8)
    alphas = [w for w in qat.weights if "alpha" in w.name]
    assert len(alphas) == 3, [w.name for w in alphas]  # ReLU, ReLU6, relu_g


@pytest.mark.parametrize("merge", [L.Add, L.Multiply])
def test_a_merge_of_more_than_two_tensors_is_a_chain_of_two_input_layers(merge):
    """TFLite computes a sum of three tensors as two ADD ops in Keras's order, the first
    rounding onto a grid of its own; the QAT model needs a layer (a range) there too."""
    keras.utils.set_random_seed(0)
    inputs = keras.Input((8, 8, 3))
    x = [L.Conv2D(4, 1, name=f"c{i}")(inputs) for i in range(4)]
    model = keras.Model(inputs, merge(name="merged")(x))
    flat = rewritten(model)
    chain = [layer for layer in flat.layers if type(layer) is merge]
    assert [layer.name for layer in chain] == ["merged_1", "merged_2", "merged"]
    assert flat.get_layer("merged_1").input == [flat.get_layer("c0").output,
                                                 flat.get_layer("c1").output]  # fmt: skip
    assert flat.get_layer("merged").input[0] is flat.get_layer("merged_2").output
    two = keras.Model(inputs, merge(name="two")(x[:2]))
    assert decompose_model(two) is two  # two inputs: nothing to rewrite


@pytest.mark.parametrize("count", [2, 3])
def test_an_average_is_a_chain_of_adds_then_a_rescaling(count):
    """TFLite computes an average as ADD ops and a MUL by 1 / n, each rounding onto a grid
    of its own: the QAT model has the Add layers and a Rescaling, the name on the last."""
    keras.utils.set_random_seed(0)
    inputs = keras.Input((8, 8, 3))
    x = [L.Conv2D(4, 1, name=f"c{i}")(inputs) for i in range(count)]
    flat = rewritten(keras.Model(inputs, L.Average(name="mean")(x)))
    adds = [layer.name for layer in flat.layers if type(layer) is L.Add]
    assert adds == [f"mean_{i}" for i in range(1, count)]
    assert type(flat.get_layer("mean")) is L.Rescaling
    assert flat.get_layer("mean").scale == pytest.approx(1 / count)
    assert flat.get_layer("mean").input is flat.get_layer(adds[-1]).output


def test_twin_activations_merge_under_bfloat16_and_not_across_policies():
    """A model file rebuilt under mixed_bfloat16 (CPUs that compute bfloat16) merges its
    twins the same way; two ReLUs of one tensor under different policies stay two."""
    keras.mixed_precision.set_global_policy("mixed_bfloat16")
    try:
        inputs = keras.Input((8, 8, 3))
        x = L.Conv2D(4, 3, padding="same")(inputs)
        a, b = L.ReLU(name="relu_a")(x), L.Activation("relu", name="relu_b")(x)
        c = L.ReLU(name="relu_c", dtype="float32")(x)
        model = keras.Model(inputs, L.Add()([a, b, c]))
        flat = decompose_model(model)
    finally:
        keras.mixed_precision.set_global_policy("float32")
    names = kinds(flat)
    assert ("relu_a" in names) != ("relu_b" in names) and "relu_c" in names, names
    assert flat.get_layer("relu_c").compute_dtype == "float32"
