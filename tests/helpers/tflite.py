"""A .tflite file's integer inputs and outputs in each of LiteRT's runtimes."""

import numpy as np
from ai_edge_litert.interpreter import Interpreter

from sgt_tfmot import data
from sgt_tfmot.tflite.edgetpu import check_edgetpu
from sgt_tfmot.tflite.flatbuffer import read_model
from sgt_tfmot.tflite.runtime import RUNTIMES, integer_outputs

MNIST, _ = data.load_arrays("mnist_subset", "test")
MNIST = MNIST[:150].astype(np.float32)  # dataset images of the rewrite and layout checks


def interpreter(flatbuffer: bytes, runtime: str) -> Interpreter:
    result = Interpreter(model_content=flatbuffer, num_threads=1, **RUNTIMES[runtime])
    result.allocate_tensors()
    return result


def quantized(flatbuffer: bytes, images: np.ndarray) -> np.ndarray:
    """Float 0..255 images in the file's input quantization."""
    (source,) = interpreter(flatbuffer, "builtin").get_input_details()
    scale, zero_point = source["quantization"]
    info = np.iinfo(source["dtype"])
    return np.clip(np.round(images / scale + zero_point), info.min, info.max)


def random_images(flatbuffer: bytes, count: int = 300, seed: int = 0) -> np.ndarray:
    """`count` images drawn uniformly over the whole range of the file's input type."""
    (source,) = interpreter(flatbuffer, "builtin").get_input_details()
    info = np.iinfo(source["dtype"])
    rng = np.random.default_rng(seed)
    return rng.integers(info.min, int(info.max) + 1, (count, *source["shape"][1:]))


def assert_same_outputs(before: bytes, after: bytes, images: np.ndarray) -> None:
    """The two files give bit-identical outputs on `images` in every runtime."""
    for runtime in RUNTIMES:
        expected = integer_outputs(before, images, runtime)
        actual = integer_outputs(after, images, runtime)
        assert np.ptp(expected.astype(np.int64)) > 0  # the outputs depend on the image
        np.testing.assert_array_equal(actual, expected, err_msg=runtime)


def assert_folded(before: bytes, after: bytes) -> None:
    """Every MINIMUM gone, nothing else: the other ops in the same order."""
    names_before, names_after = read_model(before).op_names, read_model(after).op_names
    assert names_before.count("MINIMUM") > 0 and "MINIMUM" not in names_after
    assert names_after == [name for name in names_before if name != "MINIMUM"]
    assert check_edgetpu(after).compatible
