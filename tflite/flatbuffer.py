"""Read a .tflite flatbuffer into plain dataclasses: ops in execution order, tensors, types.

The reader only parses; it runs nothing and imports no TensorFlow. It uses the schema
bindings that LiteRT ships (`ai_edge_litert.schema_py_generated`), so names and enum values
follow the schema of the installed LiteRT.

Two details of the schema matter for every reader:

* An operator code carries its builtin operator twice: the 8-bit `deprecated_builtin_code`
  (schema < 3a, capped at 127 = `PLACEHOLDER_FOR_GREATER_OP_CODES`) and the 32-bit
  `builtin_code`. Old writers fill only the first, new writers fill both or put the
  placeholder into the first, so the real code is `max(deprecated_builtin_code, builtin_code)`.
* `shape` holds the sizes the converter used (a dynamic dimension shows up as 1), while
  `shape_signature` keeps -1 for a dynamic dimension and is omitted when the shape is static.

Example:

    summary = read_model("model.tflite")
    for op in summary.ops:
        print(op.index, op.name, op.version, [t.type for t in op.inputs if t is not None])
"""

from __future__ import annotations

import os
import struct
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
from ai_edge_litert import schema_py_generated as schema

TFLITE_FILE_IDENTIFIER = b"TFL3"
"""The flatbuffer file identifier of a TFLite model, found at bytes 4..8."""

MAX_LISTED_VALUES = 16
"""INT32/INT64 constants up to this many elements (axes, paddings, shapes, small biases) are
read into `TensorInfo.values`; larger ones are not."""


def _enum_names(enum_class: type) -> dict[int, str]:
    return {
        value: name
        for name, value in vars(enum_class).items()
        if not name.startswith("_") and isinstance(value, int)
    }


_OP_NAMES = _enum_names(schema.BuiltinOperator)
_TYPE_NAMES = _enum_names(schema.TensorType)
_ACTIVATION_NAMES = _enum_names(schema.ActivationFunctionType)
_PARAMETER_DTYPES = {"INT32": np.int32, "INT64": np.int64}


@dataclass(frozen=True)
class QuantizationInfo:
    """Affine quantization of a tensor: `real = scale * (q - zero_point)`.

    Attributes:
        scale: One scale per tensor, or one per channel along `quantized_dimension`.
        zero_point: Zero points, as many as scales.
        quantized_dimension: The channel axis of per-channel quantization (0 otherwise).
    """

    scale: tuple[float, ...]
    zero_point: tuple[int, ...]
    quantized_dimension: int


@dataclass(frozen=True)
class TensorInfo:
    """One tensor of the subgraph.

    Attributes:
        index: Position in the subgraph's tensor list.
        name: Tensor name written by the converter.
        type: Schema type name, e.g. "INT8", "UINT8", "INT32", "FLOAT32".
        shape: Static sizes; a dynamic dimension is stored as 1 here.
        shape_signature: Sizes with -1 for each dynamic dimension (equal to `shape` when the
            file stores no signature, which is what the converter does for static shapes).
        quantization: Scale and zero point, or None for a tensor without them.
        is_constant: True if the tensor's data is stored in the file (weights, bias, axes).
        values: The values of a small INT32/INT64 constant (at most `MAX_LISTED_VALUES`
            elements, e.g. reduction axes or paddings), flattened; None otherwise.
    """

    index: int
    name: str
    type: str
    shape: tuple[int, ...]
    shape_signature: tuple[int, ...]
    quantization: QuantizationInfo | None
    is_constant: bool
    values: tuple[int, ...] | None = None

    @property
    def is_dynamic(self) -> bool:
        """True if any dimension of `shape_signature` is -1."""
        return any(size < 0 for size in self.shape_signature)


