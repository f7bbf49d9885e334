"""Edge TPU compatibility of a .tflite file, checked by reading the flatbuffer.

The Edge TPU compiler (`edgetpu_compiler`) is only in Coral's own apt repository, so this
module applies Coral's published model requirements to the ops that `read_model` lists
instead of compiling. Source of the rules: "TensorFlow models on the Edge TPU",
https://coral.ai/docs/edgetpu/models-intro/ (sections "Model requirements" and
"Supported operations"):

* tensor parameters are quantized to 8 bits (int8/uint8; the int32 bias of a convolution
  or dense layer and int32 shape-like operands such as axes and paddings are allowed);
* tensor sizes are constant at compile time (no -1 in a `shape_signature`);
* model parameters (weights, bias, axes, ...) are constant at compile time;
* tensors are 1-, 2- or 3-dimensional; a tensor with more dimensions may only have sizes
  greater than 1 in its 3 innermost dimensions ([1, 8, 8, 3] passes, [2, 8, 8, 3] fails);
* only the ops of the supported-operations table, with their "known limitations" (no
  fused activation on pooling and concatenation, no reduction, padding, packing or
  splitting along the batch dimension, a one-dimensional FULLY_CONNECTED output);
* one subgraph (the compiler log says "More than one subgraph is not supported").

Placement follows Coral's rule that the compiler cannot partition the graph more than once:
it maps ops in execution order up to the first unsupported one, and that op and every op
after it run on the CPU, even ops the Edge TPU supports. A float QUANTIZE that reads a model
input or a float DEQUANTIZE that writes a model output (float in/out of an otherwise int8
model) runs on the CPU at the edge without splitting the graph.

Op versions are reported, not judged: TF releases newer than the compiler's last release
(16.0) write op versions the compiler cannot read ("Didn't find op for builtin opcode ...
version ...", google-coral/edgetpu issues 45, 147, 420), so a report shows each op's version
for a reader to compare with what their compiler accepts.

Example:

    report = check_edgetpu(read_model("model.tflite"))
    print(format_table(report))
    if not report.compatible:
        print("first op on the CPU:", report.first_cpu_op)
"""

from __future__ import annotations

import os
from collections import Counter
from dataclasses import asdict, dataclass, field
from typing import Any

from sgt_tfmot.tflite.flatbuffer import ModelSummary, OpInfo, TensorInfo, read_model
from sgt_tfmot.tflite.target_base import Target, TargetReport

# Ops the Edge TPU runs, by TFLite builtin name: the "Supported operations" table of
# https://coral.ai/docs/edgetpu/models-intro/#supported-operations (compiler 16, runtime 14).
# Left out on purpose:
# * LSTM ("unidirectional LSTM only" in the table): its int8 form needs int16 internals
#   that this checker does not model, so it is reported as unsupported.
# * HARD_SWISH and LEAKY_RELU are not in the table; they run on the CPU
#   (google-coral/edgetpu issue 272, an open feature request).
# * DEQUANTIZE is not in the table (google-coral/edgetpu issue 659); only the float edge
#   conversion described in the module docstring is tolerated.
EDGETPU_OPS = frozenset(
    {
        "ADD",
        "AVERAGE_POOL_2D",
        "CONCATENATION",
        "CONV_2D",
        "DEPTHWISE_CONV_2D",
        "EXPAND_DIMS",
        "FULLY_CONNECTED",
        "L2_NORMALIZATION",
        "LOGISTIC",
        "MAXIMUM",
        "MAX_POOL_2D",
        "MEAN",
        "MINIMUM",
        "MUL",
        "PACK",
        "PAD",
        "PRELU",
        "QUANTIZE",
        "REDUCE_MAX",
        "REDUCE_MIN",
        "RELU",
        "RELU6",
        "RELU_N1_TO_1",
        "RESHAPE",
        "RESIZE_BILINEAR",
        "RESIZE_NEAREST_NEIGHBOR",
        "RSQRT",
        "SLICE",
        "SOFTMAX",
        "SPACE_TO_DEPTH",
        "SPLIT",
        "SQUARED_DIFFERENCE",
        "SQUEEZE",
        "STRIDED_SLICE",
        "SUB",
        "SUM",
        "TANH",
        "TRANSPOSE",
        "TRANSPOSE_CONV",
    }
)

