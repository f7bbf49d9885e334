"""Tests of `SaliencyGuidedModel`: the SGT step against numpy / a hand-written reference."""

import json
import math
import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest

from sgt_tfmot.keras import keras, tf
from sgt_tfmot.trainers import SaliencyGuidedModel
from sgt_tfmot.trainers.saliency_guided import kl_divergence

SHAPE = (4, 4, 2)  # 16 pixels, 2 channels
CLASSES = 3


def mlp(seed=0, softmax=False, integer_weights=False, regularize=False):
    """Flatten -> Dense(6, relu) -> Dense(3): its input gradient has a closed form."""
    keras.utils.set_random_seed(seed)
    regularizer = keras.regularizers.L2(0.05) if regularize else None
    inputs = keras.Input(SHAPE)
    h = keras.layers.Flatten()(inputs)
    h = keras.layers.Dense(6, activation="relu", kernel_regularizer=regularizer)(h)
    outputs = keras.layers.Dense(CLASSES, activation="softmax" if softmax else None)(h)
    model = keras.Model(inputs, outputs)
    if integer_weights:  # small integers: exact saliency values with many ties
        rng = np.random.default_rng(seed)
        model.set_weights(
            [rng.integers(-1, 2, size=w.shape).astype(np.float32) for w in model.get_weights()]
        )
    return model


def max_diff(first, second):
    """Largest absolute difference between two lists of weight arrays."""
    return max(
        float(np.abs(np.asarray(a) - np.asarray(b)).max())
        for a, b in zip(first, second, strict=True)
    )


def clone(model):
    copy = keras.models.clone_model(model)
    copy.set_weights(model.get_weights())
    return copy


def data(n=16, seed=1):
    rng = np.random.default_rng(seed)
    return rng.random((n, *SHAPE)).astype(np.float32), rng.integers(0, CLASSES, n)


def sparse_ce(from_logits=True):
    return keras.losses.SparseCategoricalCrossentropy(from_logits=from_logits)


def numpy_forward(weights, x):
    w1, b1, w2, b2 = weights
    h = x.reshape(len(x), -1) @ w1 + b1
    return np.maximum(h, 0) @ w2 + b2, h


def numpy_saliency(weights, x, target):
    """∂z_t/∂x of the MLP: W1 · (1[h > 0] ⊙ W2[:, t]), per sample."""
    w1, _, w2, _ = weights
    _, h = numpy_forward(weights, x)
    back = (h > 0) * w2[:, target].T  # (B, 6)
    return (back @ w1.T).reshape(x.shape)


def numpy_mask(saliency, fraction):
    """abs, channel mean, stable argsort per sample, first floor(fraction * n) pixels."""
    score = np.abs(saliency).mean(axis=-1).reshape(len(saliency), -1)
    k = math.floor(fraction * score.shape[1])
    mask = np.zeros(score.shape, bool)
    for b, row in enumerate(score):
        mask[b, np.argsort(row, kind="stable")[:k]] = True
    return np.broadcast_to(mask.reshape(saliency.shape[:-1])[..., None], saliency.shape)


def log_softmax(z):
    z = z - z.max(axis=-1, keepdims=True)
    return z - np.log(np.exp(z).sum(axis=-1, keepdims=True))


def recording_zero_fill(masks):
    def fill(x, mask):
        masks.append(mask.numpy())
        return tf.zeros_like(x)

    return fill


