"""Training runs: SGT + PACT training of ResNet-20 (or a tiny MobileNet) into a run directory.

The library behind `python -m sgt_tfmot.train` (`sgt_tfmot/train.py` only parses flags):

    config = TrainConfig(dataset="mnist_subset", weight_bits=4, activation_bits=4, epochs=3)
    metrics = train(config)        # writes config.out_dir, returns metrics.json's content

The output directory receives:

    model.h5          the trained model (QAT, or float with --float); load it with
                      `sgt_tfmot.saving.load_model(OUT)`. A QAT model's biases are put on
                      the integer model's grid first (`sgt_tfmot.tflite.align_biases`), so
                      it computes what its integer TFLite model computes
    metrics.json      test_accuracy (a fraction), test_loss, the flags, wall time, epochs
    history.csv/.json per-epoch training and validation metrics
    alpha.json/.png   the clipping level α of every PACT layer after each epoch
    flags.json        the settings of the run (a rerun must match them to resume)
    tensorboard/      TensorBoard logs
    backup/           the resume point while the run is unfinished (removed at the end)

Run the same command again after an interruption (Ctrl-C, kill) and it resumes from the last
backup. A finished run's directory is never replaced without `--overwrite`.
"""

from __future__ import annotations

import csv
import dataclasses
import json
import math
import os
import shutil
import sys
import time
from pathlib import Path

from sgt_tfmot import data as datasets, models as model_zoo, quantize, saliency, schedules
from sgt_tfmot._keras import keras, tf
from sgt_tfmot.quantizers import check_bits
from sgt_tfmot.saving import RUN_MODEL_FILE, save_model
from sgt_tfmot.tflite.export import align_biases, is_quantized
from sgt_tfmot.trainers import SaliencyGuidedModel

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


class RunError(ValueError):
    """Bad flags or an output directory that cannot be used; shown as one line."""


@dataclasses.dataclass
class TrainConfig:
    """Settings of one training run; the fields mirror the command-line flags."""

    dataset: str = "mnist_subset"
    data_dir: str | None = None
    model: str = "resnet20"
    weight_bits: int = 8
    activation_bits: int = 8
    first_last_bits: int = 8
    float: bool = False
    sgt: bool = True
    mask_fraction: float = 0.5
    kl_weight: float = 0.1
    fill: str = "random"
    epochs: int = 5
    batch_size: int = 128
    learning_rate: float = 0.1
    schedule: str = "onecycle"
    weight_decay: float = 1e-4
    alpha_init: float = 10.0
    alpha_l2: float = 2e-4
    mixed_precision: bool = False
    seed: int = 0
    max_steps: int | None = None
    out_dir: str | None = None
    overwrite: bool = False
    distribute: str = "none"
    backup_every: int = 200
    verbose: int | None = None

    def check(self) -> TrainConfig:
        """Validates every field; raises `RunError` naming the flag and what is accepted."""
        try:
            datasets.info(self.dataset)
        except ValueError as error:
            raise RunError(str(error)) from None
        if self.model not in model_zoo.MODELS:
            raise RunError(
                f"Unknown model {self.model!r}. Known models: {', '.join(model_zoo.MODELS)}."
            )
        try:
            for name in ("weight_bits", "activation_bits", "first_last_bits"):
                check_bits(getattr(self, name), name)
            saliency._check_fraction(self.mask_fraction, "mask_fraction")
        except ValueError as error:
            raise RunError(str(error).replace("`", "--", 1).replace("`", "", 1)) from None
        if self.kl_weight < 0:
            raise RunError(f"--kl_weight must be >= 0. Received: {self.kl_weight}")
        if self.fill not in saliency.FILLS:
            raise RunError(f"--fill must be one of {', '.join(saliency.FILLS)}: {self.fill!r}")
        for name in ("epochs", "batch_size", "backup_every"):
            if getattr(self, name) < 1:
                raise RunError(f"--{name} must be >= 1. Received: {getattr(self, name)}")
        if self.max_steps is not None and self.max_steps < 1:
            raise RunError(f"--max_steps must be >= 1. Received: {self.max_steps}")
        if not self.learning_rate > 0:
            raise RunError(f"--learning_rate must be > 0. Received: {self.learning_rate}")
        if self.schedule not in schedules.SCHEDULES:
            raise RunError(
                f"--schedule must be one of {', '.join(schedules.SCHEDULES)}: {self.schedule!r}"
            )
        if self.distribute not in DISTRIBUTE:
            raise RunError(f"--distribute must be one of {', '.join(DISTRIBUTE)}.")
        return self

    def default_out_dir(self) -> str:
        bits = "float" if self.float else f"w{self.weight_bits}a{self.activation_bits}"
        return os.path.join(
            "runs", f"{self.dataset}-{self.model}-{bits}-{'sgt' if self.sgt else 'plain'}"
        )

    def run_settings(self) -> dict:
        """The settings that define the run (a resumed run must use the same)."""
        settings = dataclasses.asdict(self)
        for name in ("overwrite", "verbose", "out_dir"):
            settings.pop(name)
        return settings


