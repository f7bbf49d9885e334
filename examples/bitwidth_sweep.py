"""Bit-width sweep: how removing salient features hurts PACT and SGT + PACT models at k bits.

Section VIII-C of Maleki et al. (arXiv 2412.03915) reads the accuracy-drop curve (Fig. 3)
across bit widths: the lower the bit width, the sharper the drop when the most salient
features are removed, and SGT keeps top-first removal well apart from bottom-first removal.
This example trains that grid and measures it:

    python examples/bitwidth_sweep.py --dataset mnist --data_dir ../shared/data \\
        --bits float,8,4,3,2 --epochs 5 --out_dir runs/sweep
    python examples/bitwidth_sweep.py --dataset cifar10 --data_dir ../shared/data \\
        --learning_rate 0.01 --kl_weight 0.05 --batch_size 64 --methods vanilla,smoothgrad
    python examples/bitwidth_sweep.py --dataset cifar10 --data_dir ../shared/data \\
        --bits float,8,4,2 --init_from zoo:cifar10-float --epochs 5 --batch_size 128 \\
        --learning_rate 0.02 --weight_decay 2.5e-4 --fill impute --patch_size 4 \\
        --kl_weight 0.3 --methods vanilla --protocol road,region --out_dir runs/sweep-cifar10
    python examples/bitwidth_sweep.py --bits float,2 --max_steps 1 --curve_images 32 \\
        --agreement_images 8 --methods vanilla --model mobilenet_tiny \\
        --out_dir /tmp/sweep                                               # smoke test

1. For every bit width k of `--bits` it trains ResNet-20 (or `--model`) twice with
   `sgt_tfmot.training`, PACT only (`sgt=False`) and SGT + PACT (`sgt=True`), weights and
   activations at k bits (first and last layer at 8), into OUT/<k>-pact and OUT/<k>-sgt;
   `float` trains the float model instead (OUT/float-pact, OUT/float-sgt). Everything else
   is the training library's default (`TrainConfig`) plus the flags given; SGT's masking
   (`--fill`, `--patch_size`, `--mask_fraction`, `--kl_weight`) is set on the SGT runs only,
   so the PACT-only runs stay the same whichever masking the SGT runs use. With
   `--init_from` every run fine-tunes that trained model (α calibrated from it, the default
   of `train`); `--mixed_precision auto` trains below 4 bits in float32. The PACT-only runs
   are trained first. A finished run (its metrics.json exists) is reused, an unfinished one
   resumes, so the command can be rerun after an interruption.
2. It evaluates all models together with `sgt_tfmot.explain.evaluate_models`, once per
   saliency method of `--methods` (the method ranks the pixels of the curves), under each
   removal protocol of `--protocol` (default pixel,road: the trainer's per-pixel rule and
   ROAD), on `--curve_images` test images (`--agreement_images` for concentration and the
   sanity check), stratified by class (seed 0), and writes

       OUT/table.md           one table per method and protocol (its unit and fill in the
                              heading), one row per model: bits, training, test accuracy
                              (metrics.json), AUC of MoRF, LeRF and random-order removal
                              (the protocol's measure), LeRF − MoRF, whether MoRF is below
                              random, concentration (mean share of the saliency in the top
                              10 % of the pixels), sanity ρ (mean Spearman ρ of the
                              weight-randomisation check; "FAILED" marks a failed check)
       OUT/drop_<method>.png  the first protocol's measure against % removed, one colour
                              per model, MoRF solid, random order dashed; the other
                              protocols in OUT/drop_<method>_<protocol>.png
       OUT/sweep.json         every number: the settings, the runs, each evaluation

Exit status: 0 done; 2 bad input (one line "bitwidth_sweep: error: ..." on stderr, nothing
trained or written), e.g. `--bits 9`: bits are `float` or integers 2..8.
"""

from __future__ import annotations

import dataclasses
import json
import sys
from collections.abc import Sequence
from pathlib import Path

from absl import flags

