"""`add_rounding_ties`: the ADD input pairs a few millionths of a step from a rounding tie.

Checked in exact rational arithmetic on the W4A4 residual model's file: its own ADDs (every
pair of levels the inputs can hold, brute force), then the same file with one ADD's output
scale set so that a chosen pair sums to exactly 2.5 steps (up to the float32 scale); and the
gate's and the report's wording. Then the Keras side (`sgt_tfmot.ties`): it finds the file's
ties from the model's own grids, and `separate_rounding_ties` on a trained residual model whose
statistic range was set on a tie moves only that range, by a factor of `NUDGES`; the file then
has no tie left and computes the Keras model's classes.
"""

from fractions import Fraction

import numpy as np
import pytest
from ai_edge_litert import schema_py_generated as schema

from sgt_tfmot import quantize_model
from sgt_tfmot.conversion import checks
from sgt_tfmot.tflite.converter import to_integer_tflite
from sgt_tfmot.tflite.requantize import RoundingTie, add_rounding_ties
from sgt_tfmot.tflite.rewrite import op_code, pack_model, unpack_model
from sgt_tfmot.tflite.runtime import integer_outputs
from sgt_tfmot.ties import NEAR_TIE, NUDGES, SEPARATION, rounding_ties, separate_rounding_ties
from tests.helpers.models import RESIDUAL_X, tiny_mnist_classifier, train_residual_qat
from tests.helpers.tflite import quantized


@pytest.fixture(scope="module")
def residual_file(residual_qat):
    return to_integer_tflite(residual_qat(4), RESIDUAL_X[:32])


def adds(model) -> list[tuple[int, list]]:
    """(index, [input a, input b, output] tensors) of every ADD of an unpacked model."""
    graph = model.subgraphs[0]
    return [
        (index, [graph.tensors[t] for t in (*op.inputs[:2], op.outputs[0])])
        for index, op in enumerate(graph.operators)
        if op_code(model, op) == schema.BuiltinOperator.ADD
    ]


def exact_steps(tensors, levels) -> Fraction:
    """The pair's sum in output steps, in rationals, from the file's float32 scales."""
    (a, b, out), (level_a, level_b) = tensors, levels

    def real(tensor, level):
        return (level - int(tensor.quantization.zeroPoint[0])) * Fraction(
            float(np.float32(tensor.quantization.scale[0]))
        )

    return (real(a, level_a) + real(b, level_b)) / Fraction(float(out.quantization.scale[0]))


def floor_level(steps: Fraction) -> int:
    return steps.numerator // steps.denominator


