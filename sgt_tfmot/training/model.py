"""What a run trains: the data (`read_data`), the model (`build_model`: float, or quantized
for PACT), its trainer (`make_trainer`: SGT or plain, compiled) and the data pipelines from
the resume position on (`build`)."""

from __future__ import annotations

import dataclasses

from sgt_tfmot import (
    data as datasets,
    heads,
    masking,
    models as model_zoo,
    quantize,
    saving,
    schedules,
)
from sgt_tfmot.data.base import Arrays
from sgt_tfmot.keras import keras, tf
from sgt_tfmot.trainers import SaliencyGuidedModel, refit_stale_batch_norm
from sgt_tfmot.trainers.multi_worker import is_multi_worker, report_synchronised_metrics
from sgt_tfmot.training.cluster import shard_by_data
from sgt_tfmot.training.config import Plan, Setup, TrainConfig, data_options

CALIBRATION_IMAGES = 1024  # training images (stratified, seeded) set --init_from's ranges


def calibration_set(arrays: Arrays, seed: int, float32: bool = True):
    """The training images (as float32, or in their own dtype) and labels that set the
    ranges of a model from trained weights and judge its BatchNormalization statistics: the
    first CALIBRATION_IMAGES of a class-stratified order seeded by `seed`."""
    train_x, train_y = arrays.split("train")
    chosen = datasets.stratified_order(train_y, seed)[:CALIBRATION_IMAGES]
    images = train_x[chosen]
    return images.astype("float32") if float32 else images, train_y[chosen]


def read_data(config: TrainConfig) -> tuple[datasets.DatasetInfo, Arrays, tuple[str, ...]]:
    """The dataset of the run, checked against the run's settings, and its augmentation."""
    info, arrays = datasets.open_dataset(config.dataset, config.data_dir, **data_options(config))
    if config.sgt:  # the patches must tile the images (a ragged last patch is refused)
        masking.check_patch_size(config.patch_size, info.image_shape[:-1])
    augment = datasets.parse_augment(config.augment)
    return info, arrays, tuple(info.augment if augment is None else augment)


def build_model(
    config: TrainConfig, info, calibration_images=None, calibration_labels=None
) -> keras.Model:
    """The float model (from --init_from's weights when given), quantized unless --float.

    From trained weights (--init_from; a --model FILE under `--alpha_init calibrate`, the
    default for a file) the QAT model starts from the float model's function: its 8-bit
    ranges are the float activations' ranges on `calibration_images`, and under
    `--alpha_init calibrate` each PACT α is their `alpha_percentile`-th percentile
    (`sgt_tfmot.quantize.calibrate_ranges`). Before that, BatchNormalization statistics that
    do not fit the data (re-estimated ones raise the float model's top-1 on the labelled
    calibration images by 5 points or more) are re-estimated, with a note
    (`sgt_tfmot.trainers.refit_stale_batch_norm`).
    """
    options = {} if config.width is None else {"width": config.width}
    if model_zoo.takes(config.model, "mean"):  # the data's own pixel statistics
        options.update(mean=info.mean, std=info.std)
    model = model_zoo.build(
        config.model, info.image_shape, info.num_classes, weight_decay=config.weight_decay,
        trust_code=config.trust_model_code, **options,
    )  # fmt: skip
    if model_zoo.is_model_file(config.model):
        model, removed = model_zoo.without_augmentation(model, f"--model {config.model}")
        if removed:
            augment = ",".join(datasets.parse_augment(config.augment) or info.augment) or "none"
            print(
                f"Note: the data-augmentation layers of --model {config.model} "
                f"({', '.join(removed)}) are taken out: the identity at inference, they would "
                "draw another augmentation at each forward pass of a training step; the "
                f"training images are augmented by --augment instead (now: {augment}).",
                flush=True,
            )
    if config.init_from is not None:
        source = saving.load_model(config.init_from, trust_code=config.trust_model_code)
        model_zoo.copy_weights(source, model, f"--init_from {config.init_from}")
    if config.float:
        return model
    calibrate = config.alpha_init == "calibrate"
    # A file's own weights are taken as trained unless --alpha_init gives α a number.
    trained = config.init_from is not None or (model_zoo.is_model_file(config.model) and calibrate)
    if trained and calibration_images is not None and calibration_labels is not None:
        source = f"--model {config.model}"
        if config.init_from is not None:
            source = f"--init_from {config.init_from}"
        why = "so that the quantization ranges are set from the activations training sees"
        refit_stale_statistics(model, calibration_images, calibration_labels, source, why)
    qat = quantize.quantize_model(
        model,
        weight_bits=config.weight_bits,
        activation_bits=config.activation_bits,
        first_last_bits=config.first_last_bits,
        alpha_init=10.0 if calibrate else config.alpha_init,
        alpha_l2=config.alpha_l2,
        weight_range=config.weight_range,
    )
    if trained and calibration_images is not None:
        quantize.calibrate_ranges(
            qat, model, calibration_images, config.alpha_percentile, alphas=calibrate
        )
    return qat


