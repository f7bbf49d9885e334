"""The cluster of a run: the strategy of --distribute, the chief's decisions shared with every
worker, the batches each replica gets, and the error of a lost worker.

With `--distribute multi_worker` (docs/DISTRIBUTED.md) every worker runs `train` with the
same settings. The chief alone inspects --out_dir and tells the others what it found
(`agree_on_start`, one broadcast), then alone locks and writes it (`open_run`); the other
workers write into temporary directories of their own. The chief's backup reaches them
through `sgt_tfmot.trainers.multi_worker.ChiefBackupAndRestore`.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import re
from pathlib import Path

from sgt_tfmot import precision
from sgt_tfmot._checks import InputError, RunStopped
from sgt_tfmot.keras import tf
from sgt_tfmot.trainers.multi_worker import broadcast_from_chief, is_multi_worker
from sgt_tfmot.training.config import Plan, TrainConfig
from sgt_tfmot.training.run_directory import (
    BACKUP_DIR,
    RESUME,
    RunDirectory,
    backup_position,
    inspect_run_directory,
    open_run_directory,
    worker_directory,
)


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


def is_chief(strategy) -> bool:
    return bool(strategy.extended.should_checkpoint)


def worker_count(strategy) -> int:
    """Processes of the cluster (1 unless multi-worker)."""
    if not is_multi_worker(strategy):
        return 1
    spec = strategy.cluster_resolver.cluster_spec()
    return sum(spec.num_tasks(job) for job in spec.jobs)


class WorkerLostError(RunStopped):
    """A worker of a multi-worker run stopped; the others cannot go on without it."""


WorkerLostError.__module__ = "sgt_tfmot.training"  # where it is imported from, and shown


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


def shard_by_data(dataset: tf.data.Dataset) -> tf.data.Dataset:
    """Every worker computes each (global) batch and keeps its own rows of it.

    Keras splits each global batch of B examples into B / replicas rows per replica and
    replica r keeps rows [r·B/R, (r+1)·B/R): the examples of one step are seen once, by
    one replica, and the batches are those of a one-process run (`training_batches`).
    """
    options = tf.data.Options()
    options.experimental_distribute.auto_shard_policy = tf.data.experimental.AutoShardPolicy.DATA
    return dataset.with_options(options)


def check_batch(batch_size: int, train_size: int, replicas: int, plan: Plan) -> None:
    """Refuses a global batch that the replicas cannot share evenly, and a run whose epochs
    end in a batch with fewer examples than replicas.

    The last batch of an epoch holds the N mod B remaining examples; it is split between the
    replicas, and a replica cannot train on an empty batch.
    """
    if batch_size % replicas:
        raise InputError(
            f"--batch_size {batch_size} is not divisible by the {replicas} replicas of "
            "the cluster; pass a multiple of the replica count (the global batch is split "
            "evenly)."
        )
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


@dataclasses.dataclass(frozen=True)
class Start:
    """How the run starts, as the chief found --out_dir (nothing written yet), on every
    worker: CREATE / RESUME / OVERWRITE (the chief's), the backup's position, the precision."""

    action: str | None
    resumes: bool
    position: tuple[int, int] | None  # (epoch, step in epoch) of the backup resumed from
    precision: tuple[str, str]  # (Keras policy, why)


def agree_on_start(
    config: TrainConfig, strategy, steps_per_epoch: int, policy: tuple[str, str]
) -> Start:
    """The `Start` of the run, as the chief found --out_dir, everywhere; writes nothing.

    The chief inspects the run directory (`inspect_run_directory`) and reads its backup's
    position; the others learn whether it refused, where the run resumes and the chief's
    precision (with `--mixed_precision auto`, hosts of other CPUs would choose differently)
    from one broadcast, so that no worker reads the chief's files or waits on a chief that
    stopped.

    Raises:
      InputError: the chief's own error on the chief; on the others, that the chief refused.
    """
    chief = is_chief(strategy)
    refusal, action, position = None, None, None
    if chief:
        try:
            action = inspect_run_directory(config)
            if action == RESUME:
                position = backup_position(Path(config.out_dir) / BACKUP_DIR, steps_per_epoch)
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
    return Start(action, bool(resumes), (epoch, step) if has_position else None, policy)


def open_run(config: TrainConfig, strategy, start: Start) -> RunDirectory:
    """The chief locks and writes the run directory; the other workers get their own."""
    if is_chief(strategy):
        return open_run_directory(config, start.action)
    resolver = strategy.cluster_resolver
    task = f"{resolver.task_type}{resolver.task_id}"
    return worker_directory(config.out_dir, task, resumes=start.resumes)


def worker_lost(error: tf.errors.UnavailableError, strategy, out_dir: str):
    """The `WorkerLostError` of a multi-worker run that lost a worker (`error`), else None."""
    if not is_multi_worker(strategy):
        return None
    return WorkerLostError(_lost_workers(str(error), out_dir, is_chief(strategy)))