# ---------------------------------------------------------------- the step, value by value
@pytest.mark.parametrize("target", ["label", "predicted"])
def test_step_masks_k_lowest_of_numpy_saliency_and_reports_numpy_losses(target):
    model = mlp(integer_weights=True)
    weights = model.get_weights()
    x, y = data()
    masks = []
    sgt = SaliencyGuidedModel(model, fill=recording_zero_fill(masks), kl_weight=0.3, target=target)
    sgt.compile(keras.optimizers.SGD(0.1), sparse_ce(), run_eagerly=True)
    logs = sgt.train_on_batch(x, y, return_dict=True)

    z, _ = numpy_forward(weights, x)
    targets = y if target == "label" else z.argmax(axis=-1)
    saliency = numpy_saliency(weights, x, targets)
    expected_mask = numpy_mask(saliency, 0.5)
    # Integer weights give integer saliencies: the ranking has ties, broken by lowest index.
    assert len(np.unique(np.abs(saliency).mean(axis=-1))) < saliency[..., 0].size
    np.testing.assert_array_equal(masks[0], expected_mask)
    np.testing.assert_array_equal(masks[0][..., 0].reshape(16, -1).sum(axis=1), 8)  # ⌊0.5·16⌋

    z_masked, _ = numpy_forward(weights, np.where(expected_mask, 0.0, x))
    log_p, log_q = log_softmax(z), log_softmax(z_masked)
    kl = (np.exp(log_p) * (log_p - log_q)).sum(axis=-1).mean()
    ce = -log_p[np.arange(16), y].mean()
    assert kl > 1e-3  # the masking changes the output: the check below can fail
    np.testing.assert_allclose(logs["kl"], kl, rtol=1e-5)
    np.testing.assert_allclose(logs["cross_entropy"], ce, rtol=1e-5)
    np.testing.assert_allclose(logs["loss"], ce + 0.3 * kl, rtol=1e-5)
    np.testing.assert_allclose(logs["masked_accuracy"], np.mean(z_masked.argmax(-1) == y))


@pytest.mark.parametrize("precision", ["float32", "mixed_bfloat16"])
@pytest.mark.parametrize("fill", ["impute", "blur"])
def test_step_masks_lowest_patches_and_fills_as_masking_does(fill, precision):
    """patch_size=2 on 4x4 inputs: the mask is numpy's brute-force patch ranking of the numpy
    saliency, and f(x̃) is the model on `mask_input(x, M, fill)` with the trainer's own
    noise, N(0, 1) from the stateless RNG at (seed, step 0): the KL the step reports is the
    numpy KL of that x̃. Both precision paths: the fill runs in float32 on the float32 batch."""
    from sgt_tfmot import masking
    from tests.helpers.masking import numpy_patch_mask

    try:
        keras.mixed_precision.set_global_policy(precision)
        model = mlp(integer_weights=True)
        weights = model.get_weights()
        x, y = data()
        sgt = SaliencyGuidedModel(
            model, fill=fill, patch_size=2, blur_sigma=1.0, impute_noise=0.05, kl_weight=0.3,
            seed=9,
        )  # fmt: skip
        sgt.compile(keras.optimizers.SGD(0.0), sparse_ce())
        logs = sgt.train_on_batch(x, y, return_dict=True)
    finally:
        keras.mixed_precision.set_global_policy("float32")

    saliency = numpy_saliency(weights, x, y)
    mask = numpy_patch_mask(saliency, 0.5, 2)  # ⌊0.5 · 4⌋ = 2 of the 4 patches
    noise = tf.random.stateless_normal(x.shape, seed=tf.constant([9, 0], tf.int64))
    x_masked = masking.mask_input(
        x, mask, fill, noise=noise, blur_sigma=1.0, impute_noise=0.05
    ).numpy()
    lo, hi = x.min(axis=(1, 2), keepdims=True), x.max(axis=(1, 2), keepdims=True)
    assert np.all(x_masked >= lo) and np.all(x_masked <= hi)
    z, _ = numpy_forward(weights, x)
    z_masked, _ = numpy_forward(weights, x_masked)
    log_p, log_q = log_softmax(z), log_softmax(z_masked)
    kl = (np.exp(log_p) * (log_p - log_q)).sum(axis=-1).mean()
    assert kl > 1e-3
    if precision == "float32":
        np.testing.assert_allclose(logs["kl"], kl, rtol=1e-4)
    else:  # bfloat16 logits: about 3 significant digits, also in the saliency's ranking
        np.testing.assert_allclose(logs["kl"], kl, rtol=0.1)