@dataclass(frozen=True)
class OpInfo:
    """One operator, in the order the interpreter runs it.

    Attributes:
        index: Position in the subgraph's operator list (= execution order).
        name: Builtin operator name, e.g. "CONV_2D"; "CUSTOM" for custom ops.
        builtin_code: The resolved builtin code, `max(deprecated_builtin_code, builtin_code)`.
        version: Operator version, as the converter wrote it.
        custom_code: The custom op's name (e.g. "edgetpu-custom-op", "FlexSin"), else None.
        inputs: Input tensors in operand order; None where an optional input is omitted
            (index -1, e.g. a FULLY_CONNECTED without bias).
        outputs: Output tensors in operand order.
        fused_activation: Name of the fused activation ("NONE", "RELU", "RELU6", ...) for
            ops whose options have one, else None.
        options: The scalar fields of the op's builtin options (stride_w, padding, axis...).
    """

    index: int
    name: str
    builtin_code: int
    version: int
    custom_code: str | None
    inputs: tuple[TensorInfo | None, ...]
    outputs: tuple[TensorInfo, ...]
    fused_activation: str | None = None
    options: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class ModelSummary:
    """What `read_model` found in a .tflite file (the first subgraph).

    Attributes:
        schema_version: The model's schema version (3 for all current files).
        description: The converter's description string.
        num_subgraphs: Number of subgraphs; control flow (WHILE, IF) adds subgraphs.
        ops: Operators of subgraph 0 in execution order.
        inputs: The model's input tensors.
        outputs: The model's output tensors.
    """

    schema_version: int
    description: str
    num_subgraphs: int
    ops: tuple[OpInfo, ...]
    inputs: tuple[TensorInfo, ...]
    outputs: tuple[TensorInfo, ...]

    @property
    def op_names(self) -> list[str]:
        """The builtin names of `ops`, in execution order."""
        return [op.name for op in self.ops]

    def to_dict(self) -> dict[str, Any]:
        """Returns the summary as nested dicts (sequences as tuples), ready for `json.dumps`."""
        return asdict(self)


def read_model(source: bytes | bytearray | memoryview | str | os.PathLike) -> ModelSummary:
    """Reads a TFLite flatbuffer without running it.

    Args:
        source: The model's bytes, or the path of a .tflite file.

    Returns:
        A `ModelSummary` of the first subgraph (the one the interpreter runs).

    Raises:
        ValueError: If the path does not exist, or the bytes are not a TFLite flatbuffer
            (no "TFL3" file identifier) or are truncated.
        TypeError: If `source` is neither bytes nor a path.
    """
    data = _load_bytes(source)
    try:
        return _read(data)
    except (IndexError, ValueError, TypeError, UnicodeDecodeError, struct.error) as error:
        raise ValueError(
            f"The TFLite flatbuffer is corrupt or truncated ({len(data)} bytes): {error}"
        ) from error


def _load_bytes(source: bytes | bytearray | memoryview | str | os.PathLike) -> bytes:
    if isinstance(source, bytes | bytearray | memoryview):
        data = bytes(source)
        origin = "the given bytes"
    elif isinstance(source, str | os.PathLike):
        path = os.fspath(source)
        if not os.path.isfile(path):
            raise ValueError(f"No TFLite file at the given path. Received: {path!r}")
        with open(path, "rb") as handle:
            data = handle.read()
        origin = f"file {path!r}"
    else:
        raise TypeError(
            "`source` must be the model's bytes or the path of a .tflite file. "
            f"Received: {type(source).__name__}"
        )
    identifier = data[4:8]
    if len(data) < 8 or identifier != TFLITE_FILE_IDENTIFIER:
        raise ValueError(
            f"Not a TFLite flatbuffer ({origin}): expected the file identifier "
            f"{TFLITE_FILE_IDENTIFIER!r} at bytes 4..8, received {identifier!r} "
            f"({len(data)} bytes in all)."
        )
    return data


def _read(data: bytes) -> ModelSummary:
    model = schema.Model.GetRootAs(data, 0)
    if model.SubgraphsLength() == 0:
        raise ValueError("the model has no subgraph")
    subgraph = model.Subgraphs(0)
    tensors = [_tensor_info(data, model, subgraph, i) for i in range(subgraph.TensorsLength())]
    ops = tuple(
        _op_info(model, subgraph.Operators(i), i, tensors)
        for i in range(subgraph.OperatorsLength())
    )
    description = model.Description()
    return ModelSummary(
        schema_version=model.Version(),
        description=description.decode("utf-8", "replace") if description else "",
        num_subgraphs=model.SubgraphsLength(),
        ops=ops,
        inputs=tuple(
            _tensor_at(tensors, subgraph.Inputs(i)) for i in range(subgraph.InputsLength())
        ),
        outputs=tuple(
            _tensor_at(tensors, subgraph.Outputs(i)) for i in range(subgraph.OutputsLength())
        ),
    )


