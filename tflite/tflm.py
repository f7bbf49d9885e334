"""TensorFlow Lite Micro as a deployment target: the file is run in TFLM's own interpreter.

TFLite Micro (TFLM) runs .tflite files on microcontrollers: the model is read in place from
flash, and every tensor lives in one RAM buffer, the tensor arena, that the firmware
reserves up front. The interpreter registers only the ops the firmware's
`tflite::MicroMutableOpResolver<N>` adds. `Tflm.check` tells a firmware engineer what that
takes and whether the file computes what LiteRT computes:

* **ops**: each op of the file maps to one `MicroMutableOpResolver` method
  (`RESOLVER_METHODS`); an op without one, or a float model, is refused with one line;
* **outputs**: the test images run in TFLM's Python interpreter (`tflite-micro`, the same
  reference kernels firmware builds get) and in LiteRT's reference kernels
  (`OpResolverType.BUILTIN_REF`) from the same int8 inputs; TFLM's integer kernels are
  LiteRT's reference kernels, so every output value should be equal, and the report counts
  those that are not. One difference is known: LiteRT's reference FULLY_CONNECTED rounds its
  requantization in double precision, TFLM's in fixed point, so a few outputs in ten
  thousand differ by a step there (and after it). For each image that differs,
  `sgt_tfmot.tflite.tflm_divergence` finds the first op that differs and recomputes it in
  numpy; the file passes when every difference is that one;
* **RAM**: the arena, measured two ways: TFLM's `RecordingMicroAllocator` (`print_allocations`:
  total = head, the planned activations and scratch buffers, + tail, the persistent
  structures), and the smallest arena in which the file loads and runs (a bisection over
  real loads: the recorder misses the temporary structures `Prepare` allocates, which a small
  model's planned buffers do not cover). The larger, rounded up to 16 bytes, is the arena
  the report gives, and the test images then run in an arena of exactly that size;
* **flash**: the file's size, which the firmware stores as a C array (`sgt_tfmot.tflite.c_array`).

TFLM's interpreter runs in a child process (`_tflm_worker.py`, one per measurement or run):
on some arenas too small for the model it crashes (SIGSEGV) instead of failing: seen with
MobileNetV3Small at 200,000 bytes and at 260,784, its recorder's figure (100,000 failed
cleanly, 270,000 ran; the bisection found 267,040 for its int8 file). A crash during the
bisection counts as an arena that does not run; anywhere else it is the target's failure
line (`MicroCrash`), never the end of `convert`. One worker serves the bisection and the
test images.

What the measured arena does not cover: it comes from the reference kernels on a 64-bit host.
On a 32-bit microcontroller the persistent structures hold 4-byte pointers (smaller), and
optimized kernels (CMSIS-NN, Xtensa) ask scratch buffers the reference kernels do not (for a
3x3 convolution over 64 channels, CMSIS-NN's is 2·64·9 int16 values, 2,304 bytes).
`arena_with_margin` adds `ARENA_MARGIN` for them.

`tflite-micro` is not a dependency of the package (`pip install tflite-micro`, a small wheel
without TensorFlow; `setup.cfg`'s `tflm` extra). Without it the verdict is None, unless the
file's ops already show that TFLM refuses it.

Example:

    report = Tflm().check(context)
    print(report.section["arena_bytes"], report.section["resolver_methods"])
"""

from __future__ import annotations

import math
import pickle
import re
import signal
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from sgt_tfmot.tflite.flatbuffer import ModelSummary, read_model
from sgt_tfmot.tflite.runtime import TFLiteModel, integer_outputs
from sgt_tfmot.tflite.target_base import Target, TargetContext, TargetReport
from sgt_tfmot.tflite.tflm_divergence import FC_ROUNDING, first_divergences

__all__ = [
    "ARENA_MARGIN",
    "INSTALL_COMMAND",
    "RESOLVER_METHODS",
    "ArenaUse",
    "MicroCrash",
    "Tflm",
    "arena_with_margin",
    "measure_arena",
    "refusals",
    "resolver_methods",
    "run_micro",
]

