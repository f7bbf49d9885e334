"""The compatibility matrix: which Keras models go through training and conversion, and how.

Each row is a model file a user could bring: Keras Applications models (weights=None, at
32x32 on CIFAR-10), TFMOT's QAT tutorial model (MNIST, a (28, 28) input), a model of common
user layers, and the same model made with Keras 3 (`import keras`, saved as .keras). Every
row goes the user's way: `python -m sgt_tfmot.train --model FILE` (its work function
`sgt_tfmot.training.train`: quantize, an SGT fit of --max_steps steps, align, save) and
`python -m sgt_tfmot.convert --uint8` (`convert_and_check`: load, integer conversion with
uint8 input and output as MediaPipe needs, agreement with the Keras model, the deployment
targets), with the CLIs' other defaults (W8A8, SGT, mixed precision where the CPU has
bfloat16). A row records how far it got, the one-line error that
stopped it, the times, the accuracies, the agreement and each target's verdict.

The model file a user brings is a trained one: each model is first trained in float for
--pretrain_epochs epochs (Adam 1e-3, the loss its head needs, raw pixels in [0, 255] as `train`
feeds a model file; in Keras 3 for the Keras 3 row) and saved; `train --model` then
fine-tunes it with QAT and SGT for --max_steps steps at --learning_rate (or the row's own, said
in the table). The table is about whether and how exactly each model converts; the
accuracies say how far a few epochs got.
Rows already done in OUT_DIR/rows.json with the same settings are kept (a run that stops
resumes at the first unfinished row with the same command), a pretrained model file too, and
an interrupted pretraining resumes at its next epoch.

Usage (the table of docs/COMPATIBILITY.md):

    python benchmarks/compatibility.py --data_dir ../shared/data --out_dir runs/compat \
        --markdown runs/compat/table.md

    python benchmarks/compatibility.py --out_dir runs/compat --table_only   # the table again
    python benchmarks/compatibility.py --rows MobileNetV3Small --max_steps 2 ...  # a smoke run
"""

from __future__ import annotations

import dataclasses
import inspect
import json
import os
import subprocess
import sys
import textwrap
import time
from collections.abc import Callable
from pathlib import Path

from absl import app, flags

FLAGS = flags.FLAGS
flags.DEFINE_list("rows", None, "Rows to run (default: all), by name.")
flags.DEFINE_string("data_dir", None, "Folder with cifar10.npz and mnist.npz.")
flags.DEFINE_string("out_dir", None, "Where each row's model file, run and .tflite go.")
flags.DEFINE_string("markdown", None, "Write the table here (Markdown).")
flags.DEFINE_integer("pretrain_epochs", 2, "Float epochs before the QAT fit (0: none).", 0)
flags.DEFINE_integer("max_steps", 300, "SGT training steps per row.", lower_bound=1)
flags.DEFINE_float("learning_rate", 0.01, "Peak learning rate of the QAT fit (a fine-tune).", 0)
flags.DEFINE_integer("batch_size", 64, "Training batch size.", lower_bound=1)
flags.DEFINE_integer("num_test", 2000, "Test images of the agreement check.", lower_bound=1)
flags.DEFINE_integer("tflm_images", 20, "Test images TFLite Micro runs.", lower_bound=1)
flags.DEFINE_bool("table_only", False, "Only write the table of the rows in OUT_DIR/rows.json.")


def applications(name: str, **kwargs) -> Callable:
    def build(keras):
        model = getattr(keras.applications, name)
        return model(input_shape=(32, 32, 3), weights=None, classes=10, **kwargs)

    return build


def tfmot_tutorial(keras):
    """The model of TFMOT's QAT tutorial ("Quantization aware training in Keras example")."""
    L = keras.layers
    return keras.Sequential([
        keras.Input((28, 28)),
        L.Reshape((28, 28, 1)),
        L.Conv2D(12, (3, 3), activation="relu"),
        L.MaxPooling2D((2, 2)),
        L.Flatten(),
        L.Dense(10),
    ])  # fmt: skip