from sgt_tfmot import (
    _cli,  # first: starts TensorFlow quietly
    data,
    masking,
    precision,
    saving,
    training as trainer,
)
from sgt_tfmot._checks import InputError
from sgt_tfmot.explain import attributions, protocols
from sgt_tfmot.explain.evaluate import Evaluation, EvaluationOptions, evaluate_models
from sgt_tfmot.explain.figures import drop_axis, drop_legends, new_figure, png
from sgt_tfmot.explain.measures import DEFAULT_TOP_FRACTION
from sgt_tfmot.explain.report import ORDER_NAMES, protocol_title, top_below_random
from sgt_tfmot.keras import keras
from sgt_tfmot.quantizers import MAX_BITS, MIN_BITS

PROGRAM = "bitwidth_sweep"
FLOAT = "float"
TRAININGS = {"pact": False, "sgt": True}  # run-name suffix -> TrainConfig.sgt
FILL = "mean"  # the fill of the per-pixel protocol's removed pixels

_d = trainer.TrainConfig()
FLAGS = flags.FlagValues()
_IN = {"flag_values": FLAGS}
flags.DEFINE_string("dataset", "mnist_subset", "Any dataset sgt_tfmot.data opens.", **_IN)
flags.DEFINE_string("data_dir", None, "Folder with DATASET.npz.", **_IN)
flags.DEFINE_list(
    "bits", [FLOAT, "8", "4", "3", "2"],
    f"Bit widths of weights and activations: {FLOAT} or integers {MIN_BITS}..{MAX_BITS}.", **_IN,
)  # fmt: skip
flags.DEFINE_integer("epochs", _d.epochs, "Epochs of every run.", lower_bound=1, **_IN)
flags.DEFINE_integer("batch_size", _d.batch_size, "Batch size.", lower_bound=1, **_IN)
flags.DEFINE_float("learning_rate", _d.learning_rate, "Peak learning rate (SGD).", **_IN)
flags.DEFINE_float("weight_decay", _d.weight_decay, "L2 factor on kernels.", lower_bound=0, **_IN)
flags.DEFINE_string(
    "init_from", None, "Trained model every run starts from (train --init_from), e.g. "
    "zoo:cifar10-float.", **_IN,
)  # fmt: skip
flags.DEFINE_float("kl_weight", _d.kl_weight, "λ of SGT's KL term.", lower_bound=0, **_IN)
flags.DEFINE_enum("fill", _d.fill, list(masking.FILLS), "Fill of SGT's masked pixels.", **_IN)
flags.DEFINE_integer("patch_size", _d.patch_size, "SGT masks p x p patches (1: pixels).",
                     lower_bound=1, **_IN)  # fmt: skip
flags.DEFINE_float("mask_fraction", _d.mask_fraction, "Share SGT masks.", **_IN)
flags.DEFINE_integer("max_steps", None, "Cap on the steps of every run.", lower_bound=1, **_IN)
flags.DEFINE_string("model", _d.model, "Network of every run (--model of the training).", **_IN)
flags.DEFINE_enum(
    "mixed_precision", _d.mixed_precision, list(precision.CHOICES), "Compute precision.", **_IN
)
flags.DEFINE_list("methods", ["vanilla", "smoothgrad"], "", **_IN)
_cli.live_help(FLAGS, "methods", lambda: (
    "Saliency methods; one evaluation (and figure) each, its maps rank the curves: any of "
    f"{', '.join(attributions.names())}."
))  # fmt: skip
flags.DEFINE_list("protocol", ["pixel", "road"], "", **_IN)
_cli.live_help(FLAGS, "protocol", lambda: (
    f"Removal protocols of the curves: any of {', '.join(protocols.names())}."
))  # fmt: skip
flags.DEFINE_integer("curve_images", 1000, "Test images of the curves.", lower_bound=1, **_IN)
flags.DEFINE_integer(
    "agreement_images", 64, "Test images of concentration and the sanity check.",
    lower_bound=1, **_IN,
)  # fmt: skip
flags.DEFINE_string("out_dir", "runs/bitwidth_sweep", "Where the runs and results go.", **_IN)
flags.DEFINE_integer(
    "progress", 2, "Keras progress: 0 none, 1 bar, 2 a line per epoch.",
    lower_bound=0, upper_bound=2, **_IN,
)  # fmt: skip
flags.DEFINE_bool("verbose", False, "Show TensorFlow's own log lines too.", **_IN)
flags.DEFINE_bool("help", False, "Show this help.", short_name="h", **_IN)


