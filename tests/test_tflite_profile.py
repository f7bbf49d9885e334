"""Per-op profile from prefix models (`sgt_tfmot.tflite.profile`), on a tiny W4A4 model.

The model (tests.helpers.models.residual_model on 16x16x3, 4 bits, untrained) is the
converter's own graph (`optimize=False`): CONV_2D (the input Rescaling), CONV_2D + MINIMUM,
CONV_2D, ADD + MINIMUM, MEAN, FULLY_CONNECTED, with a MINIMUM that XNNPACK does not take, so
the full model runs as several delegate partitions. `to_integer_tflite`'s own output folds
the MINIMUMs away (`sgt_tfmot.tflite.rewrite`) and runs as one partition.
"""

import numpy as np
import pytest
from ai_edge_litert.interpreter import Interpreter

from sgt_tfmot import quantize_model
from sgt_tfmot.keras import keras
from sgt_tfmot.tflite.converter import to_integer_tflite
from sgt_tfmot.tflite.flatbuffer import read_model
from sgt_tfmot.tflite.profile import (
    delegate_partitions,
    empty_model,
    format_table,
    prefix_model,
    profile,
    profile_ops,
    time_models,
)
from sgt_tfmot.tflite.rewrite import fold_minimums
from tests.helpers.models import residual_model

X = np.random.default_rng(0).integers(0, 256, (8, 16, 16, 3)).astype("float32")


@pytest.fixture(scope="module")
def flatbuffer():
    keras.utils.set_random_seed(0)
    qat = quantize_model(residual_model((16, 16, 3)), weight_bits=4, activation_bits=4)
    return to_integer_tflite(qat, X, optimize=False)


def run(model: bytes, image: np.ndarray) -> list[np.ndarray]:
    interpreter = Interpreter(model_content=model, num_threads=1)
    interpreter.allocate_tensors()
    interpreter.set_tensor(interpreter.get_input_details()[0]["index"], image)
    interpreter.invoke()
    return [interpreter.get_tensor(d["index"]) for d in interpreter.get_output_details()]


def test_every_prefix_runs_and_ends_in_its_last_op(flatbuffer):
    summary = read_model(flatbuffer)
    assert "MINIMUM" in summary.op_names and len(summary.ops) >= 8
    image = np.random.default_rng(1).integers(-128, 128, (1, 16, 16, 3)).astype(np.int8)
    for op in summary.ops:
        prefix = read_model(prefix_model(flatbuffer, op.index))
        assert prefix.op_names == summary.op_names[: op.index + 1]
        assert prefix.outputs[0].index == op.outputs[0].index  # the first output is op i's
        run(prefix_model(flatbuffer, op.index), image)
    # The last prefix is the model itself: the same output values.
    last = prefix_model(flatbuffer, len(summary.ops) - 1)
    np.testing.assert_array_equal(run(last, image)[0], run(flatbuffer, image)[0])
    # The empty model has no op and returns its input.
    assert read_model(empty_model(flatbuffer)).ops == ()
    np.testing.assert_array_equal(run(empty_model(flatbuffer), image)[0], image)


def test_a_prefix_keeps_every_result_alive(flatbuffer):
    """Results no op of the prefix consumes (the residual branch before its ADD) are outputs
    too, so the delegate cannot drop them as dead code."""
    summary = read_model(flatbuffer)
    for op in summary.ops:
        kept = summary.ops[: op.index + 1]
        consumed = {t.index for o in kept for t in o.inputs if t is not None}
        dangling = {t.index for o in kept for t in o.outputs if t.index not in consumed}
        outputs = {t.index for t in read_model(prefix_model(flatbuffer, op.index)).outputs}
        assert outputs == dangling


def test_profile_times_are_non_negative_and_add_up_to_the_model(flatbuffer):
    result = profile(flatbuffer, rounds=15, invokes=10)
    summary = read_model(flatbuffer)
    assert [(op.index, op.name) for op in result.ops] == [(op.index, op.name) for op in summary.ops]
    assert all(op.microseconds >= 0 for op in result.ops)
    assert result.ops[0].output_shape == (1, 16, 16, 3)
    # The differences telescope to full − empty; noise clamped at 0 only adds. Generous
    # factors: the machine is shared with training jobs.
    assert result.full_us > result.overhead_us >= 0
    assert 0.5 * result.full_us <= result.ops_us + result.overhead_us <= 3.0 * result.full_us
    assert result.partitions > 1  # MINIMUM (int8) is not an XNNPACK op
    assert sum(share.share for share in result.by_type()) == pytest.approx(1.0)
    # The list form: (index, name, shape, microseconds) tuples.
    index, name, shape, microseconds = profile_ops(flatbuffer, rounds=2, invokes=2)[0]
    assert (index, name, shape) == (0, "CONV_2D", (1, 16, 16, 3)) and microseconds >= 0


def test_table_lists_every_op_type(flatbuffer):
    result = profile(flatbuffer, rounds=2, invokes=2)
    table = format_table(result, top=3)
    lines = table.splitlines()
    types = set(read_model(flatbuffer).op_names)
    assert {"CONV_2D", "MINIMUM", "ADD", "MEAN", "FULLY_CONNECTED"} <= types
    listed = {line.split()[0] for line in lines[2 : 2 + len(types)]}
    assert listed == types
    assert lines[2 + len(types)].startswith("slowest ops") and len(lines) == 3 + len(types) + 3
    assert f"{result.partitions} delegate partition(s)" in lines[0]


def test_delegate_partitions_split_at_minimum(flatbuffer):
    names = read_model(flatbuffer).op_names
    before_minimum = prefix_model(flatbuffer, names.index("MINIMUM") - 1)
    assert delegate_partitions(before_minimum) == 1
    assert delegate_partitions(flatbuffer) == 1 + names.count("MINIMUM")
    folded = fold_minimums(flatbuffer)
    assert "MINIMUM" not in read_model(folded).op_names and delegate_partitions(folded) == 1


def test_bad_arguments(flatbuffer):
    count = len(read_model(flatbuffer).ops)
    with pytest.raises(ValueError, match=rf"`last` must be an op index in \[0, {count}\)\. "
                       rf"Received: {count}"):  # fmt: skip
        prefix_model(flatbuffer, count)
    with pytest.raises(ValueError, match="`statistic` must be one of .* Received: 'mean'"):
        profile(flatbuffer, statistic="mean")
    with pytest.raises(ValueError, match="`rounds` must be an int >= 1. Received: 0"):
        time_models([flatbuffer], rounds=0)
