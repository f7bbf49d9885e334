"""Training runs: SGT and/or PACT training of a classifier into a run directory.

The library behind `python -m sgt_tfmot.train` (`sgt_tfmot/train.py` only parses flags):

    config = TrainConfig(dataset="mnist_subset", weight_bits=4, activation_bits=4, epochs=3)
    metrics = train(config)        # writes config.out_dir, returns metrics.json's content

The run directory receives:

    model.h5          the trained model (QAT, or float with --float); load it with
                      `sgt_tfmot.saving.load_model(OUT)`. A QAT model's biases are put on
                      the integer model's grid first (`sgt_tfmot.export.align_biases`), so
                      it computes what its integer TFLite model computes
    metrics.json      test_accuracy (a fraction), test_loss, the flags, wall time, epochs;
                      written last: a run is finished when it exists
    history.csv/.json per-epoch training and validation metrics
    alpha.json/.png   the clipping level α of every PACT layer after each epoch
    flags.json        the settings of the run (a rerun must match them to resume)
    wall_time.json    training time so far, over every attempt
    tensorboard/      TensorBoard logs
    backup/           the resume point while the run is unfinished (removed at the very end)
    .sgt_tfmot.json   the manifest: the files above are the run's own (`sgt_tfmot._files`)

No lost work:

* Run the same command again after an interruption (Ctrl-C, a kill, a crash, at any moment,
  during finalisation too) and it resumes from the last backup, or reports the run as
  finished. The resumed run is exact: every batch, augmentation and SGT fill is a function
  of (seed, step) (`sgt_tfmot.data.training_batches`), so with the same seed it ends with
  the weights of an uninterrupted run (tests/test_resume.py checks bit equality).
* A finished run is never replaced without `--overwrite`, and `--overwrite` removes only the
  run's own files: a directory holding anything else (a converted model, notes) is refused.

On several machines (`--distribute multi_worker`, docs/DISTRIBUTED.md) the chief alone
writes the run directory and the backup; the other workers write only into a temporary
directory of their own, removed at the end, and get the chief's state when a run resumes.
"""

from __future__ import annotations

import csv
import dataclasses
import hashlib
import json
import math
import os
import re
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from sgt_tfmot import (
    _checks,
    data as datasets,
    heads,
    masking,
    models as model_zoo,
    precision,
    quantize,
    saving,
    schedules,
)
from sgt_tfmot._checks import InputError, RunStopped
from sgt_tfmot._files import (
    LOCK_FILE,
    MANIFEST,
    DirectoryBusy,
    DirectoryLock,
    Manifest,
    atomic_write,
    check_output_dir,
)
from sgt_tfmot._progress import Progress, duration_text
from sgt_tfmot.data.base import Arrays
from sgt_tfmot.export import align_biases, is_quantized
from sgt_tfmot.keras import keras, tf
from sgt_tfmot.quantizers import MAX_BITS, MIN_BITS, WEIGHT_RANGES
from sgt_tfmot.saving import RUN_MODEL_FILE, float32_model, save_model
from sgt_tfmot.trainers import SaliencyGuidedModel
from sgt_tfmot.trainers.multi_worker import (
    ChiefBackupAndRestore,
    broadcast_from_chief,
    is_multi_worker,
    report_synchronised_metrics,
)

TOOL = "sgt_tfmot.train"

# The paper's Table I (Maleki et al.), plus what it leaves open: SGD with momentum 0.9 and a
# constant learning rate, no augmentation beyond the loader's defaults.
PRESETS = {
    "paper_mnist": dict(
        dataset="mnist", learning_rate=0.1, epochs=50, batch_size=128, weight_bits=8,
        activation_bits=8, mask_fraction=0.5, kl_weight=0.1, schedule="constant",
    ),
    "paper_cifar10": dict(
        dataset="cifar10", learning_rate=0.01, epochs=50, batch_size=64, weight_bits=4,
        activation_bits=4, mask_fraction=0.5, kl_weight=0.05, schedule="constant",
    ),
}  # fmt: skip

DISTRIBUTE = ("none", "mirrored", "multi_worker")
BACKUP_DIR = "backup"
RUN_FILES = (
    MANIFEST, "flags.json", RUN_MODEL_FILE, "metrics.json", "history.csv", "history.json",
    "alpha.json", "alpha.png", "wall_time.json", "labels.txt", "tensorboard", BACKUP_DIR,
    LOCK_FILE,
)  # fmt: skip


