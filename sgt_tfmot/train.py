"""`python -m sgt_tfmot.train`: the command line of `sgt_tfmot.training`.

With no flags it trains SGT + PACT at 8 bits on the MNIST subset that ships with the package
(a few minutes on a laptop CPU) and prints where the results are. See `sgt_tfmot.training`
for what the run directory holds. Run the same command again after an interruption and it
resumes exactly where the last backup left it.

    python -m sgt_tfmot.train
    python -m sgt_tfmot.train --preset paper_cifar10 --data_dir ../shared/data --out_dir runs/c
    python -m sgt_tfmot.train --dataset cifar10 --data_dir DATA --weight_bits 4 \\
        --activation_bits 4 --epochs 30 --out_dir runs/cifar10-w4a4-sgt

Exit status: 0 trained, 2 bad input (one line on stderr, nothing written; also when another
`sgt_tfmot.train` is training in --out_dir), 130 interrupted.
"""

import sys

from absl import flags  # noqa: E402

from sgt_tfmot import (  # noqa: E402
    _cli,  # first: starts TensorFlow quietly
    models,
    precision,
    schedules,
)
from sgt_tfmot.masking import FILLS, MAX_BLUR_SIGMA  # noqa: E402
from sgt_tfmot.quantizers import MAX_BITS, MIN_BITS, WEIGHT_RANGES  # noqa: E402
from sgt_tfmot.saving import RUN_MODEL_FILE  # noqa: E402
from sgt_tfmot.training import DISTRIBUTE, PRESETS, TrainConfig, config_from_flags, train  # noqa: E402

PROGRAM = "sgt_tfmot.train"
FLAGS = flags.FlagValues()
_IN = {"flag_values": FLAGS}
_d = TrainConfig()
_BITS = {"lower_bound": MIN_BITS, "upper_bound": MAX_BITS, **_IN}
_cli.define_shared_flags(FLAGS, dataset=_d.dataset)
flags.DEFINE_string(
    "augment", None,
    "none, or a comma-separated list of crop, flip (default: crop,flip for colour images, none "
    "for one channel).", **_IN,
)  # fmt: skip
flags.DEFINE_string("model", _d.model, "", **_IN)
_cli.live_help(FLAGS, "model", lambda: (
    f"Architecture: {models.describe()}; or a float classifier file (.h5/.keras)."
))  # fmt: skip
flags.DEFINE_float("width", None, "Width multiplier of mobilenet_v2 (default 0.35).", **_IN)
flags.DEFINE_string(
    "init_from", None,
    "Start from this trained model's float weights (run directory or file; a QAT model's "
    "latent weights too).", **_IN,
)  # fmt: skip
flags.DEFINE_integer("weight_bits", _d.weight_bits, "Bits of the kernels.", **_BITS)
flags.DEFINE_integer("activation_bits", _d.activation_bits, "Bits of PACT.", **_BITS)
flags.DEFINE_integer("first_last_bits", _d.first_last_bits, "Bits of first/last kernel.", **_BITS)
flags.DEFINE_enum(
    "weight_range", _d.weight_range, list(WEIGHT_RANGES),
    "Range of each kernel's grid: max (max |w|) or mse (the clip with the least error; "
    "better below 4 bits).", **_IN,
)  # fmt: skip
flags.DEFINE_bool("float", False, "Train the float model (no quantization).", **_IN)
flags.DEFINE_bool("sgt", True, "Saliency-Guided Training (--nosgt: plain training).", **_IN)
flags.DEFINE_float(
    "mask_fraction", _d.mask_fraction, "Share of features masked by SGT, in (0, 1).", **_IN
)
flags.DEFINE_float(
    "kl_weight", _d.kl_weight, "λ of the KL term of SGT, >= 0.", lower_bound=0, **_IN
)
flags.DEFINE_enum(
    "fill", _d.fill, list(FILLS),
    "Fill of masked features: random (uniform in the image's range per channel), zero, mean, "
    "blur (Gaussian blur of the image, --blur_sigma), impute (ROAD's noisy linear imputation "
    "from the neighbouring pixels, --impute_noise).", **_IN,
)  # fmt: skip
flags.DEFINE_integer(
    "patch_size", _d.patch_size,
    "Mask p x p patches ranked by their summed saliency (1: single pixels); must divide the "
    "image's height and width.", **_IN,
)  # fmt: skip
flags.DEFINE_float(
    "blur_sigma", _d.blur_sigma, f"σ in pixels of --fill blur, in (0, {MAX_BLUR_SIGMA:g}].", **_IN
)
flags.DEFINE_float(
    "impute_noise", _d.impute_noise,
    "Noise of --fill impute: standard deviation as a share of the image's range, in [0, 1].",
    **_IN,
)  # fmt: skip
flags.DEFINE_integer("epochs", _d.epochs, "Epochs.", lower_bound=1, **_IN)
flags.DEFINE_integer("batch_size", _d.batch_size, "Global batch size.", lower_bound=1, **_IN)
flags.DEFINE_float("learning_rate", _d.learning_rate, "Peak learning rate (SGD).", **_IN)
flags.DEFINE_enum(
    "schedule", _d.schedule, list(schedules.SCHEDULES), "Learning-rate schedule.", **_IN
)
flags.DEFINE_float("weight_decay", _d.weight_decay, "L2 factor on kernels.", lower_bound=0, **_IN)
flags.DEFINE_string(
    "alpha_init", None,
    "Initial PACT α (> 0), or calibrate: the --alpha_percentile of the trained float model's "
    "activations (--init_from's, or --model FILE's own). Default: calibrate when the run starts "
    "from trained weights (--init_from, --model FILE), else 10 (the PACT paper's).", **_IN,
)  # fmt: skip
flags.DEFINE_float(
    "alpha_percentile", _d.alpha_percentile, "Percentile for --alpha_init calibrate.", **_IN
)
flags.DEFINE_float("alpha_l2", _d.alpha_l2, "L2 penalty on α.", lower_bound=0, **_IN)
flags.DEFINE_enum("preset", None, list(PRESETS), "The paper's settings.", **_IN)
flags.DEFINE_enum(
    "mixed_precision", _d.mixed_precision, list(precision.CHOICES),
    "Compute precision; auto: mixed_bfloat16 where the hardware computes bfloat16 natively.",
    **_IN,
)  # fmt: skip
flags.DEFINE_integer("seed", _d.seed, "Random seed.", lower_bound=0, **_IN)
flags.DEFINE_integer(
    "max_steps", None, "Cap on the number of training steps.", lower_bound=1, **_IN
)
flags.DEFINE_string("out_dir", None, "Run directory (default: runs/<dataset>-<model>-...).", **_IN)
flags.DEFINE_bool("overwrite", False, "Replace a finished run's own files in --out_dir.", **_IN)
flags.DEFINE_enum("distribute", "none", list(DISTRIBUTE), "Distribution strategy.", **_IN)
flags.DEFINE_integer(
    "backup_every", _d.backup_every, "Steps between resume points.", lower_bound=1, **_IN
)
flags.DEFINE_integer(
    "progress", None, "Keras progress: 0 none, 1 bar, 2 a line per epoch (default: bar on a "
    "terminal).", lower_bound=0, upper_bound=2, **_IN,
)  # fmt: skip

