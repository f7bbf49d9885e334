"""Our ROAD and region perturbation against Quantus 0.6.0, the reference implementation.

A small CNN trained on the embedded MNIST subset, 48 fixed test images, fixed attributions
(|input gradient| plus a tiny distinct jitter, so no two pixels tie and both sides rank
alike). Quantus takes [0, 1] images; its model is the same layers behind a
`Rescaling(255)`, ending in a `Softmax` layer and called with `softmax=True` (its wrapper
rebuilds other tf_keras models and fails). Quantus removes in MoRF order only: LeRF and
random order are given to it as positive ranks (docs/protocols.md lists its traps).

Tolerances:
* Without noise both sides solve the same linear system (ours in float64, then float32
  images; Quantus's in float64 on [0, 1] images) and rank identically, so the accuracies may
  differ only where a float32 rounding flips a prediction: at most one image per point.
* With ROAD's noise (0.01) the two draw different noise, so only means over seeds can
  agree: each point within 3 standard errors of the difference of the two means (from the
  seed-to-seed spread of both sides) plus one image.
* Region perturbation with the "black" fill is deterministic: the true-class probability
  drops agree to 1e-5 (float32 predictions of the same images).
"""

import numpy as np
import pytest

from sgt_tfmot import data  # first: Keras 2 behind tf.keras before Quantus imports TensorFlow
from sgt_tfmot.explain import curves, protocols
from sgt_tfmot.explain.attributions import input_gradients
from sgt_tfmot.explain.protocols import base
from sgt_tfmot.keras import keras

quantus = pytest.importorskip(
    "quantus", reason="quantus is not installed (the test extra: pip install quantus==0.6.0)"
)

L = keras.layers
N = 48
PERCENT = [10, 30, 50, 70, 90]
FRACTIONS = tuple(p / 100 for p in PERCENT)
SEEDS = (0, 1, 2)

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def setup():
    keras.utils.set_random_seed(0)
    x, y = data.load_arrays("mnist_subset", "train")
    layers = [
        L.Rescaling(1 / 255.0),
        L.Conv2D(8, 3, activation="relu"),
        L.MaxPooling2D(),
        L.Conv2D(16, 3, activation="relu"),
        L.MaxPooling2D(),
        L.Flatten(),
        L.Dense(10),
        L.Softmax(),
    ]
    inputs = keras.Input((28, 28, 1))
    outputs = inputs
    for layer in layers:
        outputs = layer(outputs)
    model = keras.Model(inputs, outputs)  # takes 0..255, like the project's models
    model.compile("adam", "sparse_categorical_crossentropy", metrics=["accuracy"])
    model.fit(x.astype(np.float32), y, epochs=2, batch_size=64, verbose=0)
    unit = keras.Input((28, 28, 1))
    outputs = L.Rescaling(255.0)(unit)
    for layer in layers:
        outputs = layer(outputs)
    quantus_model = keras.Model(unit, outputs)  # the same weights, on [0, 1] images
    x_test, y_test = data.load_arrays("mnist_subset", "test")
    images, labels = x_test[:N].astype(np.float32), y_test[:N]
    grads = input_gradients(model, images, labels)[..., 0].astype(np.float64)
    jitter = np.random.default_rng(0).permutation(28 * 28).reshape(28, 28) * 1e-9
    attributions = grads + jitter + 1e-6  # positive, no ties
    return model, quantus_model, images, labels, attributions


def ranks_first(order: np.ndarray) -> np.ndarray:
    """Positive attributions whose MoRF order is `order` (N, n): Quantus's way to any order."""
    n = order.shape[1]
    values = np.empty(order.shape)
    np.put_along_axis(values, order, np.arange(n, 0, -1, dtype=np.float64), axis=1)
    return values


def given_orders(attributions: np.ndarray, seed: int) -> dict[str, np.ndarray]:
    """Order -> attributions for Quantus that remove what ours removes in that order."""
    flat = attributions.reshape(len(attributions), -1)
    random = np.random.default_rng(seed).random(flat.shape).argsort(axis=1)
    return {
        "top": attributions,
        "bottom": ranks_first(np.argsort(flat, axis=1, kind="stable")).reshape(
            flat.shape[0], 28, 28
        ),
        "random": ranks_first(random).reshape(flat.shape[0], 28, 28),
    }


