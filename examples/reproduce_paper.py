"""Reproduce Table II of Maleki et al. (arXiv 2412.03915): PACT only vs SGT + PACT.

    python examples/reproduce_paper.py --data_dir ../shared/data --out_dir runs/paper
    python examples/reproduce_paper.py --data_dir ../shared/data --epochs 5   # shorter
    python examples/reproduce_paper.py --datasets mnist_subset --max_steps 20  # smoke test
    python examples/reproduce_paper.py --datasets mnist_subset --max_steps 1 \\
        --model mobilenet_tiny                                # the test suite's smoke test

Each row trains ResNet-20 (another network with `--model`, for smoke tests) with the
paper's hyperparameters (`--preset paper_mnist` / `paper_cifar10` of
`python -m sgt_tfmot.train`: MNIST 8 bits, lr 0.1, batch 128, λ 0.1; CIFAR-10 4 bits,
lr 0.01, batch 64, λ 0.05; mask 50 %; 50 epochs unless `--epochs`), once without and once
with SGT, then writes `OUT/table.md` with the test accuracies next to the paper's. A finished
run directory is reused, an unfinished one resumes, so the command can be rerun after an
interruption.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

from absl import app, flags

from sgt_tfmot import training as trainer
from sgt_tfmot._checks import InputError

PAPER = {  # Table II of the paper, test accuracy (%)
    "mnist": {"pact": 99.23, "sgt": 99.35},
    "cifar10": {"pact": 75.55, "sgt": 76.12},
}
PRESET_OF = {"mnist": "paper_mnist", "mnist_subset": "paper_mnist", "cifar10": "paper_cifar10"}

FLAGS = flags.FLAGS
flags.DEFINE_list("datasets", ["mnist", "cifar10"], "Rows: mnist, cifar10 (or mnist_subset).")
flags.DEFINE_string("data_dir", None, "Folder with mnist.npz / cifar10.npz.")
flags.DEFINE_string("out_dir", os.path.join("runs", "paper"), "Where the runs and table go.")
flags.DEFINE_integer("epochs", None, "Epochs per run (default: the paper's 50).")
flags.DEFINE_integer("max_steps", None, "Cap on the steps of every run (smoke tests).")
flags.DEFINE_string(
    "model", "resnet20", "Network of every run: the paper's resnet20 (smaller ones: smoke tests)."
)
flags.DEFINE_enum(
    "mixed_precision", "auto", ["auto", "mixed_bfloat16", "float32"], "Compute precision."
)
flags.DEFINE_integer("progress", 2, "Keras progress: 0 none, 1 bar, 2 a line per epoch.")


def run_rows(
    datasets: list[str],
    out_dir: str,
    data_dir: str | None = None,
    epochs: int | None = None,
    max_steps: int | None = None,
    mixed_precision: str = "auto",
    progress: int = 2,
    model: str = "resnet20",
) -> list[dict]:
    """Trains (or reuses) the PACT-only and SGT + PACT run of each dataset; returns the rows."""
    rows = []
    for dataset in datasets:
        if dataset not in PRESET_OF:
            raise InputError(
                f"Unknown dataset {dataset!r} for the paper's table: {', '.join(PRESET_OF)}."
            )
        for method in ("pact", "sgt"):
            run_dir = Path(out_dir) / f"{dataset}-{method}"
            values = dict(
                dataset=dataset, data_dir=data_dir, sgt=method == "sgt", out_dir=str(run_dir),
                max_steps=max_steps, mixed_precision=mixed_precision, progress=progress,
                model=model,
            )  # fmt: skip
            explicit = {"dataset", "data_dir", "sgt", "out_dir", "max_steps", "model"}
            if epochs is not None:
                values["epochs"] = epochs
                explicit.add("epochs")
            config = trainer.config_from_flags(values, explicit, PRESET_OF[dataset])
            metrics_file = run_dir / "metrics.json"
            if metrics_file.is_file():
                print(f"{run_dir}: finished earlier, reusing its metrics", flush=True)
                metrics = json.loads(metrics_file.read_text())
            else:
                print(f"{run_dir}: training ({method}, {config.epochs} epochs)", flush=True)
                metrics = trainer.train(config)
            rows.append(
                dict(
                    dataset=dataset,
                    method=method,
                    bits=config.weight_bits,
                    epochs=metrics["epochs"],
                    accuracy=100 * metrics["test_accuracy"],
                    wall_time=metrics["wall_time_seconds"],
                    paper=PAPER.get(dataset.replace("_subset", ""), {}).get(method),
                )
            )
    return rows


def markdown_table(rows: list[dict]) -> str:
    """Table II laid out as in the paper, with ours next to the paper's numbers."""
    lines = [
        "| dataset | bits | method | epochs | test accuracy (%) | paper (%) | wall time (s) |",
        "|---|---|---|---|---|---|---|",
    ]
    for row in rows:
        method = "PACT only" if row["method"] == "pact" else "SGT + PACT"
        paper = f"{row['paper']:.2f}" if row["paper"] is not None else "-"
        lines.append(
            f"| {row['dataset']} | {row['bits']} | {method} | {row['epochs']} | "
            f"{row['accuracy']:.2f} | {paper} | {row['wall_time']:.0f} |"
        )
    return "\n".join(lines) + "\n"


def main(argv) -> int:
    del argv
    try:
        rows = run_rows(
            FLAGS.datasets, FLAGS.out_dir, FLAGS.data_dir, FLAGS.epochs, FLAGS.max_steps,
            FLAGS.mixed_precision, FLAGS.progress, FLAGS.model,
        )  # fmt: skip
    except ValueError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    table = markdown_table(rows)
    path = Path(FLAGS.out_dir) / "table.md"
    path.write_text(table)
    print(f"\n{table}\nwritten to {path}")
    return 0


if __name__ == "__main__":
    app.run(lambda argv: sys.exit(main(argv)))