# Reason codes, stable for JSON reports and tests.
FLOAT_TENSOR = "float_tensor"
NON_8BIT_TENSOR = "non_8bit_tensor"
DYNAMIC_SHAPE = "dynamic_shape"
TOO_MANY_DIMS = "too_many_dims"
NON_CONSTANT_PARAMETER = "non_constant_parameter"
UNSUPPORTED_OP = "unsupported_op"
UNSUPPORTED_OPTIONS = "unsupported_options"
MULTIPLE_SUBGRAPHS = "multiple_subgraphs"

EDGETPU = "edgetpu"
CPU = "cpu"

_EDGETPU_CUSTOM_OP = "edgetpu-custom-op"
_EDGE_NOTE = "float edge conversion: runs on the CPU outside the Edge TPU graph"
_FLOAT_TYPES = frozenset({"FLOAT16", "FLOAT32", "FLOAT64", "BFLOAT16"})
_8BIT_TYPES = frozenset({"INT8", "UINT8"})
_PARAMETER_TYPES = _8BIT_TYPES | {"INT32", "INT64"}
_QUANTIZE_OPS = frozenset({"QUANTIZE", "DEQUANTIZE"})

# Input positions that hold parameters (weights, bias, axes, shapes, paddings) rather than
# activations. Parameters must be constant and may be int32/int64; the rest are data.
_WEIGHT_INPUTS = {
    "CONV_2D": (1, 2),
    "DEPTHWISE_CONV_2D": (1, 2),
    "FULLY_CONNECTED": (1, 2),
    "TRANSPOSE_CONV": (0, 1, 3),  # output_shape, weights, (input,) bias
}
_PARAMETER_INPUTS = {
    **_WEIGHT_INPUTS,
    "EXPAND_DIMS": (1,),
    "MEAN": (1,),
    "PAD": (1,),
    "PADV2": (1, 2),
    "PRELU": (1,),
    "REDUCE_MAX": (1,),
    "REDUCE_MIN": (1,),
    "RESHAPE": (1,),
    "RESIZE_BILINEAR": (1,),
    "RESIZE_NEAREST_NEIGHBOR": (1,),
    "SLICE": (1, 2),
    "SPLIT": (0,),
    "SPLIT_V": (1, 2),
    "STRIDED_SLICE": (1, 2, 3),
    "SUM": (1,),
    "TRANSPOSE": (1,),
}
_REDUCTIONS = frozenset({"MEAN", "SUM", "REDUCE_MAX", "REDUCE_MIN"})
_NO_FUSED_ACTIVATION = frozenset({"AVERAGE_POOL_2D", "MAX_POOL_2D", "CONCATENATION"})

_TENSOR_REASON_TITLES = {
    FLOAT_TENSOR: "float tensors (the Edge TPU needs int8/uint8)",
    NON_8BIT_TENSOR: "tensors that are not int8/uint8",
    DYNAMIC_SHAPE: "dynamic shapes (-1 in shape_signature)",
    TOO_MANY_DIMS: "more than 3 effective dimensions (only the 3 innermost may exceed 1)",
    NON_CONSTANT_PARAMETER: "parameters computed at run time (they must be constant)",
}


@dataclass(frozen=True)
class Reason:
    """Why an op (or the model) cannot run on the Edge TPU.

    Attributes:
        code: One of the module's reason codes, e.g. `FLOAT_TENSOR` ("float_tensor").
        message: What was found, naming the tensors or values.
    """

    code: str
    message: str


