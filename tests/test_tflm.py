"""The TensorFlow Lite Micro deployment target (sgt_tfmot.tflite.tflm) on tiny models.

tflite-micro is an optional dependency (`pip install tflite-micro`, setup.cfg's `tflm`
extra): the tests that run TFLM skip without it, except on CI (the CI variable set), which
installs it. The refusals are read from the file's ops and need no TFLM.
"""

import os
import sys

import numpy as np
import pytest

from sgt_tfmot.keras import keras, tf
from sgt_tfmot.tflite import tflm
from sgt_tfmot.tflite.converter import float_tflite, to_integer_tflite
from sgt_tfmot.tflite.flatbuffer import read_model
from sgt_tfmot.tflite.runtime import TFLiteModel, integer_outputs
from sgt_tfmot.tflite.targets import TargetContext, names

L = keras.layers


@pytest.fixture(scope="module")
def micro():
    try:
        import tflite_micro
    except ImportError as error:
        message = f"tflite-micro is not installed ({error}): {tflm.INSTALL_COMMAND}"
        if os.environ.get("CI"):
            pytest.fail(f"CI installs tflite-micro, yet {message}")
        pytest.skip(message)
    return tflite_micro


def residual_classifier():
    """Rescaling, conv, a residual ADD, global pooling (MEAN), logits: the ResNet ops."""
    keras.utils.set_random_seed(0)
    inputs = keras.Input((12, 12, 3))
    x = L.ReLU()(L.Conv2D(8, 3, padding="same")(L.Rescaling(1 / 255.0)(inputs)))
    y = L.Conv2D(8, 3, padding="same")(x)
    x = L.ReLU()(L.Add()([x, y]))
    return keras.Model(inputs, L.Dense(5)(L.GlobalAveragePooling2D()(x)))


def images(count, seed=0):
    """Noise under a random colour per image (so that the outputs differ between images)."""
    rng = np.random.default_rng(seed)
    colour = rng.uniform(0, 1, (count, 1, 1, 3))
    return (rng.uniform(0, 255, (count, 12, 12, 3)) * colour).astype(np.float32)


@pytest.fixture(scope="module", params=["int8", "uint8"])
def integer_file(request):
    """A post-training-quantized residual classifier ending in a softmax (~2 s each)."""
    return to_integer_tflite(residual_classifier(), images(64, seed=1), io_dtype=request.param,
                             calibration_samples=64, softmax=True)  # fmt: skip


def context(flatbuffer, test_images):
    return TargetContext(flatbuffer, "model.tflite", test_images[:4], None,
                         TFLiteModel(flatbuffer).predict, test_images=test_images)  # fmt: skip


def test_the_target_is_registered():
    assert "tflm" in names()


def test_resolver_methods_are_the_headers_names():
    # Spot checks against micro_mutable_op_resolver.h: AddConv2D registers CONV_2D, ...
    table = tflm.RESOLVER_METHODS
    assert table["CONV_2D"] == "AddConv2D" and table["DEPTHWISE_CONV_2D"] == "AddDepthwiseConv2D"
    assert table["FULLY_CONNECTED"] == "AddFullyConnected" and table["MEAN"] == "AddMean"
    assert table["UNIDIRECTIONAL_SEQUENCE_LSTM"] == "AddUnidirectionalSequenceLSTM"
    assert len(table) == 100 and len(set(table.values())) == 100
    assert all(method.startswith("Add") for method in table.values())
    assert "ATAN2" not in table and "TOPK_V2" not in table  # ops TFLM has no kernel for


def test_arena_with_margin():
    # 80,000 * 1.1 = 88,000, rounded up to 1 KiB: 86 * 1024 = 88,064.
    assert tflm.arena_with_margin(80_000) == 88_064
    assert tflm.arena_with_margin(1024) == 2048  # 1,126.4 rounds up to 2 KiB
    assert tflm.arena_with_margin(0) == 0


@pytest.mark.slow
def test_a_tiny_integer_model_runs_bit_exact(micro, integer_file):
    test_images = images(40, seed=2)
    report = tflm.Tflm().check(context(integer_file, test_images))
    assert (report.name, report.title) == ("tflm", "TensorFlow Lite Micro")
    assert (report.compatible, report.failure) == (True, None), report.lines
    section = report.section
    assert section["version"] == micro.__version__ and section["refusals"] == []
    assert (section["images"], section["outputs_compared"]) == (40, 40 * 5)
    assert (section["differing_outputs"], section["differing_images"]) == (0, 0)
    assert section["max_difference"] == 0
    # The same comparison done here: TFLM's raw outputs equal LiteRT's reference kernels'.
    raw = TFLiteModel(integer_file).quantize(test_images)
    micro_outputs = tflm.run_micro(integer_file, raw, section["arena_bytes"])
    assert micro_outputs.dtype == raw.dtype and micro_outputs.shape == (40, 5)
    np.testing.assert_array_equal(micro_outputs, integer_outputs(integer_file, raw, "reference"))
    assert len({tuple(row) for row in micro_outputs}) > 10  # not a constant model
    # Top-1 against LiteRT's default runtime (what convert's accuracy checks run).
    default = TFLiteModel(integer_file).predict(test_images)
    share = np.mean(np.argmax(micro_outputs, axis=1) == np.argmax(default, axis=1))
    assert section["top1_agreement_default"] == share
    # Flash is the file; the resolver lists each distinct op once.
    assert section["flash_bytes"] == len(integer_file)
    ops = {op.name for op in read_model(integer_file).ops}
    assert {op for op, _ in section["resolver_ops"]} == ops
    assert section["resolver_size"] == len(ops)
    assert ["CONV_2D", "AddConv2D"] in section["resolver_ops"]
    assert report.lines[0] == "TFLite Micro: compatible."
    assert (
        "0 of 200 outputs differ from LiteRT's reference kernels on 40 test images"
        in (report.lines[1])
    )
    assert report.lines[2].startswith(
        f"  top-1: TFLM's class is that of LiteRT's default runtime (the accuracy checks') on "
        f"{100 * share:.2f} % of them"
    )
    assert report.lines[-1].startswith(f"  resolver: tflite::MicroMutableOpResolver<{len(ops)}>")