@dataclasses.dataclass
class TrainConfig:
    """Settings of one training run; the fields mirror the command-line flags."""

    dataset: str = "mnist_subset"
    data_dir: str | None = None
    image_size: str | None = None
    color_mode: str | None = None
    validation_split: float | None = None
    augment: str | None = None
    model: str = "resnet20"
    width: float | None = None
    weight_bits: int = 8
    activation_bits: int = 8
    first_last_bits: int = 8
    weight_range: str = "max"
    float: bool = False
    sgt: bool = True
    mask_fraction: float = 0.5
    kl_weight: float = 0.1
    fill: str = "random"
    patch_size: int = 1
    blur_sigma: float = masking.DEFAULT_BLUR_SIGMA
    impute_noise: float = masking.DEFAULT_IMPUTE_NOISE
    epochs: int = 5
    batch_size: int = 128
    learning_rate: float = 0.1
    schedule: str = "onecycle"
    weight_decay: float = 1e-4
    alpha_init: float | str = 10.0
    alpha_percentile: float = 99.9
    alpha_l2: float = 2e-4
    init_from: str | None = None
    trust_model_code: bool = False
    mixed_precision: str = "auto"
    seed: int = 0
    max_steps: int | None = None
    out_dir: str | None = None
    overwrite: bool = False
    distribute: str = "none"
    backup_every: int = 200
    progress: int | None = None

    def check(self) -> TrainConfig:
        """Validates every field; raises `InputError` naming the field and what is accepted.

        Paths (--data_dir, --init_from, a dataset or model given as a path) are made
        absolute, so the run's flags still find them from another working directory.
        """
        for name in _PATH_FIELDS:
            setattr(self, name, _absolute(getattr(self, name)))
        datasets.options(self.image_size, self.color_mode, self.validation_split)
        datasets.parse_augment(self.augment)
        if not model_zoo.is_model_file(self.model):
            model_zoo.get(self.model, "model")
        if self.width is not None:
            _checks.check_number(self.width, "width", 0.0, low_open=True)
            if not model_zoo.takes(self.model, "width"):
                takers = [name for name in model_zoo.names() if model_zoo.takes(name, "width")]
                raise InputError(
                    f"--width applies to {', '.join(takers)}; --model is {self.model!r}."
                )
        for name in ("weight_bits", "activation_bits", "first_last_bits"):
            setattr(self, name, _checks.check_int(getattr(self, name), name, MIN_BITS, MAX_BITS))
        _checks.check_choice(self.weight_range, WEIGHT_RANGES, "weight_range")
        _checks.check_open_fraction(self.mask_fraction, "mask_fraction")
        _checks.check_number(self.kl_weight, "kl_weight", 0.0)
        _checks.check_choice(self.fill, masking.FILLS, "fill")
        self.patch_size = _checks.check_int(self.patch_size, "patch_size", 1)
        _checks.check_number(
            self.blur_sigma, "blur_sigma", 0.0, masking.MAX_BLUR_SIGMA, low_open=True
        )
        _checks.check_number(self.impute_noise, "impute_noise", 0.0, 1.0)
        for name in ("epochs", "batch_size", "backup_every"):
            _checks.check_int(getattr(self, name), name, 1)
        _checks.check_int(self.max_steps, "max_steps", 1, allow_none=True)
        _checks.check_int(self.seed, "seed", 0)
        _checks.check_number(self.learning_rate, "learning_rate", 0.0, low_open=True)
        _checks.check_number(self.weight_decay, "weight_decay", 0.0)
        if self.alpha_init != "calibrate":
            _checks.check_number(self.alpha_init, "alpha_init", 0.0, low_open=True)
        elif self.init_from is None:
            raise InputError(
                "--alpha_init calibrate sets each α from a trained float model's activations: "
                "pass that model with --init_from RUN_DIR_OR_FILE (or a number, e.g. 10)."
            )
        _checks.check_number(self.alpha_percentile, "alpha_percentile", 0.0, 100.0, low_open=True)
        _checks.check_number(self.alpha_l2, "alpha_l2", 0.0)
        _checks.check_choice(self.schedule, schedules.SCHEDULES, "schedule")
        _checks.check_choice(self.mixed_precision, precision.CHOICES, "mixed_precision")
        _checks.check_choice(self.distribute, DISTRIBUTE, "distribute")
        _checks.check_int(self.progress, "progress", 0, 2, allow_none=True)
        _checks.check_bool(self.trust_model_code, "trust_model_code")
        return self

    def default_out_dir(self) -> str:
        bits = "float" if self.float else f"w{self.weight_bits}a{self.activation_bits}"
        dataset = Path(self.dataset.rstrip("/")).stem  # a name, or the file/folder's name
        model = Path(self.model).stem
        return os.path.join("runs", f"{dataset}-{model}-{bits}-{'sgt' if self.sgt else 'plain'}")

    def run_settings(self) -> dict:
        """The settings that define the run (a resumed run must use the same)."""
        settings = dataclasses.asdict(self)
        for name in ("overwrite", "progress", "out_dir", "trust_model_code"):
            settings.pop(name)
        return settings

    def changes_from(self, previous: dict) -> str:
        """Empty when a run written with the settings `previous` (flags.json, or metrics.json's
        "flags") is this run; else "name: old -> new, ..." of each setting that differs (a
        setting an older version did not write counts as its default)."""
        current, defaults = self.run_settings(), TrainConfig().run_settings()
        previous = {k: _absolute(v) if k in _PATH_FIELDS else v for k, v in previous.items()}
        changed = sorted(k for k in current if previous.get(k, defaults[k]) != current[k])
        return ", ".join(f"{k}: {previous.get(k)!r} -> {current[k]!r}" for k in changed)


_PATH_FIELDS = ("data_dir", "init_from", "dataset", "model")


def _absolute(value):
    """`value` as an absolute path when it names a path (not a bare dataset or model name)."""
    if not isinstance(value, str) or not value or value.startswith("zoo:"):
        return value
    if os.sep in value or value.startswith(".") or os.path.exists(value):
        return os.path.abspath(value)
    return value


def config_from_flags(values: dict, explicit: set[str], preset: str | None) -> TrainConfig:
    """Builds a `TrainConfig`: preset values first, then the flags given on the command line."""
    fields = {f.name for f in dataclasses.fields(TrainConfig)}
    settings = {k: v for k, v in values.items() if k in fields}
    if preset:
        _checks.check_choice(preset, tuple(PRESETS), "preset")
        for name, value in PRESETS[preset].items():
            if name not in explicit:
                settings[name] = value
    return TrainConfig(**settings).check()


# ----------------------------------------------------------------------------- run directory
@dataclasses.dataclass(frozen=True)
class RunDirectory:
    """Where a run writes, and where it stands.

    Attributes:
      out: The run directory.
      work: Where this process writes the run's files: `out` on the chief (or alone), a
        temporary directory on the other workers of a multi-worker run, which never touch
        `out` (it may not even exist on their hosts).
      finished: The run finished earlier (its metrics.json exists).
      resumes: The directory holds an unfinished run of the same settings.
      lock: The chief's lock on `out` while the run goes on (`sgt_tfmot._files.DirectoryLock`).
    """

    out: Path
    work: Path
    finished: bool
    resumes: bool
    lock: DirectoryLock | None = None

    @property
    def backup(self) -> Path:
        """This process's backup directory (see
        `sgt_tfmot.trainers.multi_worker.ChiefBackupAndRestore`)."""
        return self.work / BACKUP_DIR

    @property
    def is_chief(self) -> bool:
        return self.work == self.out

    def close(self) -> None:
        """Releases the lock (removing its file); a worker's temporary directory goes."""
        if self.lock is not None:
            self.lock.release()
        if not self.is_chief:
            shutil.rmtree(self.work, ignore_errors=True)


