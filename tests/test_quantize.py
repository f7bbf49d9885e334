"""quantize_model: which tensors get which quantizer, training, saving, bad input."""

import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest

import sgt_tfmot
from sgt_tfmot import quantize_model, quantize_scope
from sgt_tfmot.keras import keras, tf
from sgt_tfmot.quantize import UnsupportedLayersError
from sgt_tfmot.quantizers import FixedRangeQuantizer, PACTQuantizer, RangeQuantizer
from tests.helpers.models import residual_model

L = keras.layers


def quantizers_by_layer(model):
    """Inner layer name -> (weight quantizer, output quantizer) of every wrapped layer."""
    found = {}
    for layer in model.layers:
        config = getattr(layer, "quantize_config", None)
        if config is not None:
            found[layer.layer.name] = (config.weight_quantizer, config.output_quantizer)
    return found


def test_quantizers_sit_where_the_integer_graph_needs_them():
    qat = quantize_model(residual_model(), weight_bits=4, activation_bits=3, first_last_bits=8)
    found = quantizers_by_layer(qat)

    # Every kernel is quantized, the first and last at 8 bits, the Conv2D followed by a
    # separate BN + ReLU included.
    assert found["stem"][0].num_bits == 8 and found["stem"][0].per_channel
    assert found["conv"][0].num_bits == 4
    assert found["logits"][0].num_bits == 8 and not found["logits"][0].per_channel
    # Conv -> BN: no output quantizer on the conv (BN is folded into it).
    assert found["stem"][1] is None and found["conv"][1] is None
    # BN -> ReLU: BN is not wrapped at all, so no 8-bit fake-quant in front of PACT.
    assert "stem_bn" not in found
    # BN -> Add: the Add needs an 8-bit range on this input.
    assert found["conv_bn"] == (None, RangeQuantizer(8))
    # Add -> ReLU: the ReLU's PACT range is the Add's output range.
    assert "add" not in found
    assert found["stem_relu"] == (None, PACTQuantizer(3, 10.0, 2e-4))
    assert found["add_relu"][1] == PACTQuantizer(3, 10.0, 2e-4)
    assert found["pool"][1] == RangeQuantizer(8)
    assert found["logits"][1] == RangeQuantizer(8, straight_through=True)  # the model output
    # The input is quantized over [0, 255] (raw pixels).
    (input_quantize,) = [x for x in qat.layers if type(x).__name__ == "QuantizeLayer"]
    assert input_quantize.quantizer == FixedRangeQuantizer(0.0, 255.0)


def test_normalization_input_layer_gets_an_8_bit_range():
    inputs = keras.Input((4, 4, 2))
    x = L.Normalization(mean=[100.0, 50.0], variance=[400.0, 100.0], name="norm")(inputs)
    model = keras.Model(inputs, L.Dense(2, name="out")(L.Flatten()(x)))
    assert quantizers_by_layer(quantize_model(model))["norm"] == (None, RangeQuantizer(8))


def test_conv_with_relu_activation_and_separate_relu_are_both_quantized():
    model = keras.Sequential(
        [
            keras.Input((6, 6, 1)),
            L.Conv2D(4, 3, activation="relu", name="a"),
            L.Conv2D(4, 3, name="b"),
            L.ReLU(name="b_relu"),
            L.Flatten(),
            L.Dense(3, name="out"),
        ]
    )
    found = quantizers_by_layer(quantize_model(model, 4, 4, first_last_bits=4))
    assert found["a"][0].num_bits == 4 and isinstance(found["a"][1], PACTQuantizer)
    assert found["b"][0].num_bits == 4 and found["b"][1] is None  # ReLU layer quantizes
    assert isinstance(found["b_relu"][1], PACTQuantizer)
    assert found["out"][0].num_bits == 4