def quantus_road(quantus_model, images, labels, attributions, noise):
    metric = quantus.ROAD(
        percentages=PERCENT, noise=noise, normalise=False, disable_warnings=True,
        display_progressbar=False,
    )  # fmt: skip
    scores = metric(
        model=quantus_model, x_batch=images / 255.0, y_batch=labels,
        a_batch=attributions[:, None], softmax=True, batch_size=len(images),
    )  # fmt: skip
    return np.array([scores[p] for p in PERCENT])


def our_road(model, images, labels, attributions, orders, noise, seed=0):
    measured = curves.drop_curves(
        model, images, labels, attributions, fractions=FRACTIONS, orders=orders,
        protocol="road", seed=seed,
        protocol_options=protocols.ProtocolOptions(noise=noise, value_range=255.0),
    )  # fmt: skip
    return {order: np.array(measured.curves[order]) for order in orders}


def test_road_without_noise_equals_quantus_in_every_order(setup):
    model, quantus_model, images, labels, attributions = setup
    ours = our_road(model, images, labels, attributions, ("top", "bottom", "random"), 0.0)
    for order, given in given_orders(attributions, 0).items():
        theirs = quantus_road(quantus_model, images, labels, given, 0.0)
        assert np.max(np.abs(ours[order] - theirs)) <= 1 / N + 1e-12, order
    assert ours["top"].mean() < ours["bottom"].mean()  # a trained model: the ranking matters


def test_road_with_noise_agrees_with_quantus_over_seeds(setup):
    model, quantus_model, images, labels, attributions = setup
    ours = {"top": [], "bottom": []}
    theirs = {"top": [], "bottom": []}
    given = given_orders(attributions, 0)
    state = np.random.get_state()
    try:
        for seed in SEEDS:
            measured = our_road(model, images, labels, attributions, ("top", "bottom"), 0.01, seed)
            np.random.seed(seed)  # Quantus draws its noise from numpy's global generator
            for order in ours:
                ours[order].append(measured[order])
                theirs[order].append(
                    quantus_road(quantus_model, images, labels, given[order], 0.01)
                )
    finally:
        np.random.set_state(state)
    for order in ours:
        a, b = np.array(ours[order]), np.array(theirs[order])
        error = np.sqrt(a.var(axis=0, ddof=1) / len(SEEDS) + b.var(axis=0, ddof=1) / len(SEEDS))
        assert np.all(np.abs(a.mean(0) - b.mean(0)) <= 3 * error + 1 / N + 1e-12), order


@pytest.mark.parametrize("order", ["morf", "lerf"])
def test_region_perturbation_equals_quantus(setup, order):
    model, quantus_model, images, labels, attributions = setup
    patches = (28 // 7) ** 2  # 16 patches of 7x7: every step k / 16 is exact
    metric = quantus.RegionPerturbation(
        patch_size=7, order=order, regions_evaluation=patches, perturb_baseline="black",
        normalise=False, disable_warnings=True, display_progressbar=False,
    )  # fmt: skip
    drops = metric(
        model=quantus_model, x_batch=images / 255.0, y_batch=labels,
        a_batch=attributions[:, None], softmax=True, batch_size=len(images),
    )  # fmt: skip
    theirs = np.mean(np.stack(drops), axis=0)  # per step: mean of p_y(x) − p_y(x_k)
    measured = curves.drop_curves(
        model, images, labels, attributions, fractions=[k / patches for k in range(patches + 1)],
        orders=["top" if order == "morf" else "bottom"], protocol="region", fill="black",
        protocol_options=protocols.ProtocolOptions(patch=7),
    )  # fmt: skip
    probability = np.array(next(iter(measured.probabilities.values())))
    np.testing.assert_allclose(probability[0] - probability[1:], theirs, atol=1e-5)
    assert base.probabilities(model.predict(images[:2], verbose=0)).shape == (2, 10)
