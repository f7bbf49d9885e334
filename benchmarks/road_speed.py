"""ROAD with noisy linear imputation: this project's protocol against Quantus, same images.

Loads a zoo model (ResNet-20 `zoo:cifar10-float` by default) and `--images` CIFAR-10 test
images (the first of `sgt_tfmot.data.stratified_order`, seed 0: class-stratified), ranks
their pixels by the vanilla gradient of the true class (channel mean of |S|), and measures
ROAD's MoRF and LeRF accuracy curves at `--levels` removal levels (5 %, 15 %, ..., 95 % for
10) twice, alternately, `--rounds` times:

* ours: `drop_curves(..., protocol="road")` (imputation of a whole batch as one banded
  Cholesky solve, predictions in batches of 256);
* Quantus 0.6.0's `ROAD` (its own imputation: one sparse system built and solved per image),
  called per chunk of `--chunk` images with `batch_size` = the chunk (it scores only the
  first batch of a call) and predictions in batches of 256 like ours; its model is the same
  model behind a `Rescaling(255)` on [0, 1] images, ending in a `Softmax` layer (its
  wrapper rebuilds other tf_keras models), LeRF given as positive reversed ranks (it only
  removes in MoRF order) and RGB through `_PerPixelROAD`, its `evaluate_batch` without the
  broadcast of the per-pixel attributions over the channels (Quantus issue #368, PR #373).

Both sides evaluate the same model on the same number of images, so the ratio is the
imputation's and the loop's. It also times the imputation alone (ours on the batch, Quantus's
`noisy_linear_imputation` per image) at each level. Prints min and median of each, their
ratios, and both sides' curves (their noise draws differ, so they agree only in the mean).

Usage:

    python benchmarks/road_speed.py --data_dir ../shared/data                 # the RESULTS run
    python benchmarks/road_speed.py --data_dir ../shared/data --images 50 --rounds 1
"""

from __future__ import annotations

import statistics
import time

import numpy as np
from absl import app, flags

from sgt_tfmot import data, imputation, saving  # first: Keras 2 before Quantus imports TF
from sgt_tfmot.explain import curves, protocols
from sgt_tfmot.explain.attributions import input_gradients
from sgt_tfmot.keras import keras

FLAGS = flags.FLAGS
flags.DEFINE_string("model", "zoo:cifar10-float", "The model (a zoo name or a file).")
flags.DEFINE_string("dataset", "cifar10", "Dataset of the test images.")
flags.DEFINE_string("data_dir", None, "Folder with DATASET.npz.")
flags.DEFINE_integer("images", 1000, "Test images (class-stratified).", lower_bound=1)
flags.DEFINE_integer("levels", 10, "Removal levels: 5 %, 15 %, ... (10: up to 95 %).", 1, 10)
flags.DEFINE_integer("chunk", 250, "Images per Quantus call.", lower_bound=1)
flags.DEFINE_integer("rounds", 2, "Timed rounds of each side, alternated.", lower_bound=1)
flags.DEFINE_integer("seed", 0, "Seed of the noise.")

BATCH = 256


def _per_pixel_road():
    import quantus

    class _PerPixelROAD(quantus.ROAD):
        """Quantus's ROAD with (N, 1, H, W) attributions kept per pixel on RGB images."""

        def evaluate_batch(self, model, x_batch, y_batch, a_batch, **kwargs):
            a_batch = a_batch.reshape(len(a_batch), -1)
            ordered = np.argsort(-a_batch, axis=1)
            results = []
            for p in self.percentages:
                top = ordered[:, : int(self.a_size * p / 100)]
                perturbed = np.stack(
                    [self.perturb_func(arr=x, indices=i) for x, i in zip(x_batch, top, strict=True)]
                )
                x_input = model.shape_input(perturbed, x_batch.shape, channel_first=True,
                                            batched=True)  # fmt: skip
                results.append(y_batch == np.argmax(model.predict(x_input), axis=-1))
            return [np.stack(results, axis=1).astype(int)]

    return _PerPixelROAD


def quantus_curves(model01, images, labels, maps, percent, chunk, seed) -> dict[str, np.ndarray]:
    """Order -> Quantus's ROAD accuracies, chunk by chunk, weighted by chunk size."""
    metric = _per_pixel_road()(
        percentages=percent, noise=imputation.DEFAULT_NOISE, normalise=False,
        disable_warnings=True, display_progressbar=False,
    )  # fmt: skip
    flat = maps.reshape(len(maps), -1)
    lerf = np.empty_like(flat)  # positive values whose descending order is ascending |S|
    order = np.argsort(flat, axis=1, kind="stable")
    np.put_along_axis(lerf, order, np.arange(flat.shape[1], 0, -1, dtype=flat.dtype), axis=1)
    np.random.seed(seed)
    out = {}
    for name, given in (("top", flat), ("bottom", lerf)):
        total = np.zeros(len(percent))
        for start in range(0, len(images), chunk):
            stop = min(start + chunk, len(images))
            scores = metric(
                model=model01, x_batch=images[start:stop] / 255.0, y_batch=labels[start:stop],
                a_batch=given[start:stop].reshape(-1, 1, *maps.shape[1:]), softmax=True,
                batch_size=stop - start, model_predict_kwargs={"batch_size": BATCH},
            )  # fmt: skip
            total += (stop - start) * np.array([scores[p] for p in percent])
        out[name] = total / len(images)
    return out