def test_kl_divergence_known_pair():
    # p = (1/2, 1/4, 1/4), q = (1/4, 1/2, 1/4):
    # KL = 1/2 ln 2 + 1/4 ln(1/2) + 0 = 1/4 ln 2.
    log_p = tf.math.log([[0.5, 0.25, 0.25]])
    log_q = tf.math.log([[0.25, 0.5, 0.25]])
    np.testing.assert_allclose(kl_divergence(log_p, log_q).numpy(), [0.25 * np.log(2)], rtol=1e-6)
    np.testing.assert_allclose(kl_divergence(log_p, log_p).numpy(), [0.0], atol=1e-7)


def test_kl_on_softmax_outputs_matches_numpy():
    model = mlp(softmax=True)
    assert SaliencyGuidedModel(model).from_logits is False
    weights = model.get_weights()
    x, y = data()
    masks = []
    sgt = SaliencyGuidedModel(model, fill=recording_zero_fill(masks))
    sgt.compile(keras.optimizers.SGD(0.1), sparse_ce(from_logits=False), run_eagerly=True)
    logs = sgt.train_on_batch(x, y, return_dict=True)
    z, _ = numpy_forward(weights, x)
    z_masked, _ = numpy_forward(weights, np.where(masks[0], 0.0, x))
    log_p, log_q = log_softmax(z), log_softmax(z_masked)
    kl = (np.exp(log_p) * (log_p - log_q)).sum(axis=-1).mean()
    np.testing.assert_allclose(logs["kl"], kl, rtol=1e-4)


def test_update_is_gradient_of_ce_plus_kl_through_both_branches():
    model = mlp(seed=2, regularize=True)
    reference = clone(model)
    x, y = data(seed=3)
    masks = []
    lam, lr = 0.7, 0.5
    sgt = SaliencyGuidedModel(model, fill=recording_zero_fill(masks), kl_weight=lam)
    sgt.compile(keras.optimizers.SGD(lr), sparse_ce(), run_eagerly=True)
    sgt.train_on_batch(x, y)
    x_masked = np.where(masks[0], 0.0, x)

    def sgd_step(stop=None):
        with tf.GradientTape() as tape:
            z, z_masked = reference(x), reference(x_masked)
            if stop == "clean":
                z_kl, zm_kl = tf.stop_gradient(z), z_masked
            elif stop == "masked":
                z_kl, zm_kl = z, tf.stop_gradient(z_masked)
            else:
                z_kl, zm_kl = z, z_masked
            kl = kl_divergence(tf.nn.log_softmax(z_kl), tf.nn.log_softmax(zm_kl))
            loss = sparse_ce()(y, z) + tf.add_n(reference.losses) + lam * tf.reduce_mean(kl)
        grads = tape.gradient(loss, reference.trainable_weights)
        return [
            w.numpy() - lr * g.numpy()
            for w, g in zip(reference.trainable_weights, grads, strict=True)
        ]

    got = [w.numpy() for w in model.trainable_weights]
    for g, e in zip(got, sgd_step(), strict=True):
        np.testing.assert_allclose(g, e, rtol=1e-5, atol=1e-6)
    # Dropping either branch of the KL gradient gives a measurably different update.
    for stop in ("clean", "masked"):
        one_branch = sgd_step(stop)
        assert max_diff(got, one_branch) > 1e-4


def test_kl_weight_zero_equals_plain_train_step():
    model = mlp(seed=4, regularize=True)
    plain = clone(model)
    x, y = data(seed=5)
    sgt = SaliencyGuidedModel(model, kl_weight=0.0, seed=0)
    sgt.compile(keras.optimizers.Adam(0.05), sparse_ce())
    plain.compile(keras.optimizers.Adam(0.05), sparse_ce())
    for _ in range(2):
        sgt_logs = sgt.train_on_batch(x, y, return_dict=True)
        plain_logs = plain.train_on_batch(x, y, return_dict=True)
    np.testing.assert_allclose(sgt_logs["loss"], plain_logs["loss"], rtol=1e-6)
    moved = max(
        np.abs(a - b).max() for a, b in zip(plain.get_weights(), mlp(seed=4).weights, strict=True)
    )
    assert moved > 1e-2
    for a, b in zip(model.get_weights(), plain.get_weights(), strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-7)