@dataclass(frozen=True)
class OpVerdict:
    """The Edge TPU verdict on one op.

    Attributes:
        index: The op's position in execution order.
        name: Builtin op name ("CUSTOM:<code>" for custom ops).
        version: Op version as written by the converter (reported, not judged).
        input_types: Type of each input; "-" for an omitted optional input.
        output_types: Type of each output.
        supported: True if the op itself meets the Edge TPU rules.
        reasons: Why not, when `supported` is False.
        placement: `EDGETPU` ("edgetpu") or `CPU` ("cpu"): where the op would run after
            compilation, taking the single partition point into account.
        note: Extra remark (float edge conversion, already compiled op, ...), else "".
    """

    index: int
    name: str
    version: int
    input_types: tuple[str, ...]
    output_types: tuple[str, ...]
    supported: bool
    reasons: tuple[Reason, ...]
    placement: str
    note: str = ""


@dataclass(frozen=True)
class EdgeTpuReport:
    """Edge TPU verdict on a whole model.

    Attributes:
        compatible: True if every op maps to the Edge TPU (float edge conversions aside)
            and the model has no model-level issue.
        ops: One verdict per op, in execution order.
        first_cpu_op: Index of the first op that falls back to the CPU and splits the
            graph there, or None.
        internal_quantize_ops: QUANTIZE/DEQUANTIZE ops that neither read a model input nor
            write a model output (the deployment target is zero).
        model_issues: Reasons that concern the whole model (e.g. several subgraphs).
    """

    compatible: bool
    ops: list[OpVerdict]
    first_cpu_op: int | None
    internal_quantize_ops: int
    model_issues: list[Reason] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        """Returns the report as nested dicts (sequences as lists/tuples) for `json.dumps`."""
        return asdict(self)


def check_edgetpu(
    model: ModelSummary | bytes | bytearray | str | os.PathLike,
) -> EdgeTpuReport:
    """Applies Coral's Edge TPU model requirements to every op of a TFLite model.

    Args:
        model: A `ModelSummary` from `read_model`, or what `read_model` accepts (the
            model's bytes or the path of a .tflite file).

    Returns:
        An `EdgeTpuReport` with one `OpVerdict` per op.

    Raises:
        ValueError: As `read_model`, for a missing path or bytes that are not a TFLite
            flatbuffer.
    """
    summary = model if isinstance(model, ModelSummary) else read_model(model)
    graph_inputs = {tensor.index for tensor in summary.inputs}
    graph_outputs = {tensor.index for tensor in summary.outputs}

    judged = [_judge(op, graph_inputs, graph_outputs) for op in summary.ops]
    first_cpu_op = next(
        (op.index for op, (reasons, _) in zip(summary.ops, judged, strict=True) if reasons),
        None,
    )
    verdicts = []
    for op, (reasons, note) in zip(summary.ops, judged, strict=True):
        on_cpu = note == _EDGE_NOTE or (first_cpu_op is not None and op.index >= first_cpu_op)
        verdicts.append(
            OpVerdict(
                index=op.index,
                name=_display_name(op),
                version=op.version,
                input_types=tuple("-" if t is None else t.type for t in op.inputs),
                output_types=tuple(t.type for t in op.outputs),
                supported=not reasons,
                reasons=tuple(reasons),
                placement=CPU if on_cpu else EDGETPU,
                note=note,
            )
        )

    model_issues = []
    if summary.num_subgraphs > 1:
        model_issues.append(
            Reason(
                MULTIPLE_SUBGRAPHS,
                f"the model has {summary.num_subgraphs} subgraphs (control flow); the "
                "Edge TPU compiler supports one",
            )
        )
    internal = sum(
        1
        for op in summary.ops
        if op.name in _QUANTIZE_OPS and not _touches(op, graph_inputs, graph_outputs)
    )
    return EdgeTpuReport(
        compatible=first_cpu_op is None and not model_issues,
        ops=verdicts,
        first_cpu_op=first_cpu_op,
        internal_quantize_ops=internal,
        model_issues=model_issues,
    )


