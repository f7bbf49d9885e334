"""The settings of a training run (`TrainConfig`, the paper's presets) and what follows from
them before anything is written: the step plan (`Plan`) and the settled run (`Setup`)."""

from __future__ import annotations

import dataclasses
import math
import os
from pathlib import Path

from sgt_tfmot import _checks, data as datasets, masking, models as model_zoo, precision, schedules
from sgt_tfmot._checks import InputError
from sgt_tfmot.data.base import Arrays
from sgt_tfmot.keras import tf
from sgt_tfmot.quantizers import MAX_BITS, MIN_BITS, WEIGHT_RANGES

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
    alpha_init: float | str | None = None  # calibrate from trained weights, else 10
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
        trained = self.init_from is not None or model_zoo.is_model_file(self.model)
        if self.alpha_init is None:  # the default: from the trained weights when there are
            self.alpha_init = "calibrate" if trained else 10.0
        if self.alpha_init != "calibrate":
            _checks.check_number(self.alpha_init, "alpha_init", 0.0, low_open=True)
        elif not trained:
            raise InputError(
                "--alpha_init calibrate sets each α from a trained float model's activations: "
                "pass that model with --init_from RUN_DIR_OR_FILE or --model FILE (or a "
                "number, e.g. 10)."
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
        setting an older version did not write counts as its default). SGT's masking
        settings (`SGT_SETTINGS`) do not count when neither run is an SGT run: they change
        nothing in plain training."""
        current, defaults = self.run_settings(), TrainConfig().run_settings()
        previous = {k: _absolute(v) if k in _PATH_FIELDS else v for k, v in previous.items()}
        plain = not current["sgt"] and not previous.get("sgt", defaults["sgt"])
        ignored = SGT_SETTINGS if plain else ()
        changed = sorted(
            k for k in current if k not in ignored and previous.get(k, defaults[k]) != current[k]
        )
        return ", ".join(f"{k}: {previous.get(k)!r} -> {current[k]!r}" for k in changed)


_PATH_FIELDS = ("data_dir", "init_from", "dataset", "model")
SGT_SETTINGS = ("mask_fraction", "kl_weight", "fill", "patch_size", "blur_sigma", "impute_noise")


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


def data_options(config: TrainConfig) -> dict:
    """The options of `sgt_tfmot.data.open_dataset` a run's settings give."""
    return {
        "image_size": config.image_size,
        "color_mode": config.color_mode,
        "validation_split": config.validation_split,
    }


@dataclasses.dataclass(frozen=True)
class Plan:
    """The steps of a run: `epochs` of `steps_per_epoch`, `total_steps` in all (--max_steps)."""

    steps_per_epoch: int
    epochs: int
    total_steps: int

    @classmethod
    def of(cls, config: TrainConfig, train_size: int) -> Plan:
        steps_per_epoch = math.ceil(train_size / config.batch_size)
        epochs = config.epochs
        if config.max_steps is not None:
            steps_per_epoch = min(steps_per_epoch, config.max_steps)
            epochs = min(epochs, math.ceil(config.max_steps / steps_per_epoch))
        total = steps_per_epoch * epochs
        if config.max_steps is not None:
            total = min(total, config.max_steps)
        return cls(steps_per_epoch, epochs, total)

    def start_step(self, position: tuple[int, int] | None) -> int:
        """The global step at `position` (epoch, step in epoch); 0 for None."""
        if position is None:
            return 0
        epoch, step = position
        return min(epoch * self.steps_per_epoch + step, self.total_steps)


@dataclasses.dataclass(frozen=True)
class Setup:
    """What a run settled before it writes (the same on every worker)."""

    config: TrainConfig
    info: datasets.DatasetInfo
    arrays: Arrays
    augment: tuple[str, ...]
    precision: tuple[str, str]  # (Keras policy, why)
    strategy: tf.distribute.Strategy
    plan: Plan
    position: tuple[int, int] | None  # (epoch, step in epoch) of the backup resumed from

    @property
    def start_step(self) -> int:
        return self.plan.start_step(self.position)