# ----------------------------------------------------------------------------- settings
def parse_bits(values: Sequence[str]) -> tuple[str | int, ...]:
    """The bit widths of `--bits`: "float" or integers in [MIN_BITS, MAX_BITS], each once.

    Raises:
      InputError: on an empty list, another word, a width outside [2, 8] or a repeat.
    """
    text = ",".join(values)
    requirement = (
        f"must list {FLOAT} and/or integer bit widths in [{MIN_BITS}, {MAX_BITS}], each once, "
        "e.g. float,8,4,3,2"
    )
    widths = []
    for value in (v.strip() for v in values):
        if value == FLOAT:
            widths.append(FLOAT)
            continue
        try:
            number = int(value)
        except ValueError:
            raise InputError(requirement, "bits", text) from None
        if not MIN_BITS <= number <= MAX_BITS:
            raise InputError(requirement, "bits", text)
        widths.append(number)
    if not widths or len(set(widths)) != len(widths):
        raise InputError(requirement, "bits", text)
    return tuple(widths)


@dataclasses.dataclass(frozen=True)
class SweepSettings:
    """What the sweep trains and measures; the fields mirror the flags.

    Attributes:
      dataset, data_dir: The data (see `sgt_tfmot.data`).
      bits: Bit widths, "float" or integers in [2, 8] (`parse_bits`).
      out_dir: Folder of the runs and results.
      model, epochs, batch_size, learning_rate, weight_decay, init_from, max_steps,
        mixed_precision, progress: Settings of every training run (`TrainConfig`).
      kl_weight, fill, patch_size, mask_fraction: SGT's, set on the SGT runs only.
      methods: Saliency methods, one evaluation each.
      protocols: Removal protocols of the curves (`sgt_tfmot.explain.protocols`).
      curve_images, agreement_images: Test images of the curves / of concentration and the
        sanity check.
    """

    dataset: str = "mnist_subset"
    data_dir: str | None = None
    bits: tuple[str | int, ...] = (FLOAT, 8, 4, 3, 2)
    out_dir: str = "runs/bitwidth_sweep"
    model: str = _d.model
    epochs: int = _d.epochs
    batch_size: int = _d.batch_size
    learning_rate: float = _d.learning_rate
    weight_decay: float = _d.weight_decay
    init_from: str | None = None
    kl_weight: float = _d.kl_weight
    fill: str = _d.fill
    patch_size: int = _d.patch_size
    mask_fraction: float = _d.mask_fraction
    max_steps: int | None = None
    mixed_precision: str = _d.mixed_precision
    progress: int = 2
    methods: tuple[str, ...] = ("vanilla", "smoothgrad")
    protocols: tuple[str, ...] = ("pixel", "road")
    curve_images: int = 1000
    agreement_images: int = 64

    def run_name(self, bits: str | int, training: str) -> str:
        return f"{bits}-{training}"

    def train_config(self, bits: str | int, training: str) -> trainer.TrainConfig:
        """The checked `TrainConfig` of one run (k-bit weights and activations, or float)."""
        quantized = {} if bits == FLOAT else {"weight_bits": bits, "activation_bits": bits}
        masked = {} if not TRAININGS[training] else {
            "kl_weight": self.kl_weight, "fill": self.fill, "patch_size": self.patch_size,
            "mask_fraction": self.mask_fraction,
        }  # fmt: skip
        return trainer.TrainConfig(
            dataset=self.dataset, data_dir=self.data_dir, model=self.model, float=bits == FLOAT,
            sgt=TRAININGS[training], epochs=self.epochs, batch_size=self.batch_size,
            learning_rate=self.learning_rate, weight_decay=self.weight_decay,
            init_from=self.init_from, max_steps=self.max_steps,
            mixed_precision=self.mixed_precision, progress=self.progress,
            out_dir=str(Path(self.out_dir) / self.run_name(bits, training)),
            **quantized, **masked,
        ).check()  # fmt: skip

    def evaluation_options(self, method: str) -> EvaluationOptions:
        """The checked settings of the evaluation whose maps, and curve ranking, are `method`'s."""
        return EvaluationOptions(
            methods=(method,), num_images=1, curve_images=self.curve_images,
            agreement_images=self.agreement_images, curve_method=method, fill=FILL,
            protocols=self.protocols,
        )  # fmt: skip

    def check(self) -> SweepSettings:
        """Checks every setting before any slow work (opens the dataset too).

        Raises:
          InputError (a ValueError): naming the first bad setting, or a finished run in
            OUT whose settings are not these (before any run trains).
        """
        parse_bits([str(b) for b in self.bits])
        EvaluationOptions(methods=self.methods)  # each a known method, each once
        for method in self.methods:
            self.evaluation_options(method)
        info = data.info(self.dataset, self.data_dir)
        masking.check_patch_size(self.patch_size, info.image_shape[:-1])
        for bits in self.bits:
            for training in TRAININGS:
                finished_metrics(self.train_config(bits, training))  # a finished run fits
        return self


