"""PACT and weight quantizers against a numpy version of the formulas."""

import numpy as np
import pytest

from sgt_tfmot.keras import keras, tf
from sgt_tfmot.quantizers import (
    FixedRangeQuantizer,
    PACTQuantizer,
    RangeQuantizer,
    WeightQuantizer,
    export_range_scale,
    pact,
    pact_integer,
    quantize_weights,
    weight_range,
)


def numpy_pact(x, alpha, k):
    """The paper's forward: round(clip(x, 0, α)·(2^k−1)/α)·α/(2^k−1), rounding half up."""
    levels = 2**k - 1
    return np.floor(np.clip(x, 0, alpha) * levels / alpha + 0.5) * alpha / levels


def numpy_pact_grads(x, alpha):
    """The paper's backward: ∂/∂x = 1 on [0, α]; ∂/∂α = 1 where x >= α (summed)."""
    dx = ((x >= 0) & (x <= alpha)).astype(np.float32)
    dalpha = np.float32((x >= alpha).sum())
    return dx, dalpha


def pact_with_grads(x, alpha, k):
    x = tf.constant(x, tf.float32)
    alpha = tf.constant(alpha, tf.float32)
    with tf.GradientTape(persistent=True) as tape:
        tape.watch([x, alpha])
        y = pact(x, alpha, k)
    return y.numpy(), tape.gradient(y, x).numpy(), tape.gradient(y, alpha).numpy()


@pytest.mark.parametrize("k", [2, 3, 4, 8])
def test_pact_forward_and_gradients_match_the_formula(k):
    alpha = 2.5
    step = alpha / (2**k - 1)
    rng = np.random.default_rng(k)
    # Edge points: below 0, exactly 0, exactly α, above α, and every grid point.
    x = np.concatenate(
        [[-1.0, 0.0, alpha, alpha + 1.0], np.arange(2**k) * step, rng.uniform(-1, 4, 200)]
    ).astype(np.float32)
    # Keep random points away from rounding midpoints, where float32 may round either way.
    frac = (np.clip(x, 0, alpha) / step) % 1
    x = x[np.abs(frac - 0.5) > 1e-3]

    y, dx, dalpha = pact_with_grads(x, alpha, k)

    np.testing.assert_allclose(y, numpy_pact(x, alpha, k), atol=1e-5)
    expected_dx, expected_dalpha = numpy_pact_grads(x, alpha)
    np.testing.assert_array_equal(dx, expected_dx)
    assert dalpha == expected_dalpha


def test_pact_edge_values():
    y, dx, dalpha = pact_with_grads([0.0, 3.0, 5.0], 3.0, 4)
    np.testing.assert_allclose(y, [0.0, 3.0, 3.0], atol=1e-6)  # 0 and α are grid points
    np.testing.assert_array_equal(dx, [1.0, 1.0, 0.0])  # x = α is inside [0, α]
    assert dalpha == 2.0  # x = α and x = 5 are >= α


@pytest.mark.parametrize("k", [2, 4, 8])
def test_pact_has_at_most_2_to_the_k_levels(k):
    x = tf.random.stateless_uniform([10000], seed=[1, k], minval=-2.0, maxval=12.0)
    y = pact(x, tf.constant(10.0), k).numpy()
    assert len(np.unique(y)) == 2**k  # dense input: every level is hit, none more


def test_pact_keeps_bfloat16_inputs():
    x = tf.constant([0.5, 1.7, 4.0], tf.bfloat16)
    y = pact(x, tf.constant(2.0), 2)
    assert y.dtype == tf.bfloat16
    np.testing.assert_allclose(y.numpy().astype(np.float32), [2 / 3, 2.0, 2.0], atol=1e-2)


@pytest.mark.parametrize("k", [2, 4, 8])
def test_weights_symmetric_per_channel_grid(k):
    w = tf.random.stateless_normal([3, 3, 4, 6], seed=[3, k])
    wq = quantize_weights(w, k, per_channel=True).numpy()
    levels = 2 ** (k - 1) - 1
    step = np.abs(w.numpy()).max(axis=(0, 1, 2)) / levels  # one step per output channel
    q = wq / step
    np.testing.assert_allclose(q, np.round(q), atol=1e-3)  # on the grid {−L..L}·s_c
    assert np.abs(np.round(q)).max() == levels
    for c in range(6):
        assert len(np.unique(np.round(q[..., c]))) <= 2 * levels + 1  # ≤ 2^k − 1 levels
    # Each weight goes to its nearest level.
    np.testing.assert_allclose(wq, np.round(w.numpy() / step) * step, atol=1e-5)