def _run_manifest(out: Path) -> Manifest:
    manifest = Manifest.read(out)
    for name in RUN_FILES:
        if name != MANIFEST:
            manifest.record(name, TOOL)
    return manifest


def _is_run_directory(out: Path) -> bool:
    return Manifest.read(out).owner("flags.json") == TOOL


CREATE, RESUME, OVERWRITE = "create", "resume", "overwrite"


def inspect_run_directory(config: TrainConfig) -> str:
    """What the run will do with --out_dir: CREATE, RESUME or OVERWRITE; writes nothing.

    Every refusal of the directory happens here, before a model is built or a file written
    (`open_run_directory` writes, after every other check passed).

    Raises:
      InputError: when the directory cannot be created or written; is in use by another
        training process; holds files that are not a run's (and is not empty); holds a
        finished run without --overwrite; holds an unfinished run with other settings; or,
        with --overwrite, holds anything besides the run's own files (named in the message).
    """
    out = check_output_dir(config.out_dir, "out_dir")
    try:
        DirectoryLock.check_free(out)
    except DirectoryBusy as error:
        raise _busy(error) from None
    return _decide(config, out)


def _busy(error: DirectoryBusy) -> InputError:
    return InputError(
        f"--out_dir {error}: another {TOOL} is training there; wait for it to end, or choose "
        "another --out_dir."
    )


def _decide(config: TrainConfig, out: Path) -> str:
    if out.is_dir() and any(p.name != LOCK_FILE for p in out.iterdir()):
        if not _is_run_directory(out):
            raise InputError(
                f"--out_dir {out} is not empty and is not a sgt_tfmot run directory (no "
                f"{MANIFEST} naming its files); choose another --out_dir."
            )
        finished = (out / "metrics.json").is_file()
        if config.overwrite:
            foreign = Manifest.read(out).foreign(TOOL)
            if foreign:
                shown = ", ".join(foreign[:5]) + (", ..." if len(foreign) > 5 else "")
                raise InputError(
                    f"--out_dir {out} holds files that are not the run's own ({shown}); "
                    "--overwrite only replaces a run's own files: move them elsewhere or "
                    "choose another --out_dir."
                )
            return OVERWRITE
        if finished:  # a kill at the very end left these; nobody holds the lock
            shutil.rmtree(out / BACKUP_DIR, ignore_errors=True)
            (out / LOCK_FILE).unlink(missing_ok=True)
            raise InputError(
                f"--out_dir {out} holds a finished run; pass --overwrite to train again "
                "there, or choose another --out_dir."
            )
        if (out / "flags.json").is_file():
            detail = config.changes_from(json.loads((out / "flags.json").read_text()))
            if detail:
                raise InputError(
                    f"--out_dir {out} holds an unfinished run with other settings ({detail}); "
                    "rerun with the same flags to resume, or pass --overwrite."
                )
            return RESUME
    return CREATE


def open_run_directory(config: TrainConfig, expected: str) -> RunDirectory:
    """Locks --out_dir, checks it is still as `inspect_run_directory` found it, and creates,
    resumes or (with --overwrite) clears it, by the ownership rule.

    Nothing stays behind when it refuses: a directory it created is removed again.

    Raises:
      InputError: when another training process took the directory meanwhile, or it changed.
    """
    out = Path(config.out_dir)
    created = [p for p in [out, *out.parents] if not p.exists()]
    try:
        out.mkdir(parents=True, exist_ok=True)
        lock = DirectoryLock.acquire(out)
    except (DirectoryBusy, OSError) as error:
        _remove_empty(created)
        if isinstance(error, DirectoryBusy):
            raise _busy(error) from None
        raise InputError(f"--out_dir {out}: cannot write there ({error.strerror}).") from None
    written: list[Path] = []
    try:
        action = _decide(config, out)
        if action != expected:
            raise InputError(
                f"--out_dir {out} changed while this run was starting (another process wrote "
                "there); run the command again."
            )
        if action == OVERWRITE:
            _remove_run_files(out)
        written = [out / name for name in (MANIFEST, "flags.json") if not (out / name).exists()]
        _run_manifest(out).write()
        if action != RESUME:
            atomic_write(out / "flags.json", json.dumps(config.run_settings(), indent=2).encode())
    except BaseException as error:
        for path in written:  # a full disk, say: take back what this run wrote
            path.unlink(missing_ok=True)
        lock.release()
        _remove_empty(created)
        if isinstance(error, OSError):
            raise InputError(f"--out_dir {out}: cannot write there ({error.strerror}).") from None
        raise
    return RunDirectory(out, out, finished=False, resumes=action == RESUME, lock=lock)


def _remove_empty(directories: list[Path]) -> None:
    """Removes the directories this process created (deepest first) if they are empty."""
    for directory in directories:
        try:
            directory.rmdir()
        except OSError:
            return


def _remove_run_files(out: Path) -> None:
    for name in RUN_FILES:
        path = out / name
        if name in (MANIFEST, LOCK_FILE):
            continue
        if path.is_dir() and not path.is_symlink():
            shutil.rmtree(path)
        elif path.exists() or path.is_symlink():
            path.unlink()
    for path in out.glob(".*.partial*"):
        path.unlink()


