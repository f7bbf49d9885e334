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

| module          | what it holds                                                              |
|-----------------|----------------------------------------------------------------------------|
| `run`           | `train`: the data flow of a run, in one function                         |
| `config`        | `TrainConfig` (the flags), the presets, the step `Plan`, the `Setup`      |
| `run_directory` | --out_dir and who owns it: the lock, flags.json, resume point, overwrite |
| `cluster`       | --distribute: the strategy, the chief's decisions shared, lost workers   |
| `model`         | the data, the model (`build_model`), its trainer, the pipelines          |
| `callbacks`     | the α history and its figure, the wall clock, the progress status        |
| `finalise`      | alignment, evaluation, the saved model, history.json, metrics.json       |
"""

from sgt_tfmot.training.cluster import WorkerLostError, make_strategy
from sgt_tfmot.training.config import (
    DISTRIBUTE,
    PRESETS,
    TOOL,
    Plan,
    TrainConfig,
    config_from_flags,
    data_options,
)
from sgt_tfmot.training.model import CALIBRATION_IMAGES, build_model, make_trainer
from sgt_tfmot.training.run import train
from sgt_tfmot.training.run_directory import (
    RUN_FILES,
    RunDirectory,
    inspect_run_directory,
    open_run_directory,
)

__all__ = [
    "CALIBRATION_IMAGES",
    "DISTRIBUTE",
    "PRESETS",
    "RUN_FILES",
    "TOOL",
    "Plan",
    "RunDirectory",
    "TrainConfig",
    "WorkerLostError",
    "build_model",
    "config_from_flags",
    "data_options",
    "inspect_run_directory",
    "make_strategy",
    "make_trainer",
    "open_run_directory",
    "train",
]