def format_table(report: EdgeTpuReport) -> str:
    """Renders a report as a fixed-width text table followed by a summary.

    Columns: op index, op name, op version, input types, output types, and the verdict
    ("Edge TPU", or "CPU" with the reasons or the op after which the graph was split).

    Args:
        report: What `check_edgetpu` returned.

    Returns:
        The table and summary lines, joined by newlines.
    """
    rows = [("#", "op", "ver", "inputs", "outputs", "verdict")]
    for verdict in report.ops:
        rows.append(
            (
                str(verdict.index),
                verdict.name,
                str(verdict.version),
                ",".join(verdict.input_types),
                ",".join(verdict.output_types),
                _verdict_text(verdict, report.first_cpu_op),
            )
        )
    widths = [max(len(row[column]) for row in rows) for column in range(5)]
    lines = [
        "  ".join(
            [
                row[0].rjust(widths[0]),
                row[1].ljust(widths[1]),
                row[2].rjust(widths[2]),
                row[3].ljust(widths[3]),
                row[4].ljust(widths[4]),
                row[5],
            ]
        ).rstrip()
        for row in rows
    ]
    edge_ops = sum(verdict.note == _EDGE_NOTE for verdict in report.ops)
    if report.compatible and edge_ops:
        lines.append(
            f"Edge TPU: compatible; every op maps to the Edge TPU except {edge_ops} float "
            "edge conversion(s) that run on the CPU."
        )
    elif report.compatible:
        lines.append("Edge TPU: compatible; every op maps to the Edge TPU.")
    else:
        lines.append("Edge TPU: NOT compatible.")
        if report.first_cpu_op is not None:
            first = report.ops[report.first_cpu_op]
            lines.append(
                f"First op on the CPU: #{first.index} {first.name}; the compiler maps ops in "
                "order up to it, and it and every op after it run on the CPU."
            )
        lines.extend(f"Model: {issue.message}" for issue in report.model_issues)
    lines.append(f"QUANTIZE/DEQUANTIZE inside the graph: {report.internal_quantize_ops}")
    lines.append(
        "Op versions are as this converter wrote them; the last Edge TPU compiler (16.0) "
        "rejects versions newer than it knows."
    )
    return "\n".join(lines)


def summary_line(report: EdgeTpuReport) -> str:
    """The verdict in one line, with the ops counted by name (the table: `format_table`).

    Example: "Edge TPU: compatible; 36 ops: CONV_2D x19, ADD x9, ...; QUANTIZE/DEQUANTIZE
    inside the graph: 0".
    """
    counts = Counter(verdict.name for verdict in report.ops).most_common()
    ops = ", ".join(f"{name} x{count}" for name, count in counts)
    if report.compatible:
        verdict = "Edge TPU: compatible"
        edge_ops = sum(verdict.note == _EDGE_NOTE for verdict in report.ops)
        if edge_ops:
            verdict += f" ({edge_ops} float edge conversion(s) on the CPU)"
    elif report.first_cpu_op is not None:
        first = report.ops[report.first_cpu_op]
        why = "; ".join(reason.message for reason in first.reasons)
        verdict = f"Edge TPU: NOT compatible (first CPU op #{first.index} {first.name}: {why})"
    else:
        issues = "; ".join(issue.message for issue in report.model_issues)
        verdict = f"Edge TPU: NOT compatible ({issues})"
    return (
        f"{verdict}; {len(report.ops)} ops: {ops}; QUANTIZE/DEQUANTIZE inside the graph: "
        f"{report.internal_quantize_ops}"
    )


