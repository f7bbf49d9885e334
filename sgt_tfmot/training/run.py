"""`train`: one training run, its data flow in one function (`_train`).

Every check that can refuse the run happens before the first write: the data, the cluster
and the batch, then --out_dir (read only), then the model. Only then is the run directory
locked and written, and the model trained and finalised.
"""

from __future__ import annotations

import sys

from sgt_tfmot import precision
from sgt_tfmot._files import atomic_write
from sgt_tfmot._progress import Progress
from sgt_tfmot.keras import keras, tf
from sgt_tfmot.models.files import is_model_file
from sgt_tfmot.trainers.multi_worker import is_multi_worker
from sgt_tfmot.training.callbacks import WallClock, run_callbacks
from sgt_tfmot.training.cluster import (
    agree_on_start,
    check_batch,
    make_strategy,
    open_run,
    worker_count,
    worker_lost,
)
from sgt_tfmot.training.config import TOOL, Plan, Setup, TrainConfig
from sgt_tfmot.training.finalise import finalise
from sgt_tfmot.training.model import Built, build, read_data
from sgt_tfmot.training.run_directory import RunDirectory, truncate_history


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
    info, arrays, augment = read_data(config)
    lowest_bits = (
        None
        if config.float
        else min(config.weight_bits, config.activation_bits, config.first_last_bits)
    )
    policy = precision.resolve(config.mixed_precision, lowest_bits)
    strategy = make_strategy(config.distribute)
    train_size = len(arrays.split("train")[0])
    plan = Plan.of(config, train_size)
    check_batch(config.batch_size, train_size, strategy.num_replicas_in_sync, plan)
    start = agree_on_start(config, strategy, plan.steps_per_epoch, policy)  # reads --out_dir
    setup = Setup(config, info, arrays, augment, start.precision, strategy, plan, start.position)
    run = None
    try:
        keras.utils.set_random_seed(config.seed)
        keras.mixed_precision.set_global_policy(setup.precision[0])
        progress.update(f"building the model ({config.model})", live=False)
        built = build(setup)
        run = open_run(config, strategy, start)  # the first write
        clock = _fit(setup, run, built, extra_callbacks, progress)
        progress.update("evaluating and saving the trained model", live=False)
        return finalise(setup, run, built, clock)
    except tf.errors.UnavailableError as error:
        lost = worker_lost(error, strategy, config.out_dir)
        if lost is None:
            raise
        raise lost from None
    finally:
        keras.mixed_precision.set_global_policy("float32")
        if run is not None:
            run.close()


def _fit(setup: Setup, run: RunDirectory, built: Built, extra_callbacks, progress) -> WallClock:
    """Trains from where the run stands (the chief's history cut back to the resumed epoch);
    returns the run's wall clock."""
    config = setup.config
    if setup.position is not None and run.is_chief:
        truncate_history(run.work / "history.csv", setup.position[0])
    if run.is_chief:
        labels = "\n".join(setup.info.labels()) + "\n"
        atomic_write(run.work / "labels.txt", labels.encode())
    clock = WallClock(run.work / "wall_time.json")
    _report_start(setup, run)
    callbacks = [*run_callbacks(setup, run, built.model, clock, progress), *extra_callbacks]
    verbose = config.progress
    if verbose is None:
        verbose = 1 if sys.stdout.isatty() else 2
    built.trainer.fit(
        built.train_ds,
        epochs=setup.plan.epochs,
        steps_per_epoch=setup.plan.steps_per_epoch,
        validation_data=built.test_ds,
        callbacks=callbacks,
        verbose=verbose,
    )
    return clock


FINE_TUNE_RATE = 0.05  # peak learning rates from here on suit training from scratch


def fine_tune_note(config: TrainConfig) -> str | None:
    """A note when the run starts from a file's weights (--model FILE, --init_from) at a
    peak learning rate made for training from scratch, which loses most of what a trained
    model knew in the first epoch; None otherwise."""
    if config.learning_rate < FINE_TUNE_RATE:
        return None
    if config.init_from is not None:
        source = f"--init_from {config.init_from}"
    elif is_model_file(config.model):
        source = f"the weights of --model {config.model}"
    else:
        return None
    return (
        f"Note: training starts from {source} at a peak --learning_rate of "
        f"{config.learning_rate:g}, a rate for training from scratch; if those weights are "
        "trained, fine-tune at --learning_rate 0.01 to 0.02 to keep what they know (the "
        "QAT fine-tunes of docs/RESULTS.md use 0.02)."
    )


def _report_start(setup: Setup, run: RunDirectory) -> None:
    """Prints where the run resumes (if it does), the precision and the cluster."""
    position = setup.position
    if run.resumes or position is not None:
        where = (
            f"from epoch {position[0] + 1}, step {position[1]} (global step "
            f"{setup.start_step} of {setup.plan.total_steps})"
            if position is not None
            else "from the start: no backup had been written yet"
        )
        print(f"Resuming the unfinished run in {run.out} {where}", flush=True)
    print(f"Precision: {setup.precision[0]} ({setup.precision[1]})", flush=True)
    note = fine_tune_note(setup.config) if position is None and not run.resumes else None
    if note:
        print(note, flush=True)
    if is_multi_worker(setup.strategy):
        replicas = setup.strategy.num_replicas_in_sync
        role = "the chief, writing the run directory" if run.is_chief else f"writing {run.work}"
        print(
            f"Cluster: {worker_count(setup.strategy)} workers, {replicas} replicas, "
            f"{setup.config.batch_size // replicas} examples per replica and step; this "
            f"worker is {role}",
            flush=True,
        )