@pytest.mark.slow
def test_one_hot_labels_give_the_same_update_as_class_ids():
    x, y = data(seed=6)
    results = []
    for labels, loss in [
        (y, sparse_ce()),
        (y.reshape(-1, 1).astype(np.uint8), sparse_ce()),
        (np.eye(CLASSES, dtype=np.float32)[y], keras.losses.CategoricalCrossentropy(True)),
    ]:
        model = mlp(seed=7)
        sgt = SaliencyGuidedModel(model, seed=3)
        sgt.compile(keras.optimizers.SGD(0.5), loss)
        logs = sgt.train_on_batch(x, labels, return_dict=True)
        results.append((logs, model.get_weights()))
    for logs, weights in results[1:]:
        for key in ("loss", "cross_entropy", "kl", "masked_accuracy"):
            np.testing.assert_allclose(logs[key], results[0][0][key], rtol=1e-6)
        for a, b in zip(weights, results[0][1], strict=True):
            np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-7)


def test_sample_weights_follow_keras_sum_over_batch_size():
    # Weights (1,...,1, 0,...,0) on 16 samples = the first 8 samples with half the step size
    # (Keras divides weighted sums by the batch size, for the compiled loss and for the KL).
    x, y = data(seed=8)
    weighted, half = mlp(seed=9), mlp(seed=9)
    for model, lr, args in [
        (weighted, 1.0, (x, y, np.repeat([1.0, 0.0], 8))),
        (half, 0.5, (x[:8], y[:8])),
    ]:
        sgt = SaliencyGuidedModel(model, fill="zero")
        sgt.compile(keras.optimizers.SGD(lr), sparse_ce())
        sgt.train_on_batch(*args)
    for a, b in zip(weighted.get_weights(), half.get_weights(), strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)


def test_fixed_seed_gives_the_same_run_twice():
    x, y = data(n=32, seed=10)

    def run(seed):
        model = mlp(seed=11)
        sgt = SaliencyGuidedModel(model, seed=seed)
        sgt.compile(keras.optimizers.SGD(0.5), sparse_ce())
        sgt.fit(x, y, batch_size=16, epochs=2, shuffle=False, verbose=0)
        return model.get_weights()

    first, second, other = run(5), run(5), run(6)
    for a, b in zip(first, second, strict=True):
        np.testing.assert_array_equal(a, b)
    assert max_diff(first, other) > 1e-6


# ------------------------------------------------------------ Keras integration
def test_fit_with_validation_callbacks_and_plain_evaluate_predict():
    model = mlp(seed=12)
    x, y = data(n=32, seed=13)
    sgt = SaliencyGuidedModel(model, seed=0)
    sgt.compile(keras.optimizers.Adam(0.01), sparse_ce(), metrics=["accuracy"])
    batch_logs = []
    callback = keras.callbacks.LambdaCallback(
        on_train_batch_end=lambda batch, logs: batch_logs.append(dict(logs))
    )
    history = sgt.fit(
        x, y, batch_size=16, epochs=2, validation_data=(x, y), callbacks=[callback], verbose=0
    )
    train_keys = {"loss", "accuracy", "cross_entropy", "kl", "masked_accuracy"}
    assert set(history.history) == train_keys | {"val_loss", "val_accuracy"}
    assert len(batch_logs) == 4 and set(batch_logs[0]) == train_keys
    assert all(np.isfinite(v) for v in history.history["loss"])

    # evaluate / predict are the wrapped model's, in inference mode.
    model.compile(sgt.optimizer, sparse_ce(), metrics=["accuracy"])
    expected = model.evaluate(x, y, verbose=0, return_dict=True)
    got = sgt.evaluate(x, y, verbose=0, return_dict=True)
    assert set(got) == {"loss", "accuracy"}
    np.testing.assert_allclose(got["loss"], expected["loss"], rtol=1e-6)
    np.testing.assert_allclose(got["accuracy"], expected["accuracy"])
    np.testing.assert_allclose(sgt.predict(x, verbose=0), model.predict(x, verbose=0), rtol=1e-6)
    np.testing.assert_allclose(history.history["val_loss"][-1], expected["loss"], rtol=1e-6)


