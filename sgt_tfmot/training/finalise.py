"""The end of a run: BatchNormalization statistics that lag the weights are re-estimated
(`refit_stale_batch_norm`), ADD input ranges are moved off rounding ties
(`separate_rounding_ties`), the saved model computes what its integer TFLite model will compute
(`align_biases`), is evaluated and saved; the history and the metrics are written, metrics.json
last (a run is finished when it exists), and the backup is removed after it."""

from __future__ import annotations

import csv
import dataclasses
import json
import shutil
from pathlib import Path

import numpy as np

from sgt_tfmot._files import atomic_write
from sgt_tfmot.export import align_biases, is_quantized
from sgt_tfmot.saving import RUN_MODEL_FILE, float32_model, save_model
from sgt_tfmot.ties import separate_rounding_ties
from sgt_tfmot.training.callbacks import WallClock, alphas
from sgt_tfmot.training.cluster import worker_count
from sgt_tfmot.training.config import Setup
from sgt_tfmot.training.model import Built, calibration_set, refit_stale_statistics
from sgt_tfmot.training.run_directory import RunDirectory


def finalise(setup: Setup, run: RunDirectory, built: Built, clock: WallClock) -> dict:
    """Aligns, evaluates and writes the results; metrics.json last, the backup removed after.

    A kill anywhere in here leaves the backup, so the same command resumes (and finds
    nothing left to train) or, once metrics.json exists, reports the run as finished.
    """
    config, plan, info, strategy = setup.config, setup.plan, setup.info, setup.strategy
    model, trainer, test_ds = built.model, built.trainer, built.test_ds
    # Moving statistics that lag the weights (a few steps per epoch on a small folder) are
    # re-estimated when that raises the inference-mode top-1 on training images by 5 points.
    with strategy.scope():
        fit = refit_stale_statistics(
            model, *calibration_set(setup.arrays, config.seed, float32=False), "the trained model",
            "as the saved model's",
        )  # fmt: skip
    # Adds of k-bit activations are moved off rounding ties where a statistic range allows
    # (the runtimes and the Keras model would round such a pair apart:
    # `separate_rounding_ties`), and the saved model computes what its integer TFLite model
    # will compute (docstring of `align_biases`); the test accuracy below is measured after.
    quantized = is_quantized(model)
    moved = _separate_rounding_ties(model) if quantized else None
    aligned = align_biases(model) if quantized else 0
    trainer.make_test_function(force=True)  # the input offsets may have moved
    test_loss, test_accuracy = trainer.evaluate(test_ds, verbose=0)[:2]
    saved_accuracy = _float32_accuracy(model, test_ds) if setup.precision[0] != "float32" else None
    save_model(model, run.work / RUN_MODEL_FILE, overwrite=True)
    history = read_history(run.work / "history.csv")
    atomic_write(run.work / "history.json", json.dumps(history, indent=1).encode())
    clock.save(force=True)
    metrics = {
        "test_accuracy": float(test_accuracy),
        "test_loss": float(test_loss),
        "epochs": plan.epochs,
        "optimizer_steps": int(trainer.optimizer.iterations.numpy()),
        "steps_per_epoch": plan.steps_per_epoch,
        "wall_time_seconds": round(clock.seconds(), 1),
        "attempts": clock.attempts,
        "precision": setup.precision[0],
        "precision_reason": setup.precision[1],
        # The saved model (and its .tflite) computes in float32: its own test accuracy.
        "saved_model_test_accuracy": saved_accuracy,
        "distribution": {
            "strategy": config.distribute,
            "workers": worker_count(strategy),
            "replicas": strategy.num_replicas_in_sync,
            "per_replica_batch_size": config.batch_size // strategy.num_replicas_in_sync,
        },
        "alpha": alphas(model),
        "aligned_bias_layers": aligned,
        "batch_norm_refit": None if fit is None else dataclasses.asdict(fit),
        "rounding_ties_moved": None
        if moved is None
        else [{"layer": name, "range_scaled_by": 1 + nudge} for name, nudge in moved],
        "flags": config.run_settings(),
        "model_file": RUN_MODEL_FILE,
        "data": {
            "source": info.source,
            "image_shape": list(info.image_shape),
            "num_classes": info.num_classes,
            "train_size": info.train_size,
            "test_size": info.test_size,
            "class_names": list(info.labels()),
            "augment": list(setup.augment),
        },
    }
    atomic_write(run.work / "metrics.json", (json.dumps(metrics, indent=2) + "\n").encode())
    _remove_backup(run.backup if run.is_chief else None)
    return metrics


def _separate_rounding_ties(model) -> list[tuple[str, float]] | None:
    """`separate_rounding_ties`, with a note per move; None (and a note) if it fails: the
    move is optional, and a finished run must not fail at its end, on every resume."""
    try:
        moved = separate_rounding_ties(model)
    except Exception as error:  # noqa: BLE001 - optional step; its ranges are restored
        said = " ".join(str(error).split())[:200]
        print(f"Note: Adds not checked for rounding ties ({type(error).__name__}: {said}).")
        return None
    for name, nudge in moved:
        print(
            f"Note: an Add's input pair sat on a rounding tie; the range of {name} was "
            f"scaled by 1{nudge:+.0e} (the runtimes now round it as the Keras model)."
        )
    return moved


def _float32_accuracy(model, test_ds) -> float:
    """Test accuracy of `model` rebuilt with float32 layers, as it is saved and converted."""
    rebuilt = float32_model(model)
    correct = total = 0
    for images, labels in test_ds:
        predicted = np.argmax(rebuilt(images, training=False).numpy(), axis=-1)
        correct += int(np.sum(predicted == labels.numpy()))
        total += len(predicted)
    return correct / max(total, 1)


def _remove_backup(backup: Path | None) -> None:
    if backup is not None:
        shutil.rmtree(backup, ignore_errors=True)


def read_history(path: Path) -> list[dict]:
    """history.csv as a list of per-epoch dicts (epochs counted from 1), for history.json."""
    if not path.exists():
        return []
    with path.open() as file:
        rows = list(csv.DictReader(file))
    by_epoch = {int(row["epoch"]): row for row in rows}  # a resumed epoch keeps its last row
    return [
        {k: (float(v) if k != "epoch" else int(v) + 1) for k, v in by_epoch[e].items() if v != ""}
        for e in sorted(by_epoch)
    ]