def user_patterns(keras):
    """Issue 22's model of common user layers: Rescaling, a Conv without bias and a
    BatchNormalization without offset, a linear depthwise conv, Add, Dropout, average and
    max pooling concatenated, LeakyReLU, swish, a softmax head. Written against the `keras`
    module it is given (tf_keras here, Keras 3 in the Keras 3 row)."""
    L = keras.layers
    inputs = keras.Input((32, 32, 3))
    x = L.Rescaling(1 / 127.5, offset=-1.0)(inputs)
    x = L.Conv2D(32, 3, strides=2, padding="same", use_bias=False)(x)
    x = L.ReLU()(L.BatchNormalization(center=False)(x))
    x = L.Dropout(0.1)(L.Add()([x, L.DepthwiseConv2D(3, padding="same")(x)]))
    x = L.Concatenate()([L.AveragePooling2D(2)(x), L.MaxPooling2D(2)(x)])
    x = L.LeakyReLU(0.1)(L.BatchNormalization()(L.Conv2D(64, 3, padding="same")(x)))
    x = L.Activation("swish")(L.SeparableConv2D(64, 3, padding="same")(x))
    return keras.Model(inputs, L.Dense(10, activation="softmax")(L.GlobalAveragePooling2D()(x)))


@dataclasses.dataclass(frozen=True)
class Row:
    build: Callable  # keras module -> model
    dataset: str = "cifar10"
    keras3: bool = False  # made with Keras 3 in a subprocess, saved as .keras
    clipnorm: float | None = None  # the float training's Adam clips each gradient to this norm
    learning_rate: float | None = None  # the QAT fit's peak learning rate, for --learning_rate


ROWS = {
    "MobileNet": Row(applications("MobileNet")),
    "MobileNetV2": Row(applications("MobileNetV2")),
    "MobileNetV3Small": Row(applications("MobileNetV3Small")),
    # From its random init, EfficientNetB0's training-mode loss is 5.0 (chance: 2.3) and Adam
    # 1e-3 diverges at first: 10 epochs reached 31 % (training) and a model so near chance
    # that a one-ulp change moved 4 % of its classes. Clipping the gradients' norm to 1: 32 %
    # validation accuracy after 3 epochs on 10,000 images, against 22 % without. Its QAT + SGT
    # fine-tune at the matrix's 0.01 (SGD) undid the float training: the QAT model of the
    # 10-epoch file tests at 65.6 % before the fit, 21.7 % after it; at 0.001, 56.3 %.
    "EfficientNetB0": Row(applications("EfficientNetB0"), clipnorm=1.0, learning_rate=0.001),
    # ResNet50's QAT + SGT fine-tune at 0.01 took its 3-epoch file from ~39 % (training) to
    # 28 %, as EfficientNetB0's: its row fine-tunes at 0.001 too.
    "ResNet50": Row(applications("ResNet50"), learning_rate=0.001),
    "DenseNet121": Row(applications("DenseNet121")),
    "NASNetMobile": Row(applications("NASNetMobile")),
    "TFMOT tutorial": Row(tfmot_tutorial, dataset="mnist"),
    "user patterns": Row(user_patterns),
    "user patterns (Keras 3)": Row(user_patterns, keras3=True),
}


