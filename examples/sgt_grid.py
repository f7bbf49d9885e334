"""A grid of SGT masking settings, each fine-tuned and measured with removal protocols.

Which SGT masking makes a photo model's saliency more faithful? Every row of the grid is one
short QAT fine-tune (`python -m sgt_tfmot.train`) from the same trained model, with its own
fill, unit (pixels or p x p patches), mask fraction and λ, or PACT only; each trained model
is then measured with `python -m sgt_tfmot.explain` (ROAD and region perturbation by default,
on the first class-stratified test images). The table compares them:

    python examples/sgt_grid.py --data_dir ../shared/data --init_from zoo:cifar10-float \\
        --epochs 1 --rows pact,random:1:0.5:0.05,blur:4:0.5:0.05,impute:4:0.5:0.05 \\
        --out_dir runs/sgt-grid
    python examples/sgt_grid.py --out_dir runs/sgt-grid --table_only   # the table only
    python examples/sgt_grid.py --dataset mnist_subset --init_from none --alpha_init 10 \\
        --rows pact,impute:4:0.5:0.1 --max_steps 1 --curve_images 16 \\
        --out_dir /tmp/grid                                            # smoke test

A row is `pact` (PACT only: `--nosgt`), `init` (the --init_from model itself, measured but
not trained) or `FILL:PATCH:FRACTION:LAMBDA`, e.g. `impute:4:0.5:0.05` (SGT + PACT with
`--fill impute --patch_size 4 --mask_fraction 0.5 --kl_weight 0.05`). Row NAME (`pact`,
`impute-p4-f0.5-l0.05`) is trained into OUT/NAME and measured into OUT/NAME/explain.

Rows run one after the other, each in its own processes (the memory of one row is given
back before the next). Every row resumes: a finished training or measurement is reused,
an unfinished training resumes from its last backup (the train CLI's own resume), so the
same command is rerun after an interruption or a killed process. The settings shared by all
rows (`--epochs`, `--learning_rate`, ...) must stay the same for one OUT: the train CLI
refuses to resume a run with other settings; use another --out_dir for another schedule.

After the rows (and with --table_only, without running anything) the table is rebuilt from
every row directory found in OUT, whichever command trained it:

    OUT/table.md   one row per run directory: fill, unit, fraction, λ, test accuracy
                   (metrics.json), masked accuracy of the last epoch (SGT's f(x̃) on the
                   training batches), and per protocol the AUC of MoRF, LeRF and random
                   order, LeRF − MoRF and random − MoRF (both large when the saliency
                   ranks what the model relies on), training wall time
    OUT/grid.json  the same numbers, and each row's commands

Exit status: 0 done; 2 bad input (one line "sgt_grid: error: ..." on stderr), e.g. a row
that does not parse, or a training or measurement that refused its settings.
"""

from __future__ import annotations

import csv
import dataclasses
import json
import shlex
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path

from absl import flags

PROGRAM = "sgt_grid"
PACT, INIT = "pact", "init"
EXPLAIN_DIR = "explain"  # a row's measurement, inside its run directory
EXIT_OK, EXIT_BAD_INPUT = 0, 2