def test_alphas_are_trainable_regularized_and_move_under_training():
    qat = quantize_model(residual_model(), alpha_init=2.0, alpha_l2=1e-2)
    alphas = [w for w in qat.trainable_weights if "alpha" in w.name]
    assert len(alphas) == 2
    # One λ·α² loss per α, plus nothing else (the model has no other regularizer).
    assert sorted(float(v) for v in qat.losses) == pytest.approx([0.04, 0.04])

    rng = np.random.default_rng(0)
    x = rng.uniform(0, 255, (32, 8, 8, 3)).astype("float32")
    y = rng.integers(0, 4, 32)
    qat.compile(keras.optimizers.SGD(0.5), keras.losses.SparseCategoricalCrossentropy(True))
    qat.fit(x, y, batch_size=8, epochs=2, verbose=0)
    assert all(abs(float(a) - 2.0) > 1e-3 for a in alphas)


def test_saliency_stays_nonzero_when_logits_leave_the_output_range():
    qat = quantize_model(residual_model())
    (max_var,) = [w for w in qat.weights if w.name.endswith("logits/output_max:0")]
    max_var.assign(1e-3)  # every positive logit is now above the output range
    x = tf.constant(np.random.default_rng(4).uniform(0, 255, (2, 8, 8, 3)), tf.float32)
    with tf.GradientTape() as tape:
        tape.watch(x)
        top = tf.reduce_max(qat(x, training=False), axis=1)
    assert float(tf.reduce_max(top)) <= 1e-3 + 1e-6  # the logits are clipped ...
    assert np.all(np.abs(tape.gradient(top, x).numpy()).sum(axis=(1, 2, 3)) > 0)  # ... not ∂


def test_save_and_load_give_identical_outputs(tmp_path):
    qat = quantize_model(residual_model(), weight_bits=3, activation_bits=5)
    x = np.random.default_rng(1).uniform(0, 255, (4, 8, 8, 3)).astype("float32")
    qat.compile("adam", keras.losses.SparseCategoricalCrossentropy(True))
    qat.fit(x, np.arange(4), epochs=1, verbose=0)  # moves ranges and α off their initial values
    path = str(tmp_path / "qat.h5")
    qat.save(path)
    with quantize_scope():
        loaded = keras.models.load_model(path)
    np.testing.assert_array_equal(loaded.predict(x, verbose=0), qat.predict(x, verbose=0))


def test_mixed_bfloat16_trains():
    keras.mixed_precision.set_global_policy("mixed_bfloat16")
    try:
        qat = quantize_model(residual_model())
        qat.compile("adam", keras.losses.SparseCategoricalCrossentropy(True))
        x = np.random.default_rng(2).uniform(0, 255, (8, 8, 8, 3)).astype("float32")
        history = qat.fit(x, np.arange(8) % 4, epochs=1, verbose=0)
        assert np.isfinite(history.history["loss"][0])
    finally:
        keras.mixed_precision.set_global_policy("float32")