INSTALL_COMMAND = "python3 -m pip install tflite-micro"

ARENA_MARGIN = 0.10
"""The share `arena_with_margin` adds to the measured arena (then rounded up to 1 KiB): the
optimized kernels' scratch buffers (see the module docstring); measure on the device
(`RecordingMicroAllocator`) to trim it."""

_ARENA_ROUNDING = 1024
_PROBE_ARENA = 16 << 20  # the first load's arena; allocation then measures what is used
_ALIGNMENT = 16  # TFLM aligns the arena to 16 bytes (MicroArenaBufferAlignment)
_SMALLEST_PROBE = 1024

# Builtin op -> the `tflite::MicroMutableOpResolver` method that registers it, from
# tensorflow/lite/micro/micro_mutable_op_resolver.h (tflite-micro commit 90b983c,
# 2026-08-20): every `AddX()` that calls `AddBuiltin(BuiltinOperator_Y, ...)`.
RESOLVER_METHODS: dict[str, str] = {
    "ABS": "AddAbs", "ADD": "AddAdd", "ADD_N": "AddAddN", "ARG_MAX": "AddArgMax",
    "ARG_MIN": "AddArgMin", "ASSIGN_VARIABLE": "AddAssignVariable",
    "AVERAGE_POOL_2D": "AddAveragePool2D", "BATCH_MATMUL": "AddBatchMatMul",
    "BATCH_TO_SPACE_ND": "AddBatchToSpaceNd", "BROADCAST_ARGS": "AddBroadcastArgs",
    "BROADCAST_TO": "AddBroadcastTo", "CALL_ONCE": "AddCallOnce", "CAST": "AddCast",
    "CEIL": "AddCeil", "CONCATENATION": "AddConcatenation", "CONV_2D": "AddConv2D",
    "COS": "AddCos", "CUMSUM": "AddCumSum", "DEPTH_TO_SPACE": "AddDepthToSpace",
    "DEPTHWISE_CONV_2D": "AddDepthwiseConv2D", "DEQUANTIZE": "AddDequantize", "DIV": "AddDiv",
    "DYNAMIC_UPDATE_SLICE": "AddDynamicUpdateSlice", "EMBEDDING_LOOKUP": "AddEmbeddingLookup",
    "ELU": "AddElu", "EQUAL": "AddEqual", "EXP": "AddExp", "EXPAND_DIMS": "AddExpandDims",
    "FILL": "AddFill", "FLOOR": "AddFloor", "FLOOR_DIV": "AddFloorDiv",
    "FLOOR_MOD": "AddFloorMod", "FULLY_CONNECTED": "AddFullyConnected", "GATHER": "AddGather",
    "GATHER_ND": "AddGatherNd", "GREATER": "AddGreater", "GREATER_EQUAL": "AddGreaterEqual",
    "HARD_SWISH": "AddHardSwish", "IF": "AddIf", "L2_NORMALIZATION": "AddL2Normalization",
    "L2_POOL_2D": "AddL2Pool2D", "LEAKY_RELU": "AddLeakyRelu", "LESS": "AddLess",
    "LESS_EQUAL": "AddLessEqual", "LOG": "AddLog", "LOGICAL_AND": "AddLogicalAnd",
    "LOGICAL_NOT": "AddLogicalNot", "LOGICAL_OR": "AddLogicalOr", "LOGISTIC": "AddLogistic",
    "LOG_SOFTMAX": "AddLogSoftmax", "MAXIMUM": "AddMaximum", "MAX_POOL_2D": "AddMaxPool2D",
    "MIRROR_PAD": "AddMirrorPad", "MEAN": "AddMean", "MINIMUM": "AddMinimum", "MUL": "AddMul",
    "NEG": "AddNeg", "NOT_EQUAL": "AddNotEqual", "PACK": "AddPack", "PAD": "AddPad",
    "PADV2": "AddPadV2", "PRELU": "AddPrelu", "QUANTIZE": "AddQuantize",
    "READ_VARIABLE": "AddReadVariable", "REDUCE_ALL": "AddReduceAll",
    "REDUCE_MAX": "AddReduceMax", "REDUCE_MIN": "AddReduceMin", "RELU": "AddRelu",
    "RELU6": "AddRelu6", "RESHAPE": "AddReshape", "RESIZE_BILINEAR": "AddResizeBilinear",
    "RESIZE_NEAREST_NEIGHBOR": "AddResizeNearestNeighbor", "REVERSE_V2": "AddReverseV2",
    "ROUND": "AddRound", "RSQRT": "AddRsqrt", "SELECT_V2": "AddSelectV2", "SHAPE": "AddShape",
    "SIN": "AddSin", "SLICE": "AddSlice", "SOFTMAX": "AddSoftmax",
    "SPACE_TO_BATCH_ND": "AddSpaceToBatchNd", "SPACE_TO_DEPTH": "AddSpaceToDepth",
    "SPLIT": "AddSplit", "SPLIT_V": "AddSplitV", "SQUEEZE": "AddSqueeze", "SQRT": "AddSqrt",
    "SQUARE": "AddSquare", "SQUARED_DIFFERENCE": "AddSquaredDifference",
    "STRIDED_SLICE": "AddStridedSlice", "SUB": "AddSub", "SUM": "AddSum", "SVDF": "AddSvdf",
    "TANH": "AddTanh", "TRANSPOSE_CONV": "AddTransposeConv", "TRANSPOSE": "AddTranspose",
    "UNPACK": "AddUnpack", "UNIDIRECTIONAL_SEQUENCE_LSTM": "AddUnidirectionalSequenceLSTM",
    "VAR_HANDLE": "AddVarHandle", "WHILE": "AddWhile", "ZEROS_LIKE": "AddZerosLike",
}  # fmt: skip