def test_weights_per_tensor_and_straight_through_gradient():
    w = tf.constant([[-1.0, 0.2], [0.55, 2.0]])
    with tf.GradientTape() as tape:
        tape.watch(w)
        wq = quantize_weights(w, 3, per_channel=False)  # L = 3, step = 2/3
        loss = tf.reduce_sum(wq * tf.constant([[1.0, 2.0], [3.0, 4.0]]))
    np.testing.assert_allclose(wq.numpy(), [[-2 / 3, 0.0], [2 / 3, 2.0]], atol=1e-6)
    np.testing.assert_array_equal(tape.gradient(loss, w).numpy(), [[1, 2], [3, 4]])


def numpy_mse_range(w, k, axes):
    """Brute force: for each channel, the fraction 0.10, 0.12, ..., 1.00 of max |w| whose
    grid {−L..L}·(f·max/L) rounds the channel with the least squared error (first on a tie)."""
    levels = 2 ** (k - 1) - 1
    peak = np.abs(w).max(axis=axes)
    best, best_error = None, None
    for i in range(46):
        fraction = np.float32(round(0.1 + 0.02 * i, 2))
        step = peak * fraction / np.float32(levels)
        error = np.square(np.clip(np.round(w / step), -levels, levels) * step - w).sum(axis=axes)
        if best is None:
            best, best_error = np.full_like(peak, fraction), error
        better = error < best_error
        best, best_error = np.where(better, fraction, best), np.where(better, error, best_error)
    return peak * best


@pytest.mark.parametrize("k", [2, 3, 4])
@pytest.mark.parametrize("per_channel", [True, False])
def test_mse_weight_range_is_the_least_error_clip(k, per_channel):
    w = tf.random.stateless_normal([3, 3, 8, 5], seed=[7, k]).numpy()
    axes = (0, 1, 2) if per_channel else None
    m = weight_range(w, k, per_channel, "mse").numpy()
    np.testing.assert_allclose(m, numpy_mse_range(w, k, axes), rtol=1e-6)
    np.testing.assert_array_equal(weight_range(w, k, per_channel, "max"), np.abs(w).max(axes))
    # On Gaussian weights the best 2-bit clip is well inside the range (about 0.4 of max |w|),
    # and its error is lower than that of the max range.
    levels = 2 ** (k - 1) - 1
    wq_mse = quantize_weights(w, k, per_channel, method="mse").numpy()
    wq_max = quantize_weights(w, k, per_channel).numpy()
    assert np.square(wq_mse - w).sum() < np.square(wq_max - w).sum()
    if k == 2:
        assert np.all(m < 0.7 * np.abs(w).max(axes))
    # The quantized kernel is on the grid {−L..L}·m/L, its extreme levels reached.
    q = wq_mse / (m / levels)
    np.testing.assert_allclose(q, np.round(q), atol=1e-3)
    assert np.abs(np.round(q)).max() == levels


def test_mse_weights_keep_the_straight_through_gradient():
    w = tf.random.stateless_normal([4, 6], seed=[1, 2])
    with tf.GradientTape() as tape:
        tape.watch(w)
        loss = tf.reduce_sum(
            quantize_weights(w, 2, method="mse") * tf.reshape(tf.range(24.0), [4, 6])
        )
    # Clipped weights too: the gradient of every weight is its upstream gradient.
    np.testing.assert_array_equal(tape.gradient(loss, w).numpy(), np.arange(24.0).reshape(4, 6))


def test_weight_quantizer_steps_follow_its_range():
    kernel = tf.random.stateless_normal([3, 3, 4, 6], seed=[4, 4]).numpy()
    quantizer = WeightQuantizer(2, per_channel=True, weight_range="mse")
    np.testing.assert_allclose(quantizer.steps(kernel), numpy_mse_range(kernel, 2, (0, 1, 2)))
    q = quantizer(kernel, training=True, weights={}).numpy() / quantizer.steps(kernel)
    np.testing.assert_allclose(q, np.round(q), atol=1e-3)


def test_bad_weight_range_is_rejected():
    with pytest.raises(
        ValueError,
        match=r"`weight_range` must be one of 'max', 'mse'\. Received: weight_range='minmax'",
    ):
        WeightQuantizer(4, weight_range="minmax")


@pytest.mark.parametrize("k", [2, 3, 4, 5, 6, 7, 8])
def test_export_range_scale_puts_the_k_bit_grid_on_the_8_bit_grid(k):
    w = tf.random.stateless_normal([5, 7], seed=[5, k])
    wk = quantize_weights(w, k, per_channel=True)
    w8 = quantize_weights(wk, 8, per_channel=True, range_scale=export_range_scale(k))
    np.testing.assert_allclose(w8.numpy(), wk.numpy(), atol=1e-6)
    assert export_range_scale(4) == pytest.approx(127 / 126)  # L4 = 7, r = 18
    assert export_range_scale(8) == 1.0