def pretrain(keras, model, npz_path, epochs, batch_size, checkpoint, clipnorm=None):
    """Float training of a fresh model, as its user trained it before bringing the file:
    Adam 1e-3 (its gradients clipped to norm `clipnorm` when given), the loss its head needs,
    raw pixels in [0, 255] (what `train` feeds a model file), BatchNormalization momentum 0.9
    (with Keras Applications' 0.999 the moving statistics of two epochs still hold the first
    steps': MobileNetV2 scored 10 % in inference mode after 43 % in training). Written
    against the `keras` module it is given, like the builders. After each epoch the model
    and its optimizer are saved to `checkpoint` and the epochs done and seconds spent to
    `checkpoint + ".json"`: a run that stops resumes at the next epoch (each epoch's order is
    a permutation seeded by its number). Returns the trained model and the seconds all its
    epochs took."""
    import json
    import os
    import time

    import numpy as np

    with np.load(npz_path) as data:
        x, y = data["x_train"].astype("float32"), data["y_train"].reshape(-1)
    progress = {"epochs": 0, "seconds": 0.0}
    if os.path.isfile(checkpoint + ".json") and os.path.isfile(checkpoint):
        with open(checkpoint + ".json") as file:
            progress = json.load(file)
        model = keras.models.load_model(checkpoint)
        print(f"resuming the pretraining after epoch {progress['epochs']}", flush=True)
    else:
        for layer in model.layers:  # statistics that follow two epochs (Applications: 0.999)
            if type(layer).__name__ == "BatchNormalization":
                layer.momentum = 0.9
        last = model.layers[-1]
        activation = getattr(getattr(last, "activation", None), "__name__", "")
        softmax = activation == "softmax" or type(last).__name__ == "Softmax"
        loss = keras.losses.SparseCategoricalCrossentropy(from_logits=not softmax)
        optimizer = keras.optimizers.Adam(1e-3, clipnorm=clipnorm)
        model.compile(optimizer, loss, metrics=["accuracy"])
    for epoch in range(progress["epochs"], epochs):
        start = time.perf_counter()
        order = np.random.RandomState(epoch).permutation(len(x))
        model.fit(x[order], y[order], batch_size=batch_size, epochs=epoch + 1,
                  initial_epoch=epoch, shuffle=False, verbose=2)  # fmt: skip
        model.save(checkpoint)
        progress = {"epochs": epoch + 1,
                    "seconds": progress["seconds"] + time.perf_counter() - start}  # fmt: skip
        with open(checkpoint + ".json.part", "w") as file:
            json.dump(progress, file)
        os.replace(checkpoint + ".json.part", checkpoint + ".json")
    return model, progress["seconds"]


def write_model_file(row: Row, path_stem: Path) -> tuple[Path, float | None]:
    """The row's model, trained for --pretrain_epochs and saved as a user would: tf_keras
    .h5, or Keras 3 .keras made in a process where `import keras` is Keras 3; and the seconds
    its training took (all epochs, over every run that trained some) or, without training,
    that making it took. A file left by an earlier run with the same pretraining (its
    `.pretrained.json`, which records the seconds) is reused; an interrupted pretraining
    resumes from its last epoch's checkpoint (`.pretraining-b<batch size>` beside it)."""
    path = path_stem.with_suffix(".keras" if row.keras3 else ".h5")
    marker = path_stem.with_suffix(".pretrained.json")
    settings = {"epochs": FLAGS.pretrain_epochs, "batch_size": FLAGS.batch_size, "bn_momentum": 0.9}
    if row.clipnorm is not None:
        settings["clipnorm"] = row.clipnorm
    if path.is_file() and marker.is_file():
        made = json.loads(marker.read_text())
        if {k: v for k, v in made.items() if k != "seconds"} == settings:
            return path, made.get("seconds")
    checkpoint = path_stem.with_suffix(f".pretraining-b{FLAGS.batch_size}{path.suffix}")
    start = time.perf_counter()
    npz = str(Path(FLAGS.data_dir) / f"{row.dataset}.npz")
    epochs, batch = FLAGS.pretrain_epochs, FLAGS.batch_size
    if not row.keras3:
        from sgt_tfmot import save_model
        from sgt_tfmot.keras import keras

        keras.utils.set_random_seed(0)
        model = row.build(keras)
        if epochs:
            model, _ = pretrain(keras, model, npz, epochs, batch, str(checkpoint), row.clipnorm)
        save_model(model, path, overwrite=True)
    else:
        script = "import keras\n"
        for function in (row.build, pretrain):
            script += textwrap.dedent(inspect.getsource(function)) + "\n"
        script += f"keras.utils.set_random_seed(0)\nmodel = {row.build.__name__}(keras)\n"
        if epochs:
            script += f"model, _ = pretrain(keras, model, {npz!r}, {epochs}, {batch}, "
            script += f"{str(checkpoint)!r}, {row.clipnorm!r})\n"
        script += f"model.save({str(path)!r})\n"
        env = {k: v for k, v in os.environ.items() if k != "TF_USE_LEGACY_KERAS"}
        made = subprocess.run(
            [sys.executable, "-c", script], env=env, capture_output=True, text=True
        )
        if made.returncode != 0:
            raise RuntimeError(f"the Keras 3 model file: {made.stderr.strip().splitlines()[-1]}")
    seconds = time.perf_counter() - start
    progress = Path(f"{checkpoint}.json")
    if epochs and progress.is_file():
        seconds = json.loads(progress.read_text())["seconds"]
    marker.write_text(json.dumps({**settings, "seconds": seconds}))
    checkpoint.unlink(missing_ok=True)
    progress.unlink(missing_ok=True)
    return path, seconds


