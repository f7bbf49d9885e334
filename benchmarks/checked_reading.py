"""What checking a file before trusting it costs: the checked readers against the unchecked.

Model files: `sgt_tfmot.load_model` (config checked, model built, every stored weight checked
against it, weights loaded) against `keras.models.load_model` inside `quantize_scope()`.
Datasets: `sgt_tfmot.data.npz.read_npz` (headers first, members read one by one, then
`check_arrays`) against `np.load` of the four arrays. The two sides alternate in each round,
so a change of load on a shared machine hits both; min and median seconds and their ratios.

Usage:

    python benchmarks/checked_reading.py --rounds 5 --model zoo:cifar10-w4a4-sgt-ft \\
        --npz ../shared/data/cifar10.npz
"""

from __future__ import annotations

import statistics
import time
import warnings

import numpy as np
from absl import app, flags

from sgt_tfmot import quantize_scope, saving
from sgt_tfmot.data.npz import read_npz
from sgt_tfmot.keras import keras

FLAGS = flags.FLAGS
flags.DEFINE_integer("rounds", 5, "Alternated rounds.")
flags.DEFINE_multi_string("model", [], "Model files or zoo:NAME (repeat).")
flags.DEFINE_multi_string("npz", [], "Dataset .npz files (repeat).")


def _keras_load(path):
    with quantize_scope(), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return keras.models.load_model(saving.resolve_model_path(path), compile=False)


def _np_load(path):
    with np.load(path, allow_pickle=False) as archive:
        return [archive[key] for key in ("x_train", "y_train", "x_test", "y_test")]


def _timed(function, argument) -> float:
    start = time.perf_counter()
    function(argument)
    return time.perf_counter() - start


def compare(name: str, checked, unchecked, argument, rounds: int) -> None:
    checked(argument), unchecked(argument)  # warm-up: imports, first traces
    times = {"checked": [], "unchecked": []}
    for _ in range(rounds):
        times["checked"].append(_timed(checked, argument))
        times["unchecked"].append(_timed(unchecked, argument))
    low = {k: min(v) for k, v in times.items()}
    mid = {k: statistics.median(v) for k, v in times.items()}
    print(
        f"{name}: checked min {low['checked']:.2f} s, median {mid['checked']:.2f} s; unchecked "
        f"min {low['unchecked']:.2f} s, median {mid['unchecked']:.2f} s; ratio min "
        f"{low['checked'] / low['unchecked']:.2f}, median {mid['checked'] / mid['unchecked']:.2f}",
        flush=True,
    )


def main(argv):
    del argv
    for model in FLAGS.model:
        compare(model, saving.load_model, _keras_load, model, FLAGS.rounds)
    for path in FLAGS.npz:
        compare(path, read_npz, _np_load, path, FLAGS.rounds)


if __name__ == "__main__":
    app.run(main)