def test_save_and_load_wrapper_and_inner_model(tmp_path):
    model = mlp(seed=14)
    x, y = data(seed=15)
    sgt = SaliencyGuidedModel(
        model, mask_fraction=0.25, kl_weight=0.05, fill="blur", saliency="signed",
        patch_size=2, blur_sigma=1.5, impute_noise=0.02, reduce_channels="max",
        target="predicted", seed=21,
    )  # fmt: skip
    sgt.compile(keras.optimizers.SGD(0.1), sparse_ce())
    sgt.fit(x, y, epochs=1, verbose=0)
    path = str(tmp_path / "sgt.keras")
    sgt.save(path)
    loaded = keras.models.load_model(path)
    assert isinstance(loaded, SaliencyGuidedModel)
    config, expected = loaded.get_config(), sgt.get_config()
    assert (config["patch_size"], config["blur_sigma"], config["impute_noise"]) == (2, 1.5, 0.02)
    for key in ("mask_fraction", "kl_weight", "fill", "saliency", "reduce_channels", "target"):
        assert config[key] == expected[key]
    assert (config["from_logits"], config["seed"]) == (True, 21)
    np.testing.assert_allclose(loaded.predict(x, verbose=0), sgt.predict(x, verbose=0), rtol=1e-6)
    assert np.isfinite(loaded.fit(x, y, epochs=1, verbose=0).history["loss"][0])

    inner_path = str(tmp_path / "inner.keras")
    sgt.save_inner_model(inner_path)
    inner = keras.models.load_model(inner_path, compile=False)
    assert inner._is_graph_network and not isinstance(inner, SaliencyGuidedModel)
    np.testing.assert_allclose(inner.predict(x, verbose=0), model.predict(x, verbose=0), rtol=1e-6)


def test_from_logits_detection():
    def head(*layers):
        inputs = keras.Input((3,))
        h = inputs
        for layer in layers:
            h = layer(h)
        return keras.Model(inputs, h)

    dense = keras.layers.Dense
    assert SaliencyGuidedModel(head(dense(4))).from_logits is True
    assert SaliencyGuidedModel(head(dense(4, activation="softmax"))).from_logits is False
    assert SaliencyGuidedModel(head(dense(4), keras.layers.Softmax())).from_logits is False
    assert SaliencyGuidedModel(head(dense(4), keras.layers.Activation("softmax"))).from_logits is (
        False
    )
    assert SaliencyGuidedModel(head(dense(4)), from_logits=False).from_logits is False


def bn_classifier(seed=0, quantized=False):
    """Conv -> BN -> ReLU -> GAP -> Dense: moving statistics to watch, optionally as W8A8 QAT."""
    keras.utils.set_random_seed(seed)
    inputs = keras.Input((6, 6, 1))
    h = keras.layers.Conv2D(3, 3, use_bias=False)(inputs)
    h = keras.layers.BatchNormalization(momentum=0.5)(h)
    h = keras.layers.ReLU()(h)
    outputs = keras.layers.Dense(CLASSES)(keras.layers.GlobalAveragePooling2D()(h))
    model = keras.Model(inputs, outputs)
    if quantized:
        from sgt_tfmot import quantize_model

        model = quantize_model(model, weight_bits=8, activation_bits=8, input_range=(0, 1))
    return model


def moving_state(model):
    """Non-trainable variables by layer-free name (two copies of a model differ in layer names)."""
    return {v.name.split("/", 1)[-1]: v.numpy() for v in model.non_trainable_variables}