@pytest.mark.slow
def test_the_arena_is_measured_not_estimated(micro, integer_file):
    probe = TFLiteModel(integer_file).quantize(images(1))[0]
    arena = tflm.measure_arena(integer_file, probe)
    assert arena.recorded == arena.head + arena.tail and arena.head > 0 and arena.tail > 0
    # The activations alone (the largest two live int8 tensors, 12x12x8 each) fit in the head.
    assert arena.head >= 2 * 12 * 12 * 8
    assert arena.total == 16 * -(-max(arena.recorded, arena.smallest) // 16)
    tflm.run_micro(integer_file, probe[None], arena.smallest)  # runs in exactly that much
    with pytest.raises(RuntimeError, match=r"Failed to (resize buffer|allocate)"):
        tflm.run_micro(integer_file, probe[None], arena.smallest - 1)  # not in a byte less
    report = tflm.Tflm().check(context(integer_file, images(2)))
    assert report.section["arena_bytes"] == arena.total and report.section["arena_loads"]
    assert report.section["arena_bytes_with_margin"] == tflm.arena_with_margin(arena.total)


def test_a_crash_of_tflm_is_an_error_of_the_run_not_of_this_process(micro, integer_file):
    """TFLM segfaults rather than failing when even its allocator does not fit the arena
    (256 bytes here); it runs in a child process, so that is a `MicroCrash` (a RuntimeError)
    naming the signal, and the next run works."""
    probe = TFLiteModel(integer_file).quantize(images(1))
    with pytest.raises(tflm.MicroCrash, match=r"TFLite Micro crashed \(signal SIGSEGV\) with "
                       r"an arena of 256 bytes"):  # fmt: skip
        tflm.run_micro(integer_file, probe, 256)
    with tflm._Micro(integer_file) as worker:  # one worker: crashed, then started again
        with pytest.raises(tflm.MicroCrash):
            worker.request("run", probe, 256)
        expected = integer_outputs(integer_file, probe, "reference")
        np.testing.assert_array_equal(worker.request("run", probe, 1 << 20)[0], expected)
    # The bisection treats a crash as an arena that does not run.
    with tflm._Micro(integer_file) as worker:
        assert tflm._runs_in(worker, probe[0], 256) is False


def test_a_worker_that_ends_without_a_signal_is_named_apart(tmp_path, monkeypatch):
    """A worker process that exits (say tflite_micro or numpy cannot be imported there) is
    reported with its exit status and its last line, not as a crash of TFLM on the file."""
    worker = tmp_path / "worker.py"
    worker.write_text("import sys\nsys.stderr.write('no module named numpy\\n')\nsys.exit(3)\n")
    monkeypatch.setattr(tflm, "_WORKER", worker)
    with pytest.raises(tflm.MicroCrash, match=r"^the TFLite Micro worker process ended \(exit "
                       r"status 3\): no module named numpy$"):  # fmt: skip
        tflm.run_micro(b"not read", np.zeros((1, 2, 2, 1), np.int8), 1024)


@pytest.mark.slow
def test_a_float_model_is_refused_in_one_line():
    flatbuffer = float_tflite(residual_classifier())
    report = tflm.Tflm().check(context(flatbuffer, images(2)))
    assert report.compatible is False
    assert report.failure.startswith("the file computes in float (ADD, CONV_2D")
    assert "\n" not in report.failure and "convert with --int8" in report.failure
    assert report.lines[0] == f"TFLite Micro: NOT compatible: {report.failure}"


def test_an_op_tflm_lacks_is_refused_in_one_line():
    @tf.function(input_signature=[tf.TensorSpec([1, 4], tf.float32)])
    def angle(x):
        return tf.math.atan2(x, x + 1.0)

    converter = tf.lite.TFLiteConverter.from_concrete_functions(
        [angle.get_concrete_function()], angle
    )
    flatbuffer = converter.convert()
    report = tflm.Tflm().check(
        TargetContext(flatbuffer, "angle.tflite", np.zeros((0, 4), np.float32), None, None)
    )
    assert report.compatible is False and "\n" not in report.failure
    assert report.failure.startswith(
        "TFLite Micro has no kernel for ATAN2 (no MicroMutableOpResolver method registers it)"
    )
    assert report.section["refusals"][0] in report.failure
    assert report.section["resolver_ops"] == [["ADD", "AddAdd"]]  # what it does have


def test_without_tflite_micro_the_verdict_is_none(monkeypatch):
    flatbuffer = _tiny_flatbuffer()
    monkeypatch.setitem(sys.modules, "tflite_micro", None)  # import fails
    report = tflm.Tflm().check(
        TargetContext(flatbuffer, "m.tflite", np.zeros((0, 4), np.float32), None, None)
    )
    assert (report.compatible, report.failure) == (None, None)
    assert report.section["version"] is None
    assert report.section["reason"].startswith("import tflite_micro failed")
    assert report.lines[:2] == (
        "TFLite Micro: not checked.",
        f"  tflite-micro is not installed; to check: {tflm.INSTALL_COMMAND}",
    )
    assert report.section["resolver_ops"] == [["FULLY_CONNECTED", "AddFullyConnected"]]


def _tiny_flatbuffer() -> bytes:
    """An int8 FULLY_CONNECTED model, quantized on a few random vectors."""
    keras.utils.set_random_seed(0)
    inputs = keras.Input((4,))
    model = keras.Model(inputs, L.Dense(3)(inputs))
    return to_integer_tflite(model, np.random.default_rng(0).normal(size=(16, 4)),
                             calibration_samples=16)  # fmt: skip


def fc_with_ties() -> bytes:
    """`_tiny_flatbuffer` rewritten so that its requantization lands on exact halves: input
    and output scale 1, weight scale 0.5, zero points 0, W = -I, no bias, so y = -x/2."""
    from sgt_tfmot.tflite.rewrite import pack_model, unpack_model

    model = unpack_model(_tiny_flatbuffer())
    graph = model.subgraphs[0]
    (op,) = graph.operators
    assert op.inputs[2] == -1  # the converter left the zero bias out
    x, weights = (graph.tensors[i] for i in op.inputs[:2])
    for tensor, scale in ((x, 1.0), (graph.tensors[op.outputs[0]], 1.0), (weights, 0.5)):
        tensor.quantization.scale = np.array([scale], np.float32)
        tensor.quantization.zeroPoint = np.array([0], np.int64)
        tensor.quantization.quantizedDimension = 0
    model.buffers[weights.buffer].data = np.frombuffer(
        (-np.eye(3, 4, dtype=np.int8)).tobytes(), np.uint8
    )
    return pack_model(model)


@pytest.mark.slow
def test_the_fully_connected_rounding_difference_is_found_and_explained(micro):
    from sgt_tfmot.tflite.requantize import fully_connected
    from sgt_tfmot.tflite.tflm_divergence import FC_ROUNDING, first_divergences

    flatbuffer = fc_with_ties()
    x = np.array([[1, 2, 3, 0], [5, -5, 7, 0], [0, 0, 0, 0], [-3, 4, 9, 0]], np.int8)
    litert = integer_outputs(flatbuffer, x, "reference")
    micro_out = tflm.run_micro(flatbuffer, x, 1 << 16)
    # y = -x/2: where x is odd and positive, -k.5 rounds away from zero in double precision
    # (LiteRT's reference kernel) but up in TFLite's fixed point (TFLM): -0.5 -> -1 and 0.
    np.testing.assert_array_equal(litert, [[-1, -1, -2], [-3, 3, -4], [0, 0, 0], [2, -2, -5]])
    np.testing.assert_array_equal(micro_out, [[0, -1, -1], [-2, 3, -3], [0, 0, 0], [2, -2, -4]])
    args = (x, -np.eye(3, 4, dtype=np.int8), None, (1.0, 0), np.float32([0.5]), (1.0, 0),
            (-128, 127))  # fmt: skip
    np.testing.assert_array_equal(fully_connected(*args, fixed_point=True), micro_out)
    np.testing.assert_array_equal(fully_connected(*args, fixed_point=False), litert)
    found = first_divergences(flatbuffer, x[[0, 1, 3]])
    assert [(d.op, d.name, d.explained) for d in found] == [(0, "FULLY_CONNECTED", True)] * 3
    # The target: the difference counted, explained, and the file passes.
    report = tflm.Tflm().check(
        TargetContext(flatbuffer, "m.tflite", x.astype(np.float32), None, None)
    )
    section = report.section
    assert (section["differing_outputs"], section["differing_images"]) == (5, 3), report.lines
    assert section["divergences"] == [
        {"op": 0, "name": "FULLY_CONNECTED", "images": 3, "explained": FC_ROUNDING}
    ]
    assert section["unexplained_images"] == 0 and report.compatible is True
    assert f"3 image(s) first differ at FULLY_CONNECTED #0: {FC_ROUNDING}" in report.lines[2]
