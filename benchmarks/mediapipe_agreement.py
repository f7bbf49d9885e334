"""MediaPipe Tasks' ImageClassifier against LiteRT on a whole test split, for a delivered file.

`python -m sgt_tfmot.convert` runs the MediaPipe deployment target on a few test images; this
script runs the same target (`sgt_tfmot.tflite.mediapipe`) on every test image of a dataset
and prints its verdict: the file loads, the category names match the labels in the file's
metadata, and MediaPipe's top-1 class and scores equal LiteRT's.

    python -m sgt_tfmot.convert --int8 RUN --rgb_input --output mnist.tflite
    python benchmarks/mediapipe_agreement.py --tflite mnist.tflite --dataset mnist \\
        --data_dir ../shared/data

A one-channel dataset is given to an RGB-input file (`--rgb_input`) as grey RGB images, the
way a camera frame of a grey picture arrives.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
from absl import app, flags

FLAGS = flags.FLAGS
flags.DEFINE_string("tflite", None, "The delivered .tflite file.", required=True)
flags.DEFINE_string("dataset", None, "Dataset of the test images.", required=True)
flags.DEFINE_string("data_dir", None, "Folder with DATASET.npz.")
flags.DEFINE_integer("num_test", None, "Use only the first N test images.", lower_bound=1)
flags.DEFINE_string("json", None, "Also write the target's report section here.")


def main(argv: list[str]) -> None:
    del argv
    from sgt_tfmot import _cli, data  # noqa: F401  (_cli first: TensorFlow quietly)
    from sgt_tfmot.tflite import mediapipe, metadata
    from sgt_tfmot.tflite.converter import grey_to_rgb
    from sgt_tfmot.tflite.runtime import TFLiteModel
    from sgt_tfmot.tflite.targets import TargetContext

    flatbuffer = Path(FLAGS.tflite).read_bytes()
    runtime = TFLiteModel(flatbuffer)
    info, arrays = data.open_dataset(FLAGS.dataset, FLAGS.data_dir)
    x_test = arrays.x_test[: FLAGS.num_test].astype(np.float32)
    if runtime.input["shape"][-1] == 3 and x_test.shape[-1] == 1:
        x_test = grey_to_rgb(x_test)  # what convert --rgb_input feeds its checks
    context = TargetContext(
        flatbuffer=flatbuffer,
        output=FLAGS.tflite,
        images=x_test,
        class_names=(metadata.read_image_classifier_metadata(flatbuffer) or {}).get("labels")
        or info.class_names,
        integer_predict=runtime.predict,
    )
    report = mediapipe.MediaPipe().check(context)
    print("\n".join(report.lines))
    if FLAGS.json:
        Path(FLAGS.json).write_text(json.dumps(report.section, indent=1) + "\n")


if __name__ == "__main__":
    app.run(main)