# ----------------------------------------------------------------------------- training
@dataclasses.dataclass(frozen=True)
class SweepRun:
    """One trained model of the sweep.

    Attributes:
      name: "<bits>-<pact|sgt>", also its directory under the sweep's folder.
      bits: "float" or the bit width of weights and activations.
      training: "pact" (PACT only, or plain float training) or "sgt" (SGT + PACT / SGT).
      run_dir: The training run's directory.
      metrics: Its metrics.json.
      reused: Finished before this sweep started.
    """

    name: str
    bits: str | int
    training: str
    run_dir: str
    metrics: dict
    reused: bool

    @property
    def test_accuracy(self) -> float:
        """Accuracy on the whole test split, a fraction."""
        return float(self.metrics["test_accuracy"])

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


def finished_metrics(config: trainer.TrainConfig) -> dict | None:
    """metrics.json of a finished run of these settings; None while the run is unfinished.

    Raises:
      InputError: when the directory holds a finished run with other settings (its table
        row would not be the run asked for).
    """
    path = Path(config.out_dir) / "metrics.json"
    if not path.is_file():
        return None
    metrics = json.loads(path.read_text())
    detail = config.changes_from(metrics.get("flags", {}))
    if detail:
        raise InputError(
            f"{config.out_dir} holds a finished run with other settings ({detail}); rerun with "
            "its settings, choose another --out_dir, or remove that run."
        )
    return metrics


def train_runs(settings: SweepSettings) -> list[SweepRun]:
    """Trains (or reuses, or resumes) the PACT-only and SGT + PACT run of every bit width:
    the PACT-only runs first; returned bit width by bit width, PACT only before SGT."""
    runs = {}
    for training in TRAININGS:
        for bits in settings.bits:
            config = settings.train_config(bits, training)
            metrics = finished_metrics(config)
            reused = metrics is not None
            if reused:
                print(f"{config.out_dir}: finished earlier, reusing", flush=True)
            else:
                cap = f", at most {config.max_steps} steps" if config.max_steps else ""
                print(f"{config.out_dir}: training ({config.epochs} epochs{cap})", flush=True)
                metrics = trainer.train(config)
                keras.backend.clear_session()
            name = settings.run_name(bits, training)
            runs[bits, training] = SweepRun(name, bits, training, config.out_dir, metrics, reused)
    return [runs[bits, training] for bits in settings.bits for training in TRAININGS]


