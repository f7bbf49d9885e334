"""Two real workers on 127.0.0.1 (MultiWorkerMirroredStrategy, CPU collectives) training
SGT + PACT W4A4 through `sgt_tfmot.training`, against a one-process run of the same settings
(in the test's own process).

Each worker is its own process (`tests/helpers/worker_driver.py`) with its own $TF_CONFIG,
free ports and $TMPDIR. Worker 1's --out_dir is another path than the chief's: it stands for
the same path on a second host without shared storage, so whatever worker 1 writes into its
run directory would show there (it must stay absent).

The model has no BatchNormalization (but in the test of BN's moving statistics on a resume):
with BN each replica normalises with the statistics of its own 16 examples, so two workers
would differ from one process by design, not by rounding.
"""

import hashlib
import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from sgt_tfmot.keras import keras
from sgt_tfmot.saving import load_model

DRIVER = Path(__file__).resolve().parent / "helpers" / "worker_driver.py"
REPO = DRIVER.parents[1]
TIMEOUT = 600  # seconds for one cluster run (a guard: a worker that cannot reach its peers blocks)
BATCH, STEPS, TRAIN_SIZE = 32, 6, 256
RUN_FILES = {
    ".sgt_tfmot.json", "flags.json", "model.h5", "metrics.json", "history.csv", "history.json",
    "alpha.json", "alpha.png", "wall_time.json", "labels.txt", "tensorboard",
}  # fmt: skip


def tiny_world(root: Path, batch_norm: bool = False) -> tuple[Path, Path]:
    """A 3-class 12x12 dataset (.npz, every image distinct) and a float conv net, without BN
    unless `batch_norm` (then after its first convolution)."""
    rng = np.random.default_rng(0)

    def split(count):
        labels = rng.integers(0, 3, count)
        images = rng.integers(0, 60, (count, 12, 12, 1))
        for image, label in zip(images, labels, strict=True):
            image[2 + 3 * label : 5 + 3 * label, 2:10] += 150  # a bar whose row is the class
        return images.astype(np.uint8), labels

    (x_train, y_train), (x_test, y_test) = split(TRAIN_SIZE), split(64)
    data = root / "tiny.npz"
    np.savez(data, x_train=x_train, y_train=y_train, x_test=x_test, y_test=y_test)
    keras.utils.set_random_seed(0)
    inputs = keras.Input((12, 12, 1))
    h = keras.layers.Rescaling(1 / 64, -1.0)(inputs)
    h = keras.layers.Conv2D(6, 3)(h)
    if batch_norm:
        h = keras.layers.BatchNormalization(momentum=0.9, name="bn")(h)
    h = keras.layers.ReLU()(h)
    h = keras.layers.ReLU()(keras.layers.Conv2D(8, 3, strides=2)(h))
    outputs = keras.layers.Dense(3, name="logits")(keras.layers.GlobalAveragePooling2D()(h))
    model = root / ("tiny_bn.h5" if batch_norm else "tiny.h5")
    keras.Model(inputs, outputs).save(model)
    return data, model


def settings(world, out: Path, **overrides) -> dict:
    data, model = world
    values = dict(
        dataset=str(data), model=str(model), weight_bits=4, activation_bits=4, sgt=True,
        kl_weight=0.5, alpha_init=2.0, batch_size=BATCH, max_steps=STEPS, backup_every=2,
        learning_rate=0.05, schedule="constant", mixed_precision="float32", progress=0,
        distribute="multi_worker", out_dir=str(out),
    )  # fmt: skip
    values.update(overrides)
    return values


def free_ports(count: int) -> list[int]:
    sockets = [socket.socket() for _ in range(count)]
    for s in sockets:
        s.bind(("127.0.0.1", 0))
    ports = [s.getsockname()[1] for s in sockets]
    for s in sockets:
        s.close()
    return ports