def _tensor_info(data: bytes, model: Any, subgraph: Any, index: int) -> TensorInfo:
    tensor = subgraph.Tensors(index)
    type_name = _TYPE_NAMES.get(tensor.Type(), f"TYPE_{tensor.Type()}")
    shape = tuple(int(size) for size in tensor.ShapeAsNumpy()) if tensor.ShapeLength() else ()
    if tensor.ShapeSignatureLength():
        signature = tuple(int(size) for size in tensor.ShapeSignatureAsNumpy())
    else:
        signature = shape
    raw = None if tensor.IsVariable() else _constant_bytes(data, model, tensor)
    values = None
    if raw is not None and type_name in _PARAMETER_DTYPES:
        array = np.frombuffer(raw, dtype=_PARAMETER_DTYPES[type_name])
        if array.size <= MAX_LISTED_VALUES:
            values = tuple(int(v) for v in array)
    name = tensor.Name()
    return TensorInfo(
        index=index,
        name=name.decode("utf-8", "replace") if name else "",
        type=type_name,
        shape=shape,
        shape_signature=signature,
        quantization=_quantization(tensor.Quantization()),
        is_constant=raw is not None or tensor.ExternalBuffer() > 0,
        values=values,
    )


def _tensor_at(tensors: list[TensorInfo], index: int) -> TensorInfo:
    if not 0 <= index < len(tensors):
        raise IndexError(f"tensor index {index} outside [0, {len(tensors)})")
    return tensors[index]


def _constant_bytes(data: bytes, model: Any, tensor: Any) -> bytes | None:
    """The tensor's stored data, or None if it has none (activations, graph inputs)."""
    buffer_index = tensor.Buffer()
    if buffer_index <= 0 or buffer_index >= model.BuffersLength():
        return None  # buffer 0 is the schema's empty sentinel
    buffer = model.Buffers(buffer_index)
    if buffer.DataLength() > 0:
        return buffer.DataAsNumpy().tobytes()
    # Files over 2 GB keep buffers after the flatbuffer: offset/size from the file start;
    # offset 1 is the schema's "not set" marker.
    if buffer.Offset() > 1 and buffer.Size() > 0:
        return data[buffer.Offset() : buffer.Offset() + buffer.Size()]
    return None


def _quantization(params: Any) -> QuantizationInfo | None:
    if params is None or params.ScaleLength() == 0:
        return None
    zero_points = params.ZeroPointAsNumpy() if params.ZeroPointLength() else ()
    return QuantizationInfo(
        scale=tuple(float(s) for s in params.ScaleAsNumpy()),
        zero_point=tuple(int(z) for z in zero_points),
        quantized_dimension=int(params.QuantizedDimension()),
    )


def _op_info(model: Any, op: Any, index: int, tensors: list[TensorInfo]) -> OpInfo:
    code = model.OperatorCodes(op.OpcodeIndex())
    builtin = max(code.BuiltinCode(), code.DeprecatedBuiltinCode())
    custom = code.CustomCode()
    options = _options(op)
    activation = options.get("fusedActivationFunction")
    return OpInfo(
        index=index,
        name=_OP_NAMES.get(builtin, f"BUILTIN_{builtin}"),
        builtin_code=builtin,
        version=code.Version(),
        custom_code=custom.decode("utf-8", "replace") if custom is not None else None,
        inputs=tuple(
            None if op.Inputs(j) == -1 else _tensor_at(tensors, op.Inputs(j))
            for j in range(op.InputsLength())
        ),
        outputs=tuple(_tensor_at(tensors, op.Outputs(j)) for j in range(op.OutputsLength())),
        fused_activation=(
            _ACTIVATION_NAMES.get(activation, str(activation)) if activation is not None else None
        ),
        options=options,
    )


def _options(op: Any) -> dict[str, Any]:
    """The scalar fields of the op's builtin options, by their schema (camelCase) names."""
    unpacked = schema.BuiltinOptionsCreator(op.BuiltinOptionsType(), op.BuiltinOptions())
    if unpacked is None:
        return {}
    scalars = {}
    for key, value in vars(unpacked).items():
        if isinstance(value, bool | int | float | str | np.generic):
            scalars[key] = value.item() if isinstance(value, np.generic) else value
    return scalars