FLAGS = flags.FlagValues()
_IN = {"flag_values": FLAGS}
flags.DEFINE_string("dataset", "cifar10", "Dataset of training and measurement.", **_IN)
flags.DEFINE_string("data_dir", None, "Folder with DATASET.npz.", **_IN)
flags.DEFINE_string(
    "init_from", "zoo:cifar10-float",
    "The trained model every row starts from (train --init_from), or none.", **_IN,
)  # fmt: skip
flags.DEFINE_string("alpha_init", "calibrate", "train --alpha_init.", **_IN)
flags.DEFINE_integer("weight_bits", 4, "Bits of the kernels.", **_IN)
flags.DEFINE_integer("activation_bits", 4, "Bits of PACT.", **_IN)
flags.DEFINE_string("model", "resnet20", "train --model.", **_IN)
flags.DEFINE_integer("epochs", 1, "Epochs of every row.", **_IN)
flags.DEFINE_integer("batch_size", 128, "Batch size.", **_IN)
flags.DEFINE_float("learning_rate", 0.02, "Peak learning rate.", **_IN)
flags.DEFINE_float("weight_decay", 2.5e-4, "L2 factor on kernels.", **_IN)
flags.DEFINE_float("blur_sigma", 2.0, "σ of the blur fill, pixels.", **_IN)
flags.DEFINE_float("impute_noise", 0.01, "Noise of the impute fill.", **_IN)
flags.DEFINE_string("mixed_precision", "auto", "train --mixed_precision.", **_IN)
flags.DEFINE_integer("max_steps", None, "Cap on the steps of every row (smoke tests).", **_IN)
flags.DEFINE_list(
    "rows", [PACT, "random:1:0.5:0.05", "blur:1:0.5:0.05", "impute:1:0.5:0.05",
             "random:4:0.5:0.05", "blur:4:0.5:0.05", "impute:4:0.5:0.05"],
    "Rows, in order: pact, init, or FILL:PATCH:FRACTION:LAMBDA.", **_IN,
)  # fmt: skip
flags.DEFINE_list("protocol", ["road", "region"], "explain --protocol.", **_IN)
flags.DEFINE_integer("curve_images", 1000, "explain --curve_images.", **_IN)
flags.DEFINE_integer("agreement_images", 16, "explain --agreement_images.", **_IN)
flags.DEFINE_integer("region_patch", 4, "explain --patch (the region protocol's).", **_IN)
flags.DEFINE_string("out_dir", "runs/sgt-grid", "Folder of the rows and the table.", **_IN)
flags.DEFINE_bool("table_only", False, "Rebuild the table from OUT; run nothing.", **_IN)
flags.DEFINE_bool("help", False, "Show this help.", short_name="h", **_IN)


class GridError(ValueError):
    """Bad input to the grid; the message is one line."""


# ----------------------------------------------------------------------------- rows
@dataclasses.dataclass(frozen=True)
class Row:
    """One row: PACT only, the initial model, or SGT + PACT with one masking setting."""

    kind: str  # "pact", "init" or "sgt"
    fill: str | None = None
    patch: int | None = None
    fraction: float | None = None
    kl_weight: float | None = None

    @property
    def name(self) -> str:
        if self.kind != "sgt":
            return self.kind
        return f"{self.fill}-p{self.patch}-f{self.fraction:g}-l{self.kl_weight:g}"

    def train_flags(self) -> list[str]:
        if self.kind == PACT:
            return ["--nosgt"]
        return [
            "--kl_weight", f"{self.kl_weight:g}", "--mask_fraction", f"{self.fraction:g}",
            "--fill", self.fill, "--patch_size", str(self.patch),
        ]  # fmt: skip


def parse_row(text: str) -> Row:
    """`pact`, `init` or `FILL:PATCH:FRACTION:LAMBDA` (the fill and values are checked by
    the train CLI, which names what it accepts)."""
    text = text.strip()
    if text in (PACT, INIT):
        return Row(text)
    parts = text.split(":")
    message = (
        f"--rows: {text!r} is not a row: pact, init, or FILL:PATCH:FRACTION:LAMBDA "
        "(e.g. impute:4:0.5:0.05)"
    )
    if len(parts) != 4 or not parts[0]:
        raise GridError(message)
    try:
        return Row("sgt", parts[0], int(parts[1]), float(parts[2]), float(parts[3]))
    except ValueError:
        raise GridError(message) from None


def parse_rows(values: Sequence[str]) -> list[Row]:
    rows = [parse_row(value) for value in values]
    names = [row.name for row in rows]
    if not rows or len(set(names)) != len(names):
        raise GridError(f"--rows must name at least one row, each once. Received: {names}")
    return rows