@pytest.mark.parametrize("quantized", [False, True])
def test_moving_statistics_follow_the_clean_batch_only(quantized):
    """After one SGT step, BN moving statistics and quantizer EMA ranges equal those of one
    training-mode forward on the clean batch; the masked forward leaves no trace."""
    rng = np.random.default_rng(0)
    x = rng.random((8, 6, 6, 1)).astype(np.float32)
    y = rng.integers(0, CLASSES, 8)
    model = bn_classifier(quantized=quantized)
    reference = bn_classifier(quantized=quantized)
    reference.set_weights(model.get_weights())
    reference(x, training=True)  # the clean forward alone
    expected = moving_state(reference)
    assert any(
        not np.allclose(v, w)
        for v, w in zip(expected.values(), moving_state(model).values(), strict=True)
    ), "nothing to compare"

    sgt = SaliencyGuidedModel(model, kl_weight=1.0, fill="zero", seed=0)
    sgt.compile("sgd", sparse_ce())
    sgt.fit(x, y, batch_size=8, epochs=1, verbose=0)
    got = moving_state(model)
    assert got.keys() == expected.keys()
    for name in expected:
        np.testing.assert_allclose(got[name], expected[name], rtol=1e-5, atol=1e-6, err_msg=name)

    both = bn_classifier(quantized=quantized)  # the original SGT code: both forwards update
    sgt = SaliencyGuidedModel(both, fill="zero", seed=0, update_masked_statistics=True)
    sgt.compile("sgd", sparse_ce())
    sgt.fit(x, y, batch_size=8, epochs=1, verbose=0)
    bn = [name for name in expected if "moving_variance" in name]
    assert bn and not np.allclose(moving_state(both)[bn[0]], expected[bn[0]])


@pytest.mark.parametrize(
    "options", [{}, {"fill": "blur", "patch_size": 2}, {"fill": "impute", "patch_size": 2}]
)
def test_mixed_bfloat16_trains(options):
    try:
        keras.mixed_precision.set_global_policy("mixed_bfloat16")
        model = mlp(seed=16)
        assert model.layers[-1].compute_dtype == "bfloat16"
        x, y = data(n=32, seed=17)
        sgt = SaliencyGuidedModel(model, seed=0, **options)
        sgt.compile(keras.optimizers.SGD(0.5), sparse_ce())
        before = model.get_weights()
        history = sgt.fit(x, y, batch_size=16, epochs=2, verbose=0).history
    finally:
        keras.mixed_precision.set_global_policy("float32")
    assert all(np.isfinite(history[key]).all() for key in ("loss", "kl", "cross_entropy"))
    assert max_diff(before, model.get_weights()) > 1e-3


def test_trains_a_pact_qat_model():
    from sgt_tfmot import quantize_model

    keras.utils.set_random_seed(18)
    inputs = keras.Input((6, 6, 3))
    h = keras.layers.ReLU()(keras.layers.Conv2D(4, 3)(inputs))
    h = keras.layers.GlobalAveragePooling2D()(h)
    float_model = keras.Model(inputs, keras.layers.Dense(CLASSES)(h))
    qat = quantize_model(float_model, weight_bits=4, activation_bits=4)
    alphas = [w for w in qat.trainable_weights if "alpha" in w.name]
    assert alphas
    alphas_before = [a.numpy() for a in alphas]
    regularization = float(tf.add_n(qat.losses))
    assert regularization > 0  # PACT's λ_α · α² (+ any kernel L2)

    rng = np.random.default_rng(19)
    x = rng.uniform(0, 255, (16, 6, 6, 3)).astype(np.float32)  # raw pixels, the QAT input range
    y = rng.integers(0, CLASSES, 16)
    sgt = SaliencyGuidedModel(qat, kl_weight=0.5, seed=0)
    assert sgt.from_logits is True
    sgt.compile(keras.optimizers.SGD(0.01), sparse_ce())
    logs = sgt.train_on_batch(x, y, return_dict=True)
    # The total loss holds the model's regularization losses: CE + Σ losses + λ·KL.
    np.testing.assert_allclose(
        logs["loss"], logs["cross_entropy"] + regularization + 0.5 * logs["kl"], rtol=1e-5
    )
    history = sgt.fit(x, y, batch_size=8, epochs=2, verbose=0).history
    assert np.isfinite(history["loss"]).all() and np.isfinite(history["kl"]).all()
    assert max_diff(alphas_before, [a.numpy() for a in alphas]) > 1e-5  # α is trained

    softmax_head = keras.layers.Dense(CLASSES, activation="softmax")(h)
    qat_softmax = quantize_model(keras.Model(inputs, softmax_head))
    assert SaliencyGuidedModel(qat_softmax).from_logits is False