def _backup_position(backup: Path, steps_per_epoch: int) -> tuple[int, int] | None:
    """(epoch, step in epoch) where `fit` resumes from the backup, Keras's own rule."""
    latest = tf.train.latest_checkpoint(str(backup / "chief"))
    if latest is None:
        return None
    reader = tf.train.load_checkpoint(latest)
    epoch = int(reader.get_tensor("ckpt_saved_epoch/.ATTRIBUTES/VARIABLE_VALUE"))
    batch = int(reader.get_tensor("ckpt_saved_batch/.ATTRIBUTES/VARIABLE_VALUE"))
    if batch < 0:
        return epoch + 1, 0
    if batch == steps_per_epoch - 1:
        return epoch + 1, 0
    return epoch, batch + 1


# ----------------------------------------------------------------------------- distribution
def _cluster_spec() -> dict:
    """The parsed and checked $TF_CONFIG of a multi-worker run."""
    text = os.environ.get("TF_CONFIG")
    if not text:
        raise InputError(
            "--distribute multi_worker needs the cluster in $TF_CONFIG, e.g. "
            '{"cluster": {"worker": ["host1:port", "host2:port"]}, "task": {"type": "worker", '
            '"index": 0}} (see docs/DISTRIBUTED.md).'
        )
    try:
        spec = json.loads(text)
        cluster, task = spec["cluster"], spec["task"]
        kind, index = task["type"], task["index"]
    except (ValueError, KeyError, TypeError) as error:
        raise InputError(
            f"$TF_CONFIG is not valid JSON with 'cluster' and 'task' ({type(error).__name__}: "
            f"{error}); see docs/DISTRIBUTED.md."
        ) from None
    if not isinstance(cluster, dict) or not cluster:
        raise InputError(
            '$TF_CONFIG: "cluster" must map task types to address lists, e.g. {"worker": '
            f'["host1:port", "host2:port"]}}. Received: {cluster!r}'
        )
    if not isinstance(kind, str) or kind not in cluster:
        raise InputError(
            f"$TF_CONFIG: this process is task {kind!r}, but the cluster has only "
            f"{sorted(cluster)}."
        )
    for job, addresses in cluster.items():
        if not isinstance(addresses, list) or not all(
            isinstance(a, str) and a.rpartition(":")[2].isdigit() for a in addresses
        ):
            raise InputError(
                f'$TF_CONFIG: cluster[{job!r}] must be a list of "host:port" addresses. '
                f"Received: {addresses!r}"
            )
    if isinstance(index, bool) or not isinstance(index, int):
        raise InputError(f"$TF_CONFIG: the task index must be an integer. Received: {index!r}")
    if not 0 <= index < len(cluster[kind]):
        raise InputError(
            f"$TF_CONFIG: task index {index!r} is out of range for the {len(cluster[kind])} "
            f"{kind} address(es) of the cluster."
        )
    if set(cluster) - {"chief", "worker"}:
        raise InputError(
            f"$TF_CONFIG: the cluster has {sorted(set(cluster) - {'chief', 'worker'})}; "
            "MultiWorkerMirroredStrategy takes 'chief' and 'worker' tasks only "
            "(parameter-server training is not supported, see docs/DISTRIBUTED.md)."
        )
    return spec


def make_strategy(name: str):
    """The tf.distribute strategy of --distribute (checked $TF_CONFIG for multi_worker)."""
    if name == "mirrored":
        return tf.distribute.MirroredStrategy()
    if name == "multi_worker":
        _cluster_spec()
        return tf.distribute.MultiWorkerMirroredStrategy()
    return tf.distribute.get_strategy()


def _is_chief(strategy) -> bool:
    return bool(strategy.extended.should_checkpoint)


def _worker_count(strategy) -> int:
    """Processes of the cluster (1 unless multi-worker)."""
    if not is_multi_worker(strategy):
        return 1
    spec = strategy.cluster_resolver.cluster_spec()
    return sum(spec.num_tasks(job) for job in spec.jobs)


class WorkerLostError(RunStopped):
    """A worker of a multi-worker run stopped; the others cannot go on without it."""


def _lost_workers(message: str, out: str, chief: bool) -> str:
    """One line from TensorFlow's error when the cluster lost a worker."""
    lost = sorted(set(re.findall(r"/job:(\w+)/replica:\d+/task:(\d+)", message)))
    who = ", ".join(f"{job} {task}" for job, task in lost) or "a worker"
    lines = [line.strip() for line in message.splitlines() if line.strip()] or [""]
    said = next((line for line in lines if "unhealthy" in line or "aborted" in line), lines[0])
    return (
        f"{who} of the cluster stopped (TensorFlow: {said}); start every worker again with "
        f"the same command: the run resumes from the last backup in "
        f"{out if chief else 'the chief’s --out_dir'} (see docs/DISTRIBUTED.md)."
    )


def _shard_by_data(dataset: tf.data.Dataset) -> tf.data.Dataset:
    """Every worker computes each (global) batch and keeps its own rows of it.

    Keras splits each global batch of B examples into B / replicas rows per replica and
    replica r keeps rows [r·B/R, (r+1)·B/R): the examples of one step are seen once, by
    one replica, and the batches are those of a one-process run (`training_batches`).
    """
    options = tf.data.Options()
    options.experimental_distribute.auto_shard_policy = tf.data.experimental.AutoShardPolicy.DATA
    return dataset.with_options(options)


