"""Your own images, end to end: a folder of PNGs per class -> train -> convert -> explain.

Writes an image folder the way a camera or a labelling tool would leave it (one sub-folder
per class, `train/` and `test/`), from any dataset `sgt_tfmot.data` can open, then runs the
three command-line tools on it exactly as a user types them:

    python examples/your_own_images.py --dataset cifar10 --data_dir ../shared/data \\
        --per_class 500 --image_size 64 --out_dir runs/folder-demo

    python -m sgt_tfmot.train   --dataset runs/folder-demo/images --out_dir runs/folder-demo/run
    python -m sgt_tfmot.convert --int8 runs/folder-demo/run --output runs/folder-demo/int8.tflite
    python -m sgt_tfmot.explain --model runs/folder-demo/run --out_dir runs/folder-demo/explain

`--max_steps` caps the training (the test suite runs this example with a cap of 2).
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
from absl import app, flags

FLAGS = flags.FLAGS
flags.DEFINE_string("dataset", "mnist_subset", "Any dataset sgt_tfmot.data opens.")
flags.DEFINE_string("data_dir", None, "Folder with DATASET.npz.")
flags.DEFINE_integer("per_class", 20, "Training images written per class (test: a fifth).")
flags.DEFINE_integer("image_size", None, "Resize the written images to this square size.")
flags.DEFINE_string("out_dir", "runs/folder-demo", "Where the images and the runs go.")
flags.DEFINE_string("model", "mobilenet_tiny", "--model of the training.")
flags.DEFINE_integer("epochs", 1, "Training epochs.")
flags.DEFINE_integer("max_steps", None, "Cap on the training steps (tests).")
flags.DEFINE_list("train_args", [], "More flags for sgt_tfmot.train, comma-separated.")


def write_folder(dataset, data_dir, per_class, image_size, root: Path) -> list[str]:
    """Writes ROOT/{train,test}/<class>/<i>.png; returns the class names."""
    from PIL import Image

    from sgt_tfmot import data

    info = data.info(dataset, data_dir)
    names = [name.replace("/", "_") for name in info.labels()]
    for split, count in (("train", per_class), ("test", max(1, per_class // 5))):
        x, y = data.load_arrays(dataset, split, data_dir)
        for label, name in enumerate(names):
            folder = root / split / f"{label:02d}_{name}"
            folder.mkdir(parents=True, exist_ok=True)
            for i, index in enumerate(np.flatnonzero(y == label)[:count]):
                pixels = x[index][..., 0] if x.shape[-1] == 1 else x[index]
                image = Image.fromarray(pixels)
                if image_size:
                    image = image.resize((image_size, image_size), Image.BICUBIC)
                image.save(folder / f"{i:05d}.png")
    return names


def run(*command: str) -> None:
    print("$", " ".join(command), flush=True)
    subprocess.run([sys.executable, *command], check=True)


def main(argv) -> int:
    del argv
    out = Path(FLAGS.out_dir)
    images = out / "images"
    if not images.exists():
        names = write_folder(FLAGS.dataset, FLAGS.data_dir, FLAGS.per_class, FLAGS.image_size,
                             images)  # fmt: skip
        print(f"wrote {images}: {len(names)} classes", flush=True)
    train = [
        "-m",
        "sgt_tfmot.train",
        "--dataset",
        str(images),
        "--model",
        FLAGS.model,
        "--epochs",
        str(FLAGS.epochs),
        "--out_dir",
        str(out / "run"),
        "--progress",
        "2",
    ]
    if FLAGS.max_steps:
        train += ["--max_steps", str(FLAGS.max_steps), "--batch_size", "16"]
    if not (out / "run" / "metrics.json").is_file():
        run(*train, *FLAGS.train_args)
    checks = ["--min_agreement", "0.9", "--max_accuracy_drop", "5"] if FLAGS.max_steps else []
    fidelity = ["--fidelity_images", "16"] if FLAGS.max_steps else []
    convert = ["-m", "sgt_tfmot.convert", "--int8", str(out / "run"), "--uint8", "--output",
               str(out / "int8.tflite"), "--report", str(out / "int8.json"), "--overwrite",
               *checks, *fidelity]  # fmt: skip
    result = subprocess.run([sys.executable, *convert])
    if result.returncode not in (0, 1):  # 1: a check failed, the report says which
        return result.returncode
    small = ["--curve_images", "32", "--agreement_images", "8", "--num_images", "4"]
    run("-m", "sgt_tfmot.explain", "--model", str(out / "run"), "--out_dir",
        str(out / "explain"), "--overwrite", *(small if FLAGS.max_steps else []))  # fmt: skip
    return 0


if __name__ == "__main__":
    app.run(lambda argv: sys.exit(main(argv)))