@pytest.mark.slow
def test_resnet20_kernels_are_on_a_k_bit_grid():
    models = pytest.importorskip("sgt_tfmot.models")
    qat = quantize_model(models.resnet20((32, 32, 3), 10), weight_bits=4, first_last_bits=8)
    wrapped = [x for x in qat.layers if getattr(x, "quantize_config", None) is not None]
    kernels = [x for x in wrapped if x.quantize_config.weight_quantizer is not None]
    conv_and_dense = [
        x
        for x in qat.layers
        if isinstance(getattr(x, "layer", x), L.Conv2D | L.Dense | L.DepthwiseConv2D)
    ]
    assert len(kernels) == len(conv_and_dense) == 22  # 19 convs + 2 projections + 1 dense
    for layer in kernels:
        quantizer = layer.quantize_config.weight_quantizer
        (kernel,) = [w for w in layer.weights if w.name.endswith("/kernel:0")]
        wq = quantizer(kernel, False, {}).numpy()
        levels = 2 ** (quantizer.num_bits - 1) - 1
        axes = tuple(range(wq.ndim - 1)) if quantizer.per_channel else None
        step = np.abs(kernel.numpy()).max(axis=axes) / levels
        q = wq / step
        np.testing.assert_allclose(q, np.round(q), atol=1e-3)
        assert len(np.unique(np.round(q))) <= 2**quantizer.num_bits - 1
    assert {k.quantize_config.weight_quantizer.num_bits for k in kernels[1:-1]} == {4}
    assert kernels[0].quantize_config.weight_quantizer.num_bits == 8
    assert kernels[-1].quantize_config.weight_quantizer.num_bits == 8


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        (
            {"weight_bits": 1},
            r"`weight_bits` must be an integer in \[2, 8\]\. Received: weight_bits=1",
        ),
        (
            {"activation_bits": 9},
            r"`activation_bits` must be an integer in \[2, 8\]\. Received: activation_bits=9",
        ),
        ({"first_last_bits": 4.5}, r"`first_last_bits` must be an integer in \[2, 8\]"),
        (
            {"alpha_init": 0.0},
            r"`alpha_init` must be a finite number > 0\. Received: alpha_init=0.0",
        ),
        ({"alpha_l2": -1.0}, r"`alpha_l2` must be a finite number >= 0\. Received: alpha_l2=-1.0"),
        ({"input_range": (1.0, 0.0)}, r"`input_range` must be \(low, high\) with low < high"),
        ({"layer_configs": {"nope": None}}, r"`layer_configs` names layers not in the model"),
    ],
)
def test_bad_arguments(kwargs, message):
    with pytest.raises(ValueError, match=message):
        quantize_model(residual_model(), **kwargs)


def test_subclassed_model_is_rejected():
    class Net(keras.Model):
        def __init__(self):
            super().__init__()
            self.dense = L.Dense(2)

        def call(self, x):
            return self.dense(x)

    net = Net()
    net(tf.zeros([1, 4]))
    with pytest.raises(ValueError, match="is a subclassed model"):
        quantize_model(net)


@pytest.mark.slow
def test_nested_models_are_flattened_with_names_and_outputs_kept():
    """The transfer-learning pattern: a Functional base (with a clashing layer name) inside
    a classifier, itself nested in a Sequential."""
    keras.utils.set_random_seed(0)
    inputs = keras.Input((6, 6, 3))
    x = L.Conv2D(4, 3, activation="relu", name="conv")(inputs)
    base = keras.Model(inputs, L.GlobalAveragePooling2D(name="pool")(x), name="base")
    head = keras.Sequential([keras.Input((4,)), L.Dense(3, name="conv")], name="head")
    outer_in = keras.Input((6, 6, 3))
    outer = keras.Model(outer_in, head(base(L.Rescaling(1 / 255)(outer_in))))
    flat = sgt_tfmot.flatten_model(outer)
    names = [layer.name for layer in flat.layers]
    assert not any(isinstance(layer, keras.Model) for layer in flat.layers)
    assert "conv" in names and "head_conv" in names and "pool" in names
    x = np.random.default_rng(0).uniform(0, 255, (5, 6, 6, 3)).astype("float32")
    np.testing.assert_array_equal(flat.predict(x, verbose=0), outer.predict(x, verbose=0))
    qat = quantize_model(outer, weight_bits=8, activation_bits=8)
    assert "quant_head_conv" in [layer.name for layer in qat.layers]