# The custom ops the same header registers by name (`AddCustom("name", ...)`).
CUSTOM_RESOLVER_METHODS: dict[str, str] = {
    "TFLite_Detection_PostProcess": "AddDetectionPostprocess",
    "CIRCULAR_BUFFER": "AddCircularBuffer",
}

_FLOAT_TYPES = frozenset({"FLOAT16", "FLOAT32", "FLOAT64", "BFLOAT16"})
_ALLOCATION = re.compile(r"Arena allocation (total|head|tail) (\d+) bytes")


@dataclass(frozen=True)
class ArenaUse:
    """The tensor arena TFLM needs for a model, in bytes.

    Attributes:
      total: What a firmware's arena must hold (before `arena_with_margin`): the larger of
        `recorded` and `smallest`, rounded up to 16 bytes.
      head: The recorder's non-persistent part: activations and kernels' scratch buffers.
      tail: The recorder's persistent part: tensor and node structures, kernels' data.
      recorded: head + tail, as `RecordingMicroAllocator` reports it.
      smallest: The smallest arena in which the file loaded and ran here.
    """

    total: int
    head: int
    tail: int
    recorded: int
    smallest: int


def arena_with_margin(arena_bytes: int) -> int:
    """The measured arena plus `ARENA_MARGIN`, rounded up to a multiple of 1 KiB."""
    return _ARENA_ROUNDING * math.ceil(arena_bytes * (1 + ARENA_MARGIN) / _ARENA_ROUNDING)


def _op_key(op) -> str:
    return f"CUSTOM:{op.custom_code}" if op.name == "CUSTOM" else op.name


def resolver_methods(summary: ModelSummary) -> tuple[tuple[str, str], ...]:
    """(op, `MicroMutableOpResolver` method) for each distinct op of the file that TFLM
    registers, sorted by method name: the resolver's template argument N is their count."""
    found = {}
    for op in summary.ops:
        method = (
            CUSTOM_RESOLVER_METHODS.get(op.custom_code or "")
            if op.name == "CUSTOM"
            else RESOLVER_METHODS.get(op.name)
        )
        if method is not None:
            found[_op_key(op)] = method
    return tuple(sorted(found.items(), key=lambda item: item[1]))