def first_line(error: BaseException) -> str:
    text = str(error).strip().splitlines()
    return f"{type(error).__name__}: {text[0] if text else ''}"[:300]


def run_row(name: str, row: Row, out_dir: Path) -> dict:
    """The row's stages in order; the first that fails ends the row with its message."""
    from sgt_tfmot.conversion import stages
    from sgt_tfmot.conversion.checks import CheckOptions
    from sgt_tfmot.training import TrainConfig, train

    slug = name.lower().replace(" ", "_").replace("(", "").replace(")", "")
    work = out_dir / slug
    work.mkdir(parents=True, exist_ok=True)
    found = {"row": name, "dataset": row.dataset, "clipnorm": row.clipnorm,
             "learning_rate": row.learning_rate, "stage": "model file"}  # fmt: skip
    try:
        path, found["pretrain_s"] = write_model_file(row, work / "model")
        found["stage"] = "train"
        start = time.perf_counter()
        config = TrainConfig(
            model=str(path), dataset=row.dataset, data_dir=FLAGS.data_dir,
            max_steps=FLAGS.max_steps, epochs=1, batch_size=FLAGS.batch_size,
            learning_rate=row.learning_rate or FLAGS.learning_rate,
            out_dir=str(work / "run"), overwrite=True, progress=0, seed=0,
        )  # fmt: skip
        metrics = train(config)
        found.update(train_s=time.perf_counter() - start, precision=metrics.get("precision"),
                     steps=metrics.get("optimizer_steps"))  # fmt: skip
        found["stage"] = "convert"
        start = time.perf_counter()
        checks = CheckOptions(num_test=FLAGS.num_test, fidelity_images=0, occlusion_images=0,
                              tflm_images=FLAGS.tflm_images)  # fmt: skip
        result = stages.convert_and_check(
            work / "run", work / "model.tflite", checks=checks,
            delivery=stages.Delivery(io_dtype="uint8"), report=work / "report.json",
            overwrite=True,
        )  # fmt: skip
        found["convert_s"] = time.perf_counter() - start
        found["report"] = result.report
        found["stage"] = "done"
    except Exception as error:  # a row that cannot work says why
        found["error"] = first_line(error)
    return found


_SETTINGS = (
    "pretrain_epochs", "max_steps", "learning_rate", "batch_size", "num_test", "tflm_images",
)  # fmt: skip


def _seconds(value) -> str:
    return "–" if value is None else f"{value:.0f}"


def _percent(value) -> str:
    return "–" if value is None else f"{100 * value:.2f} %"