def test_every_layer_without_config_is_named_in_one_message():
    inputs = keras.Input((4, 3))
    x = L.LayerNormalization(name="ln")(inputs)
    x = L.Activation("elu", name="elu")(tf.math.pow(x, 2.0))
    for index in range(6):
        x = L.LayerNormalization(name=f"ln{index}")(x)
    model = keras.Model(inputs, L.Dense(2)(L.Flatten()(x)))
    with pytest.raises(UnsupportedLayersError) as error:
        quantize_model(model)
    message = str(error.value)
    assert message.startswith(
        "9 layers of the model cannot be quantized: LayerNormalization: "
        "'ln', 'ln0', 'ln1', 'ln2' and 3 more; TFOpLambda(math.pow): "
    )
    assert "; Activation(elu): 'elu'. Supported: " in message
    assert "TFOpLambda(math.pow): 'tf.math.pow" in message and "only adding, subtracting" in message
    assert "SeparableConv2D" in message and "Activation(relu|relu6|" in message
    assert message.endswith("annotate each by hand with `layer_configs={'ln': a tfmot "
                            "QuantizeConfig, ...}`.")  # fmt: skip
    names = [name for name, _ in error.value.layers]
    assert names[0] == "ln" and names[1].startswith("tf.math.pow") and len(names) == 9
    cli = error.value.for_flags()  # the command line has no layer_configs
    assert cli.startswith("9 layers of the model cannot be quantized") and "--float" in cli
    assert "`layer_configs=" not in cli and "sgt_tfmot.quantize_model(model, layer_configs" in cli
    (one,) = UnsupportedLayersError([model.get_layer("ln")]).layers
    assert one == ("ln", "LayerNormalization")


def test_layer_configs_annotate_by_hand():
    inputs = keras.Input((4, 3))
    x = L.LayerNormalization(name="ln")(inputs)
    model = keras.Model(inputs, L.Dense(2)(L.Flatten()(x)))
    config = sgt_tfmot.quantize_configs.LayerQuantizeConfig(output_quantizer=RangeQuantizer(8))
    qat = quantize_model(model, layer_configs={"ln": config})
    assert quantizers_by_layer(qat)["ln"] == (None, RangeQuantizer(8))


def test_already_quantized_model_is_rejected():
    qat = quantize_model(residual_model())
    with pytest.raises(ValueError, match="is already quantized"):
        quantize_model(qat)


@pytest.mark.slow
def test_import_after_keras_3_tensorflow_fails_clearly():
    env = {k: v for k, v in os.environ.items() if k != "TF_USE_LEGACY_KERAS"}
    script = "import tensorflow as tf; tf.keras.layers; import sgt_tfmot; sgt_tfmot.quantize_model"
    result = subprocess.run(
        [sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=120
    )
    assert result.returncode != 0
    assert "Import sgt_tfmot before tensorflow, or set TF_USE_LEGACY_KERAS=1" in result.stderr


@pytest.mark.slow
def test_the_commands_start_without_keras_3_and_grad_cam_still_runs():
    # TFMOT's probe for Keras 2 internals (prune_registry) and tf-keras-vis's Grad-CAM module
    # import all of Keras 3 (~1.3 s); the commands need neither at start, and the probe's
    # outcome (base_layer None) is the same whether Keras 3 was imported first or not. Nor
    # do they need scipy.stats (~1 s; the maps' Spearman ρ imports it on first use).
    script = textwrap.dedent(
        """
        import sys
        if sys.argv[1] == "keras_first":
            import keras
        import numpy as np
        import sgt_tfmot, sgt_tfmot.train, sgt_tfmot.convert, sgt_tfmot.explain.__main__
        from tensorflow_model_optimization.python.core.sparsity.keras import prune_registry
        print("keras" in sys.modules, prune_registry.base_layer, "scipy.stats" in sys.modules)
        from sgt_tfmot.keras import keras
        from sgt_tfmot.explain.attributions import GradCAM
        model = keras.Sequential([keras.Input((8, 8, 1)), keras.layers.Conv2D(2, 3),
                                  keras.layers.GlobalAveragePooling2D(), keras.layers.Dense(3)])
        maps = GradCAM()(model, np.ones((1, 8, 8, 1), np.float32), np.array([1]))
        print(maps.shape, "keras" in sys.modules)
        """
    )
    for case, expected in (
        ("default", "False None False\n(1, 8, 8) True\n"),
        ("keras_first", "True None True\n(1, 8, 8) True\n"),  # Keras 3 imports scipy.stats
    ):
        result = subprocess.run(
            [sys.executable, "-c", script, case], capture_output=True, text=True, timeout=120
        )
        assert result.returncode == 0, result.stderr[-2000:]
        assert result.stdout == expected, (case, result.stdout)