def config_from_flags(values: dict, explicit: set[str], preset: str | None) -> TrainConfig:
    """Builds a `TrainConfig`: preset values first, then the flags given on the command line."""
    fields = {f.name for f in dataclasses.fields(TrainConfig)}
    settings = {k: v for k, v in values.items() if k in fields}
    if preset:
        if preset not in PRESETS:
            raise RunError(f"Unknown preset {preset!r}. Known presets: {', '.join(PRESETS)}.")
        for name, value in PRESETS[preset].items():
            if name not in explicit:
                settings[name] = value
    return TrainConfig(**settings).check()


def _prepare_out_dir(config: TrainConfig) -> tuple[Path, bool]:
    """Creates or reuses the output directory; returns it and whether the run resumes."""
    out = Path(config.out_dir)
    flags_file = out / "flags.json"
    if out.exists() and not out.is_dir():
        raise RunError(f"--out_dir {out} exists and is not a directory.")
    if out.is_dir() and any(out.iterdir()):
        ours = flags_file.is_file()
        if config.overwrite:
            if not ours:
                raise RunError(
                    f"--out_dir {out} is not empty and is not a sgt_tfmot run directory; "
                    "--overwrite only replaces run directories. Choose another --out_dir."
                )
            shutil.rmtree(out)
        elif (out / "metrics.json").is_file():
            raise RunError(
                f"--out_dir {out} holds a finished run; pass --overwrite to train again "
                "there, or choose another --out_dir."
            )
        elif ours:
            previous = json.loads(flags_file.read_text())
            current = config.run_settings()
            changed = sorted(k for k in current if previous.get(k) != current[k])
            if changed:
                raise RunError(
                    f"--out_dir {out} holds an unfinished run with other settings "
                    f"({', '.join(f'{k}: {previous.get(k)!r} -> {current[k]!r}' for k in changed)}"
                    "); rerun with the same flags to resume, or pass --overwrite."
                )
            return out, True
        else:
            raise RunError(
                f"--out_dir {out} is not empty and is not a sgt_tfmot run directory. Choose "
                "another --out_dir."
            )
    out.mkdir(parents=True, exist_ok=True)
    if not os.access(out, os.W_OK):
        raise RunError(f"--out_dir {out} is not writable.")
    flags_file.write_text(json.dumps(config.run_settings(), indent=2))
    return out, False


def _strategy(name: str):
    if name == "mirrored":
        return tf.distribute.MirroredStrategy()
    if name == "multi_worker":
        if "TF_CONFIG" not in os.environ:
            raise RunError("--distribute multi_worker needs the cluster in $TF_CONFIG.")
        return tf.distribute.MultiWorkerMirroredStrategy()
    return tf.distribute.get_strategy()


def alphas(model: keras.Model) -> dict[str, float]:
    """Layer name -> current α of every PACT quantizer in `model`."""
    return {
        w.name.split("/")[0]: float(w.numpy())
        for w in model.weights
        if w.name.split("/")[-1].startswith("output_alpha")
    }


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
        self.json_path.write_text(json.dumps(self.history, indent=1))
        plot_alphas(self.history, self.png_path, self.title)


def plot_alphas(history: list[dict], path: Path, title: str) -> None:
    """The paper's Figures 1 and 2: α of each PACT layer against the epoch."""
    import matplotlib
    import matplotlib.ticker

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    epochs = [h["epoch"] for h in history]
    names = list(history[-1]["alpha"])
    figure, axis = plt.subplots(figsize=(7, 4.5))
    colors = plt.cm.viridis([i / max(len(names) - 1, 1) for i in range(len(names))])
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
    figure.savefig(path, dpi=120)
    plt.close(figure)


class _WallClock(keras.callbacks.Callback):
    """Accumulates training wall time across resumed sessions in `OUT/wall_time.json`."""

    def __init__(self, out: Path):
        super().__init__()
        self.path = out / "wall_time.json"
        self.previous = json.loads(self.path.read_text())["seconds"] if self.path.exists() else 0
        self.start = time.monotonic()

    def seconds(self) -> float:
        return self.previous + time.monotonic() - self.start

    def on_epoch_end(self, epoch, logs=None):
        self.path.write_text(json.dumps({"seconds": self.seconds()}))


