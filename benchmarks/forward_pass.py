"""One forward pass of a float model over 1,000 CIFAR-10 test images: Keras against LiteRT.

What bounds ROAD's speed (benchmarks/road_speed.py) is the model's passes, which every
implementation of the protocol runs. This times them on `zoo:cifar10-float` (ResNet-20), the
first 1,000 test images, three ways, alternated in one process for --rounds rounds:
`model.predict` (batches of 256, what the explain tool runs), a `tf.function` of the model
(batches of 250), and the same model converted to a float32 .tflite run in LiteRT (XNNPACK, 2
threads) in batches of 1 and of 50. It prints, first, how far LiteRT's scores are from
Keras's (largest difference, argmax agreement), then each round's seconds.

    SGT_TFMOT_ZOO=zoo python benchmarks/forward_pass.py --data_dir ../shared/data
"""

import time

import numpy as np
from absl import app, flags
from ai_edge_litert.interpreter import Interpreter

from sgt_tfmot import data, saving
from sgt_tfmot.keras import tf

FLAGS = flags.FLAGS
flags.DEFINE_string("data_dir", None, "Folder with cifar10.npz.")
flags.DEFINE_integer("images", 1000, "Test images.", lower_bound=1)
flags.DEFINE_integer("rounds", 3, "Timed rounds, the ways alternated.", lower_bound=1)


def main(argv):
    del argv
    model = saving.load_model("zoo:cifar10-float")
    x, _ = data.load_arrays("cifar10", "test", data_dir=FLAGS.data_dir)
    x = np.asarray(x[: FLAGS.images], np.float32)
    interpreter = Interpreter(
        model_content=tf.lite.TFLiteConverter.from_keras_model(model).convert(), num_threads=2
    )
    inp, out = interpreter.get_input_details()[0], interpreter.get_output_details()[0]

    def litert(batch):
        interpreter.resize_tensor_input(inp["index"], [batch, *x.shape[1:]])
        interpreter.allocate_tensors()
        scores = []
        for start in range(0, len(x), batch):
            chunk = x[start : start + batch]
            padded = np.concatenate(
                [chunk, np.zeros((batch - len(chunk), *x.shape[1:]), np.float32)]
            )
            interpreter.set_tensor(inp["index"], padded)
            interpreter.invoke()
            scores.append(interpreter.get_tensor(out["index"])[: len(chunk)])
        return np.concatenate(scores)

    graph = tf.function(lambda images: model(images, training=False))
    ways = {
        "keras predict b256": lambda: model.predict(x, batch_size=256, verbose=0),
        "litert b1": lambda: litert(1),
        "litert b50": lambda: litert(50),
        "graph b250": lambda: np.concatenate(
            [graph(tf.constant(x[i : i + 250])).numpy() for i in range(0, len(x), 250)]
        ),
    }
    keras_scores = ways["keras predict b256"]()
    for name, way in ways.items():
        scores = way()
        agree = float(np.mean(scores.argmax(1) == keras_scores.argmax(1)))
        print(f"{name}: argmax agree {agree}, max diff {np.abs(scores - keras_scores).max():.3g}")
    for round_ in range(FLAGS.rounds):
        for name, way in ways.items():
            start = time.perf_counter()
            way()
            print(round_, name, f"{time.perf_counter() - start:.3f} s")


if __name__ == "__main__":
    app.run(main)