def _check_last_batch(batch_size: int, train_size: int, replicas: int, plan: _Plan) -> None:
    """Refuses a run whose epochs end in a batch with fewer examples than replicas.

    The last batch of an epoch holds the N mod B remaining examples; it is split between the
    replicas, and a replica cannot train on an empty batch.
    """
    remainder = train_size % batch_size
    reached = plan.steps_per_epoch == math.ceil(train_size / batch_size)
    if not (reached and 0 < remainder < replicas):
        return
    sizes = range(replicas, 2 * max(batch_size, train_size) + 1, replicas)
    fits = [size for size in sizes if train_size % size not in range(1, replicas)]
    hint = ""
    if fits:
        hint = f", e.g. {min(fits, key=lambda size: (abs(size - batch_size), size))}"
    raise InputError(
        f"--batch_size {batch_size}: the last batch of each epoch would hold the {remainder} "
        f"remaining example(s) of the {train_size} training images, fewer than the "
        f"{replicas} replicas, and a replica cannot train on an empty batch; choose a "
        f"--batch_size that leaves none or at least {replicas} over{hint}."
    )


# ----------------------------------------------------------------------------- callbacks
def alphas(model: keras.Model) -> dict[str, float]:
    """Layer name -> current α of every PACT quantizer in `model`."""
    return {name: float(alpha.numpy()) for name, alpha in quantize.pact_alphas(model).items()}


class AlphaHistory(keras.callbacks.Callback):
    """Appends every PACT α after each epoch to `alpha.json` and redraws `alpha.png`."""

    def __init__(self, model_to_watch: keras.Model, out: Path, title: str):
        super().__init__()
        self.watched = model_to_watch
        self.json_path, self.png_path, self.title = out / "alpha.json", out / "alpha.png", title
        self.history = json.loads(self.json_path.read_text()) if self.json_path.exists() else []

    def on_train_begin(self, logs=None):
        if not self.history and alphas(self.watched):  # epoch 0: the initial α₀
            self._record(0)

    def on_epoch_end(self, epoch, logs=None):
        if alphas(self.watched):
            self._record(epoch + 1)

    def _record(self, epoch: int) -> None:
        self.history = [h for h in self.history if h["epoch"] < epoch]
        self.history.append({"epoch": epoch, "alpha": alphas(self.watched)})
        atomic_write(self.json_path, json.dumps(self.history, indent=1).encode())
        plot_alphas(self.history, self.png_path, self.title)