def refusals(summary: ModelSummary) -> list[str]:
    """Why TFLM (as this target checks it) refuses the file, read from its ops: an op no
    `MicroMutableOpResolver` method registers, or float computation; empty when neither."""
    problems = []
    missing = sorted({
        _op_key(op) for op in summary.ops
        if (op.name == "CUSTOM" and op.custom_code not in CUSTOM_RESOLVER_METHODS)
        or (op.name != "CUSTOM" and op.name not in RESOLVER_METHODS)
    })  # fmt: skip
    if missing:
        problems.append(
            f"TFLite Micro has no kernel for {', '.join(missing)} "
            "(no MicroMutableOpResolver method registers it)"
        )
    float_ops = sorted({
        op.name for op in summary.ops
        if op.name not in ("QUANTIZE", "DEQUANTIZE")
        and any(t is not None and not t.is_constant and t.type in _FLOAT_TYPES
                for t in (*op.inputs, *op.outputs))
    })  # fmt: skip
    if float_ops:
        problems.append(
            f"the file computes in float ({', '.join(float_ops)} on float tensors): this target "
            "checks integer models, whose outputs TFLM's kernels reproduce bit for bit "
            "(convert with --int8)"
        )
    return problems


_WORKER = Path(__file__).with_name("_tflm_worker.py")


class MicroCrash(RuntimeError):
    """TFLite Micro's interpreter ended its process (a signal) instead of failing."""


class _Micro:
    """TFLM's interpreter over one file in a child process (`_tflm_worker.py`): a crash ends
    the child, not this process, and the next request starts another one."""

    def __init__(self, flatbuffer: bytes):
        self.flatbuffer = bytes(flatbuffer)
        self.process: subprocess.Popen | None = None

    def request(self, kind: str, images: np.ndarray, arena_size: int):
        """The worker's answer to one request (see `_tflm_worker.py`).

        Raises:
          MicroCrash: the interpreter crashed (the signal named), or the worker ended or
            did not start.
          RuntimeError: TFLM's first log line when it failed (cannot load, too small an arena).
        """
        try:
            if self.process is None:
                self.process = subprocess.Popen(
                    [sys.executable, str(_WORKER)], stdin=subprocess.PIPE,
                    stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                )  # fmt: skip
                pickle.dump(self.flatbuffer, self.process.stdin)
            pickle.dump((kind, images, arena_size), self.process.stdin)
            self.process.stdin.flush()
            reply = pickle.load(self.process.stdout)
        except (EOFError, OSError, pickle.UnpicklingError) as error:
            if self.process is None:  # Popen itself failed
                raise MicroCrash(f"the TFLite Micro worker did not start: {error}") from None
            raise MicroCrash(self._ended(arena_size)) from None
        if reply[0] == "error":
            raise RuntimeError(_first_problem(reply[1], reply[2]))
        return reply[1]

    def _ended(self, arena_size: int) -> str:
        """Why the worker stopped answering, once it is gone."""
        self.process.kill()  # if it still runs (a reply that could not be read)
        code = self.process.wait()
        said = self.process.stderr.read().decode(errors="replace").strip().splitlines()
        self._close_pipes()
        self.process = None
        if code < 0 and -code != signal.SIGKILL:
            try:
                name = signal.Signals(-code).name
            except ValueError:
                name = str(-code)
            return f"TFLite Micro crashed (signal {name}) with an arena of {arena_size:,} bytes"
        last = f": {said[-1]}" if said else ""
        return f"the TFLite Micro worker process ended (exit status {code}){last}"

    def _close_pipes(self) -> None:
        for pipe in (self.process.stdin, self.process.stdout, self.process.stderr):
            try:
                pipe.close()
            except OSError:
                pass

    def close(self) -> None:
        """Ends the worker: its input closed, then killed if it does not end within 10 s."""
        if self.process is None:
            return
        try:
            self.process.stdin.close()
            self.process.wait(timeout=10)
        except (OSError, subprocess.TimeoutExpired):
            self.process.kill()
            self.process.wait()
        finally:
            self._close_pipes()
            self.process = None

    def __enter__(self):
        return self

    def __exit__(self, *exc_info):
        self.close()


def _first_problem(text: str, error: str) -> str:
    """The line of TFLM's log that says what went wrong, else the exception's text."""
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    return lines[0] if lines else error