def build_model(config: TrainConfig, image_shape, num_classes) -> keras.Model:
    """The float model, quantized with PACT unless `config.float`."""
    model = model_zoo.build(
        config.model, image_shape, num_classes, weight_decay=config.weight_decay
    )
    if config.float:
        return model
    return quantize.quantize_model(
        model,
        weight_bits=config.weight_bits,
        activation_bits=config.activation_bits,
        first_last_bits=config.first_last_bits,
        alpha_init=config.alpha_init,
        alpha_l2=config.alpha_l2,
    )


def train(config: TrainConfig, extra_callbacks=()) -> dict:
    """Trains, evaluates and writes the run directory; returns the final metrics.

    Args:
      config: The run's settings (`TrainConfig.check()` is called).
      extra_callbacks: More Keras callbacks for `fit` (tests use one to interrupt a run).

    Raises:
      RunError: on bad settings or an unusable output directory; the loader's `DataError`
        on missing or malformed data.
    """
    config.check()
    if config.out_dir is None:
        config.out_dir = config.default_out_dir()
    info = datasets.info(config.dataset)
    train_x, _ = datasets.load_arrays(config.dataset, "train", config.data_dir)  # validates
    datasets.load_arrays(config.dataset, "test", config.data_dir)
    out, resumed = _prepare_out_dir(config)
    keras.utils.set_random_seed(config.seed)
    keras.mixed_precision.set_global_policy(
        "mixed_bfloat16" if config.mixed_precision else "float32"
    )
    try:
        strategy = _strategy(config.distribute)
        steps_per_epoch = math.ceil(len(train_x) / config.batch_size)
        epochs = config.epochs
        if config.max_steps is not None:
            steps_per_epoch = min(steps_per_epoch, config.max_steps)
            epochs = min(epochs, math.ceil(config.max_steps / steps_per_epoch))
        train_ds = datasets.load(
            config.dataset, "train", config.data_dir, config.batch_size, seed=config.seed
        ).repeat()
        test_ds = datasets.load(config.dataset, "test", config.data_dir, config.batch_size)

        with strategy.scope():
            model = build_model(config, info.image_shape, info.num_classes)
            loss = keras.losses.SparseCategoricalCrossentropy(from_logits=True)
            optimizer = keras.optimizers.SGD(
                schedules.make(config.schedule, config.learning_rate, steps_per_epoch * epochs),
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
                    seed=config.seed,
                )
            trainer.compile(optimizer, loss, metrics=["accuracy"])
            trainer(tf.zeros([1, *info.image_shape]))  # built, so BackupAndRestore can restore

        clock = _WallClock(out)
        title = (
            f"{config.dataset} {config.model} "
            f"{'SGT + ' if config.sgt else ''}PACT W{config.weight_bits}A{config.activation_bits}"
        )
        callbacks = [
            keras.callbacks.BackupAndRestore(
                str(out / "backup"), save_freq=config.backup_every, delete_checkpoint=True
            ),
            keras.callbacks.CSVLogger(str(out / "history.csv"), append=True),
            keras.callbacks.TensorBoard(str(out / "tensorboard"), update_freq="epoch"),
            AlphaHistory(model, out, title),
            clock,
            *extra_callbacks,
        ]
        verbose = (
            config.verbose if config.verbose is not None else (1 if sys.stdout.isatty() else 2)
        )
        if resumed:
            print(f"Resuming the unfinished run in {out}", flush=True)
        trainer.fit(
            train_ds,
            epochs=epochs,
            steps_per_epoch=steps_per_epoch,
            validation_data=test_ds,
            callbacks=callbacks,
            verbose=verbose,
        )
        shutil.rmtree(out / "backup", ignore_errors=True)  # the run is complete
        # The saved model computes what its integer TFLite model will compute (docstring of
        # `align_biases`); the test accuracy below is measured after this step.
        aligned = align_biases(model) if is_quantized(model) else 0
        trainer.make_test_function(force=True)  # the input offsets may have moved
        test_loss, test_accuracy = trainer.evaluate(test_ds, verbose=0)[:2]
        save_model(model, out / RUN_MODEL_FILE, overwrite=True)
        history = _read_history(out / "history.csv")
        (out / "history.json").write_text(json.dumps(history, indent=1))
        metrics = {
            "test_accuracy": float(test_accuracy),
            "test_loss": float(test_loss),
            "epochs": epochs,
            "optimizer_steps": int(trainer.optimizer.iterations.numpy()),
            "steps_per_epoch": steps_per_epoch,
            "wall_time_seconds": round(clock.seconds(), 1),
            "alpha": alphas(model),
            "aligned_bias_layers": aligned,
            "flags": config.run_settings(),
            "model_file": RUN_MODEL_FILE,
        }
        (out / "metrics.json").write_text(json.dumps(metrics, indent=2))
        return metrics
    finally:
        keras.mixed_precision.set_global_policy("float32")


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