# ----------------------------------------------------------------------------- evaluation
@dataclasses.dataclass(frozen=True)
class SweepRow:
    """One row of table.md: one model under one saliency method and removal protocol (areas
    over 0..0.9 removed, of the protocol's measure: accuracy, or true-class probability).

    Attributes:
      name, bits, training: The run (see `SweepRun`).
      protocol, fill: The removal protocol and its fill.
      test_accuracy: On the whole test split (metrics.json), a fraction.
      curve_accuracy: On the curve images, a fraction.
      auc_top, auc_bottom, auc_random: Areas under the accuracy-drop curves.
      separation: auc_bottom − auc_top (large: the model relies on what its saliency ranks
        first).
      concentration: Mean share of the saliency in the top 10 % of the pixels (None: every
        map is all zero).
      sanity_rho: Mean Spearman ρ between the maps of the model and of its randomised copy
        (None: nowhere defined).
      zero_saliency_images: Curve images whose saliency map is all zero.
      top_below_random: Whether the MoRF area is below the random-order one.
      sanity_failed: The method failed its sanity check on this model (its rows say nothing
        about the model).
    """

    name: str
    bits: str | int
    training: str
    protocol: str
    fill: str
    test_accuracy: float
    curve_accuracy: float
    auc_top: float
    auc_bottom: float
    auc_random: float
    separation: float
    concentration: float | None
    sanity_rho: float | None
    zero_saliency_images: int
    top_below_random: bool
    sanity_failed: bool


def table_rows(runs: Sequence[SweepRun], evaluation: Evaluation, method: str) -> list[SweepRow]:
    """The rows of one evaluation, protocol by protocol, each in the order of `runs`."""
    measured = {model.name: model for model in evaluation.models}
    rows = []
    for protocol, run in ((p, r) for p in evaluation.settings["protocols"] for r in runs):
        model = measured[run.name]
        curves = model.protocols[protocol]
        areas = curves.headline_areas()
        rows.append(
            SweepRow(
                name=run.name,
                bits=run.bits,
                training=run.training,
                protocol=protocol,
                fill=curves.fill,
                test_accuracy=run.test_accuracy,
                curve_accuracy=model.accuracy,
                auc_top=areas["top"],
                auc_bottom=areas["bottom"],
                auc_random=areas["random"],
                separation=areas["bottom"] - areas["top"],
                concentration=model.concentration[method]["mean"],
                sanity_rho=model.sanity[method].similarity_mean,
                zero_saliency_images=curves.zero_saliency_images,
                top_below_random=bool(top_below_random(curves)),
                sanity_failed=model.sanity_failed(method),
            )  # fmt: skip
        )
    return rows


def evaluate_runs(settings: SweepSettings, runs: Sequence[SweepRun]) -> dict[str, Evaluation]:
    """Method -> the evaluation of every run's model on the same test images (the curve and
    agreement images: the first of the split's stratified order, `evaluate_models`)."""
    models = {run.name: saving.float32_model(saving.load_model(run.run_dir)) for run in runs}
    info = data.info(settings.dataset, settings.data_dir)
    x_test, y_test = data.load_arrays(settings.dataset, "test", settings.data_dir)
    evaluations = {}
    for method in settings.methods:
        evaluations[method] = evaluate_models(
            models, x_test.astype("float32"), y_test,
            settings.evaluation_options(method), progress=_cli.progress(PROGRAM),
            class_names=info.class_names,
        )  # fmt: skip
    return evaluations


@dataclasses.dataclass(frozen=True)
class Sweep:
    """The outcome: the runs, and per saliency method its evaluation and table rows."""

    settings: SweepSettings
    runs: list[SweepRun]
    evaluations: dict[str, Evaluation]
    rows: dict[str, list[SweepRow]]

    def to_dict(self) -> dict:
        """sweep.json: {"settings", "runs", "methods": {method: {"rows", "evaluation"}}}."""
        return {
            "settings": dataclasses.asdict(self.settings),
            "runs": [run.to_dict() for run in self.runs],
            "methods": {
                method: {
                    "rows": [dataclasses.asdict(row) for row in self.rows[method]],
                    "evaluation": evaluation.to_dict(),
                }
                for method, evaluation in self.evaluations.items()
            },
        }


