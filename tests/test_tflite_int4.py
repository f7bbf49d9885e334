"""INT4 kernels (sgt_tfmot.tflite.int4): packed two per byte, the same outputs as int8.

A 4-bit QAT model exports its kernels into the 4-bit container (values in [-7, 7]); packing
them must change no output in LiteRT's builtin and reference kernels nor in TFLite Micro
(which unpack to the same int8 values). LiteRT's XNNPACK delegate leaves INT4 convolutions
to the builtin kernels, so there the packed file computes the builtin kernels' rounding.
"""

import json

import numpy as np
import pytest

from sgt_tfmot import convert, saving
from sgt_tfmot.tflite.converter import to_integer_tflite
from sgt_tfmot.tflite.edgetpu import check_edgetpu
from sgt_tfmot.tflite.flatbuffer import read_model
from sgt_tfmot.tflite.int4 import INT4_OPS, pack_int4, pack_nibbles, unpack_nibbles
from sgt_tfmot.tflite.rewrite import unpack_model
from sgt_tfmot.tflite.runtime import TFLiteModel, integer_outputs
from tests.helpers.models import RESIDUAL_X as X, train_tiny_mnist_qat


def test_nibbles_low_first_and_back():
    assert pack_nibbles(np.array([1, -1], np.int8)) == bytes([0xF1])  # 1 low, -1 (0xF) high
    assert pack_nibbles(np.array([-8, 7, 3], np.int8)) == bytes([0x78, 0x03])  # odd: pad 0
    values = np.tile(np.arange(-8, 8, dtype=np.int8), 3)[:-1]  # every value, odd count
    packed = pack_nibbles(values)
    assert len(packed) == (len(values) + 1) // 2
    np.testing.assert_array_equal(unpack_nibbles(packed, len(values)), values)
    with pytest.raises(ValueError, match=r"INT4 values must lie in \[-8, 7\]; found \[0, 8\]"):
        pack_nibbles(np.array([0, 8], np.int8))


@pytest.fixture(scope="module")
def files(residual_qat):
    """The session's W4A4 residual model as the int8-container file and packed."""
    flatbuffer = to_integer_tflite(residual_qat(4), X[:32])
    packed, found = pack_int4(flatbuffer)
    return flatbuffer, packed, found


def filters(flatbuffer):
    """(op name, filter type, filter values) of each op that can take an INT4 filter."""
    model, summary = unpack_model(flatbuffer), read_model(flatbuffer)
    found = []
    for op in summary.ops:
        if op.name in ("CONV_2D", "FULLY_CONNECTED"):
            tensor = op.inputs[1]
            data = bytes(np.asarray(model.buffers[model.subgraphs[0].tensors[tensor.index].buffer]
                                    .data, np.uint8))  # fmt: skip
            count = int(np.prod(tensor.shape))
            values = unpack_nibbles(data, count) if tensor.type == "INT4" else (
                np.frombuffer(data, np.int8))  # fmt: skip
            found.append((op.name, tensor.type, values))
    return found


@pytest.mark.slow
def test_the_4_bit_kernels_are_packed_and_nothing_else(files):
    flatbuffer, packed, found = files
    before, after = filters(flatbuffer), filters(packed)
    # The stem's 1x1 input conv and the first conv and logits keep 8 bits (first_last_bits);
    # the inner 4-bit conv holds its levels in [-7, 7] and is the one packed.
    assert [t for _, t, _ in after] == ["INT8", "INT8", "INT4", "INT8"]
    assert np.abs(before[2][2]).max() <= 7 and np.abs(before[1][2]).max() > 7
    for (_, _, old), (_, _, new) in zip(before, after, strict=True):
        np.testing.assert_array_equal(old, new)  # the same values, stored in half the bytes
    assert (found.tensors, found.ops) == (1, ("CONV_2D",))
    # Half the filter, less the INT4 op's own operator code and 16-byte buffer alignment.
    assert before[2][2].size // 2 - 64 <= found.bytes_saved <= before[2][2].size // 2
    assert len(found.skipped) == 3 and "outside [-8, 7]" in found.skipped[0]
    versions = {(op.name, op.inputs[1].type): op.version for op in read_model(packed).ops
                if op.name == "CONV_2D"}  # fmt: skip
    assert versions[("CONV_2D", "INT4")] == INT4_OPS[3] == 7  # 3: CONV_2D's builtin code
    assert versions[("CONV_2D", "INT8")] < 7  # the int8 convs keep their own operator code