_MIRRORED_SCRIPT = textwrap.dedent(
    """
    import json
    import numpy as np
    from sgt_tfmot.keras import keras, tf
    cpu = tf.config.list_physical_devices("CPU")[0]
    tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)
    from sgt_tfmot.trainers import SaliencyGuidedModel

    def run(strategy, x, y):
        with strategy.scope():
            keras.utils.set_random_seed(3)
            inputs = keras.Input((6, 6, 2))
            h = keras.layers.Conv2D(
                3, 3, activation="relu", kernel_regularizer=keras.regularizers.L2(1e-2)
            )(inputs)
            outputs = keras.layers.Dense(4)(keras.layers.Flatten()(h))
            model = keras.Model(inputs, outputs)
            initial = [w.numpy() for w in model.weights]
            sgt = SaliencyGuidedModel(model, seed=7, kl_weight=0.5)  # random fill
            sgt.compile(
                keras.optimizers.SGD(0.5),
                keras.losses.SparseCategoricalCrossentropy(from_logits=True),
            )
        dataset = tf.data.Dataset.from_tensor_slices((x, y)).batch(16)
        logs = sgt.fit(dataset, epochs=2, verbose=0).history
        return initial, [w.numpy() for w in model.weights], logs, sgt.distribute_strategy

    rng = np.random.default_rng(0)
    x = rng.random((32, 6, 6, 2)).astype("float32")
    y = rng.integers(0, 4, 32)
    w0, one, one_logs, _ = run(tf.distribute.OneDeviceStrategy("/cpu:0"), x, y)
    _, two, two_logs, strategy = run(tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"]), x, y)
    print(json.dumps({
        "replicas": strategy.num_replicas_in_sync,
        "diff": max(float(np.abs(a - b).max()) for a, b in zip(one, two, strict=True)),
        "update": max(float(np.abs(a - b).max()) for a, b in zip(one, w0, strict=True)),
        "one": one_logs, "two": two_logs,
    }))
    """
)