@pytest.mark.parametrize("k, ratio", [(2, 7), (3, 2), (4, 1)])
def test_the_4_bit_container_holds_r_times_the_k_bit_levels(k, ratio):
    # r = floor(7 / L_k): L_2 = 1 -> 7, L_3 = 3 -> 2, L_4 = 7 -> 1; c = 127 / (r * L_k).
    scale = export_range_scale(k, 8, container_bits=4)
    assert scale == pytest.approx(127 / (ratio * (2 ** (k - 1) - 1)))
    w = tf.random.stateless_normal([5, 7], seed=[6, k])
    wk = quantize_weights(w, k, per_channel=True)
    w8 = quantize_weights(wk, 8, per_channel=True, range_scale=scale)
    np.testing.assert_allclose(w8.numpy(), wk.numpy(), atol=1e-6)  # the k-bit grid, exactly
    # As integers on the 8-bit grid (step m * c / 127 = s_k / r): r * q, within [-7, 7].
    m = np.abs(wk.numpy()).max(axis=0) * scale
    levels = np.round(w8.numpy() / (m / 127))
    assert np.abs(levels).max() == ratio * (2 ** (k - 1) - 1) <= 7
    assert np.all(levels % ratio == 0)


def test_weight_quantizer_container():
    assert WeightQuantizer(4).container_bits == 4 and WeightQuantizer(2).container_bits == 4
    assert WeightQuantizer(5).container_bits == 8 and WeightQuantizer(8).container_bits == 8
    assert WeightQuantizer(4, container_bits=8).container_bits == 8
    # A model saved before the setting existed had its biases aligned to the 8-bit container.
    old = {"num_bits": 4, "per_channel": True, "range_scale": 1.0}
    assert WeightQuantizer.from_config(old).container_bits == 8
    with pytest.raises(ValueError, match=r"`container_bits` must be one of 4, 8\. Received"):
        WeightQuantizer(4, container_bits=2)
    with pytest.raises(
        ValueError,
        match=r"`container_bits` must hold num_bits=6: one of \[8\]\. Received: container_bits=4",
    ):
        WeightQuantizer(6, container_bits=4)


@pytest.mark.parametrize("bits", [1, 9, 4.0, "4", True, None])
def test_bad_bits_are_rejected(bits):
    with pytest.raises(ValueError, match=r"`num_bits` must be an integer in \[2, 8\]\. Received"):
        PACTQuantizer(num_bits=bits)
    with pytest.raises(ValueError, match="`num_bits` must be an integer in \\[2, 8\\]"):
        WeightQuantizer(num_bits=bits)


@pytest.mark.parametrize("alpha", [0, -1.0, "10"])
def test_bad_alpha_init_is_rejected(alpha):
    with pytest.raises(ValueError, match=r"`alpha_init` must be a finite number > 0\. Received"):
        PACTQuantizer(alpha_init=alpha)


def test_negative_alpha_l2_is_rejected():
    with pytest.raises(
        ValueError, match=r"`alpha_l2` must be a finite number >= 0\. Received: alpha_l2=-0.1"
    ):
        PACTQuantizer(alpha_l2=-0.1)


def test_fixed_range_must_be_ordered():
    with pytest.raises(ValueError, match=r"low < high\. Received: \(5.0, 5.0\)"):
        FixedRangeQuantizer(5.0, 5.0)


@pytest.mark.parametrize(
    "quantizer",
    [
        PACTQuantizer(3, 6.0, 1e-3),
        WeightQuantizer(5, False, 1.5),
        WeightQuantizer(2, True, 1.0, "mse"),
        WeightQuantizer(3, True, 1.0, container_bits=8),
        RangeQuantizer(8),
        FixedRangeQuantizer(-1.0, 1.0),
    ],
)
def test_quantizers_serialize(quantizer):
    config = keras.utils.serialize_keras_object(quantizer)
    restored = keras.utils.deserialize_keras_object(config)
    assert restored == quantizer
    assert restored.get_config() == quantizer.get_config()


def test_pact_quantizer_owns_a_regularized_positive_alpha():
    layer = keras.layers.Layer()
    quantizer = PACTQuantizer(4, alpha_init=3.0, alpha_l2=0.5)
    alpha = quantizer.build((None, 4), "out", layer)["alpha"]
    assert alpha.trainable and float(alpha) == 3.0
    # Keras L2: λ·α² = 0.5 · 9
    assert float(layer.losses[0]) == pytest.approx(4.5)
    assert float(alpha.constraint(tf.constant(-2.0))) == pytest.approx(1e-3)


@pytest.mark.parametrize("k", [2, 3, 4, 5, 7, 8])
def test_pact_integer_computes_pact_with_8_bit_ops(k):
    x = tf.random.stateless_uniform([5000], seed=[7, k], minval=-3.0, maxval=9.0)
    alpha = tf.constant(4.2)
    step = 4.2 / (2**k - 1)
    frac = (np.clip(x.numpy(), 0, 4.2) / step) % 1
    keep = np.abs(frac - 0.5) > 1e-3  # away from rounding midpoints (float32 ties)
    np.testing.assert_allclose(
        pact_integer(x, alpha, k).numpy()[keep], pact(x, alpha, k).numpy()[keep], atol=1e-5
    )