# ----------------------------------------------------------------------------- commands
@dataclasses.dataclass(frozen=True)
class Grid:
    """The settings every row shares; the fields mirror the flags."""

    out_dir: str
    dataset: str = "cifar10"
    data_dir: str | None = None
    init_from: str | None = "zoo:cifar10-float"
    alpha_init: str = "calibrate"
    weight_bits: int = 4
    activation_bits: int = 4
    model: str = "resnet20"
    epochs: int = 1
    batch_size: int = 128
    learning_rate: float = 0.02
    weight_decay: float = 2.5e-4
    blur_sigma: float = 2.0
    impute_noise: float = 0.01
    mixed_precision: str = "auto"
    max_steps: int | None = None
    protocol: tuple[str, ...] = ("road", "region")
    curve_images: int = 1000
    agreement_images: int = 16
    region_patch: int = 4

    def run_dir(self, row: Row) -> Path:
        return Path(self.out_dir) / row.name

    def _data(self) -> list[str]:
        return ["--dataset", self.dataset] + (
            ["--data_dir", self.data_dir] if self.data_dir else []
        )

    def train_command(self, row: Row) -> list[str]:
        init = ["--init_from", self.init_from] if self.init_from else []
        cap = ["--max_steps", str(self.max_steps)] if self.max_steps else []
        return [
            sys.executable, "-m", "sgt_tfmot.train", *self._data(), "--model", self.model,
            "--batch_size", str(self.batch_size), *init, "--alpha_init", self.alpha_init,
            "--weight_bits", str(self.weight_bits), "--activation_bits", str(self.activation_bits),
            "--epochs", str(self.epochs), "--learning_rate", f"{self.learning_rate:g}",
            "--weight_decay", f"{self.weight_decay:g}", "--blur_sigma", f"{self.blur_sigma:g}",
            "--impute_noise", f"{self.impute_noise:g}", "--mixed_precision", self.mixed_precision,
            *cap, *row.train_flags(), "--progress", "2", "--out_dir", str(self.run_dir(row)),
        ]  # fmt: skip

    def explain_command(self, row: Row) -> list[str]:
        model = self.init_from if row.kind == INIT else str(self.run_dir(row))
        return [
            sys.executable, "-m", "sgt_tfmot.explain", "--model", model, *self._data(),
            "--methods", "vanilla", "--num_images", "1", "--curve_images", str(self.curve_images),
            "--agreement_images", str(self.agreement_images), "--stratify",
            "--protocol", ",".join(self.protocol), "--patch", str(self.region_patch),
            "--out_dir", str(self.run_dir(row) / EXPLAIN_DIR),
        ]  # fmt: skip


def _run(command: list[str], log: Path) -> None:
    """Runs one CLI with its output appended to `log`; its one-line error becomes ours."""
    log.parent.mkdir(parents=True, exist_ok=True)
    with log.open("a") as stream:
        stream.write(f"$ {shlex.join(command)}\n")
        stream.flush()
        status = subprocess.call(command, stdout=stream, stderr=subprocess.STDOUT)
    if status != 0:
        lines = log.read_text(errors="replace").strip().splitlines()
        raise GridError(
            f"exit status {status} of `{shlex.join(command[1:4])}` ({log}): "
            f"{lines[-1] if lines else ''}"
        )


def run_row(grid: Grid, row: Row) -> None:
    """Trains (unless finished) and measures (unless measured) one row."""
    run = grid.run_dir(row)
    if row.kind != INIT and not (run / "metrics.json").is_file():
        print(f"{run}: training", flush=True)
        _run(grid.train_command(row), Path(grid.out_dir) / f"{row.name}.log")
    if not (run / EXPLAIN_DIR / "summary.json").is_file():
        print(f"{run}: measuring", flush=True)
        _run(grid.explain_command(row), run / "explain.log")


# ----------------------------------------------------------------------------- the table
@dataclasses.dataclass(frozen=True)
class Result:
    """What one row directory holds: its settings and whatever was measured so far."""

    name: str
    kind: str
    fill: str | None
    patch: int | None
    fraction: float | None
    kl_weight: float | None
    test_accuracy: float | None
    masked_accuracy: float | None
    wall_time_seconds: float | None
    curve_accuracy: float | None
    curve_images: int | None
    areas: dict[str, dict[str, float]]  # protocol -> order -> AUC of its measure
    units: dict[str, str]  # protocol -> "pixels", "4x4 patches"
    fills: dict[str, str]  # protocol -> its fill