def _judge(op: OpInfo, graph_inputs: set[int], graph_outputs: set[int]) -> tuple[list[Reason], str]:
    """Returns (reasons, note) for one op; no reasons means the op itself is supported."""
    if op.name == "CUSTOM":
        if op.custom_code == _EDGETPU_CUSTOM_OP:
            return [], "already compiled for the Edge TPU"
        return [Reason(UNSUPPORTED_OP, f"custom op {op.custom_code!r} is not an Edge TPU op")], ""
    if _is_float_edge_conversion(op, graph_inputs, graph_outputs):
        return [], _EDGE_NOTE

    reasons = []
    if op.name == "DEQUANTIZE":
        reasons.append(
            Reason(
                UNSUPPORTED_OP,
                "DEQUANTIZE is not an Edge TPU op; only an int8->float DEQUANTIZE that writes "
                "a model output is left to the CPU without splitting the graph",
            )
        )
    elif op.name not in EDGETPU_OPS:
        reasons.append(Reason(UNSUPPORTED_OP, f"{op.name} is not an Edge TPU op"))
    reasons.extend(_tensor_reasons(op))
    reasons.extend(_limitation_reasons(op))
    return reasons, ""


def _is_float_edge_conversion(op: OpInfo, graph_inputs: set[int], graph_outputs: set[int]) -> bool:
    if op.name == "QUANTIZE" and op.inputs and op.inputs[0] is not None:
        return op.inputs[0].index in graph_inputs and op.inputs[0].type in _FLOAT_TYPES
    if op.name == "DEQUANTIZE" and op.outputs:
        return op.outputs[0].index in graph_outputs and op.outputs[0].type in _FLOAT_TYPES
    return False


def _touches(op: OpInfo, graph_inputs: set[int], graph_outputs: set[int]) -> bool:
    reads_input = any(t is not None and t.index in graph_inputs for t in op.inputs)
    return reads_input or any(t.index in graph_outputs for t in op.outputs)


def _tensor_reasons(op: OpInfo) -> list[Reason]:
    parameters = _PARAMETER_INPUTS.get(op.name, ())
    found: dict[str, list[str]] = {}

    def flag(code: str, tensor: TensorInfo) -> None:
        text = f"{tensor.name!r} {tensor.type} {list(tensor.shape_signature)}"
        if text not in found.setdefault(code, []):
            found[code].append(text)

    roles = [(tensor, position in parameters) for position, tensor in enumerate(op.inputs)]
    roles += [(tensor, False) for tensor in op.outputs]
    for tensor, is_parameter in roles:
        if tensor is None:
            continue
        if tensor.is_dynamic:
            flag(DYNAMIC_SHAPE, tensor)
        if tensor.type in _FLOAT_TYPES:
            flag(FLOAT_TENSOR, tensor)
        elif tensor.type not in (_PARAMETER_TYPES if is_parameter else _8BIT_TYPES):
            flag(NON_8BIT_TENSOR, tensor)
        if is_parameter and not tensor.is_constant:
            flag(NON_CONSTANT_PARAMETER, tensor)
        if not is_parameter and not tensor.is_constant and _effective_dims_too_many(tensor):
            flag(TOO_MANY_DIMS, tensor)
    return [
        Reason(code, f"{title}: {', '.join(found[code])}")
        for code, title in _TENSOR_REASON_TITLES.items()
        if code in found
    ]


def _effective_dims_too_many(tensor: TensorInfo) -> bool:
    """Coral: beyond 3 dimensions, only the 3 innermost may have a size greater than 1."""
    return len(tensor.shape) > 3 and any(size != 1 for size in tensor.shape[:-3])