# Former spellings: --mixed_precision was a switch.
_LEGACY = {"--mixed_precision": "--mixed_precision=mixed_bfloat16",
           "--nomixed_precision": "--mixed_precision=float32"}  # fmt: skip


def _legacy_spellings(argv: list[str]) -> list[str]:
    """Former spellings: the switch --mixed_precision; --verbose N (now --progress N).

    Kept on purpose: the commands recorded in docs/RESULTS.md and in the zoo's manifest use
    them, and they must still run as written."""
    result, args = [argv[0]], list(argv[1:])
    while args:
        arg = args.pop(0)
        if arg == "--verbose" and args and args[0] in ("0", "1", "2"):
            arg = f"--progress={args.pop(0)}"
        elif arg.startswith("--verbose=") and arg[10:] in ("0", "2"):
            arg = f"--progress={arg[10:]}"
        if arg in _LEGACY and not (args and not args[0].startswith("-")):
            arg = _LEGACY[arg]
        result.append(arg)
    return result


def main(argv: list[str]) -> int:
    """Parses the command line, trains, prints where the results are; returns the exit status."""
    argv = _legacy_spellings(argv)
    return _cli.run_main(argv, PROGRAM, FLAGS, __name__, _train)


def _train(positional: list[str]) -> int:
    if positional:
        raise _cli.UsageError(f"unexpected arguments: {' '.join(positional)}")
    names = {f for f in TrainConfig.__dataclass_fields__ if f in FLAGS}
    values = {name: FLAGS[name].value for name in names}
    values["alpha_init"] = _alpha_init(values["alpha_init"])
    explicit = {name for name in names if FLAGS[name].present}
    config = config_from_flags(values, explicit, FLAGS.preset)
    _cli.end_startup()  # training reports its own progress (on stdout too)
    try:
        metrics = train(config)
    except KeyboardInterrupt:
        print(
            f"\n{PROGRAM}: interrupted; run the same command again to resume from the last "
            f"backup in {config.out_dir}",
            file=sys.stderr,
        )
        return _cli.EXIT_INTERRUPTED
    out = config.out_dir
    saved = metrics.get("saved_model_test_accuracy")
    if saved is not None and abs(saved - metrics["test_accuracy"]) > 0.01:
        print(
            f"\nwarning: trained in {metrics['precision']}, the model scores "
            f"{metrics['test_accuracy']:.4f} there but {saved:.4f} in float32, as saved and "
            "converted; train with --mixed_precision float32 for a model that keeps its accuracy.",
            file=sys.stderr,
        )
    print(
        f"\ntest accuracy {metrics['test_accuracy']:.4f} after {metrics['epochs']} epochs "
        f"({metrics['wall_time_seconds']:.0f} s).\nResults in {out}/: {RUN_MODEL_FILE}, "
        "metrics.json, history.json, alpha.json, alpha.png, tensorboard/\n"
        f"Next: python -m sgt_tfmot.convert --int8 {out} --output {out}-int8.tflite "
        f"--report {out}-int8.json"
    )
    return _cli.EXIT_OK


def _alpha_init(text: str | None) -> float | str | None:
    if text is None or text == "calibrate":
        return text
    try:
        return float(text)
    except ValueError:
        raise _cli.UsageError(
            f"--alpha_init must be a number > 0 or calibrate. Received: {text!r}"
        ) from None


def run() -> None:
    sys.exit(main(sys.argv))


if __name__ == "__main__":
    run()