def _last_masked_accuracy(run: Path) -> float | None:
    path = run / "history.csv"
    if not path.is_file():
        return None
    rows = list(csv.DictReader(path.open()))
    value = rows[-1].get("masked_accuracy") if rows else None
    return float(value) if value else None


def read_result(run: Path) -> Result | None:
    """The row of one directory of OUT, or None when it holds neither a run nor a measurement."""
    flags_file, summary_file = run / "flags.json", run / EXPLAIN_DIR / "summary.json"
    if not flags_file.is_file() and not summary_file.is_file():
        return None
    settings = json.loads(flags_file.read_text()) if flags_file.is_file() else {}
    sgt = bool(settings.get("sgt"))
    kind = "sgt" if sgt else (PACT if settings else INIT)
    metrics_file = run / "metrics.json"
    metrics = json.loads(metrics_file.read_text()) if metrics_file.is_file() else {}
    areas, units, fills, accuracy, count = {}, {}, {}, None, None
    if summary_file.is_file():
        model = json.loads(summary_file.read_text())["models"][0]
        accuracy = model["accuracy"]
        for protocol, curves in model["protocols"].items():
            measure = "probability_areas" if curves["measure"] == "probability" else "areas"
            areas[protocol] = curves[measure]
            units[protocol], fills[protocol] = curves["unit"], curves["fill"]
            count = curves["num_images"]
    return Result(
        name=run.name, kind=kind,
        fill=settings.get("fill") if sgt else None,
        patch=settings.get("patch_size") if sgt else None,
        fraction=settings.get("mask_fraction") if sgt else None,
        kl_weight=settings.get("kl_weight") if sgt else None,
        test_accuracy=metrics.get("test_accuracy"),
        masked_accuracy=_last_masked_accuracy(run) if sgt else None,
        wall_time_seconds=metrics.get("wall_time_seconds"),
        curve_accuracy=accuracy, curve_images=count, areas=areas, units=units, fills=fills,
    )  # fmt: skip


def read_results(out_dir: str | Path) -> list[Result]:
    """Every row directory of OUT: the initial model, PACT only, then SGT by setting."""
    results = [r for p in sorted(Path(out_dir).iterdir()) if p.is_dir() and (r := read_result(p))]
    order = {INIT: 0, PACT: 1, "sgt": 2}
    return sorted(
        results,
        key=lambda r: (order[r.kind], r.fill or "", r.patch or 0, r.fraction or 0,
                       r.kl_weight or 0, r.name),
    )  # fmt: skip


def _cell(value: float | None, scale: float = 1.0, digits: int = 3) -> str:
    return "" if value is None else f"{scale * value:.{digits}f}"


def markdown_table(results: Sequence[Result]) -> str:
    """table.md: one line per row directory, each protocol's AUCs side by side."""
    protocols = list(dict.fromkeys(p for r in results for p in r.areas))
    header = "| row | fill | unit | fraction | λ | test acc. % | masked acc. % | curve acc. % |"
    rule = "|---|---|---|---:|---:|---:|---:|---:|"
    for protocol in protocols:
        header += (f" {protocol} MoRF | {protocol} LeRF | {protocol} random | "
                   f"{protocol} LeRF−MoRF | {protocol} random−MoRF |")  # fmt: skip
        rule += "---:|---:|---:|---:|---:|"
    header, rule = header + " train s |", rule + "---:|"
    lines = [header, rule]
    for r in results:
        unit = "" if r.patch is None else ("pixel" if r.patch == 1 else f"{r.patch}x{r.patch}")
        line = (
            f"| {r.name} | {r.fill or ''} | {unit} | {_cell(r.fraction, digits=2)} | "
            f"{_cell(r.kl_weight, digits=2)} | {_cell(r.test_accuracy, 100, 2)} | "
            f"{_cell(r.masked_accuracy, 100, 1)} | {_cell(r.curve_accuracy, 100, 1)} |"
        )
        for protocol in protocols:
            a = r.areas.get(protocol)
            if not a:
                line += " | | | | |"
                continue
            line += (f" {a['top']:.3f} | {a['bottom']:.3f} | {a['random']:.3f} | "
                     f"{a['bottom'] - a['top']:.3f} | {a['random'] - a['top']:.3f} |")  # fmt: skip
        lines.append(line + f" {_cell(r.wall_time_seconds, digits=0)} |")
    notes = []
    for protocol in protocols:
        measured = next(r for r in results if protocol in r.areas)
        notes.append(f"- {protocol}: {measured.units[protocol]}, fill {measured.fills[protocol]}, "
                     f"{measured.curve_images} class-stratified test images")  # fmt: skip
    return "\n".join(notes + [""] + lines) + "\n"