def plot_alphas(history: list[dict], path: Path, title: str) -> None:
    """The paper's Figures 1 and 2: α of each PACT layer against the epoch."""
    import io

    import matplotlib.ticker
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    epochs = [h["epoch"] for h in history]
    names = list(history[-1]["alpha"])
    figure = Figure(figsize=(7, 4.5))
    FigureCanvasAgg(figure)
    axis = figure.subplots()
    colors = matplotlib.colormaps["viridis"](
        [i / max(len(names) - 1, 1) for i in range(len(names))]
    )
    labelled = set(names) if len(names) <= 12 else {names[0], names[len(names) // 2], names[-1]}
    for name, color in zip(names, colors, strict=True):
        axis.plot(epochs, [h["alpha"].get(name, float("nan")) for h in history], color=color,
                  marker="o" if len(epochs) < 15 else None, lw=1.2,
                  label=name if name in labelled else None)  # fmt: skip
    axis.set_xlabel("epoch")
    axis.set_ylabel("PACT clipping level α")
    axis.set_title(
        f"{title}\n{len(names)} PACT layers, colour from first (purple) to last (yellow)"
    )
    axis.xaxis.set_major_locator(matplotlib.ticker.MaxNLocator(integer=True))
    axis.grid(alpha=0.3)
    axis.legend(fontsize=6, ncol=2)
    figure.tight_layout()
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=120)
    atomic_write(path, buffer.getvalue())


class WallClock(keras.callbacks.Callback):
    """Training wall time over every attempt of a run, kept in `wall_time.json`.

    The file is rewritten at most once a second during training, so an attempt that is
    killed loses at most about a second of its time.
    """

    def __init__(self, path: Path):
        super().__init__()
        self.path = path
        saved = json.loads(path.read_text()) if path.exists() else {}
        self.previous = float(saved.get("seconds", 0.0))
        self.attempts = int(saved.get("attempts", 0)) + 1
        self.start = time.monotonic()
        self.last_saved = -math.inf
        self.save(force=True)

    def seconds(self) -> float:
        return self.previous + time.monotonic() - self.start

    def save(self, force: bool = False) -> None:
        now = time.monotonic()
        if force or now - self.last_saved >= 1.0:
            self.last_saved = now
            content = {"seconds": round(self.seconds(), 3), "attempts": self.attempts}
            atomic_write(self.path, json.dumps(content).encode())

    def on_train_batch_end(self, batch, logs=None):
        self.save()

    def on_epoch_end(self, epoch, logs=None):
        self.save(force=True)


class TrainingProgress(keras.callbacks.Callback):
    """Keeps the run's progress status (`sgt_tfmot._progress`) where training stands: the
    global step, images per second since the first step of this attempt (its tracing
    excluded), and the time left at that rate. In a log the heartbeat prints it at least
    every 30 s; Keras's own lines come once per epoch only."""

    def __init__(self, progress: Progress, plan: _Plan, batch_size: int, start_step: int):
        super().__init__()
        self.progress, self.plan = progress, plan
        self.batch_size, self.start_step = batch_size, start_step
        self.done, self.first = 0, None

    def on_train_begin(self, logs=None):
        self.progress.update(
            f"step {self.start_step}/{self.plan.total_steps}: building and tracing the "
            "training step", live=False,
        )  # fmt: skip

    def on_train_batch_end(self, batch, logs=None):
        self.done += 1
        now = time.monotonic()
        if self.first is None:
            self.first = (now, self.done)
        step = min(self.start_step + self.done, self.plan.total_steps)
        epoch = min(step // self.plan.steps_per_epoch + 1, self.plan.epochs)
        status = f"step {step}/{self.plan.total_steps} (epoch {epoch}/{self.plan.epochs})"
        seconds, steps = now - self.first[0], self.done - self.first[1]
        if steps > 0 and seconds > 0:
            rate = steps * self.batch_size / seconds
            left = (self.plan.total_steps - step) * seconds / steps
            status += f": {rate:.1f} images/s, ETA {duration_text(left)}"
        self.progress.update(status)

    def on_test_begin(self, logs=None):
        step = min(self.start_step + self.done, self.plan.total_steps)
        self.progress.update(
            f"step {step}/{self.plan.total_steps}: evaluating on the test split", live=False
        )


# ----------------------------------------------------------------------------- the run
CALIBRATION_IMAGES = 1024  # training images (stratified, seeded) set --init_from's ranges


def data_options(config: TrainConfig) -> dict:
    """The options of `sgt_tfmot.data.open_dataset` a run's settings give."""
    return {
        "image_size": config.image_size,
        "color_mode": config.color_mode,
        "validation_split": config.validation_split,
    }


def build_model(config: TrainConfig, info, calibration_images=None) -> keras.Model:
    """The float model (from --init_from's weights when given), quantized unless --float.

    With --init_from the QAT model starts from the float model's function: its 8-bit ranges
    are the float activations' ranges on `calibration_images`, and with
    `--alpha_init calibrate` each PACT α is their `alpha_percentile`-th percentile
    (`sgt_tfmot.quantize.calibrate_ranges`).
    """
    options = {} if config.width is None else {"width": config.width}
    if model_zoo.takes(config.model, "mean"):  # the data's own pixel statistics
        options.update(mean=info.mean, std=info.std)
    model = model_zoo.build(
        config.model, info.image_shape, info.num_classes, weight_decay=config.weight_decay,
        trust_code=config.trust_model_code, **options,
    )  # fmt: skip
    if config.init_from is not None:
        source = saving.load_model(config.init_from, trust_code=config.trust_model_code)
        model_zoo.copy_weights(source, model, f"--init_from {config.init_from}")
    if config.float:
        return model
    calibrate = config.alpha_init == "calibrate"
    qat = quantize.quantize_model(
        model,
        weight_bits=config.weight_bits,
        activation_bits=config.activation_bits,
        first_last_bits=config.first_last_bits,
        alpha_init=10.0 if calibrate else config.alpha_init,
        alpha_l2=config.alpha_l2,
        weight_range=config.weight_range,
    )
    if config.init_from is not None and calibration_images is not None:
        quantize.calibrate_ranges(
            qat, model, calibration_images, config.alpha_percentile, alphas=calibrate
        )
    return qat


@dataclasses.dataclass(frozen=True)
class _Plan:
    steps_per_epoch: int
    epochs: int
    total_steps: int


def _plan(config: TrainConfig, train_size: int) -> _Plan:
    steps_per_epoch = math.ceil(train_size / config.batch_size)
    epochs = config.epochs
    if config.max_steps is not None:
        steps_per_epoch = min(steps_per_epoch, config.max_steps)
        epochs = min(epochs, math.ceil(config.max_steps / steps_per_epoch))
    total = steps_per_epoch * epochs
    if config.max_steps is not None:
        total = min(total, config.max_steps)
    return _Plan(steps_per_epoch, epochs, total)


def _make_trainer(config: TrainConfig, model: keras.Model, plan: _Plan, image_shape):
    optimizer = keras.optimizers.SGD(
        schedules.make(config.schedule, config.learning_rate, plan.total_steps),
        momentum=0.9,
        nesterov=True,
    )
    trainer = model
    if config.sgt:
        trainer = SaliencyGuidedModel(
            model,
            mask_fraction=config.mask_fraction,
            kl_weight=config.kl_weight,
            fill=config.fill,
            patch_size=config.patch_size,
            blur_sigma=config.blur_sigma,
            impute_noise=config.impute_noise,
            seed=config.seed,
        )
    trainer.compile(optimizer, heads.loss(model), metrics=["accuracy"])
    report_synchronised_metrics(trainer)  # plain runs too
    trainer(tf.zeros([1, *image_shape]))  # built, so BackupAndRestore can restore
    return trainer


def _truncate_history(path: Path, epoch: int) -> None:
    """Keeps the history rows of the epochs before `epoch` (a resumed run redoes the rest)."""
    if not path.exists():
        return
    with path.open(newline="") as file:
        rows = list(csv.reader(file))
    if not rows:
        return
    kept = [rows[0]] + [row for row in rows[1:] if row and int(row[0]) < epoch]
    lines = [",".join(row) for row in kept]
    atomic_write(path, ("\n".join(lines) + "\n").encode())


def _read_history(path: Path) -> list[dict]:
    if not path.exists():
        return []
    with path.open() as file:
        rows = list(csv.DictReader(file))
    by_epoch = {int(row["epoch"]): row for row in rows}  # a resumed epoch keeps its last row
    return [
        {k: (float(v) if k != "epoch" else int(v) + 1) for k, v in by_epoch[e].items() if v != ""}
        for e in sorted(by_epoch)
    ]


@dataclasses.dataclass(frozen=True)
class _Start:
    """How the run starts, as the chief found --out_dir (nothing written yet), on every
    worker: CREATE / RESUME / OVERWRITE (the chief's), the backup's position, the precision."""

    action: str | None
    resumes: bool
    position: tuple[int, int] | None  # (epoch, step in epoch) of the backup resumed from
    precision: tuple[str, str]  # (Keras policy, why)


@dataclasses.dataclass(frozen=True)
class _Built:
    """The model, its trainer and the data pipelines, built before anything is written."""

    model: keras.Model
    trainer: keras.Model
    train_ds: tf.data.Dataset
    test_ds: tf.data.Dataset


@dataclasses.dataclass(frozen=True)
class _Setup:
    """What a run settled before training (the same on every worker)."""

    config: TrainConfig
    info: datasets.DatasetInfo
    arrays: Arrays
    augment: tuple[str, ...]
    precision: tuple[str, str]  # (Keras policy, why)
    strategy: tf.distribute.Strategy
    plan: _Plan
    run: RunDirectory
    position: tuple[int, int] | None  # (epoch, step in epoch) of the backup resumed from

    @property
    def start_step(self) -> int:
        return _start_step(self.position, self.plan)


def _start_step(position: tuple[int, int] | None, plan: _Plan) -> int:
    if position is None:
        return 0
    epoch, step = position
    return min(epoch * plan.steps_per_epoch + step, plan.total_steps)


def train(config: TrainConfig, extra_callbacks=()) -> dict:
    """Trains, evaluates and writes the run directory; returns the final metrics.

    Every check that can refuse the run (settings, data, the output directory, the model and
    its layers) runs before the run directory is created or marked: a refused run writes
    nothing. One process at a time trains in a run directory (`DirectoryLock`).

    With `--distribute multi_worker` every worker runs this with the same settings; the chief
    decides (creates or resumes the run directory, finds the backup) and tells the others,
    and alone writes the run directory (see docs/DISTRIBUTED.md).

    Args:
      config: The run's settings (`TrainConfig.check()` is called).
      extra_callbacks: More Keras callbacks for `fit` (tests use one to interrupt a run).

    Raises:
      InputError: on bad settings, an unusable output directory (on a non-chief worker:
        when the chief refused them) or a model that cannot be trained; the loader's
        `DataError` on missing or malformed data (all ValueErrors, raised before any file is
        written).
    """
    config.check()
    if config.out_dir is None:
        config.out_dir = config.default_out_dir()
    heartbeat = config.progress != 0 and not sys.stdout.isatty()
    with Progress(f"{TOOL}: ", stream=lambda: sys.stdout, heartbeat=heartbeat) as progress:
        return _train(config, extra_callbacks, progress)


def _train(config: TrainConfig, extra_callbacks, progress: Progress) -> dict:
    progress.update(f"reading the dataset {config.dataset}", live=False)
    info, arrays = datasets.open_dataset(config.dataset, config.data_dir, **data_options(config))
    if config.sgt:  # the patches must tile the images (a ragged last patch is refused)
        masking.check_patch_size(config.patch_size, info.image_shape[:-1])
    augment = datasets.parse_augment(config.augment)
    augment = tuple(info.augment if augment is None else augment)
    lowest_bits = (
        None
        if config.float
        else min(config.weight_bits, config.activation_bits, config.first_last_bits)
    )
    policy = precision.resolve(config.mixed_precision, lowest_bits)
    strategy = make_strategy(config.distribute)
    replicas = strategy.num_replicas_in_sync
    if config.batch_size % replicas:
        raise InputError(
            f"--batch_size {config.batch_size} is not divisible by the {replicas} replicas of "
            "the cluster; pass a multiple of the replica count (the global batch is split "
            "evenly)."
        )
    plan = _plan(config, len(arrays.split("train")[0]))
    _check_last_batch(config.batch_size, len(arrays.split("train")[0]), replicas, plan)
    start = _inspect_run(config, strategy, plan.steps_per_epoch, policy)
    run = None
    try:
        keras.utils.set_random_seed(config.seed)
        keras.mixed_precision.set_global_policy(start.precision[0])
        progress.update(f"building the model ({config.model})", live=False)
        built = _build(config, info, arrays, augment, plan, strategy, start.position)
        run = _open_run(config, strategy, start)
        setup = _Setup(config, info, arrays, augment, start.precision, strategy, plan, run,
                       start.position)  # fmt: skip
        return _fit_and_finalise(setup, built, extra_callbacks, progress)
    except tf.errors.UnavailableError as error:
        if not is_multi_worker(strategy):
            raise
        chief = _is_chief(strategy)
        raise WorkerLostError(_lost_workers(str(error), config.out_dir, chief)) from None
    finally:
        keras.mixed_precision.set_global_policy("float32")
        if run is not None:
            run.close()


def _build(config, info, arrays, augment, plan, strategy, position) -> _Built:
    """The data pipelines (from the resume position on), the model and its trainer."""
    train_x, train_y = arrays.split("train")
    start_step = _start_step(position, plan)
    train_ds = datasets.training_batches(
        train_x, train_y, config.batch_size, seed=config.seed,
        total_steps=max(plan.total_steps, start_step + 1), start_step=start_step,
        augment=augment,
    )  # fmt: skip
    test_ds = datasets.batches(*arrays.split("test"), config.batch_size)
    if is_multi_worker(strategy):
        train_ds, test_ds = _shard_by_data(train_ds), _shard_by_data(test_ds)
    with strategy.scope():
        calibration = datasets.stratified_order(train_y, config.seed)[:CALIBRATION_IMAGES]
        model = build_model(config, info, train_x[calibration].astype("float32"))
        trainer = _make_trainer(config, model, plan, info.image_shape)
    return _Built(model, trainer, train_ds, test_ds)


def _fit_and_finalise(setup: _Setup, built: _Built, extra_callbacks, progress: Progress) -> dict:
    config, run, plan = setup.config, setup.run, setup.plan
    if setup.position is not None and run.is_chief:
        _truncate_history(run.work / "history.csv", setup.position[0])
    if run.is_chief:
        labels = "\n".join(setup.info.labels()) + "\n"
        atomic_write(run.work / "labels.txt", labels.encode())
    clock = WallClock(run.work / "wall_time.json")
    _report_start(setup)
    title = (
        f"{config.dataset} {config.model} "
        f"{'SGT + ' if config.sgt else ''}PACT W{config.weight_bits}A{config.activation_bits}"
    )
    callbacks = [
        ChiefBackupAndRestore(
            str(run.backup), save_freq=config.backup_every, delete_checkpoint=False
        ),
        keras.callbacks.CSVLogger(str(run.work / "history.csv"), append=True),
        keras.callbacks.TensorBoard(str(run.work / "tensorboard"), update_freq="epoch"),
        AlphaHistory(built.model, run.work, title),
        clock,
        TrainingProgress(progress, plan, config.batch_size, setup.start_step),
        *extra_callbacks,
    ]
    verbose = config.progress
    if verbose is None:
        verbose = 1 if sys.stdout.isatty() else 2
    built.trainer.fit(
        built.train_ds,
        epochs=plan.epochs,
        steps_per_epoch=plan.steps_per_epoch,
        validation_data=built.test_ds,
        callbacks=callbacks,
        verbose=verbose,
    )
    progress.update("evaluating and saving the trained model", live=False)
    return _finalise(setup, built.model, built.trainer, built.test_ds, clock)


def _report_start(setup: _Setup) -> None:
    """Prints where the run resumes (if it does), the precision and the cluster."""
    run, position = setup.run, setup.position
    if run.resumes or position is not None:
        where = (
            f"from epoch {position[0] + 1}, step {position[1]} (global step "
            f"{setup.start_step} of {setup.plan.total_steps})"
            if position is not None
            else "from the start: no backup had been written yet"
        )
        print(f"Resuming the unfinished run in {run.out} {where}", flush=True)
    print(f"Precision: {setup.precision[0]} ({setup.precision[1]})", flush=True)
    if is_multi_worker(setup.strategy):
        replicas = setup.strategy.num_replicas_in_sync
        role = "the chief, writing the run directory" if run.is_chief else f"writing {run.work}"
        print(
            f"Cluster: {_worker_count(setup.strategy)} workers, {replicas} replicas, "
            f"{setup.config.batch_size // replicas} examples per replica and step; this "
            f"worker is {role}",
            flush=True,
        )


def _inspect_run(config: TrainConfig, strategy, steps_per_epoch: int, policy: tuple[str, str]):
    """The `_Start` of the run, as the chief found --out_dir, everywhere; writes nothing.

    The chief inspects the run directory (`inspect_run_directory`) and reads its backup's
    position; the others learn whether it refused, where the run resumes and the chief's
    precision (with `--mixed_precision auto`, hosts of other CPUs would choose differently)
    from one broadcast, so that no worker reads the chief's files or waits on a chief that
    stopped.

    Raises:
      InputError: the chief's own error on the chief; on the others, that the chief refused.
    """
    chief = _is_chief(strategy)
    refusal, action, position = None, None, None
    if chief:
        try:
            action = inspect_run_directory(config)
            if action == RESUME:
                position = _backup_position(Path(config.out_dir) / BACKUP_DIR, steps_per_epoch)
        except InputError as error:
            if not is_multi_worker(strategy):
                raise
            refusal = error
    epoch, step = position if position is not None else (0, 0)
    shared = [
        refusal is not None, position is not None, action == RESUME, epoch, step,
        precision.POLICIES.index(policy[0]),
    ]  # fmt: skip
    values = broadcast_from_chief(strategy, [tf.constant(int(v), tf.int64) for v in shared])
    refused, has_position, resumes, epoch, step, chosen = (int(v.numpy()) for v in values)
    if refusal is not None:
        raise refusal
    if refused:
        raise InputError(
            "the chief (worker 0, or the chief task) refused to start the run; its own error "
            "line says why. Fix that and start every worker again."
        )
    if precision.POLICIES[chosen] != policy[0]:
        policy = (precision.POLICIES[chosen], f"the chief's choice; here: {policy[0]}")
    return _Start(action, bool(resumes), (epoch, step) if has_position else None, policy)


def _open_run(config: TrainConfig, strategy, start: _Start) -> RunDirectory:
    """The chief locks and writes the run directory; the other workers get their own."""
    if _is_chief(strategy):
        return open_run_directory(config, start.action)
    return _worker_directory(config, strategy, resumes=start.resumes)


def _worker_directory(config: TrainConfig, strategy, resumes: bool) -> RunDirectory:
    """A non-chief worker writes the run's files into a temporary directory of its own.

    The directory is named after the task and the run directory, so a worker restarted after
    a kill (which leaves it behind) clears it; it is removed when `train` ends.
    """
    resolver = strategy.cluster_resolver
    digest = hashlib.sha1(os.path.abspath(config.out_dir).encode()).hexdigest()[:12]
    name = f"sgt_tfmot-{resolver.task_type}{resolver.task_id}-{digest}"
    work = Path(tempfile.gettempdir()) / name
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    return RunDirectory(Path(config.out_dir), work, finished=False, resumes=resumes)


def _finalise(setup: _Setup, model, trainer, test_ds, clock: WallClock) -> dict:
    """Aligns, evaluates and writes the results; metrics.json last, the backup removed after.

    A kill anywhere in here leaves the backup, so the same command resumes (and finds
    nothing left to train) or, once metrics.json exists, reports the run as finished.
    """
    config, run, plan, info, strategy = (
        setup.config, setup.run, setup.plan, setup.info, setup.strategy
    )  # fmt: skip
    # The saved model computes what its integer TFLite model will compute (docstring of
    # `align_biases`); the test accuracy below is measured after this step.
    aligned = align_biases(model) if is_quantized(model) else 0
    trainer.make_test_function(force=True)  # the input offsets may have moved
    test_loss, test_accuracy = trainer.evaluate(test_ds, verbose=0)[:2]
    saved_accuracy = _float32_accuracy(model, test_ds) if setup.precision[0] != "float32" else None
    save_model(model, run.work / RUN_MODEL_FILE, overwrite=True)
    history = _read_history(run.work / "history.csv")
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
            "workers": _worker_count(strategy),
            "replicas": strategy.num_replicas_in_sync,
            "per_replica_batch_size": config.batch_size // strategy.num_replicas_in_sync,
        },
        "alpha": alphas(model),
        "aligned_bias_layers": aligned,
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
