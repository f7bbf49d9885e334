"""An int8 .tflite file's accuracy in every integer runtime, and the TFLite Micro target on it.

`python -m sgt_tfmot.convert` checks accuracy and agreement in LiteRT's default runtime (the
XNNPACK delegate) and runs the TFLM target (`sgt_tfmot.tflite.tflm`) on the files it writes.
This script measures a file, ours or one made elsewhere (MLPerf Tiny's reference ResNet-8,
say), the same way and in each runtime: top-1 accuracy on the test split in LiteRT's XNNPACK,
builtin and reference kernels and in TFLite Micro (in the arena it measures), the top-1
agreement of each with XNNPACK, then (unless --notarget) the TFLM target's verdict: outputs
against LiteRT's reference kernels, arena, flash bytes, resolver ops.

    python benchmarks/tflm_file.py --tflite pretrainedResnet_quant.tflite --dataset cifar10 \\
        --data_dir ../shared/data

XNNPACK requantizes with one rounding; the builtin and reference kernels and TFLM use
TFLite's fixed-point rule (two roundings), and XNNPACK leaves INT4 convolutions to the builtin
kernels: a model sensitive to rounding can score differently there.

The images go to the file as the dataset's pixels (0..255, as float before the file's input
quantization): the file must take them in that range, as ours and MLPerf Tiny's reference do.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
from absl import app, flags

FLAGS = flags.FLAGS
flags.DEFINE_string("tflite", None, "The int8 .tflite file.", required=True)
flags.DEFINE_string("dataset", None, "Dataset of the test images.", required=True)
flags.DEFINE_string("data_dir", None, "Folder with DATASET.npz.")
flags.DEFINE_integer("num_test", None, "Use only the first N test images.", lower_bound=1)
flags.DEFINE_bool("target", True, "Also run the TFLM target (the convert report's section).")
flags.DEFINE_string("json", None, "Also write the figures and the target's section here.")


def main(argv: list[str]) -> None:
    del argv
    from sgt_tfmot import _cli, data  # noqa: F401  (_cli first: TensorFlow quietly)
    from sgt_tfmot.tflite import tflm
    from sgt_tfmot.tflite.runtime import TFLiteModel, integer_outputs
    from sgt_tfmot.tflite.targets import TargetContext

    flatbuffer = Path(FLAGS.tflite).read_bytes()
    runtime = TFLiteModel(flatbuffer)
    info, arrays = data.open_dataset(FLAGS.dataset, FLAGS.data_dir)
    x_test = arrays.x_test[: FLAGS.num_test].astype(np.float32)
    y_test = np.asarray(arrays.y_test[: FLAGS.num_test]).reshape(-1)
    raw = runtime.quantize(x_test)
    classes = {
        name: np.argmax(integer_outputs(flatbuffer, raw, name).reshape(len(raw), -1), axis=1)
        for name in ("xnnpack", "builtin", "reference")
    }
    arena = tflm.measure_arena(flatbuffer, raw[0])
    micro = tflm.run_micro(flatbuffer, raw, arena.total)
    classes["tflm"] = np.argmax(micro.reshape(len(raw), -1), axis=1)
    figures = {
        name: {
            "accuracy": float(np.mean(found == y_test)),
            "agreement_with_xnnpack": float(np.mean(found == classes["xnnpack"])),
        }
        for name, found in classes.items()
    }
    print(f"{Path(FLAGS.tflite).name}: {len(raw):,} {FLAGS.dataset} test images")
    for name, found in figures.items():
        print(
            f"  {name:10s} top-1 {100 * found['accuracy']:.2f} %, "
            f"agreement with xnnpack {100 * found['agreement_with_xnnpack']:.2f} %"
        )
    content = {"file": FLAGS.tflite, "images": len(raw), "runtimes": figures}
    if FLAGS.target:
        context = TargetContext(
            flatbuffer=flatbuffer,
            output=FLAGS.tflite,
            images=x_test[:1],
            class_names=info.class_names,
            integer_predict=runtime.predict,
            test_images=x_test,
        )
        report = tflm.Tflm().check(context)
        print("\n".join(report.lines))
        content["tflm"] = report.section
    if FLAGS.json:
        Path(FLAGS.json).write_text(json.dumps(content, indent=1) + "\n")


if __name__ == "__main__":
    app.run(main)
