"""No lost work: a run killed at any moment resumes (or reports finished) and ends exactly
like an uninterrupted run with the same seed.

The runs train a small classifier file W4A4 (Conv-BN-ReLU6, depthwise Conv-BN-ReLU6, logits:
mobilenet_tiny's kinds of layers, few of them) on a tiny .npz (128 training images of 12x12,
one epoch of at most 8 steps of 16; 32 test images): what is checked is the run directory,
the backups and the exact resumption, which a larger model or test split only makes slower."""

import csv
import dataclasses
import json
import signal
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest

from sgt_tfmot._checks import InputError
from sgt_tfmot.keras import keras
from sgt_tfmot.saving import load_model
from sgt_tfmot.training import TrainConfig, train
from tests.helpers.data import write_bars_npz
from tests.helpers.models import small_classifier

DRIVER = Path(__file__).resolve().parent / "_kill_driver.py"


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    """(the .npz dataset, the float model file) every run of this module trains."""
    root = tmp_path_factory.mktemp("world")
    keras.utils.set_random_seed(0)
    small_classifier().save(root / "small.h5")
    return str(write_bars_npz(root / "bars.npz")), str(root / "small.h5")


def config(world, out, **overrides):
    settings = dict(
        dataset=world[0], model=world[1], max_steps=6, batch_size=16, backup_every=2,
        weight_bits=4, activation_bits=4, sgt=False, progress=0, mixed_precision="float32",
        out_dir=str(out),
    )  # fmt: skip
    settings.update(overrides)
    return TrainConfig(**settings)


def weights(run_dir):
    return load_model(run_dir).get_weights()


def assert_same_weights(a, b):
    assert len(a) == len(b)
    for x, y in zip(a, b, strict=True):
        np.testing.assert_array_equal(x, y)


@pytest.fixture(scope="module")
def reference(world, tmp_path_factory):
    """The uninterrupted run."""
    out = tmp_path_factory.mktemp("reference") / "run"
    metrics = train(config(world, out))
    return out, metrics


POINTS = (
    "step:3",
    "checkpoint_written:2",
    "checkpoint_recorded:2",
    "model_partial",
    "metrics",
    "backup",
)


@pytest.mark.slow
def test_a_kill_anywhere_resumes_or_reports_finished_and_ends_exactly(world, reference, tmp_path):
    ref_dir, ref_metrics = reference
    runs = {point: tmp_path / point.replace(":", "-") for point in POINTS}

    def kill(point):
        settings = dataclasses.asdict(config(world, runs[point]))
        return subprocess.run(
            [sys.executable, str(DRIVER), json.dumps(settings), point],
            capture_output=True, text=True, timeout=300,
        )  # fmt: skip

    with ThreadPoolExecutor(2) as pool:
        results = dict(zip(POINTS, pool.map(kill, POINTS), strict=True))
    expected = weights(ref_dir)
    for point, result in results.items():
        out = runs[point]
        assert result.returncode == -signal.SIGKILL, (point, result.stderr[-2000:])
        assert (out / ".sgt_tfmot.lock").exists(), point  # the killed run's: it must not block
        if point == "backup":  # killed after metrics.json: finished; its leftover is cleaned
            with pytest.raises(InputError, match="holds a finished run"):
                train(config(world, out))
            assert not (out / "backup").exists()
        else:
            metrics = train(config(world, out))  # the same command again
            assert metrics["optimizer_steps"] == ref_metrics["optimizer_steps"], point
            assert metrics["test_accuracy"] == ref_metrics["test_accuracy"], point
            assert metrics["attempts"] == 2, point
        assert_same_weights(weights(out), expected)
        rows = list(csv.DictReader((out / "history.csv").open()))
        assert [row["epoch"] for row in rows] == ["0"], point  # no epoch twice
        leftovers = [p.name for p in out.iterdir() if ".partial" in p.name or ".lock" in p.name]
        assert not leftovers and not (out / "backup").exists(), point


class Interrupt(keras.callbacks.Callback):
    def __init__(self, after):
        super().__init__()
        self.after = after

    def on_train_batch_end(self, batch, logs=None):
        if int(self.model.optimizer.iterations.numpy()) == self.after:
            raise KeyboardInterrupt


SGT_OPTIONS = [
    pytest.param({}, id="pixels-random"),
    pytest.param({"fill": "impute", "patch_size": 4}, id="patches-impute", marks=pytest.mark.slow),
    pytest.param({"fill": "blur", "patch_size": 3, "mixed_precision": "mixed_bfloat16"},
                 id="patches-blur-bfloat16", marks=pytest.mark.slow),
]  # fmt: skip


@pytest.mark.slow
@pytest.mark.parametrize("options", SGT_OPTIONS)
def test_sgt_run_interrupted_twice_ends_bit_identical(world, tmp_path, options):
    """SGT + PACT W4A4 with augmentation-free data: every batch, every random fill or
    imputation noise and the optimizer state are functions of (seed, step), and the
    imputation's solve is deterministic, so the weights are bit-identical."""
    settings = dict(sgt=True, max_steps=7, backup_every=2, **options)
    straight = train(config(world, tmp_path / "straight", **settings))
    out = tmp_path / "interrupted"
    for after in (3, 6):  # resumes from the backups of steps 2 and 6
        with pytest.raises(KeyboardInterrupt):
            train(config(world, out, **settings), extra_callbacks=[Interrupt(after)])
    resumed = train(config(world, out, **settings))
    assert resumed["optimizer_steps"] == straight["optimizer_steps"] == 7
    assert resumed["attempts"] == 3 and resumed["wall_time_seconds"] > 0
    assert_same_weights(weights(out), weights(tmp_path / "straight"))
    assert resumed["test_accuracy"] == straight["test_accuracy"]
