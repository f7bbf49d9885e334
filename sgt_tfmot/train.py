"""`python -m sgt_tfmot.train`: the command line of `sgt_tfmot.training`.

With no flags it trains SGT + PACT at 8 bits on the MNIST subset that ships with the package
(a few minutes on a laptop CPU) and prints where the results are. See `sgt_tfmot.training`
for what the output directory holds; `--helpfull` lists every flag.

    python -m sgt_tfmot.train
    python -m sgt_tfmot.train --preset paper_cifar10 --data_dir ../shared/data --out_dir runs/c
    python -m sgt_tfmot.train --dataset cifar10 --data_dir DATA --weight_bits 4 \\
        --activation_bits 4 --epochs 30 --mixed_precision --out_dir runs/cifar10-w4a4-sgt
"""

import sys

from absl import app, flags, logging

from sgt_tfmot import data as datasets
from sgt_tfmot.saving import RUN_MODEL_FILE
from sgt_tfmot.training import RunError, TrainConfig, config_from_flags, train

FLAGS = flags.FLAGS
_defaults = TrainConfig()
flags.DEFINE_string("dataset", _defaults.dataset, "mnist_subset (embedded), mnist or cifar10.")
flags.DEFINE_string("data_dir", None, "Folder with NAME.npz (x_train, y_train, x_test, y_test).")
flags.DEFINE_string("model", _defaults.model, "resnet20 or mobilenet_tiny.")
flags.DEFINE_integer("weight_bits", _defaults.weight_bits, "Bits of the kernels (2..8).")
flags.DEFINE_integer("activation_bits", _defaults.activation_bits, "Bits of PACT (2..8).")
flags.DEFINE_integer("first_last_bits", _defaults.first_last_bits, "Bits of first/last kernel.")
flags.DEFINE_bool("float", False, "Train the float model (no quantization).")
flags.DEFINE_bool("sgt", True, "Saliency-Guided Training (--nosgt: plain training).")
flags.DEFINE_float("mask_fraction", _defaults.mask_fraction, "Share of features masked by SGT.")
flags.DEFINE_float("kl_weight", _defaults.kl_weight, "λ of the KL term of SGT.")
flags.DEFINE_string("fill", _defaults.fill, "Fill of masked features: random, zero or mean.")
flags.DEFINE_integer("epochs", _defaults.epochs, "Epochs.")
flags.DEFINE_integer("batch_size", _defaults.batch_size, "Global batch size.")
flags.DEFINE_float("learning_rate", _defaults.learning_rate, "Peak learning rate (SGD).")
flags.DEFINE_string("schedule", _defaults.schedule, "onecycle, cosine or constant.")
flags.DEFINE_float("weight_decay", _defaults.weight_decay, "L2 factor on kernels.")
flags.DEFINE_float("alpha_init", _defaults.alpha_init, "Initial PACT α.")
flags.DEFINE_float("alpha_l2", _defaults.alpha_l2, "L2 penalty on α.")
flags.DEFINE_string("preset", None, "paper_mnist or paper_cifar10: the paper's settings.")
flags.DEFINE_bool("mixed_precision", False, "Train with the mixed_bfloat16 policy.")
flags.DEFINE_integer("seed", _defaults.seed, "Random seed.")
flags.DEFINE_integer("max_steps", None, "Cap on the number of training steps.")
flags.DEFINE_string("out_dir", None, "Output directory (default: runs/<dataset>-<model>-...).")
flags.DEFINE_bool("overwrite", False, "Replace a finished run in --out_dir.")
flags.DEFINE_string("distribute", "none", "none, mirrored (local devices) or multi_worker.")
flags.DEFINE_integer("backup_every", _defaults.backup_every, "Steps between resume points.")
flags.DEFINE_integer("verbose", None, "Keras verbosity (default: bars on a terminal).")


def main(argv) -> int:
    logging.set_verbosity(logging.WARNING)
    if len(argv) > 1:
        print(f"error: unexpected arguments {argv[1:]}", file=sys.stderr)
        return 2
    values = {name: FLAGS[name].value for name in FLAGS if name in TrainConfig.__annotations__}
    explicit = {name for name in values if FLAGS[name].present}
    try:
        config = config_from_flags(values, explicit, FLAGS.preset)
        metrics = train(config)
    except (RunError, datasets.DataError, ValueError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(
            f"\ninterrupted: run the same command again to resume from the last backup in "
            f"{config.out_dir}",
            file=sys.stderr,
        )
        return 130
    out = config.out_dir
    print(
        f"\ntest accuracy {metrics['test_accuracy']:.4f} after {metrics['epochs']} epochs "
        f"({metrics['wall_time_seconds']:.0f} s).\nResults in {out}/: {RUN_MODEL_FILE}, "
        "metrics.json, history.json, alpha.json, alpha.png, tensorboard/\n"
        f"Next: python -m sgt_tfmot.convert --int8 {out} --output {out}/model.tflite"
    )
    return 0


def run() -> None:
    app.run(lambda argv: sys.exit(main(argv)))


if __name__ == "__main__":
    run()