def refit_stale_statistics(model, images, labels, what: str, why: str):
    """`refit_stale_batch_norm` with a note when the re-estimated statistics are kept;
    returns its measurement (None without BatchNormalization)."""
    fit = refit_stale_batch_norm(model, images, labels)
    if fit is not None and fit.replaced:
        print(
            f"Note: the BatchNormalization statistics of {what} do not fit the training "
            f"images: in inference mode it classifies {100 * fit.own_accuracy:.1f} % of "
            f"{fit.images} of them with its own statistics and {100 * fit.data_accuracy:.1f} % "
            "with statistics re-estimated on them (moving averages that lag the weights: "
            f"few training steps?). The re-estimated ones are kept, {why}.",
            flush=True,
        )
    return fit


def make_trainer(config: TrainConfig, model: keras.Model, plan: Plan, image_shape):
    """`model` under SGT (or itself with --nosgt), compiled with the run's SGD and schedule,
    its metrics reduced as `report_synchronised_metrics` says, and built."""
    optimizer = keras.optimizers.SGD(
        schedules.make(config.schedule, config.learning_rate, plan.total_steps),
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
            patch_size=config.patch_size,
            blur_sigma=config.blur_sigma,
            impute_noise=config.impute_noise,
            seed=config.seed,
        )
    trainer.compile(optimizer, heads.loss(model), metrics=["accuracy"])
    report_synchronised_metrics(trainer)  # plain runs too
    trainer(tf.zeros([1, *image_shape]))  # built, so BackupAndRestore can restore
    return trainer


@dataclasses.dataclass(frozen=True)
class Built:
    """The model, its trainer and the data pipelines, built before anything is written."""

    model: keras.Model
    trainer: keras.Model
    train_ds: tf.data.Dataset
    test_ds: tf.data.Dataset


def build(setup: Setup) -> Built:
    """The data pipelines (from the resume position on), the model and its trainer."""
    config, plan, strategy, augment = setup.config, setup.plan, setup.strategy, setup.augment
    train_x, train_y = setup.arrays.split("train")
    start_step = setup.start_step
    train_ds = datasets.training_batches(
        train_x, train_y, config.batch_size, seed=config.seed,
        total_steps=max(plan.total_steps, start_step + 1), start_step=start_step,
        augment=augment,
    )  # fmt: skip
    test_ds = datasets.batches(*setup.arrays.split("test"), config.batch_size)
    if is_multi_worker(strategy):
        train_ds, test_ds = shard_by_data(train_ds), shard_by_data(test_ds)
    with strategy.scope():
        model = build_model(config, setup.info, *calibration_set(setup.arrays, config.seed))
        trainer = make_trainer(config, model, plan, setup.info.image_shape)
    return Built(model, trainer, train_ds, test_ds)
