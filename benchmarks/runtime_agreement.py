"""Top-1 agreement of a QAT model with its integer file in each of LiteRT's runtimes.

`convert` checks agreement in LiteRT's default runtime (XNNPACK). LiteRT's reference kernels
(the arithmetic TensorFlow Lite Micro compiles) requantize a convolution with two roundings,
and XNNPACK's ADD rounds a pair of levels near a tie its own way (`sgt_tfmot.ties`). This
script converts the model (`to_integer_tflite`) and prints, on the first N test images, the
top-1 agreement of the file with the Keras model in each runtime; with `--move_ties`, it does
the same after `separate_rounding_ties` (what `train` does before saving) and says how many
Keras predictions the move changed.

    python benchmarks/runtime_agreement.py --model zoo:cifar10-w4a4-pact-ft-e15 \\
        --dataset cifar10 --data_dir ../shared/data --num_test 2000 --move_ties
"""

from __future__ import annotations

import numpy as np
from absl import app, flags

FLAGS = flags.FLAGS
flags.DEFINE_string("model", None, "A QAT run, model file or zoo:NAME.", required=True)
flags.DEFINE_string("dataset", None, "Dataset of the test images.", required=True)
flags.DEFINE_string("data_dir", None, "Folder with DATASET.npz.")
flags.DEFINE_integer("num_test", 2000, "The first N test images.", lower_bound=1)
flags.DEFINE_bool("move_ties", False, "Also measure after `separate_rounding_ties`.")


def main(argv: list[str]) -> None:
    del argv
    from sgt_tfmot import _cli, data, saving  # noqa: F401  (_cli first: TensorFlow quietly)
    from sgt_tfmot.tflite.converter import to_integer_tflite
    from sgt_tfmot.tflite.requantize import add_rounding_ties
    from sgt_tfmot.tflite.runtime import TFLiteModel, integer_outputs
    from sgt_tfmot.ties import separate_rounding_ties

    model = saving.float32_model(saving.load_model(saving.resolve_model_path(FLAGS.model)))
    _, arrays = data.open_dataset(FLAGS.dataset, FLAGS.data_dir)
    x_test = arrays.x_test[: FLAGS.num_test].astype(np.float32)
    y_test = np.asarray(arrays.y_test[: FLAGS.num_test]).reshape(-1)

    def measure(label: str) -> np.ndarray:
        keras_top1 = model.predict(x_test, batch_size=250, verbose=0).argmax(-1)
        flatbuffer = to_integer_tflite(model)
        raw = TFLiteModel(flatbuffer).quantize(x_test)
        ties = add_rounding_ties(flatbuffer)
        print(f"{label}: Keras accuracy {100 * np.mean(keras_top1 == y_test):.2f} %; "
              f"ADDs near a tie in the file: {len(ties)}")  # fmt: skip
        for runtime in ("xnnpack", "reference"):
            top1 = integer_outputs(flatbuffer, raw, runtime).reshape(len(raw), -1).argmax(-1)
            print(f"  {runtime}: top-1 agreement {100 * np.mean(top1 == keras_top1):.2f} %, "
                  f"accuracy {100 * np.mean(top1 == y_test):.2f} % "
                  f"({len(raw)} test images)")  # fmt: skip
        return keras_top1

    before = measure("as saved")
    if FLAGS.move_ties:
        moved = separate_rounding_ties(model)
        print(f"separate_rounding_ties: {moved or 'nothing to move'}")
        after = measure("after the move")
        print(f"Keras predictions changed by the move: {int(np.sum(before != after))}")


if __name__ == "__main__":
    app.run(main)