class Cluster:
    """Two workers: task i runs with out_dir `outs[i]`, records into `root/record{i}`."""

    def __init__(self, world, root: Path, **overrides):
        self.root, self.ports = root, free_ports(2)
        self.outs = [root / "run", root / "worker1-host" / "run"]
        self.temps = [root / f"tmp{i}" for i in range(2)]
        self.records = [root / f"record{i}" for i in range(2)]
        self.configs = [settings(world, out, **overrides) for out in self.outs]

    def start(
        self, kill_worker_1_after: int | None = None, cpu_bfloat16: tuple[bool, bool] | None = None
    ) -> list[subprocess.Popen]:
        """The two worker processes; `cpu_bfloat16`: whether each one's CPU counts as
        computing bfloat16 natively (default: the machine's own answer)."""
        addresses = [f"127.0.0.1:{port}" for port in self.ports]
        processes = []
        for index in range(2):
            self.temps[index].mkdir(parents=True, exist_ok=True)
            spec = {"cluster": {"worker": addresses}, "task": {"type": "worker", "index": index}}
            env = dict(os.environ, TF_CONFIG=json.dumps(spec), TMPDIR=str(self.temps[index]))
            env["PYTHONPATH"] = str(REPO)
            if cpu_bfloat16 is not None:
                env["SGT_TFMOT_TEST_CPU_BFLOAT16"] = str(int(cpu_bfloat16[index]))
            args = [sys.executable, str(DRIVER), json.dumps(self.configs[index])]
            args.append(str(self.records[index]))
            if kill_worker_1_after is not None and index == 1:
                args.append(str(kill_worker_1_after))
            log = (self.root / f"worker{index}.log").open("a")
            processes.append(subprocess.Popen(args, env=env, stdout=log, stderr=log))
        return processes

    def log(self, index: int) -> str:
        return (self.root / f"worker{index}.log").read_text()

    def record(self, index: int) -> dict:
        return read_record(self.records[index])


def read_record(folder: Path) -> dict:
    """What a driver recorded: steps -> images seen, the saved weights, the metrics."""
    seen = json.loads((folder / "seen.json").read_text())
    return {
        "seen": {int(step): images for step, images in seen.items()},
        "weights": list(np.load(folder / "weights.npz").values()),
        "metrics": json.loads((folder / "metrics.json").read_text()),
    }