def _runs_in(micro: _Micro, image: np.ndarray, arena_size: int) -> bool:
    try:
        micro.request("run", image[None], arena_size)
    except RuntimeError:  # MicroCrash included: TFLM crashes on some arenas too small
        return False
    return True


def measure_arena(flatbuffer: bytes, image: np.ndarray) -> ArenaUse:
    """The arena TFLM needs for the file: what its `RecordingMicroAllocator` reports after
    one invoke on `image` (int8/uint8, the input's shape without the batch), and the smallest
    arena in which it loads and runs that image (bisection; an arena in which TFLM crashes
    counts as one in which it does not run).

    Raises:
      RuntimeError: TFLM's first log line when it cannot load the file in a large arena;
        `MicroCrash` when it crashes there.
    """
    with _Micro(flatbuffer) as micro:
        return _measure_arena(micro, image)


def _measure_arena(micro: _Micro, image: np.ndarray) -> ArenaUse:
    """`measure_arena` with a worker that goes on serving after it."""
    log = micro.request("allocations", image, _PROBE_ARENA)
    found = {key: int(value) for key, value in _ALLOCATION.findall(log)}
    if set(found) != {"total", "head", "tail"}:
        raise RuntimeError(f"unexpected print_allocations output: {log[:200]!r}")
    # The bisection keeps `low` failing and `high` running, and never loads an arena
    # smaller than the recorded tail (which holds the allocator itself): TFLM always
    # crashes when the allocator does not fit (seen below 512 bytes).
    low, high = max(found["tail"], _SMALLEST_PROBE) - 1, found["total"]
    while not _runs_in(micro, image, high):
        if high >= _PROBE_ARENA:
            raise RuntimeError(f"the file ran once in {_PROBE_ARENA:,} bytes, then not")
        low, high = high, min(2 * high + 1024, _PROBE_ARENA)
    while high - low > 1:
        middle = (low + high) // 2
        low, high = (low, middle) if _runs_in(micro, image, middle) else (middle, high)
    total = _ALIGNMENT * math.ceil(max(found["total"], high) / _ALIGNMENT)
    return ArenaUse(total, found["head"], found["tail"], found["total"], high)


def run_micro(flatbuffer: bytes, images: np.ndarray, arena_size: int) -> np.ndarray:
    """The raw outputs of a batch-1 model in TFLM for already quantized `images`, one invoke
    each, in an arena of `arena_size` bytes (in a child process: see `MicroCrash`).

    Raises:
      RuntimeError: TFLM's first log line when it cannot load or run the file;
        `MicroCrash` when it crashes.
    """
    with _Micro(flatbuffer) as micro:
        return micro.request("run", np.asarray(images), arena_size)[0]