def run_sweep(settings: SweepSettings) -> Sweep:
    """Checks the settings, trains or reuses every run, evaluates; writes nothing itself."""
    settings.check()
    runs = train_runs(settings)
    evaluations = evaluate_runs(settings, runs)
    rows = {method: table_rows(runs, ev, method) for method, ev in evaluations.items()}
    return Sweep(settings, runs, evaluations, rows)


# ----------------------------------------------------------------------------- outputs
def _title(method: str) -> str:
    registered = attributions.REGISTRY.get(method)
    return registered.title if registered is not None and registered.title else method


def _training_name(bits: str | int, training: str) -> str:
    if bits == FLOAT:
        return "SGT" if training == "sgt" else "plain"
    return "SGT + PACT" if training == "sgt" else "PACT only"


def _number(value: float | None, digits: int = 3) -> str:
    return "n/a" if value is None else f"{value:.{digits}f}"


def markdown_table(sweep: Sweep) -> str:
    """table.md: one table per saliency method, one row per model."""
    settings = sweep.settings
    first = next(iter(sweep.evaluations.values())).settings
    lines = [
        "# Bit-width sweep: PACT only vs SGT + PACT",
        "",
        f"- dataset: {settings.dataset}; test accuracy on the whole test split (metrics.json)",
        f"- curves: {first['curve_images_chosen']}, 0..{100 * first['fractions'][-1]:g}"
        f" % of the units removed (ranked by the method's saliency of the true class) under "
        f"each protocol (its unit and fill in the table's heading); concentration and "
        f"sanity check: {first['agreement_images_chosen']}",
        "- AUC: area under the protocol's measure (0..1) against the share removed; MoRF = "
        "most relevant removed first, LeRF = least relevant first. A model that relies on "
        "what its saliency ranks first has a small MoRF AUC, below random order, and a "
        "large LeRF − MoRF.",
        f"- concentration: mean share of the saliency in the top {100 * DEFAULT_TOP_FRACTION:g} "
        "% of the pixels; sanity ρ: mean Spearman ρ between the maps of the model and of a "
        "copy with re-initialised weights (low: the maps depend on the weights)",
        "- runs: " + ", ".join(f"{run.name} ({'reused' if run.reused else 'trained'})"
                               for run in sweep.runs),
    ]  # fmt: skip
    for method, rows in sweep.rows.items():
        evaluation = sweep.evaluations[method]
        for protocol in evaluation.settings["protocols"]:
            title = protocol_title(evaluation.models[0].protocols[protocol])
            lines += [
                "",
                f"## {_title(method)}: {title}",
                "",
                "| model | bits | training | test accuracy (%) | AUC MoRF | AUC LeRF | AUC random "
                "| LeRF − MoRF | MoRF below random | concentration | sanity ρ |",
                "|---|---|---|---:|---:|---:|---:|---:|---|---:|---:|",
            ]
            for row in (r for r in rows if r.protocol == protocol):
                sanity = _number(row.sanity_rho) + (" FAILED" if row.sanity_failed else "")
                lines.append(
                    f"| {row.name} | {row.bits} | {_training_name(row.bits, row.training)} | "
                    f"{100 * row.test_accuracy:.2f} | {row.auc_top:.3f} | {row.auc_bottom:.3f} | "
                    f"{row.auc_random:.3f} | {row.separation:.3f} | "
                    f"{'yes' if row.top_below_random else 'no'} | {_number(row.concentration)} | "
                    f"{sanity} |"
                )
    return "\n".join(lines) + "\n"