@pytest.mark.slow
def test_mirrored_strategy_two_devices_equals_one_device():
    # Logical devices must be configured before TF starts: run in a fresh interpreter.
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2")
    result = subprocess.run(
        [sys.executable, "-c", _MIRRORED_SCRIPT],
        capture_output=True, text=True, timeout=300, env=env,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    out = json.loads(result.stdout.strip().splitlines()[-1])
    assert out["replicas"] == 2
    assert out["update"] > 1e-2  # the weights really moved over the 4 steps
    assert out["diff"] < 1e-5
    for key in ("loss", "kl", "cross_entropy", "masked_accuracy"):
        np.testing.assert_allclose(out["two"][key], out["one"][key], rtol=1e-5)


@pytest.mark.parametrize("sgt", [True, False])
def test_every_trainer_keeps_the_synchronised_metrics(sgt):
    """One rule (`report_synchronised_metrics`) for the SGT and the plain trainer of a run:
    replica 0's metric results, not Keras's default sum over the replicas."""
    from sgt_tfmot import data, training

    info = data.info("mnist_subset")
    config = training.TrainConfig(float=True, sgt=sgt, max_steps=1, batch_size=8).check()
    model = training.build_model(config, info)
    plan = training.Plan.of(config, info.train_size)
    trainer = training.make_trainer(config, model, plan, info.image_shape)
    assert isinstance(trainer, SaliencyGuidedModel) == sgt
    assert trainer.distribute_reduction_method == "first"


# ------------------------------------------------------------------- bad input
BAD_ARGUMENTS = [
    ({"mask_fraction": 0.0}, r"`mask_fraction` must be a finite number in \(0, 1\)"),
    ({"mask_fraction": 1.0}, r"Received: mask_fraction=1\.0"),
    ({"mask_fraction": 1.5}, r"Received: mask_fraction=1\.5"),
    ({"kl_weight": -0.1}, r"`kl_weight` must be a finite number >= 0\. Received: kl_weight=-0\.1"),
    ({"kl_weight": float("inf")}, r"Received: kl_weight=inf"),
    ({"fill": "noise"}, r"must be one of 'random', 'zero', 'mean', 'blur', 'impute'\. Received"),
    ({"patch_size": 3}, r"`patch_size` must divide the input's size 4x4: one of 1, 2, 4\. Rece"),
    ({"patch_size": 0}, r"`patch_size` must be an integer >= 1\. Received: patch_size=0"),
    ({"blur_sigma": 0.0}, r"`blur_sigma` must be a finite number in \(0, 1000\]\. Received"),
    ({"impute_noise": 1.5}, r"`impute_noise` must be a finite number in \[0, 1\]\. Received"),
    ({"saliency": "grad"}, r"`saliency` must be one of 'abs', 'signed'\. Received: saliency="),
    ({"reduce_channels": "sum"}, r"`reduce_channels` must be one of 'mean', 'max', None"),
    ({"target": "true"}, r"`target` must be one of 'label', 'predicted'\. Received: target="),
    ({"from_logits": "yes"}, r"`from_logits` must be True or False"),
    ({"seed": -1}, r"`seed` must be an integer >= 0\. Received: seed=-1"),
    ({"update_masked_statistics": 1}, r"`update_masked_statistics` must be True or False"),
]


@pytest.mark.parametrize("kwargs, message", BAD_ARGUMENTS)
def test_bad_arguments(kwargs, message):
    with pytest.raises(ValueError, match=message):
        SaliencyGuidedModel(mlp(), **kwargs)


def test_bad_models():
    inputs = keras.Input((3,))
    two_outputs = keras.Model(
        inputs, [keras.layers.Dense(2)(inputs), keras.layers.Dense(2)(inputs)]
    )
    with pytest.raises(ValueError, match=r"exactly one input and one output.*2 output\(s\)"):
        SaliencyGuidedModel(two_outputs)
    with pytest.raises(
        ValueError, match=r"classifier output .* Received output shape: \(None, 1\)"
    ):
        SaliencyGuidedModel(keras.Model(inputs, keras.layers.Dense(1)(inputs)))
    sequence = keras.Input((5, 3))
    with pytest.raises(ValueError, match=r"Received output shape: \(None, 5, 4\)"):
        SaliencyGuidedModel(keras.Model(sequence, keras.layers.Dense(4)(sequence)))
    with pytest.raises(ValueError, match=r"`model` must be a Functional or Sequential"):
        SaliencyGuidedModel(keras.layers.Dense(3))


@pytest.mark.parametrize(
    "labels",
    [
        np.zeros((16, 2), np.float32),  # neither (B, 1) ids nor (B, 3) one-hot
        np.zeros((16,), np.float32),  # float "ids"
        np.zeros((16, 3, 1), np.int64),
    ],
)
def test_bad_labels(labels):
    x, _ = data()
    sgt = SaliencyGuidedModel(mlp())
    sgt.compile("sgd", keras.losses.MeanSquaredError())
    with pytest.raises(ValueError, match=r"Labels must be integer class ids of shape \(batch,\)"):
        sgt.fit(x, labels, verbose=0)


@pytest.mark.parametrize("bad", [np.nan, np.inf])
def test_non_finite_inputs_stop_training(bad):
    x, y = data()
    x[5, 1, 2, 0] = bad
    model = mlp()
    before = model.get_weights()
    sgt = SaliencyGuidedModel(model)
    sgt.compile("sgd", sparse_ce())
    with pytest.raises(ValueError, match=r"the input batch contains NaN or Inf values"):
        sgt.fit(x, y, verbose=0)
    for a, b in zip(before, model.get_weights(), strict=True):
        np.testing.assert_array_equal(a, b)


def test_module_docstring_example_runs(tmp_path, monkeypatch):
    import doctest

    from sgt_tfmot.trainers import saliency_guided

    monkeypatch.chdir(tmp_path)  # the example saves "classifier.keras"
    result = doctest.testmod(saliency_guided)
    assert result.attempted > 0 and result.failed == 0
    assert (tmp_path / "classifier.keras").exists()