class Tflm(Target):
    """TensorFlow Lite Micro as a deployment target (`sgt_tfmot.tflite.targets`).

    The report section holds: "version" (of tflite-micro, None when it is not installed),
    "reason" (why it could not be checked or loaded, else None), "refusals", "flash_bytes"
    (the file), "arena_bytes", "arena_head_bytes", "arena_tail_bytes",
    "arena_recorded_bytes", "arena_smallest_bytes" (`ArenaUse`),
    "arena_bytes_with_margin" (`arena_with_margin`), "arena_loads" (the file ran in an arena
    of exactly `arena_bytes`), "resolver_ops" ([op, method] pairs), "resolver_size" (N of
    `MicroMutableOpResolver<N>`), "images", "outputs_compared", "differing_outputs",
    "differing_images", "max_difference" (in integer steps), "reference" (what TFLM is
    compared with), "top1_agreement_default" (the share of images whose top-1 class in TFLM
    is the one in LiteRT's default runtime, which the convert checks use), "divergences"
    (per first differing op: op, name, images, explained: the reason or None),
    "unexplained_images", "int4_weight_tensors" and "seconds_per_image" (TFLM on this host).
    """

    name, title = "tflm", "TensorFlow Lite Micro"

    def check(self, context: TargetContext) -> TargetReport:
        """Runs the file in TFLM on the context's test images and compares it with LiteRT's
        reference kernels.

        Args:
          context: The file and its test images (`test_images` when given, else `images`;
            float, in the model's input range).

        Returns:
          The verdict: True (loaded, ran in its measured arena, every output equal to LiteRT's
          reference kernels' or differing only by the FULLY_CONNECTED rounding), False (with
          a one-line `failure`), or None when tflite-micro is not installed.
        """
        summary = read_model(context.flatbuffer)
        problems = refusals(summary)
        pairs = resolver_methods(summary)
        section = {
            "version": None, "reason": None, "refusals": problems, "divergences": [],
            "unexplained_images": None,
            "flash_bytes": len(context.flatbuffer), "arena_bytes": None,
            "arena_head_bytes": None, "arena_tail_bytes": None, "arena_recorded_bytes": None,
            "arena_smallest_bytes": None,
            "arena_bytes_with_margin": None, "arena_loads": None,
            "resolver_ops": [list(pair) for pair in pairs], "resolver_size": len(pairs),
            "images": 0, "outputs_compared": 0, "differing_outputs": None,
            "differing_images": None, "max_difference": None, "top1_agreement_default": None,
            "reference": "LiteRT reference kernels (OpResolverType.BUILTIN_REF), same int8 inputs",
            "int4_weight_tensors": sum(
                1 for op in summary.ops for t in op.inputs if t is not None and t.type == "INT4"
            ),
            "seconds_per_image": None,
        }  # fmt: skip
        try:
            import tflite_micro
        except ImportError as error:
            section["reason"] = f"import tflite_micro failed: {error}"
            verdict = False if problems else None
            failure = "; ".join(problems) if problems else None
            head = f"TFLite Micro: NOT compatible: {failure}" if problems else (
                "TFLite Micro: not checked.")  # fmt: skip
            lines = (head, f"  tflite-micro is not installed; to check: {INSTALL_COMMAND}",
                     *_resolver_lines(section))  # fmt: skip
            return TargetReport(self.name, self.title, verdict, failure, lines, section)
        section["version"] = getattr(tflite_micro, "__version__", "unknown")
        if problems:
            failure = "; ".join(problems)
            lines = (f"TFLite Micro: NOT compatible: {failure}", *_resolver_lines(section))
            return TargetReport(self.name, self.title, False, failure, lines, section)
        failure = _run(context, section)
        verdict = failure is None
        head = (
            "TFLite Micro: compatible." if verdict else f"TFLite Micro: NOT compatible: {failure}"
        )
        lines = (head, *_measure_lines(section), *_resolver_lines(section))
        return TargetReport(self.name, self.title, verdict, failure, lines, section)


