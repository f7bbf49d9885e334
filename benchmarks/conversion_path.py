"""The integer conversion of a QAT model: the frozen graph against a SavedModel first.

`sgt_tfmot.tflite.converter` gives TensorFlow's converter the export model's inference graph
without the model, so it converts the graph frozen; given the model too (its
`trackable_obj`), the converter saves a SavedModel first and converts that. This times one
conversion each way (the same export model, converter settings and 32 calibration images),
alternated in one process for --rounds rounds, checks both files compute the same int8
outputs, and prints each round's seconds and the ratio frozen / SavedModel (min and median).
Zoo models need no data.

    python benchmarks/conversion_path.py --model zoo:mnist-w8a8-sgt-1ep --rounds 5
"""

import statistics
import time

import numpy as np
from absl import app, flags

from sgt_tfmot import saving
from sgt_tfmot.export import export_model
from sgt_tfmot.keras import tf
from sgt_tfmot.tflite.converter import _converter, _integer_settings, _representative
from sgt_tfmot.tflite.runtime import integer_outputs

FLAGS = flags.FLAGS
flags.DEFINE_string("model", "zoo:mnist-w8a8-sgt-1ep", "A QAT model: file or zoo:NAME.")
flags.DEFINE_integer("rounds", 5, "Timed rounds, the two ways alternated.", lower_bound=1)


def main(argv):
    del argv
    source = export_model(saving.load_model(FLAGS.model))
    shape = [1, *source.inputs[0].shape[1:]]
    images = np.random.default_rng(0).uniform(0, 255, (32, *shape[1:])).astype(np.float32)

    def saved_model_path():
        @tf.function(input_signature=[tf.TensorSpec(shape, tf.float32)])
        def serve(x):
            return source(x, training=False)

        return tf.lite.TFLiteConverter.from_concrete_functions(
            [serve.get_concrete_function()], source
        )

    ways = {"frozen": lambda: _converter(source, 1), "SavedModel": saved_model_path}

    def convert(way):
        return _integer_settings(ways[way](), "int8", _representative(images, 1, 32)).convert()

    files = {way: convert(way) for way in ways}  # warm-up, and the outputs compared
    levels = np.clip(np.round(images - 128), -128, 127).astype(np.int8)
    same = np.array_equal(*(integer_outputs(f, levels) for f in files.values()))
    print(f"{FLAGS.model}: the same int8 outputs on 32 images: {same}")
    seconds = {way: [] for way in ways}
    for round_ in range(FLAGS.rounds):
        for way in ways:
            start = time.perf_counter()
            convert(way)
            seconds[way].append(time.perf_counter() - start)
            print(round_, way, f"{seconds[way][-1]:.2f} s")
    ratios = [f / s for f, s in zip(seconds["frozen"], seconds["SavedModel"], strict=True)]
    print(f"frozen / SavedModel: min {min(ratios):.3f}, median {statistics.median(ratios):.3f}")


if __name__ == "__main__":
    app.run(main)