def tie_distance(steps: Fraction) -> float:
    return float(abs(steps - (steps.numerator // steps.denominator) - Fraction(1, 2)))


def test_each_add_s_closest_pair_is_the_brute_force_one(residual_file):
    found = {tie.op: tie for tie in add_rounding_ties(residual_file, within=1.0)}
    every = adds(unpack_model(residual_file))
    assert found and set(found) == {index for index, _ in every}
    for index, tensors in every:
        tie = found[index]
        steps = exact_steps(tensors, tie.levels)
        assert tie.steps == pytest.approx(float(steps), abs=1e-9)
        assert tie.distance == pytest.approx(tie_distance(steps), abs=1e-9)
        # Brute force over every pair whose sum lies between two levels the output keeps (the
        # residual model's ADDs end in a fused ReLU): none is closer. An input that a ReLU
        # wrote (the converter names it ".../Minimum") holds the levels from its zero point up.
        zeros = [int(t.quantization.zeroPoint[0]) for t in tensors]
        lows = [
            zero if t.name.endswith(b"Minimum") else -128
            for zero, t in zip(zeros, tensors, strict=True)
        ]
        closest = min(
            tie_distance(exact_steps(tensors, (a, b)))
            for a in range(lows[0], 128)
            for b in range(lows[1], 128)
            # rounded apart only between two levels that both survive the clamp
            if zeros[2] <= floor_level(exact_steps(tensors, (a, b))) + zeros[2] <= 126
        )
        assert tie.distance <= closest + 1e-12
    assert add_rounding_ties(residual_file, within=0.0) == ()


def test_a_pair_set_on_a_tie_is_found(residual_file):
    model = unpack_model(residual_file)
    index, (a, b, out) = adds(model)[0]
    levels = (int(a.quantization.zeroPoint[0]) + 3, int(b.quantization.zeroPoint[0]) + 2)
    total = 3 * float(a.quantization.scale[0]) + 2 * float(b.quantization.scale[0])
    out.quantization.scale = np.array([total / 2.5], np.float32)  # the pair sums to 2.5 steps
    tied = pack_model(model)
    distance = tie_distance(exact_steps((a, b, out), levels))
    assert distance < NEAR_TIE
    (tie,) = [found for found in add_rounding_ties(tied) if found.op == index]
    assert tie.distance <= distance + 1e-12


def test_the_gate_names_the_closest_tie_only_when_agreement_fails():
    ties = (RoundingTie(4, (-20, 122), 5.499999, 1.0e-6), RoundingTie(9, (1, 2), 3.5000004, 4e-7))
    failed = checks.AccuracyComparison(0.91, 0.91, 0.987, 10000, ulp_agreement=0.999)
    (line,) = checks.gate(checks.Thresholds(), failed, ties=ties)
    assert "below --min_agreement" in line and "ADD #9's input levels (1, 2)" in line
    assert "4.0e-07 of a step from a rounding tie" in line
    (plain,) = checks.gate(checks.Thresholds(), failed)
    assert "rounding tie" not in plain
    passed = checks.AccuracyComparison(0.91, 0.91, 1.0, 10000, ulp_agreement=0.999)
    assert checks.gate(checks.Thresholds(), passed, ties=ties) == []
    assert ties[0].to_dict() == {"op": 4, "levels": [-20, 122], "steps": 5.499999,
                                 "distance": 1.0e-6}  # fmt: skip


# --- the Keras side: rounding_ties and separate_rounding_ties ---------------------------------


def range_of(layer) -> np.ndarray:
    return np.array([w.numpy() for w in layer.weights if "output_m" in w.name])


def test_the_keras_side_finds_the_file_s_ties(residual_file, residual_qat):
    """Each Add's closest pair in the Keras model's grids is the file's, to a float32 ulp of
    a scale (the converter rounds a scale its own way at times)."""
    (keras_tie,) = rounding_ties(residual_qat(4), within=1.0)
    (file_tie,) = add_rounding_ties(residual_file, within=1.0)
    assert keras_tie.add == "add" and keras_tie.statistics == ("quant_conv_bn",)
    assert keras_tie.distance == pytest.approx(file_tie.distance, abs=2e-6)


@pytest.mark.slow
def test_a_trained_model_s_add_is_moved_off_a_tie_by_its_statistic_range():
    """The W4A4 residual model's Add reads conv_bn (a moving-average range) and stem_relu
    (PACT); conv_bn's range is set so that one of its steps is half a step of the output
    (each odd level then sums to a half step). Only that range moves, and the file agrees."""
    qat = train_residual_qat(4)
    images = RESIDUAL_X[:32]
    bn, out = qat.get_layer("quant_conv_bn"), qat.get_layer("quant_add_relu")
    (alpha,) = [w.numpy() for w in out.weights if "alpha" in w.name]
    low, high = range_of(bn)
    factor = 255 * (float(alpha) / 15 / 2) / (high - low)  # s_a = s_y / 2
    for variable in (w for w in bn.weights if "output_m" in w.name):
        variable.assign(variable.numpy() * np.float32(factor))
    tied = range_of(bn)
    assert [tie.add for tie in rounding_ties(qat)] == ["add"]
    assert add_rounding_ties(to_integer_tflite(qat)) != ()
    others = {w.name: w.numpy() for layer in qat.layers if layer is not bn for w in layer.weights}

    ((name, nudge),) = separate_rounding_ties(qat)

    assert name == "quant_conv_bn" and nudge in NUDGES
    np.testing.assert_allclose(range_of(bn), tied * np.float32(1 + nudge), rtol=1e-7)
    assert all(
        np.array_equal(w.numpy(), others[w.name])
        for layer in qat.layers
        if layer is not bn
        for w in layer.weights
    )
    assert rounding_ties(qat, within=SEPARATION) == []
    flatbuffer = to_integer_tflite(qat)
    assert add_rounding_ties(flatbuffer, within=SEPARATION / 2) == ()
    np.testing.assert_array_equal(
        integer_outputs(flatbuffer, quantized(flatbuffer, images), "xnnpack").argmax(-1),
        qat.predict(images, verbose=0).argmax(-1),
    )


def test_a_model_without_an_add_has_nothing_to_move():
    qat = quantize_model(tiny_mnist_classifier(), weight_bits=4, activation_bits=4)
    assert rounding_ties(qat, within=1.0) == [] and separate_rounding_ties(qat) == []


@pytest.mark.slow
def test_a_bfloat16_model_s_tie_is_moved_and_its_float32_file_agrees():
    """The same under the mixed_bfloat16 policy (what `auto` trains in on a CPU with native
    bfloat16): the ranges are float32 variables, moved in place; the model rebuilt in float32
    (as it is saved and converted) has no tie left and its file computes its classes."""
    from sgt_tfmot.keras import keras
    from sgt_tfmot.saving import float32_model
    from tests.helpers.models import RESIDUAL_Y, residual_model

    keras.mixed_precision.set_global_policy("mixed_bfloat16")
    try:
        keras.utils.set_random_seed(4)
        qat = quantize_model(residual_model(), weight_bits=4, activation_bits=4, alpha_init=4.0)
        qat.compile(keras.optimizers.Adam(1e-2), keras.losses.SparseCategoricalCrossentropy(True))
        qat.fit(RESIDUAL_X, RESIDUAL_Y, epochs=2, batch_size=16, verbose=0)
    finally:
        keras.mixed_precision.set_global_policy("float32")
    assert qat.get_layer("quant_conv_bn").compute_dtype == "bfloat16"
    bn, out = qat.get_layer("quant_conv_bn"), qat.get_layer("quant_add_relu")
    (alpha,) = [w.numpy() for w in out.weights if "alpha" in w.name]
    low, high = range_of(bn)
    for variable in (w for w in bn.weights if "output_m" in w.name):
        variable.assign(variable.numpy() * np.float32(255 * (float(alpha) / 30) / (high - low)))
    tied = range_of(bn)
    assert [tie.add for tie in rounding_ties(qat)] == ["add"]

    ((name, nudge),) = separate_rounding_ties(qat)

    assert name == "quant_conv_bn"
    np.testing.assert_allclose(range_of(bn), tied * np.float32(1 + nudge), rtol=1e-7)
    rebuilt = float32_model(qat)
    assert rounding_ties(rebuilt, within=SEPARATION) == []
    flatbuffer = to_integer_tflite(rebuilt)
    assert add_rounding_ties(flatbuffer, within=SEPARATION / 2) == ()
    images = RESIDUAL_X[:32]
    np.testing.assert_array_equal(
        integer_outputs(flatbuffer, quantized(flatbuffer, images), "xnnpack").argmax(-1),
        rebuilt.predict(images, verbose=0).argmax(-1),
    )