def _run(context: TargetContext, section: dict) -> str | None:
    """Measures the arena, runs the images in TFLM and in LiteRT's reference kernels; fills
    `section`; returns the failure line, or None."""
    images = context.test_images if context.test_images is not None else context.images
    litert = TFLiteModel(context.flatbuffer)
    raw = litert.quantize(np.asarray(images, np.float32))
    probe = raw[0] if len(raw) else np.zeros(litert.input_shape, litert.input["dtype"])
    with _Micro(context.flatbuffer) as worker:  # one worker: the arena, then the images
        try:
            arena = _measure_arena(worker, probe)
        except RuntimeError as error:
            section["reason"] = str(error)
            return f"TFLite Micro did not load the file: {error}"
        section.update(arena_bytes=arena.total, arena_head_bytes=arena.head,
                       arena_tail_bytes=arena.tail, arena_recorded_bytes=arena.recorded,
                       arena_smallest_bytes=arena.smallest,
                       arena_bytes_with_margin=arena_with_margin(arena.total))  # fmt: skip
        try:
            shown = raw if len(raw) else probe[None]
            micro, seconds = worker.request("run", shown, arena.total)
        except RuntimeError as error:
            section["arena_loads"] = False
            section["reason"] = str(error)
            return f"TFLite Micro did not run the file in its measured arena: {error}"
    section["arena_loads"] = True
    if not len(raw):
        section["reason"] = "no test images to compare"
        return None
    section["seconds_per_image"] = seconds / len(raw)
    default = integer_outputs(context.flatbuffer, raw, "xnnpack")
    section["top1_agreement_default"] = float(
        np.mean(_top1(micro, len(raw)) == _top1(default, len(raw)))
    )
    reference = integer_outputs(context.flatbuffer, raw, "reference")
    difference = np.abs(micro.astype(np.int64) - reference.astype(np.int64))
    differing = np.flatnonzero(difference.reshape(len(raw), -1).any(axis=1))
    section.update(
        images=len(raw), outputs_compared=int(difference.size),
        differing_outputs=int(np.count_nonzero(difference)), differing_images=len(differing),
        max_difference=int(difference.max()),
    )  # fmt: skip
    divergences = first_divergences(context.flatbuffer, raw[differing]) if len(differing) else []
    groups: dict[tuple, int] = {}
    for found in divergences:
        key = (found.op, found.name, found.explained)
        groups[key] = groups.get(key, 0) + 1
    section["divergences"] = [
        {"op": op, "name": name, "images": count, "explained": FC_ROUNDING if explained else None}
        for (op, name, explained), count in sorted(groups.items(), key=str)
    ]
    section["unexplained_images"] = sum(1 for found in divergences if not found.explained)
    if section["unexplained_images"]:
        where = ", ".join(f"{d['name']} #{d['op']} ({d['images']})" for d in
                          section["divergences"] if d["explained"] is None)  # fmt: skip
        return (
            f"{section['differing_outputs']:,} of {section['outputs_compared']:,} outputs differ "
            f"from LiteRT's reference kernels ({section['differing_images']:,} of "
            f"{len(raw):,} images, by up to {section['max_difference']} steps; first differing "
            f"op: {where})"
        )
    return None


def _top1(outputs: np.ndarray, count: int) -> np.ndarray:
    return np.argmax(outputs.reshape(count, -1), axis=1)


def _measure_lines(section: dict) -> list[str]:
    lines = []
    if section["images"]:
        exact = " (bit-exact)" if not section["differing_outputs"] else ""
        lines.append(
            f"  tflite-micro {section['version']}: {section['differing_outputs']:,} of "
            f"{section['outputs_compared']:,} outputs differ from LiteRT's reference kernels on "
            f"{section['images']:,} test images{exact}; "
            f"{1000 * section['seconds_per_image']:.1f} ms per image on this host"
        )
        for found in section.get("divergences", []):
            if found["explained"]:
                lines.append(
                    f"    {found['images']} image(s) first differ at {found['name']} "
                    f"#{found['op']}: {found['explained']}; every op before it is bit-exact"
                )
        lines.append(
            f"  top-1: TFLM's class is that of LiteRT's default runtime (the accuracy checks') "
            f"on {100 * section['top1_agreement_default']:.2f} % of them (TFLM requantizes in "
            "fixed point, as LiteRT's reference kernels do)"
        )
    if section["arena_bytes"] is not None:
        lines.append(
            f"  RAM: tensor arena {section['arena_bytes']:,} bytes (TFLM's "
            f"RecordingMicroAllocator: {section['arena_recorded_bytes']:,} = head "
            f"{section['arena_head_bytes']:,} + tail {section['arena_tail_bytes']:,}; smallest "
            f"arena that loads and runs: {section['arena_smallest_bytes']:,}); reserve "
            f"{section['arena_bytes_with_margin']:,} (+{100 * ARENA_MARGIN:.0f} % for optimized "
            "kernels' scratch buffers)"
        )
    lines.append(f"  flash: {section['flash_bytes']:,} bytes (the model)")
    if section["int4_weight_tensors"]:
        lines.append(
            f"  {section['int4_weight_tensors']} weight tensors packed as INT4 (two per byte)"
        )
    return lines


def _resolver_lines(section: dict) -> list[str]:
    if not section["resolver_ops"]:
        return []
    methods = ", ".join(f"{method}()" for _, method in section["resolver_ops"])
    return [
        f"  resolver: tflite::MicroMutableOpResolver<{section['resolver_size']}> with {methods}"
    ]