def drop_figure(evaluation: Evaluation, method: str, protocol: str | None = None) -> bytes:
    """PNG in the manner of Fig. 3: the protocol's measure (%) against units removed (%).

    One colour per model; solid: most salient removed first, dashed: random order; the
    first protocol when `protocol` is None.
    """
    import matplotlib

    figure = new_figure(8.0, 5.0)
    axis = figure.subplots()
    palette = matplotlib.colormaps["tab10" if len(evaluation.models) <= 10 else "tab20"]
    protocol = protocol or next(iter(evaluation.settings["protocols"]))
    for index, model in enumerate(evaluation.models):
        color = palette(index % palette.N)
        curves = model.protocols[protocol]
        series = curves.probabilities if curves.measure == "probability" else curves.curves
        x = [100 * f for f in curves.fractions]
        axis.plot(x, [100 * a for a in series["top"]], "-", color=color,
                  marker=".", label=model.name)  # fmt: skip
        axis.plot(x, [100 * a for a in series["random"]], "--", color=color,
                  alpha=0.7)  # fmt: skip
    settings = evaluation.settings
    first = evaluation.models[0].protocols[protocol]
    drop_axis(
        axis,
        f"By bit width: {protocol_title(first)}\n{_title(method)} ranking, "
        f"{settings['curve_images']} images",
        ylabel="true-class probability (%)" if first.measure == "probability" else "accuracy (%)",
    )
    drop_legends(
        axis,
        {ORDER_NAMES["top"]: "-", ORDER_NAMES["random"]: "--"},
        loc="upper left",
        bbox_to_anchor=(1.01, 1.0),
    )
    figure.tight_layout()
    return png(figure)


def write_outputs(sweep: Sweep) -> list[Path]:
    """Writes table.md, drop_<method>.png and sweep.json into the sweep's folder."""
    out = Path(sweep.settings.out_dir)
    files = {out / "table.md": markdown_table(sweep).encode()}
    for method, evaluation in sweep.evaluations.items():
        for index, protocol in enumerate(evaluation.settings["protocols"]):
            name = f"drop_{method}.png" if index == 0 else f"drop_{method}_{protocol}.png"
            files[out / name] = drop_figure(evaluation, method, protocol)
    files[out / "sweep.json"] = (json.dumps(sweep.to_dict(), indent=2) + "\n").encode()
    for path, content in files.items():
        path.write_bytes(content)
    return list(files)


# ----------------------------------------------------------------------------- command line
def _sweep(positional: list[str]) -> int:
    if positional:
        raise InputError(f"unexpected arguments: {' '.join(positional)}")
    settings = SweepSettings(
        dataset=FLAGS.dataset, data_dir=FLAGS.data_dir, bits=parse_bits(FLAGS.bits),
        out_dir=FLAGS.out_dir, model=FLAGS.model, epochs=FLAGS.epochs,
        batch_size=FLAGS.batch_size,
        learning_rate=FLAGS.learning_rate, weight_decay=FLAGS.weight_decay,
        init_from=FLAGS.init_from, kl_weight=FLAGS.kl_weight, fill=FLAGS.fill,
        patch_size=FLAGS.patch_size, mask_fraction=FLAGS.mask_fraction,
        max_steps=FLAGS.max_steps, mixed_precision=FLAGS.mixed_precision,
        progress=FLAGS.progress, methods=tuple(FLAGS.methods),
        protocols=protocols.parse(FLAGS.protocol, "protocol"),
        curve_images=FLAGS.curve_images, agreement_images=FLAGS.agreement_images,
    )  # fmt: skip
    sweep = run_sweep(settings)
    files = write_outputs(sweep)
    print("\n" + markdown_table(sweep) + "\nwritten: " + ", ".join(map(str, files)))
    return _cli.EXIT_OK


def main(argv: list[str]) -> int:
    """Parses the command line and runs the sweep; returns the exit status."""
    return _cli.run_main(argv, PROGRAM, FLAGS, __name__, _sweep)


if __name__ == "__main__":
    sys.exit(main(sys.argv))