def wait(processes, timeout=TIMEOUT) -> list[int]:
    """Exit codes; kills (by pid) the processes still running after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    for process in processes:
        try:
            process.wait(max(deadline - time.monotonic(), 1))
        except subprocess.TimeoutExpired:
            for other in processes:
                if other.poll() is None:
                    other.kill()
                    other.wait()
            pytest.fail(f"the cluster did not finish within {timeout} s")
    return [process.returncode for process in processes]


def run_one_process(world, root: Path) -> None:
    """The reference: the same settings in one process, no strategy: this one (no second
    TensorFlow import), through the driver's `main`. Its patches of the train step and of the
    saving are undone after it."""
    from sgt_tfmot.trainers import SaliencyGuidedModel
    from sgt_tfmot.training import finalise
    from tests.helpers import worker_driver

    config = settings(world, root / "run", distribute="none")
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(SaliencyGuidedModel, "train_step", SaliencyGuidedModel.train_step)
        patch.setattr(finalise, "save_model", finalise.save_model)
        patch.delenv("TF_CONFIG", raising=False)
        patch.delenv("SGT_TFMOT_TEST_CPU_BFLOAT16", raising=False)
        worker_driver.main(json.dumps(config), str(root / "record"))


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """The uninterrupted two-worker run and the one-process run, side by side."""
    root = tmp_path_factory.mktemp("multiworker")
    world = tiny_world(root)
    cluster = Cluster(world, root / "cluster")
    one_root = root / "one"
    one_root.mkdir()
    processes = cluster.start()
    try:
        run_one_process(world, one_root)
    finally:
        codes = wait(processes)
    assert codes == [0, 0], cluster.log(0)[-3000:] + "\n\n" + cluster.log(1)[-3000:]
    one = read_record(one_root / "record")
    return {"world": world, "root": root, "cluster": cluster, "one": one}


def image_ids(data: Path) -> dict[str, int]:
    """sha1 of a training image as the pipeline feeds it (float32 0..255) -> its index."""
    x_train = np.load(data)["x_train"].astype(np.float32)
    return {hashlib.sha1(row.tobytes()).hexdigest(): i for i, row in enumerate(x_train)}


@pytest.mark.slow
def test_two_workers_train_like_one_process_and_only_the_chief_writes(runs):
    cluster, one = runs["cluster"], runs["one"]
    chief, worker = cluster.record(0), cluster.record(1)

    # Both workers end with the same weights and α, bit for bit (the same all-reduced update
    # is applied to equal copies), and the chief's model.h5 holds them.
    assert len(chief["weights"]) == len(worker["weights"]) == len(one["weights"])
    for a, b in zip(chief["weights"], worker["weights"], strict=True):
        np.testing.assert_array_equal(a, b)
    assert chief["metrics"]["alpha"] == worker["metrics"]["alpha"]
    for a, b in zip(load_model(cluster.outs[0]).get_weights(), chief["weights"], strict=True):
        np.testing.assert_array_equal(a, b)

    # The one-process run with the same global batch, seed and data order.
    # Trained weights (kernels, biases, α): equal up to float rounding. Each step's gradient
    # is the mean of two 16-example means, all-reduced, instead of one 32-example mean: the
    # same sums in another order, about 1e-7 relative per step. Seen here after 6 steps:
    # at most 4e-7 relative, 5e-7 absolute. Tolerance rtol 1e-5, atol 2e-6: a few times that,
    # and far below what the steps themselves changed (checked > 1e-2).
    # The 8-bit EMA ranges (non-trainable `output_min`/`output_max` of the range quantizers)
    # are statistics, not rounding: each replica moves them towards the min/max of its own
    # 16 examples and the replicas' values are averaged (MEAN aggregation, like BN's moving
    # statistics), where one process uses the min/max of all 32. With EMA decay 0.999 over
    # 6 steps they drift apart by at most 6 * 0.001 of the range gap; seen here: 1.2e-5
    # relative. Tolerance rtol 1e-3.
    model = load_model(cluster.outs[0])
    conv = load_model(runs["world"][1]).layers[2]  # the float model's first Conv2D
    wrappers = {getattr(layer, "layer", layer).name: layer for layer in model.layers}
    kernel = next(w for w in wrappers[conv.name].trainable_weights if w.shape == conv.kernel.shape)
    moved = float(np.abs(kernel.numpy() - conv.kernel.numpy()).max())
    assert moved > 1e-2, moved  # the weights really trained
    trainable = [variable.trainable for variable in model.weights]
    assert sum(trainable) == 8  # 3 kernels, 3 biases, 2 α
    for a, b, variable in zip(chief["weights"], one["weights"], model.weights, strict=True):
        if variable.trainable:
            np.testing.assert_allclose(a, b, rtol=1e-5, atol=2e-6, err_msg=variable.name)
        else:
            np.testing.assert_allclose(a, b, rtol=1e-3, err_msg=variable.name)
    alphas, one_alphas = chief["metrics"]["alpha"], one["metrics"]["alpha"]
    assert alphas.keys() == one_alphas.keys() and len(alphas) == 2
    for name in alphas:
        assert alphas[name] == pytest.approx(one_alphas[name], abs=1e-5)
        assert abs(alphas[name] - 2.0) > 1e-4, alphas  # α₀ = 2 was trained
    # The test metrics are the whole test set's (not a sum over the workers).
    assert chief["metrics"]["test_accuracy"] == one["metrics"]["test_accuracy"]
    assert chief["metrics"]["test_loss"] == pytest.approx(one["metrics"]["test_loss"], rel=1e-5)
    assert chief["metrics"]["optimizer_steps"] == one["metrics"]["optimizer_steps"] == STEPS
    assert chief["metrics"]["distribution"] == {
        "strategy": "multi_worker", "workers": 2, "replicas": 2, "per_replica_batch_size": 16,
    }  # fmt: skip
    history = json.loads((cluster.outs[0] / "history.json").read_text())
    one_history = json.loads((runs["root"] / "one" / "run" / "history.json").read_text())
    assert history[0]["val_accuracy"] == one_history[0]["val_accuracy"]
    assert history[0]["val_loss"] == pytest.approx(one_history[0]["val_loss"], rel=1e-5)

    # Each worker trained on its own half of every global batch: worker 0 on rows 0-15 and
    # worker 1 on rows 16-31 of the one-process run's batch; no example twice in the epoch.
    ids = image_ids(runs["world"][0])
    assert sorted(chief["seen"]) == sorted(worker["seen"]) == list(range(1, STEPS + 1))
    for step in range(1, STEPS + 1):
        mine, theirs, batch = chief["seen"][step], worker["seen"][step], one["seen"][step]
        assert len(mine) == len(theirs) == BATCH // 2 and len(batch) == BATCH
        assert mine == batch[: BATCH // 2] and theirs == batch[BATCH // 2 :], step
    everything = [h for step in range(1, STEPS + 1) for h in one["seen"][step]]
    assert len(set(everything)) == STEPS * BATCH and set(everything) <= ids.keys()
    assert not set(sum(chief["seen"].values(), [])) & set(sum(worker["seen"].values(), []))

    # The chief alone wrote the run directory; worker 1 wrote only its temporary directory,
    # now removed, and nothing where its own --out_dir points.
    assert {p.name for p in cluster.outs[0].iterdir()} == RUN_FILES
    assert not [p for p in cluster.outs[0].rglob("*") if "workertemp" in p.name]
    assert not cluster.outs[1].parent.exists()
    assert not list(cluster.temps[1].glob("sgt_tfmot-*"))
    assert "this worker is the chief" in cluster.log(0)
    assert f"this worker is writing {cluster.temps[1]}/sgt_tfmot-worker1-" in cluster.log(1)


@pytest.mark.slow
def test_a_killed_worker_resumes_from_the_last_backup_and_ends_like_an_uninterrupted_run(
    runs, tmp_path
):
    cluster = Cluster(runs["world"], tmp_path)
    # Worker 1 dies with SIGKILL right after step 5; the last backup is step 4's.
    first = cluster.start(kill_worker_1_after=5)
    codes = wait(first)
    assert codes[1] == -signal.SIGKILL, cluster.log(1)[-3000:]
    # The chief finds its peer gone (heartbeats) and stops with one clear line.
    assert codes[0] == 1, cluster.log(0)[-3000:]
    assert "WorkerLostError: worker 1 of the cluster stopped" in cluster.log(0)
    assert "start every worker again with the same command" in cluster.log(0)
    assert (cluster.outs[0] / "backup" / "chief").is_dir()
    assert not (cluster.outs[0] / "metrics.json").exists()
    killed_temp = list(cluster.temps[1].glob("sgt_tfmot-*"))
    assert len(killed_temp) == 1  # SIGKILL leaves it; the restart clears it

    second = cluster.start()  # the same commands, the same ports
    codes = wait(second)
    assert codes == [0, 0], cluster.log(0)[-3000:] + cluster.log(1)[-3000:]
    for index in range(2):
        assert "from epoch 1, step 4 (global step 4 of 6)" in cluster.log(index), index
    chief, worker = cluster.record(0), cluster.record(1)
    assert sorted(chief["seen"]) == sorted(worker["seen"]) == [5, 6]  # only what was left
    assert chief["metrics"]["attempts"] == 2
    assert chief["metrics"]["optimizer_steps"] == STEPS

    # Equal to the uninterrupted run bit for bit: the batches and the SGT fills are functions
    # of (seed, step), the restart gets the chief's backed-up state on both workers, and a
    # two-worker all-reduce adds the same two numbers in either order (a + b == b + a).
    uninterrupted = runs["cluster"].record(0)
    for a, b, c in zip(chief["weights"], worker["weights"], uninterrupted["weights"], strict=True):
        np.testing.assert_array_equal(a, b)
        np.testing.assert_array_equal(a, c)
    assert chief["metrics"]["alpha"] == uninterrupted["metrics"]["alpha"]
    assert chief["metrics"]["test_accuracy"] == uninterrupted["metrics"]["test_accuracy"]
    assert {p.name for p in cluster.outs[0].iterdir()} == RUN_FILES  # backup/ removed
    assert not cluster.outs[1].parent.exists()
    assert not list(cluster.temps[1].glob("sgt_tfmot-*"))


@pytest.mark.slow
def test_a_resumed_run_gives_every_worker_the_chiefs_batchnorm_statistics_and_precision(tmp_path):
    """BatchNormalization's moving statistics are sync-on-read: each replica updates its own
    part from its own examples, and the model's statistics (what a backup and model.h5 hold)
    are the parts' mean. A resumed run must start every replica's part at the chief's
    restored mean; a worker that kept its fresh part (mean 0, variance 1) would pull the
    model's statistics halfway back to the start (before the fix: beta 2.5e-2 off, relative,
    against an uninterrupted run). The driver records each worker's own parts (read without
    a collective) when `fit` starts, after the restore.

    The same run shows the chief's bfloat16 choice: `--mixed_precision auto` with a model file
    on a cluster whose chief computes bfloat16 natively and whose other worker does not: both
    train under the chief's mixed_bfloat16 (the file's layers rebuilt under it on each
    worker), both times, and end with the same weights."""
    world = tiny_world(tmp_path, batch_norm=True)
    cluster = Cluster(world, tmp_path, mixed_precision="auto")
    codes = wait(cluster.start(kill_worker_1_after=5, cpu_bfloat16=(True, False)))
    assert codes[1] == -signal.SIGKILL, cluster.log(1)[-3000:]
    fresh = [dict(np.load(folder / "started.npz")) for folder in cluster.records]
    codes = wait(cluster.start(cpu_bfloat16=(True, False)))
    assert codes == [0, 0], cluster.log(0)[-3000:] + cluster.log(1)[-3000:]
    for index in range(2):
        assert "from epoch 1, step 4 (global step 4 of 6)" in cluster.log(index), index
    chief, worker = (dict(np.load(folder / "started.npz")) for folder in cluster.records)
    assert len(chief) == 2 and chief.keys() == worker.keys() == fresh[0].keys(), chief.keys()
    for name, restored in chief.items():
        start = 0.0 if "mean" in name else 1.0
        for index in range(2):
            np.testing.assert_array_equal(fresh[index][name], start, err_msg=name)
        assert np.abs(restored - start).max() > 1e-3, name  # the backup's, not fresh
        np.testing.assert_array_equal(worker[name], restored, err_msg=name)

    # Both workers save the same model (reading a sync-on-read mean is a collective).
    model = load_model(cluster.outs[0])
    chief, worker = cluster.record(0), cluster.record(1)
    for a, b, variable in zip(chief["weights"], worker["weights"], model.weights, strict=True):
        np.testing.assert_array_equal(a, b, err_msg=variable.name)

    # The chief's precision, on both workers; the model is saved float32.
    assert chief["metrics"]["precision"] == worker["metrics"]["precision"] == "mixed_bfloat16"
    assert chief["metrics"]["precision_reason"].startswith("auto: the CPU computes bfloat16")
    assert worker["metrics"]["precision_reason"] == "the chief's choice; here: float32"
    said = "Precision: mixed_bfloat16 (the chief's choice; here: float32)"
    assert cluster.log(1).count(said) == 2  # before the kill, and on the resume
    assert {layer.compute_dtype for layer in model.layers} == {"float32"}  # saved float32


def cli_arguments(config: dict) -> list[str]:
    """`python -m sgt_tfmot.train` flags for `settings(...)`."""
    arguments = []
    for name, value in config.items():
        if isinstance(value, bool):
            arguments.append(f"--{name}" if value else f"--no{name}")
        else:
            arguments.append(f"--{name}={value}")
    return arguments


@pytest.mark.slow
def test_when_the_chief_refuses_the_run_every_worker_stops_with_one_line(runs, tmp_path):
    """The CLI on both workers against the finished run of the first test: the chief refuses
    (exit 2, one line) and tells worker 1, which stops with one line too instead of waiting."""
    finished = runs["cluster"]
    before = sorted(p.name for p in finished.outs[0].iterdir())
    addresses = [f"127.0.0.1:{port}" for port in free_ports(2)]
    processes = []
    for index in range(2):
        spec = {"cluster": {"worker": addresses}, "task": {"type": "worker", "index": index}}
        env = dict(os.environ, TF_CONFIG=json.dumps(spec), TMPDIR=str(tmp_path))
        env["PYTHONPATH"] = str(REPO)
        command = [sys.executable, "-m", "sgt_tfmot.train"]
        command += cli_arguments(finished.configs[index])
        processes.append(
            subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        )
    outputs = []
    for process in processes:
        try:
            outputs.append(process.communicate(timeout=TIMEOUT))
        except subprocess.TimeoutExpired:
            for other in processes:
                other.kill()
            pytest.fail("a worker did not stop after the chief refused the run")
    (_, chief_err), (_, worker_err) = (
        (out.decode(), err.decode()) for out, err in outputs
    )  # fmt: skip
    assert [p.returncode for p in processes] == [2, 2], chief_err + worker_err
    assert chief_err.count("\n") == 1 and "holds a finished run" in chief_err, chief_err
    assert chief_err.startswith("sgt_tfmot.train: error: --out_dir ")
    assert worker_err.count("\n") == 1, worker_err
    assert "the chief (worker 0, or the chief task) refused to start the run" in worker_err
    assert sorted(p.name for p in finished.outs[0].iterdir()) == before
    assert not list(tmp_path.glob("sgt_tfmot-*"))