def _limitation_reasons(op: OpInfo) -> list[Reason]:
    """The "known limitations" column of Coral's table, where the flatbuffer shows them."""
    reasons = []
    data = op.inputs[0] if op.inputs else None
    rank = len(data.shape) if data is not None else 0
    if op.name in _NO_FUSED_ACTIVATION and op.fused_activation not in (None, "NONE"):
        reasons.append(
            Reason(
                UNSUPPORTED_OPTIONS,
                f"{op.name} has a fused {op.fused_activation} activation; the Edge TPU runs "
                "it only without a fused activation",
            )
        )
    if op.name in _REDUCTIONS and len(op.inputs) > 1 and _batch_axis_in(op.inputs[1], rank):
        reasons.append(
            Reason(
                UNSUPPORTED_OPTIONS,
                f"{op.name} reduces over the batch dimension (axes {list(op.inputs[1].values)})",
            )
        )
    if op.name == "SPLIT" and len(op.inputs) > 1 and op.inputs[1] is not None:
        # SPLIT takes (axis, data), unlike the other ops here.
        if _batch_axis_in(op.inputs[0], len(op.inputs[1].shape)):
            reasons.append(
                Reason(UNSUPPORTED_OPTIONS, "SPLIT splits along the batch dimension (axis 0)")
            )
    if op.name == "PACK" and op.options.get("axis") == 0:
        reasons.append(Reason(UNSUPPORTED_OPTIONS, "PACK packs along the batch dimension"))
    if op.name == "PAD" and len(op.inputs) > 1 and rank > 1:
        paddings = op.inputs[1].values if op.inputs[1] is not None else None
        if paddings is not None and any(paddings[:2]):
            reasons.append(
                Reason(
                    UNSUPPORTED_OPTIONS,
                    f"PAD pads the batch dimension (paddings {list(paddings[:2])})",
                )
            )
    if op.name == "FULLY_CONNECTED" and op.outputs:
        output = op.outputs[0]
        if sum(size > 1 for size in output.shape) > 1:
            reasons.append(
                Reason(
                    UNSUPPORTED_OPTIONS,
                    f"FULLY_CONNECTED output {output.name!r} {list(output.shape)} is not "
                    "one-dimensional (batch > 1?)",
                )
            )
    return reasons


def _batch_axis_in(axes: TensorInfo | None, rank: int) -> bool:
    """True if a constant axes tensor names axis 0 of a tensor of rank >= 2 (the batch)."""
    if axes is None or axes.values is None or rank < 2:
        return False
    return any(axis % rank == 0 for axis in axes.values)


def _display_name(op: OpInfo) -> str:
    return f"CUSTOM:{op.custom_code}" if op.name == "CUSTOM" else op.name


def _verdict_text(verdict: OpVerdict, first_cpu_op: int | None) -> str:
    if verdict.reasons:
        text = "CPU: " + "; ".join(reason.message for reason in verdict.reasons)
        return f"{text}  <- first CPU op" if verdict.index == first_cpu_op else text
    if verdict.placement == CPU and verdict.note:
        return f"CPU ({verdict.note})"
    if verdict.placement == CPU:
        return f"CPU (after op {first_cpu_op})"
    return f"Edge TPU ({verdict.note})" if verdict.note else "Edge TPU"


class EdgeTpu(Target):
    """The Edge TPU as a deployment target (`sgt_tfmot.tflite.targets`).

    The verdict comes from the flatbuffer (`check_edgetpu`); the compiler itself is only in
    Coral's apt repository, so the report gives the command to run where it is installed.
    """

    name, title = "edgetpu", "Edge TPU"

    def check(self, context):
        report = check_edgetpu(context.flatbuffer)
        failure = None
        if not report.compatible:
            first = report.ops[report.first_cpu_op] if report.first_cpu_op is not None else None
            where = f" (first CPU op: #{first.index} {first.name})" if first is not None else ""
            failure = f"not Edge TPU compatible{where}"
        command = f"edgetpu_compiler --show_operations {context.output}"
        table = tuple(format_table(report).splitlines())
        section = {
            **report.to_dict(),
            "op_names": [op.name for op in report.ops],
            "op_table": list(table),
            "compiler_command": command,
        }
        lines = (summary_line(report), f"  compile on a machine with Coral's compiler: {command}")
        return TargetReport(self.name, self.title, report.compatible, failure, lines, section,
                            details=table)  # fmt: skip
