"""A real training run killed with SIGKILL and resumed, against the same run uninterrupted.

    python benchmarks/kill_resume.py --out_dir runs/kill-resume --kill_after 150,150 -- \\
        --dataset mnist --data_dir ../shared/data --weight_bits 8 --activation_bits 8 \\
        --epochs 1 --backup_every 50

Everything after `--` goes to `python -m sgt_tfmot.train` unchanged. The script runs

  OUT/reference   the command, uninterrupted;
  OUT/killed      the same command, SIGKILLed (the whole process group) `--kill_after`
                  seconds after each start, once per entry, then started again with the
                  same command until it exits 0;

and prints, and writes to OUT/kill_resume.json, each attempt's wall time and how it ended,
the test accuracy of both runs (their metrics.json) and the largest absolute difference over
all weights of their model.h5 files (0.0: the resumed run is bit-identical).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
from absl import app, flags

FLAGS = flags.FLAGS
flags.DEFINE_string("out_dir", None, "Directory of the two runs.", required=True)
flags.DEFINE_list("kill_after", ["150", "150"], "Seconds after each start to SIGKILL.")
flags.DEFINE_bool("reuse_reference", True, "Keep a finished OUT/reference.")

TRAIN = [sys.executable, "-P", "-m", "sgt_tfmot.train"]


def attempt(args: list[str], log: Path, kill_after: float | None) -> dict:
    """Runs the train CLI once; SIGKILLs its process group after `kill_after` seconds."""
    start = time.monotonic()
    with open(log, "a") as handle:
        handle.write(f"\n=== {' '.join(args)} (kill after {kill_after} s)\n")
        handle.flush()
        process = subprocess.Popen(
            TRAIN + args, stdout=handle, stderr=subprocess.STDOUT, start_new_session=True
        )
        try:
            code = process.wait(timeout=kill_after)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            code = process.wait()
    return {"seconds": round(time.monotonic() - start, 1), "exit": code}


def weights(run_dir: Path) -> list[np.ndarray]:
    from sgt_tfmot import saving

    return [np.asarray(w) for w in saving.load_model(run_dir).get_weights()]


def accuracy(run_dir: Path) -> float:
    return json.loads((run_dir / "metrics.json").read_text())["test_accuracy"]


def main(argv: list[str]) -> None:
    train_args = argv[1:]
    if not train_args:
        raise app.UsageError("give the train flags after `--`")
    out = Path(FLAGS.out_dir)
    out.mkdir(parents=True, exist_ok=True)
    reference, killed = out / "reference", out / "killed"
    result = {"train_args": train_args, "reference": [], "killed": []}
    if not (FLAGS.reuse_reference and (reference / "metrics.json").exists()):
        result["reference"].append(
            attempt(train_args + ["--out_dir", str(reference)], out / "reference.log", None)
        )
    for seconds in [float(s) for s in FLAGS.kill_after] + [None]:
        outcome = attempt(train_args + ["--out_dir", str(killed)], out / "killed.log", seconds)
        outcome["killed"] = outcome["exit"] == -signal.SIGKILL
        result["killed"].append(outcome)
        print(f"attempt {len(result['killed'])}: {outcome}", flush=True)
    while result["killed"][-1]["exit"] != 0 and len(result["killed"]) < 10:
        result["killed"].append(
            attempt(train_args + ["--out_dir", str(killed)], out / "killed.log", None)
        )
    a, b = weights(reference), weights(killed)
    result["max_abs_weight_difference"] = float(
        max(np.max(np.abs(x - y)) if x.size else 0.0 for x, y in zip(a, b, strict=True))
    )
    result["reference_test_accuracy"] = accuracy(reference)
    result["killed_test_accuracy"] = accuracy(killed)
    (out / "kill_resume.json").write_text(json.dumps(result, indent=1))
    print(json.dumps(result, indent=1))


if __name__ == "__main__":
    app.run(main)