def _target(report: dict, name: str) -> str:
    target = report.get("targets", {}).get(name)
    if target is None:
        return "–"
    if target.get("compatible") is True:
        return "yes"
    return f"no: {target.get('failure') or target.get('reason') or 'not compatible'}"


def markdown(rows: list[dict]) -> str:
    lines = [
        "| model | float training (epochs, s) | QAT + SGT fit (steps, precision, s) | "
        "converted (s) | Keras acc. | int8 acc. | "
        "top-1 agreement | ulp floor | checks | int8 ops | Edge TPU | MediaPipe | TFLM |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for row in rows:
        report = row.get("report")
        if report is None:
            lines.append(f"| {row['row']} | fails at {row['stage']}: {row.get('error', '')} "
                         "| | | | | | | | | | | |")  # fmt: skip
            continue
        ops = sorted(set(report.get("op_names") or []))
        checks = "pass" if report["checks_passed"] else "fail: " + "; ".join(report["failures"])
        clipped = f" (clipnorm {row['clipnorm']:g})" if row.get("clipnorm") else ""
        rate = f" (learning rate {row['learning_rate']:g})" if row.get("learning_rate") else ""
        lines.append(
            f"| {row['row']} | {row['settings']['pretrain_epochs']}{clipped}, "
            f"{_seconds(row['pretrain_s'])} | "
            f"{row['steps']}{rate}, {row['precision']}, {row['train_s']:.0f} | "
            f"{row['convert_s']:.0f} | {_percent(report['keras_accuracy'])} | "
            f"{_percent(report['tflite_accuracy'])} | **{_percent(report['agreement'])}** | "
            f"{_percent(report['ulp_agreement'])} | {checks} | {', '.join(ops)} | "
            f"{_target(report, 'edgetpu')} | {_target(report, 'mediapipe')} | "
            f"{_target(report, 'tflm')} |"
        )
    return "\n".join(lines) + "\n"


def main(argv):
    del argv
    if FLAGS.out_dir is None:
        raise app.UsageError("--out_dir is required")
    names = FLAGS.rows or list(ROWS)
    unknown = [name for name in names if name not in ROWS]
    if unknown:
        raise app.UsageError(f"unknown rows {unknown}; rows: {list(ROWS)}")
    out_dir = Path(FLAGS.out_dir)
    recorded = out_dir / "rows.json"
    before = json.loads(recorded.read_text()) if recorded.is_file() else []
    if FLAGS.table_only:
        rows = [row for row in before if row["row"] in names]
    else:
        rows = run_rows(names, out_dir, before)
    table = markdown(rows)
    print(table)
    if FLAGS.markdown:
        Path(FLAGS.markdown).write_text(table)


def run_rows(names: list[str], out_dir: Path, before: list[dict]) -> list[dict]:
    """Runs the rows `names` in order, keeping those done before with the same settings;
    rows.json holds, after each row, every row recorded (the others' entries kept)."""
    settings = {key: FLAGS[key].value for key in _SETTINGS}
    recorded = {row["row"]: row for row in before}
    rows = []
    for name in names:
        print(f"== {name}", flush=True)
        old, row_of = recorded.get(name), ROWS[name]
        same = old is not None and old.get("settings") == settings
        kept = (old or {}).get("clipnorm"), (old or {}).get("learning_rate")
        if same and old.get("stage") == "done" and kept == (row_of.clipnorm, row_of.learning_rate):
            print("(done before with the same settings: kept)", flush=True)
            rows.append(old)
            continue
        row = run_row(name, ROWS[name], out_dir)
        row["settings"] = settings
        rows.append(row)
        recorded[name] = row
        summary = {k: v for k, v in row.items() if k != "report"}
        print(json.dumps(summary), flush=True)
        ordered = [recorded[key] for key in ROWS if key in recorded]
        (out_dir / "rows.json").write_text(json.dumps(ordered, indent=1, default=str))
    return rows


if __name__ == "__main__":
    app.run(main)
