"""Per-op latency of a .tflite model in LiteRT, from timed prefix models.

LiteRT's Python `Interpreter` (ai_edge_litert 2.3) has no profiler API, and its XNNPACK
delegate runs whole partitions of the graph as one node. The time of op i is therefore
measured from the outside, on the runtime as deployed (default delegates, batch 1):

    prefix_i  = ops 0..i of subgraph 0, with op i's outputs (and any other output of ops
                0..i that no op in 0..i consumes) as the subgraph's outputs
    t(op i)   = max(0, t(prefix_i) − t(prefix_{i−1})),   t(prefix_{−1}) = t(empty model)

where the empty model has no op (its output is its input), so that the cost of a Python
`invoke()` call is not charged to op 0. The differences telescope: the per-op times add up
to about t(full model) − t(empty model) (more when noise clamps a negative difference to 0).
An op that XNNPACK fuses into its producer in the full model costs ~0 here too (prefix_{i−1}
cannot fuse it, prefix_i can); an op the delegate does not take splits the graph into
several delegate partitions, and the copy and dispatch around it is charged to it.

All models (the empty one, every prefix, the full model) are timed interleaved in one
process: each round runs `invokes` timed invokes of every model, in a new random order.
On a shared machine the minimum over all samples is the steadiest estimate ("min"); the
median is kept as well.

Example:

    result = profile(flatbuffer, rounds=20, invokes=15)
    print(format_table(result))
    for index, name, shape, microseconds in result.ops: ...
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import NamedTuple

import numpy as np
from ai_edge_litert import schema_py_generated as schema
from ai_edge_litert.interpreter import Interpreter

from sgt_tfmot.tflite.flatbuffer import read_model
from sgt_tfmot.tflite.rewrite import pack_model, unpack_model

__all__ = [
    "OpTime",
    "Profile",
    "TypeShare",
    "compare_latency",
    "delegate_partitions",
    "empty_model",
    "format_table",
    "prefix_model",
    "profile",
    "profile_ops",
    "time_models",
]

STATISTICS = ("min", "median")


class OpTime(NamedTuple):
    """The time attributed to one op: (index, op name, output shape, microseconds)."""

    index: int
    name: str
    output_shape: tuple[int, ...]
    microseconds: float


class TypeShare(NamedTuple):
    """The ops of one type: how many, their summed time and its share of all ops."""

    name: str
    count: int
    microseconds: float
    share: float


@dataclass(frozen=True)
class Profile:
    """What `profile` measured.

    Attributes:
      ops: Per-op times in execution order (by `statistic`).
      full_us: The full model's time per invoke (by `statistic`).
      full_median_us: Its median, whatever `statistic` is.
      overhead_us: The empty model's time per invoke (the cost of `invoke()` itself).
      statistic: "min" or "median" of each model's samples.
      partitions: XNNPACK delegate partitions of the full model (1 when it takes every op).
      rounds, invokes, num_threads: How it was measured.
    """

    ops: tuple[OpTime, ...]
    full_us: float
    full_median_us: float
    overhead_us: float
    statistic: str
    partitions: int
    rounds: int
    invokes: int
    num_threads: int

    @property
    def ops_us(self) -> float:
        """The per-op times added up (≈ `full_us` − `overhead_us`)."""
        return float(sum(op.microseconds for op in self.ops))

    def by_type(self) -> list[TypeShare]:
        """Time per op type, largest first; shares of `ops_us` (summing to 1)."""
        totals: dict[str, list[float]] = {}
        for op in self.ops:
            totals.setdefault(op.name, []).append(op.microseconds)
        total = self.ops_us or 1.0
        shares = [TypeShare(n, len(v), float(sum(v)), sum(v) / total) for n, v in totals.items()]
        return sorted(shares, key=lambda s: (-s.microseconds, s.name))

    def to_dict(self) -> dict:
        """The profile as JSON-ready dicts: ops as {index, name, output_shape, microseconds}."""
        result = asdict(self)
        result["ops"] = [op._asdict() for op in self.ops]
        result["by_type"] = [share._asdict() for share in self.by_type()]
        return result


def _prefix(model: schema.ModelT, last: int) -> bytes:
    """`model` cut after operator `last` (−1: no operator, the output is the first input)."""
    subgraph = model.subgraphs[0]
    operators, outputs, signatures = subgraph.operators, subgraph.outputs, model.signatureDefs
    try:
        kept = list(operators[: last + 1])
        if kept:
            consumed = {int(i) for op in kept for i in op.inputs}
            new_outputs = [int(i) for i in kept[-1].outputs]
            for op in kept[:-1]:  # dangling results would be dead code the delegate may drop
                new_outputs += [int(i) for i in op.outputs if int(i) not in consumed]
        else:
            new_outputs = [int(subgraph.inputs[0])]
        subgraph.operators = kept
        subgraph.outputs = list(dict.fromkeys(new_outputs))
        model.signatureDefs = None  # they name the original outputs
        return pack_model(model)
    finally:
        subgraph.operators, subgraph.outputs, model.signatureDefs = operators, outputs, signatures


def prefix_model(flatbuffer: bytes, last: int) -> bytes:
    """The model made of ops 0..`last` of subgraph 0, ending in op `last`'s outputs.

    Raises:
      ValueError: When `last` is not an op index of the model.
    """
    model = unpack_model(flatbuffer)
    count = len(model.subgraphs[0].operators or [])
    if isinstance(last, bool) or not isinstance(last, int) or not 0 <= last < count:
        raise ValueError(f"`last` must be an op index in [0, {count}). Received: {last!r}")
    return _prefix(model, last)


def empty_model(flatbuffer: bytes) -> bytes:
    """The model with no op at all, its output its input: the cost of `invoke()` alone."""
    return _prefix(unpack_model(flatbuffer), -1)


def _interpreter(flatbuffer: bytes, num_threads: int, seed: int) -> Interpreter:
    interpreter = Interpreter(model_content=flatbuffer, num_threads=num_threads)
    interpreter.allocate_tensors()
    rng = np.random.default_rng(seed)
    for detail in interpreter.get_input_details():
        dtype = np.dtype(detail["dtype"])
        if np.issubdtype(dtype, np.integer):
            info = np.iinfo(dtype)
            value = rng.integers(info.min, int(info.max) + 1, detail["shape"])
        else:
            value = rng.uniform(0.0, 255.0, detail["shape"])
        interpreter.set_tensor(detail["index"], value.astype(dtype))
    return interpreter


def delegate_partitions(flatbuffer: bytes, num_threads: int = 1) -> int:
    """How many delegate nodes (XNNPACK partitions) LiteRT runs `flatbuffer` as."""
    interpreter = Interpreter(model_content=bytes(flatbuffer), num_threads=num_threads)
    interpreter.allocate_tensors()
    return sum(op["op_name"] == "DELEGATE" for op in interpreter._get_ops_details())


def time_models(
    models: Sequence[bytes],
    rounds: int = 20,
    invokes: int = 15,
    num_threads: int = 1,
    warmup: int = 3,
    seed: int = 0,
) -> list[list[float]]:
    """Seconds per invoke of each model, interleaved: `rounds` rounds, each running
    `invokes` timed invokes of every model in a new random order (after `warmup` untimed
    invokes of each). All models get the same seeded input values."""
    for name, value, low in (("rounds", rounds, 1), ("invokes", invokes, 1),
                             ("num_threads", num_threads, 1), ("warmup", warmup, 0)):  # fmt: skip
        if isinstance(value, bool) or not isinstance(value, int) or value < low:
            raise ValueError(f"`{name}` must be an int >= {low}. Received: {value!r}")
    interpreters = [_interpreter(bytes(m), num_threads, seed) for m in models]
    for interpreter in interpreters:
        for _ in range(warmup):
            interpreter.invoke()
    samples: list[list[float]] = [[] for _ in interpreters]
    rng = np.random.default_rng(seed)
    clock = time.perf_counter
    for _ in range(rounds):
        for index in rng.permutation(len(interpreters)):
            invoke, times = interpreters[index].invoke, samples[index]
            for _ in range(invokes):
                start = clock()
                invoke()
                times.append(clock() - start)
    return samples


def compare_latency(
    flatbuffers: Mapping[str, bytes],
    rounds: int = 20,
    invokes: int = 15,
    num_threads: int = 1,
    seed: int = 0,
) -> dict[str, dict[str, float]]:
    """Batch-1 latency of several models timed interleaved (`time_models`), against the first.

    Returns:
      {name: {"bytes", "min_ms", "median_ms", "min_ratio", "median_ratio"}}: each model's
      min and median time per invoke, and their ratios to the first model's.
    """
    if not flatbuffers:
        raise ValueError("`flatbuffers` must name at least one model. Received: {}")
    samples = time_models(list(flatbuffers.values()), rounds, invokes, num_threads, seed=seed)
    first = samples[0]
    return {
        name: {
            "bytes": len(flatbuffers[name]),
            "min_ms": 1e3 * min(times),
            "median_ms": 1e3 * statistics.median(times),
            "min_ratio": min(times) / min(first),
            "median_ratio": statistics.median(times) / statistics.median(first),
        }
        for name, times in zip(flatbuffers, samples, strict=True)
    }


def profile(
    flatbuffer: bytes,
    rounds: int = 20,
    invokes: int = 15,
    num_threads: int = 1,
    statistic: str = "min",
    seed: int = 0,
) -> Profile:
    """Times every prefix of `flatbuffer` and attributes the differences to the ops.

    Args:
      flatbuffer: A .tflite model (one subgraph is profiled: subgraph 0).
      rounds: Interleaved rounds (see `time_models`).
      invokes: Timed invokes of each model per round.
      num_threads: LiteRT threads (1 for the project's latency figures).
      statistic: "min" or "median" of each model's samples, used for the attribution.
      seed: Seed of the input values and of the order of the models in each round.

    Returns:
      A `Profile`; `profile(...).ops` is the list `profile_ops` returns.

    Raises:
      ValueError: On an unknown `statistic`, bad counts, or a model without ops.
    """
    if statistic not in STATISTICS:
        raise ValueError(f"`statistic` must be one of {STATISTICS}. Received: {statistic!r}")
    summary = read_model(flatbuffer)
    if not summary.ops:
        raise ValueError("The model has no op to profile.")
    model = unpack_model(flatbuffer)
    last = len(summary.ops) - 1
    prefixes = [_prefix(model, i) for i in range(-1, last)] + [bytes(flatbuffer)]
    samples = time_models(prefixes, rounds, invokes, num_threads, seed=seed)
    pick = min if statistic == "min" else statistics.median
    times = [1e6 * pick(s) for s in samples]  # times[0]: empty model, times[-1]: full model
    ops = tuple(
        OpTime(
            op.index,
            op.name,
            tuple(op.outputs[0].shape) if op.outputs else (),
            max(0.0, times[op.index + 1] - times[op.index]),
        )  # fmt: skip
        for op in summary.ops
    )
    return Profile(
        ops=ops,
        full_us=times[-1],
        full_median_us=1e6 * statistics.median(samples[-1]),
        overhead_us=times[0],
        statistic=statistic,
        partitions=delegate_partitions(flatbuffer, num_threads),
        rounds=rounds,
        invokes=invokes,
        num_threads=num_threads,
    )


def profile_ops(flatbuffer: bytes, rounds: int = 20, invokes: int = 15, **kwargs) -> list[OpTime]:
    """[(index, op name, output shape, microseconds), ...] of every op (see `profile`)."""
    return list(profile(flatbuffer, rounds=rounds, invokes=invokes, **kwargs).ops)


def format_table(result: Profile, top: int = 10) -> str:
    """A text table: time and share per op type, then the `top` slowest ops."""
    lines = [
        f"full model {result.full_us:.1f} us ({result.statistic}; median "
        f"{result.full_median_us:.1f}), invoke overhead {result.overhead_us:.1f} us, ops "
        f"{result.ops_us:.1f} us, {result.partitions} delegate partition(s), "
        f"{result.num_threads} thread(s), {result.rounds}x{result.invokes} invokes",
        f"{'op type':<20}{'count':>6}{'us':>10}{'share':>8}",
    ]
    for share in result.by_type():
        lines.append(
            f"{share.name:<20}{share.count:>6}{share.microseconds:>10.1f}{share.share:>8.1%}"
        )
    if top:
        lines.append(f"{'slowest ops':<20}{'index':>6}{'us':>10}  output shape")
        slowest = sorted(result.ops, key=lambda op: -op.microseconds)[:top]
        for op in slowest:
            shape = "x".join(str(d) for d in op.output_shape)
            lines.append(f"{op.name:<20}{op.index:>6}{op.microseconds:>10.1f}  {shape}")
    return "\n".join(lines)