@pytest.mark.slow
@pytest.mark.parametrize("runtime", ["builtin", "reference"])
def test_packed_outputs_equal_the_int8_files_in_litert(files, runtime):
    flatbuffer, packed, _ = files
    raw = TFLiteModel(flatbuffer).quantize(X)
    expected = integer_outputs(flatbuffer, raw, runtime)
    np.testing.assert_array_equal(integer_outputs(packed, raw, runtime), expected)
    assert len({tuple(row) for row in expected}) > 10  # outputs that say something


@pytest.mark.slow
def test_packed_outputs_equal_the_int8_files_in_tflite_micro(files):
    pytest.importorskip("tflite_micro", reason="tflite-micro is not installed (the tflm extra)")
    from sgt_tfmot.tflite.tflm import measure_arena, run_micro

    flatbuffer, packed, _ = files
    raw = TFLiteModel(flatbuffer).quantize(X)
    expected = run_micro(flatbuffer, raw, 1 << 20)
    np.testing.assert_array_equal(run_micro(packed, raw, 1 << 20), expected)
    # TFLM unpacks into a scratch buffer of the filter's size, planned in the arena's head
    # with the activations: the arena grows, by at most that much (here 80 of 576 bytes).
    (_, _, values) = filters(flatbuffer)[2]
    grown = measure_arena(packed, raw[0]).total - measure_arena(flatbuffer, raw[0]).total
    assert 0 < grown <= values.size + 16


@pytest.mark.slow
def test_the_edge_tpu_refuses_int4_and_an_8_bit_model_has_nothing_to_pack(files, residual_qat):
    _, packed, _ = files
    report = check_edgetpu(packed)
    assert not report.compatible
    assert any("INT4" in reason.message for op in report.ops for reason in op.reasons)
    eight_bit = to_integer_tflite(residual_qat(8), X[:32])
    same, found = pack_int4(eight_bit)
    assert same == eight_bit and found.tensors == 0 and found.bytes_saved == 0
    assert all("outside [-8, 7]" in reason for reason in found.skipped)


@pytest.mark.slow
def test_convert_pack_int4(tmp_path, capsys):
    pytest.importorskip("tflite_micro", reason="tflite-micro is not installed (the tflm extra)")
    run = tmp_path / "run"
    saving.save_model(train_tiny_mnist_qat(bits=4), run / "model.h5")
    (run / "metrics.json").write_text(json.dumps({"flags": {"dataset": "mnist_subset"}}))
    argv = ["convert", "--int8", str(run), "--num_test", "40", "--fidelity_images", "0"]
    argv += ["--occlusion_images", "0", "--min_agreement", "0", "--max_accuracy_drop", "100"]
    assert convert.main([*argv, "--output", str(tmp_path / "int8.tflite")]) == 0
    packed_args = ["--output", str(tmp_path / "int4.tflite"), "--pack_int4"]
    code = convert.main([*argv, *packed_args, "--report", str(tmp_path / "r.json")])
    out, err = capsys.readouterr()
    assert code == 0, err
    report = json.loads((tmp_path / "r.json").read_text())
    weights = report["deployment"]["weights"]
    assert weights["container"] == "int4" and weights["tensors"] == 2  # the two inner convs
    int8, int4 = (tmp_path / "int8.tflite").read_bytes(), (tmp_path / "int4.tflite").read_bytes()
    assert len(int8) - len(int4) == weights["bytes_saved"] > 0
    assert report["targets"]["tflm"]["int4_weight_tensors"] == 2
    assert report["targets"]["tflm"]["compatible"] is True
    assert report["edgetpu_compatible"] is False
    assert "2 kernels stored as INT4, two per byte (CONV_2D)" in out
    assert "(XNNPACK leaves INT4 convolutions to LiteRT's builtin kernels" in out
    raw = TFLiteModel(int8).quantize(np.random.default_rng(0).uniform(0, 255, (8, 28, 28, 1)))
    np.testing.assert_array_equal(
        integer_outputs(int4, raw, "reference"), integer_outputs(int8, raw, "reference")
    )