def our_curves(model, images, labels, maps, fractions, seed) -> dict[str, np.ndarray]:
    measured = curves.drop_curves(
        model, images, labels, maps, fractions=fractions, orders=("top", "bottom"),
        protocol="road", seed=seed, batch_size=BATCH,
        protocol_options=protocols.ProtocolOptions(value_range=255.0),
    )  # fmt: skip
    return {order: np.array(curve) for order, curve in measured.curves.items()}


def imputation_times(images, maps, percent) -> tuple[float, float]:
    """(ours, Quantus's) seconds to impute every level of the MoRF order, imputation only."""
    from quantus.functions.perturb_func import noisy_linear_imputation

    flat = maps.reshape(len(maps), -1)
    ordered = np.argsort(-flat, axis=1, kind="stable")
    ours = theirs = 0.0
    for p in percent:
        k = int(flat.shape[1] * p / 100)
        removed = np.zeros(flat.shape, bool)
        np.put_along_axis(removed, ordered[:, :k], True, axis=1)
        start = time.perf_counter()
        imputation.noisy_linear_imputation(images, removed.reshape(maps.shape), value_range=255)
        ours += time.perf_counter() - start
        start = time.perf_counter()
        for image, top in zip(images, ordered[:, :k], strict=True):
            noisy_linear_imputation(np.moveaxis(image, -1, 0) / 255.0, top)
        theirs += time.perf_counter() - start
    return ours, theirs


def _summary(label: str, times: list[float]) -> str:
    return f"{label}: min {min(times):.1f} s, median {statistics.median(times):.1f} s"


def main(argv: list[str]) -> None:
    del argv
    model = saving.float32_model(saving.load_model(FLAGS.model))
    unit = keras.Input(model.inputs[0].shape[1:])
    model01 = keras.Model(unit, keras.layers.Softmax()(model(keras.layers.Rescaling(255.0)(unit))))
    x, y = data.load_arrays(FLAGS.dataset, "test", FLAGS.data_dir)
    chosen = data.stratified_order(y, seed=0)[: FLAGS.images]
    images, labels = x[chosen].astype(np.float32), y[chosen]
    maps = input_gradients(model, images, labels).mean(axis=-1)  # (N, H, W), channel mean
    percent = [5 + 10 * i for i in range(FLAGS.levels)]
    fractions = [p / 100 for p in percent]
    print(f"{FLAGS.model}: {len(images)} images, ROAD at {percent} %, MoRF and LeRF")
    ours_t, theirs_t = [], []
    for round_ in range(FLAGS.rounds):
        start = time.perf_counter()
        ours = our_curves(model, images, labels, maps, fractions, FLAGS.seed + round_)
        ours_t.append(time.perf_counter() - start)
        start = time.perf_counter()
        theirs = quantus_curves(model01, images, labels, maps, percent, FLAGS.chunk,
                                FLAGS.seed + round_)  # fmt: skip
        theirs_t.append(time.perf_counter() - start)
        print(f"round {round_ + 1}: ours {ours_t[-1]:.1f} s, Quantus {theirs_t[-1]:.1f} s")
        for order in ("top", "bottom"):
            print(f"  {order}: ours {np.round(ours[order], 3).tolist()}")
            print(f"  {order}: Quantus {np.round(theirs[order], 3).tolist()}")
    print(_summary("ours", ours_t))
    print(_summary("Quantus", theirs_t))
    print(
        f"ratio Quantus / ours: min {min(theirs_t) / min(ours_t):.1f}x, median "
        f"{statistics.median(theirs_t) / statistics.median(ours_t):.1f}x"
    )
    start = time.perf_counter()
    for begin in range(0, len(images), BATCH):
        model.predict(images[begin : begin + BATCH], batch_size=BATCH, verbose=0)
    forward = time.perf_counter() - start
    passes = 2 * len(percent)
    print(
        f"one forward pass over the images: {forward:.2f} s (x {passes} = {passes * forward:.1f} s)"
    )
    ours_i, theirs_i = imputation_times(images, maps, percent)
    print(f"imputation alone, MoRF, all levels: ours {ours_i:.1f} s, Quantus {theirs_i:.1f} s "
          f"({theirs_i / ours_i:.1f}x)")  # fmt: skip


if __name__ == "__main__":
    app.run(main)