def write_table(grid: Grid, rows: Sequence[Row]) -> str:
    results = read_results(grid.out_dir)
    table = markdown_table(results)
    out = Path(grid.out_dir)
    (out / "table.md").write_text(table)
    commands = {
        row.name: {
            "train": None if row.kind == INIT else shlex.join(grid.train_command(row)),
            "explain": shlex.join(grid.explain_command(row)),
        }
        for row in rows
    }
    grid_json = {
        "settings": dataclasses.asdict(grid),
        "commands": commands,
        "rows": [dataclasses.asdict(r) for r in results],
    }
    (out / "grid.json").write_text(json.dumps(grid_json, indent=2) + "\n")
    return table


# ----------------------------------------------------------------------------- command line
def grid_from_flags() -> Grid:
    init = None if FLAGS.init_from in (None, "", "none") else FLAGS.init_from
    return Grid(
        out_dir=FLAGS.out_dir, dataset=FLAGS.dataset, data_dir=FLAGS.data_dir, init_from=init,
        alpha_init=FLAGS.alpha_init, weight_bits=FLAGS.weight_bits,
        activation_bits=FLAGS.activation_bits, model=FLAGS.model, epochs=FLAGS.epochs,
        batch_size=FLAGS.batch_size, learning_rate=FLAGS.learning_rate,
        weight_decay=FLAGS.weight_decay, blur_sigma=FLAGS.blur_sigma,
        impute_noise=FLAGS.impute_noise, mixed_precision=FLAGS.mixed_precision,
        max_steps=FLAGS.max_steps, protocol=tuple(FLAGS.protocol),
        curve_images=FLAGS.curve_images, agreement_images=FLAGS.agreement_images,
        region_patch=FLAGS.region_patch,
    )  # fmt: skip


def run_grid(grid: Grid, rows: Sequence[Row], table_only: bool = False) -> str:
    """Runs every row not yet done (unless `table_only`), then rebuilds the table."""
    if any(row.kind == INIT for row in rows) and grid.init_from is None:
        raise GridError("--rows init measures the --init_from model; none was given.")
    Path(grid.out_dir).mkdir(parents=True, exist_ok=True)
    if not table_only:
        for row in rows:
            run_row(grid, row)
    return write_table(grid, rows)


def main(argv: list[str]) -> int:
    try:
        positional = FLAGS(list(argv))[1:]
    except flags.Error as error:
        print(f"{PROGRAM}: error: {error}", file=sys.stderr)
        return EXIT_BAD_INPUT
    if FLAGS.help:
        print(__doc__.strip() + "\n\nFlags:\n" + FLAGS.module_help(sys.modules[__name__]))
        return EXIT_OK
    try:
        if positional:
            raise GridError(f"unexpected arguments: {' '.join(positional)}")
        table = run_grid(grid_from_flags(), parse_rows(FLAGS.rows), FLAGS.table_only)
    except GridError as error:
        print(f"{PROGRAM}: error: {error}", file=sys.stderr)
        return EXIT_BAD_INPUT
    print(table + f"\nwritten: {Path(FLAGS.out_dir) / 'table.md'}, grid.json")
    return EXIT_OK


if __name__ == "__main__":
    sys.exit(main(sys.argv))
