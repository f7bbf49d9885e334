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
from ai_edge_litert.interpreter import OpResolverType

from sgt_tfmot import quantize_model
from sgt_tfmot.conversion import checks
from sgt_tfmot.int8_kernels import add_rounding, xnnpack_add, xnnpack_subtract
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


def adds(model, code=schema.BuiltinOperator.ADD) -> list[tuple[int, list]]:
    """(index, [input a, input b, output] tensors) of every ADD (or op `code`) of an
    unpacked model."""
    graph = model.subgraphs[0]
    return [
        (index, [graph.tensors[t] for t in (*op.inputs[:2], op.outputs[0])])
        for index, op in enumerate(graph.operators)
        if op_code(model, op) == code
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


def test_each_add_s_telling_pair_is_the_brute_force_one(residual_file):
    """Over every pair the inputs can hold, in rationals: the pairs XNNPACK rounds apart from
    the exact sum (`xnnpack_add`, checked against LiteRT below) and, when there are none, the
    pair closest to a half step."""
    found = {tie.op: tie for tie in add_rounding_ties(residual_file, within=1.0)}
    every = adds(unpack_model(residual_file))
    assert found and set(found) == {index for index, _ in every}
    for index, tensors in every:
        tie = found[index]
        steps = exact_steps(tensors, tie.levels)
        assert tie.steps == pytest.approx(float(steps), abs=1e-9)
        assert tie.distance == pytest.approx(tie_distance(steps), abs=1e-9)
        # The residual model's ADDs end in a fused ReLU: the sums between two levels that both
        # survive the clamp count. An input that a ReLU wrote (the converter names it
        # ".../Minimum") holds the levels from its zero point up.
        zeros = [int(t.quantization.zeroPoint[0]) for t in tensors]
        grids = [(float(t.quantization.scale[0]), z) for t, z in zip(tensors, zeros, strict=True)]
        lows = [
            zero if t.name.endswith(b"Minimum") else -128
            for zero, t in zip(zeros, tensors, strict=True)
        ]
        pairs = [
            ((a, b), exact_steps(tensors, (a, b)))
            for a in range(lows[0], 128)
            for b in range(lows[1], 128)
            if zeros[2] <= floor_level(exact_steps(tensors, (a, b))) + zeros[2] <= 126
        ]
        apart = [
            (pair, steps)
            for pair, steps in pairs
            if int(xnnpack_add(*pair, *grids, low=zeros[2]))
            != floor_level(steps + Fraction(1, 2)) + zeros[2]
        ]
        assert tie.apart == len(apart)
        closest = min(tie_distance(steps) for _, steps in (apart or pairs))
        assert tie.distance <= closest + 1e-12
    assert all(tie.apart for tie in add_rounding_ties(residual_file, within=0.0))


@pytest.mark.slow
def test_an_add_input_keeps_its_k_bit_levels_through_pooling_and_padding():
    """A 4-bit PACT output reaching an ADD through MaxPooling2D and ZeroPadding2D holds 16
    levels (`OpGraph.level_range` walks back through them), and the levels the file's tensor
    takes on images (LiteRT's builtin kernels, every tensor kept) lie in that range."""
    from ai_edge_litert.interpreter import Interpreter

    from sgt_tfmot.keras import keras
    from sgt_tfmot.tflite.rewrite import OpGraph

    layers = keras.layers
    keras.utils.set_random_seed(1)
    inputs = keras.Input((8, 8, 3))
    x = layers.Rescaling(1 / 127.5, offset=-1.0)(inputs)
    y = layers.ReLU(name="relu")(layers.Conv2D(4, 3, padding="same")(x))
    y = layers.ZeroPadding2D(1)(layers.MaxPooling2D(2)(y))
    z = layers.Conv2D(4, 3, padding="same", strides=2)(x)
    z = layers.ZeroPadding2D(1)(z)
    outputs = layers.Dense(3)(layers.GlobalAveragePooling2D()(layers.Add()([z, y])))
    qat = quantize_model(keras.Model(inputs, outputs), weight_bits=4, activation_bits=4)
    qat.predict(RESIDUAL_X, verbose=0)
    flatbuffer = to_integer_tflite(qat, RESIDUAL_X[:32])
    graph = OpGraph(unpack_model(flatbuffer))
    ((index, _),) = adds(graph.model)
    ranges = [graph.level_range(int(t)) for t in graph.op(index).inputs[:2]]
    assert sorted(high - low + 1 for low, high in ranges) == [16, 256]

    builtin = OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES
    runner = Interpreter(
        model_content=flatbuffer,
        experimental_preserve_all_tensors=True,
        experimental_op_resolver_type=builtin,
    )
    runner.allocate_tensors()
    (source,) = runner.get_input_details()
    for image in quantized(flatbuffer, RESIDUAL_X[:32]):
        runner.set_tensor(source["index"], image[None].astype(source["dtype"]))
        runner.invoke()
        for tensor, (low, high) in zip(graph.op(index).inputs[:2], ranges, strict=True):
            values = runner.get_tensor(int(tensor))
            assert low <= values.min() and values.max() <= high


LEVELS = np.arange(-128, 128)
PAIRS = np.stack(np.meshgrid(LEVELS, LEVELS, indexing="ij"), -1).reshape(-1, 2)


def merge_file(subtract: bool) -> bytes:
    """An int8 file of one ADD (or SUB) of two inputs of 65,536 elements: every pair of
    levels."""
    from sgt_tfmot.keras import tf

    spec = tf.TensorSpec([len(PAIRS)], tf.float32)

    @tf.function(input_signature=[spec, spec])
    def merge(a, b):
        a = tf.quantization.fake_quant_with_min_max_args(a, -1.0, 1.0)
        b = tf.quantization.fake_quant_with_min_max_args(b, -2.0, 2.0)
        total = a - b if subtract else a + b
        return tf.quantization.fake_quant_with_min_max_args(total, -3.0, 3.0)

    converter = tf.lite.TFLiteConverter.from_concrete_functions([merge.get_concrete_function()])
    converter.optimizations = [tf.lite.Optimize.DEFAULT]
    converter.inference_input_type = converter.inference_output_type = tf.int8
    return converter.convert()


@pytest.fixture(scope="module")
def add_file():
    return merge_file(subtract=False)


def with_grids(flatbuffer: bytes, grids, code=schema.BuiltinOperator.ADD) -> bytes:
    """The ADD (or op `code`) file with (scale, zero point) of input a, input b and the
    output set."""
    model = unpack_model(flatbuffer)
    ((_, tensors),) = adds(model, code)
    for tensor, (scale, zero) in zip(tensors, grids, strict=True):
        tensor.quantization.scale = np.array([scale], np.float32)
        tensor.quantization.zeroPoint = np.array([zero], np.int64)
    return pack_model(model)


def every_pair(flatbuffer: bytes, runtime: str) -> np.ndarray:
    from tests.helpers.tflite import interpreter

    runner = interpreter(flatbuffer, runtime)
    first, second = sorted(runner.get_input_details(), key=lambda detail: detail["index"])
    runner.set_tensor(first["index"], PAIRS[:, 0].astype(np.int8))
    runner.set_tensor(second["index"], PAIRS[:, 1].astype(np.int8))
    runner.invoke()
    return runner.get_tensor(runner.get_output_details()[0]["index"]).astype(np.int64)


def test_xnnpack_add_is_litert_s_add_bit_for_bit_and_the_ties_are_the_pairs_it_rounds_apart(
    add_file,
):
    """On every pair of levels of 12 random grids (input/output scale ratios from 0.01 to
    100), LiteRT's default runtime gives `xnnpack_add`'s levels; `add_rounding_ties` counts
    exactly the pairs where those differ from the exact sum rounded half up (the Keras
    model's rule), and finds such pairs beyond `NEAR_TIE` too."""
    rng = np.random.default_rng(0)
    beyond_near_tie = 0
    for _ in range(12):
        grids = [(float(np.float32(rng.uniform(0.001, 0.1))), int(rng.integers(-128, 128)))
                 for _ in range(3)]  # fmt: skip
        flatbuffer = with_grids(add_file, grids)
        runtime = every_pair(flatbuffer, "xnnpack")
        np.testing.assert_array_equal(runtime, xnnpack_add(PAIRS[:, 0], PAIRS[:, 1], *grids))

        (scale_a, zero_a), (scale_b, zero_b), (scale_y, zero_y) = (
            (Fraction(scale), zero) for scale, zero in grids
        )
        exact = np.array([
            min(max(floor_level(((a - zero_a) * scale_a + (b - zero_b) * scale_b) / scale_y
                                + Fraction(1, 2)) + zero_y, -128), 127)
            for a, b in PAIRS.tolist()
        ])  # fmt: skip
        differ = PAIRS[runtime != exact]
        ties = add_rounding_ties(flatbuffer)
        rounding = add_rounding(LEVELS, grids[0], LEVELS, grids[1], grids[2])
        if len(differ):
            (tie,) = ties
            assert tie.apart == rounding.apart == len(differ)
            assert list(tie.levels) in differ.tolist()
            beyond_near_tie += tie.distance > NEAR_TIE
        else:
            assert rounding.apart == 0
            assert ties == () or ties[0].distance < NEAR_TIE
    assert beyond_near_tie >= 1


def test_xnnpack_subtract_is_litert_s_sub_bit_for_bit_and_its_ties_are_found():
    """LiteRT's default SUB is its ADD with the second input's multiplier negated, on every
    pair of levels of 12 random grids (1 to 3 pairs a grid round apart from the exact
    difference in 4 of them); `add_rounding_ties` counts those pairs on the file's SUB."""
    sub_file = merge_file(subtract=True)
    rng = np.random.default_rng(0)
    found = 0
    for _ in range(12):
        grids = [(float(np.float32(rng.uniform(0.001, 0.1))), int(rng.integers(-128, 128)))
                 for _ in range(3)]  # fmt: skip
        flatbuffer = with_grids(sub_file, grids, schema.BuiltinOperator.SUB)
        runtime = every_pair(flatbuffer, "xnnpack")
        np.testing.assert_array_equal(runtime, xnnpack_subtract(PAIRS[:, 0], PAIRS[:, 1], *grids))
        (scale_a, zero_a), (scale_b, zero_b), (scale_y, zero_y) = (
            (Fraction(scale), zero) for scale, zero in grids
        )
        exact = np.array([
            min(max(floor_level(((a - zero_a) * scale_a - (b - zero_b) * scale_b) / scale_y
                                + Fraction(1, 2)) + zero_y, -128), 127)
            for a, b in PAIRS.tolist()
        ])  # fmt: skip
        differ = PAIRS[runtime != exact]
        ties = [tie for tie in add_rounding_ties(flatbuffer) if tie.apart]
        if len(differ):
            (tie,) = ties
            assert tie.kind == "SUB" and tie.apart == len(differ)
            assert list(tie.levels) in differ.tolist()
            steps = (tie.levels[0] - zero_a) * scale_a - (tie.levels[1] - zero_b) * scale_b
            assert tie.steps == pytest.approx(float(steps / scale_y), abs=1e-9)
            found += 1
        else:
            assert ties == []
    assert found >= 2


def test_the_keras_side_finds_a_subtract_s_ties():
    """A Subtract's closest pair in the Keras model's grids is its file SUB's."""
    from sgt_tfmot.keras import keras

    layers = keras.layers
    keras.utils.set_random_seed(2)
    inputs = keras.Input((8, 8, 3))
    x = layers.Rescaling(1 / 127.5, offset=-1.0)(inputs)
    y = layers.ReLU()(layers.Conv2D(4, 3, padding="same")(x))
    z = layers.BatchNormalization()(layers.Conv2D(4, 3, padding="same", use_bias=False)(x))
    z = layers.Subtract(name="difference")([z, y])
    outputs = layers.Dense(3)(layers.GlobalAveragePooling2D()(z))
    qat = quantize_model(keras.Model(inputs, outputs), weight_bits=4, activation_bits=4)
    qat.predict(RESIDUAL_X, verbose=0)
    (keras_tie,) = rounding_ties(qat, within=1.0)
    (file_tie,) = add_rounding_ties(to_integer_tflite(qat, RESIDUAL_X[:32]), within=1.0)
    assert keras_tie.add == "quant_difference" and file_tie.kind == "SUB"
    assert keras_tie.distance == pytest.approx(file_tie.distance, abs=2e-6)


def test_the_keras_side_finds_the_ties_of_an_add_read_by_a_concatenate():
    """An Add read only by a Concatenate has no range of its own: its file ADD writes on the
    CONCATENATION's grid, which the Keras side now reads (it skipped such an Add)."""
    from sgt_tfmot.keras import keras

    layers = keras.layers
    keras.utils.set_random_seed(3)
    inputs = keras.Input((8, 8, 3))
    x = layers.ReLU()(layers.Conv2D(8, 3, padding="same")(inputs))
    total = layers.Add(name="total")(
        [layers.Conv2D(8, 1)(x), layers.Conv2D(8, 3, padding="same")(x)]
    )
    joined = layers.Concatenate()([total, layers.Conv2D(4, 1)(x)])
    outputs = layers.Dense(3)(layers.GlobalAveragePooling2D()(joined))
    qat = quantize_model(keras.Model(inputs, outputs), weight_bits=8, activation_bits=8)
    qat.predict(RESIDUAL_X, verbose=0)
    (keras_tie,) = rounding_ties(qat, within=1.0)
    (file_tie,) = add_rounding_ties(to_integer_tflite(qat, RESIDUAL_X[:32]), within=1.0)
    assert keras_tie.add == "total" and keras_tie.statistics == ()  # not wrapped: no range
    assert keras_tie.distance == pytest.approx(file_tie.distance, abs=2e-6)


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


def test_the_gate_names_the_telling_tie_only_when_agreement_fails():
    """An ADD that XNNPACK rounds apart from the Keras model first, else the closest tie."""
    ties = (RoundingTie(4, (-20, 122), 5.499999, 1.0e-6), RoundingTie(9, (1, 2), 3.5000004, 4e-7))
    failed = checks.AccuracyComparison(0.91, 0.91, 0.987, 10000, ulp_agreement=0.999)
    (line,) = checks.gate(checks.Thresholds(), failed, ties=ties)
    assert "below --min_agreement" in line and "ADD #9's input levels (1, 2)" in line
    assert "4.0e-07 of a step from a rounding tie" in line
    assert "which the Keras model's float32 may round either way" in line
    apart = RoundingTie(11, (5, -7), 2.50003, 3e-5, apart=2)
    (line,) = checks.gate(checks.Thresholds(), failed, ties=(*ties, apart))
    assert "ADD #11's input levels (5, -7) sum to 2.5000300 output steps, 3.0e-05" in line
    assert "which XNNPACK rounds the other way than the Keras model (2 pairs" in line
    (plain,) = checks.gate(checks.Thresholds(), failed)
    assert "rounding tie" not in plain
    passed = checks.AccuracyComparison(0.91, 0.91, 1.0, 10000, ulp_agreement=0.999)
    assert checks.gate(checks.Thresholds(), passed, ties=ties) == []
    assert apart.to_dict() == {"op": 11, "kind": "ADD", "levels": [5, -7], "steps": 2.50003,
                               "distance": 3e-5, "xnnpack_apart": 2}  # fmt: skip
    sub = RoundingTie(12, (5, 7), -2.50003, 3e-5, apart=1, kind="SUB")
    (line,) = checks.gate(checks.Thresholds(), failed, ties=(sub,))
    assert "SUB #12's input levels (5, 7) differ by -2.5000300 output steps" in line
    assert "(1 pair of this SUB's levels)" in line


def test_convert_s_summary_gives_the_ties_one_line():
    """A W8A8 ResNet-20 agreeing 100 % had nine ADDs listed one per line; one line says how
    many (a single tie in full)."""
    from sgt_tfmot.conversion.report import _tie_lines

    ties = (
        RoundingTie(4, (-59, -21), 34.5000021, 2.1e-6),
        RoundingTie(7, (-125, 59), 31.5000326, 3.3e-5, apart=1),
        RoundingTie(10, (74, -8), 221.4999928, 7.2e-6, apart=2),
    )
    assert _tie_lines(()) == []
    assert _tie_lines(ties[1:2]) == [f"  ({ties[1].describe()})"]
    assert _tie_lines(ties) == [
        "  (rounding ties: 2 ADDs that XNNPACK rounds apart from the Keras model on 3 pairs of "
        "input levels in all; 1 with a pair within 1e-05 of a step of a tie; the report's "
        "rounding_ties lists them)"
    ]
    sub = RoundingTie(12, (5, 7), -2.50003, 3e-5, apart=1, kind="SUB")
    assert (
        "3 ADDs and SUBs that XNNPACK rounds apart from the Keras model on 4 pairs"
        in (_tie_lines((*ties, sub))[0])
    )


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
