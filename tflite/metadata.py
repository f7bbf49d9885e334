"""TFLite metadata for an image classifier, as MediaPipe Tasks' `ImageClassifier` reads it.

`add_image_classifier_metadata` writes what the official image-classifier metadata writers
(MediaPipe's and tflite-support's `image_classifier.MetadataWriter`) write, in pure Python:

* a `ModelMetadata` flatbuffer (file identifier "M001", minimum parser version "1.0.0") with
  the model's name and description and one subgraph whose input tensor carries
  `ImageProperties` (color space RGB) and `NormalizationOptions` (mean, std), and whose
  output tensor carries `FeatureProperties` and the associated file "labels.txt" of type
  `TENSOR_AXIS_LABELS` (one class name per line, line k names output k);
* that flatbuffer as a new model buffer, named by a model `metadata` entry
  "TFLITE_METADATA";
* "labels.txt" in a zip archive appended to the .tflite file (stored, not compressed).

Apps then get class names with their scores instead of indices. LiteRT ignores metadata and
trailing bytes: the file runs exactly as before (the tests compare the outputs).

The tables are written with the `flatbuffers` builder, slot by slot, following
`metadata_schema.fbs` of MediaPipe (`mediapipe/tasks/metadata/`): the generated Python
bindings of that schema ship only inside mediapipe and tflite-support, which this project
does not depend on, and the few tables needed here are short.

Which input the model takes. This package's models take raw pixels 0..255 and normalise
them in their first layer, so the file to deploy has uint8 input (`--uint8`,
`to_integer_tflite(..., io_dtype="uint8")`) whose quantization is the identity
(scale 1, zero point 0): an app feeds the camera's uint8 RGB pixels unchanged. For a uint8
input MediaPipe ignores `NormalizationOptions` (it applies them to float32 inputs only), so
the defaults mean (0,) and std (1,) are written: they state that nothing is done outside the
model.

An int8 file (int8 input and output, the converter's default) gets the same metadata, but
MediaPipe refuses to run it ("Type mismatch for input tensor ... Requested one of these
types: uint8/float32, got INT8"); other readers of the metadata (e.g. TFLite Support's task
library) may use it, feeding `pixel - 128` for an input quantized with zero point -128.
A float-input model is refused: this package exports integer models only.

Example:

    flatbuffer = to_integer_tflite(model, images, io_dtype="uint8")
    flatbuffer = add_image_classifier_metadata(
        flatbuffer, ("cat", "dog"), name="pets", description="Cats and dogs, 32x32 RGB."
    )
    assert read_image_classifier_metadata(flatbuffer)["labels"] == ["cat", "dog"]
"""

from __future__ import annotations

import io
import zipfile
from collections.abc import Sequence
from typing import Any

import flatbuffers
import numpy as np
from ai_edge_litert import schema_py_generated as schema
from flatbuffers import number_types
from flatbuffers.table import Table

from sgt_tfmot._checks import InputError, check_number
from sgt_tfmot.tflite.flatbuffer import read_model
from sgt_tfmot.tflite.rewrite import pack_model, unpack_model

__all__ = [
    "LABELS_FILE",
    "METADATA_NAME",
    "add_image_classifier_metadata",
    "read_image_classifier_metadata",
]

METADATA_NAME = "TFLITE_METADATA"
"""The model `metadata` entry whose buffer holds the `ModelMetadata` flatbuffer."""

METADATA_IDENTIFIER = b"M001"
"""The file identifier of a `ModelMetadata` flatbuffer (`metadata_schema.fbs`)."""

MIN_PARSER_VERSION = "1.0.0"
"""The oldest metadata parser that reads every field written here."""

LABELS_FILE = "labels.txt"
"""The associated file with one class name per line, in the zip appendix."""

_INTEGER_INPUTS = ("UINT8", "INT8")

# Enum and union values of metadata_schema.fbs.
_RGB = 1  # ColorSpaceType.RGB
_COLOR_SPACES = {0: "UNKNOWN", 1: "RGB", 2: "GRAYSCALE"}
_FEATURE_PROPERTIES, _IMAGE_PROPERTIES = 1, 2  # ContentProperties union
_NORMALIZATION_OPTIONS = 1  # ProcessUnitOptions union
_TENSOR_AXIS_LABELS = 2  # AssociatedFileType.TENSOR_AXIS_LABELS

# Field slots (declaration order; a union field takes two: its type, then its value).
_MODEL_NAME, _MODEL_DESCRIPTION, _MODEL_SUBGRAPHS, _MODEL_MIN_PARSER = 0, 1, 3, 7
_SUBGRAPH_INPUTS, _SUBGRAPH_OUTPUTS = 2, 3
_TENSOR_NAME, _TENSOR_DESCRIPTION, _TENSOR_CONTENT, _TENSOR_UNITS, _TENSOR_FILES = 0, 1, 3, 4, 6
_CONTENT_TYPE, _CONTENT_VALUE = 0, 1
_UNIT_TYPE, _UNIT_VALUE = 0, 1
_IMAGE_COLOR_SPACE = 0
_NORMALIZATION_MEAN, _NORMALIZATION_STD = 0, 1
_FILE_NAME, _FILE_DESCRIPTION, _FILE_TYPE = 0, 1, 2


def add_image_classifier_metadata(
    flatbuffer: bytes,
    labels: Sequence[str],
    name: str,
    description: str,
    mean: Sequence[float] = (0.0,),
    std: Sequence[float] = (1.0,),
) -> bytes:
    """Returns the .tflite file with image-classifier metadata and a label file.

    Metadata already in the file (an earlier call) is replaced; the model itself is
    unchanged, so LiteRT gives the same outputs.

    Args:
      flatbuffer: An integer (uint8 or int8 input) .tflite classifier with one input and
        one output of shape (batch, classes).
      labels: One class name per output, in output order; no name may be blank or hold a
        line break (the label file has one name per line).
      name: The model's name, shown by apps ("resnet20_cifar10").
      description: One sentence on what the model classifies.
      mean: Per-channel (1 or 3 values) mean that a float-input runtime would subtract
        from the pixels; (0,) for this package's models, which normalise inside.
      std: Per-channel divisor, as many values as `mean`, each > 0; (1,) by default.

    Returns:
      The new .tflite file's bytes (flatbuffer, then the zip archive with "labels.txt").

    Raises:
      InputError: For bytes that are not a TFLite model, a model with other than one
        subgraph, one input and one output, a float-input model, labels whose count
        differs from the model's number of classes, a blank label, or bad `mean`/`std`.
    """
    summary = _summary(flatbuffer)
    classes = _check_classifier(summary)
    names = _check_labels(labels, classes)
    _check_text(name, "name", allow_empty=False)
    _check_text(description, "description", allow_empty=True)
    mean, std = _check_normalization(mean, std)

    model = unpack_model(flatbuffer)
    if any(buffer.offset > 1 for buffer in model.buffers):
        raise InputError(
            "`flatbuffer` stores its buffers after the flatbuffer (a model over 2 GB); "
            "metadata is written only into models whose buffers are inline"
        )
    _attach(model, _metadata(name, description, mean, std))
    stream = io.BytesIO(pack_model(model))  # buffer data 16-byte aligned
    stream.seek(0, io.SEEK_END)
    with zipfile.ZipFile(stream, "a", compression=zipfile.ZIP_STORED) as archive:
        archive.writestr(LABELS_FILE, "\n".join(names))
    return stream.getvalue()


def read_image_classifier_metadata(flatbuffer: bytes) -> dict[str, Any] | None:
    """The image-classifier metadata of a .tflite file, or None if it has none.

    Args:
      flatbuffer: The .tflite file's bytes (with its zip appendix, if any).

    Returns:
      None without a "TFLITE_METADATA" entry, else a dict with "name", "description",
      "min_parser_version", "input_type" and "output_type" (the tensors' types, "UINT8"),
      "color_space" ("RGB"), "mean" and "std" (lists, or None without normalisation),
      "label_file" (the output's TENSOR_AXIS_LABELS file name, or None) and "labels" (its
      lines read from the zip appendix, or None if the file is not there).

    Raises:
      InputError: For bytes that are not a TFLite model, or a metadata buffer that is not
        a `ModelMetadata` flatbuffer.
    """
    summary = _summary(flatbuffer)
    data = bytes(flatbuffer)
    buffer = _metadata_buffer(schema.Model.GetRootAs(data, 0))
    if buffer is None:
        return None
    if buffer[4:8] != METADATA_IDENTIFIER:
        raise InputError(
            f"`flatbuffer` has a {METADATA_NAME} entry that is not a ModelMetadata flatbuffer "
            f"(file identifier {buffer[4:8]!r}, expected {METADATA_IDENTIFIER!r})"
        )
    root = Table(buffer, int.from_bytes(buffer[:4], "little"))  # the root table's position
    subgraphs = _tables(root, _MODEL_SUBGRAPHS)
    inputs = _tables(subgraphs[0], _SUBGRAPH_INPUTS) if subgraphs else []
    outputs = _tables(subgraphs[0], _SUBGRAPH_OUTPUTS) if subgraphs else []
    found = {
        "name": _string(root, _MODEL_NAME),
        "description": _string(root, _MODEL_DESCRIPTION),
        "min_parser_version": _string(root, _MODEL_MIN_PARSER),
        "input_type": summary.inputs[0].type if summary.inputs else None,
        "output_type": summary.outputs[0].type if summary.outputs else None,
        "color_space": None,
        "mean": None,
        "std": None,
        "label_file": None,
        "labels": None,
    }
    if inputs:
        found.update(_read_input(inputs[0]))
    if outputs:
        found["label_file"] = _label_file(outputs[0])
    if found["label_file"] is not None:
        found["labels"] = _zip_labels(data, found["label_file"])
    return found


# --- checks -------------------------------------------------------------------------------


def _summary(flatbuffer):
    if not isinstance(flatbuffer, bytes | bytearray | memoryview):
        raise InputError(
            f"`flatbuffer` must be the .tflite file's bytes. Received: {type(flatbuffer).__name__}"
        )
    try:
        return read_model(flatbuffer)
    except ValueError as error:
        raise InputError(f"`flatbuffer` is not a TFLite model: {error}") from None


def _check_classifier(summary) -> int:
    """The number of classes of a one-input, one-output integer classifier."""
    if summary.num_subgraphs != 1 or len(summary.inputs) != 1 or len(summary.outputs) != 1:
        raise InputError(
            "`flatbuffer` must be a classifier with one subgraph, one input and one output. "
            f"Received: {summary.num_subgraphs} subgraph(s), {len(summary.inputs)} input(s), "
            f"{len(summary.outputs)} output(s)"
        )
    tensor = summary.inputs[0]
    if tensor.type not in _INTEGER_INPUTS:
        raise InputError(
            f"metadata for MediaPipe needs an integer model (uint8 or int8 input); input "
            f"{tensor.name!r} is {tensor.type}: convert with to_integer_tflite"
        )
    output = summary.outputs[0]
    if len(output.shape) != 2:
        raise InputError(
            "`flatbuffer` must have an output of shape (batch, classes). Received: "
            f"{output.name!r} of shape {list(output.shape)}"
        )
    return output.shape[-1]


def _check_labels(labels, classes: int) -> tuple[str, ...]:
    if isinstance(labels, str) or not isinstance(labels, Sequence):
        raise InputError("must be a sequence of class names", "labels", labels)
    for index, label in enumerate(labels):
        if not isinstance(label, str) or not label.strip():
            raise InputError(
                f"must hold non-blank class names; label {index} is blank or not a string",
                "labels",
                label,
            )
        if "\n" in label or "\r" in label:
            raise InputError(
                f"must hold one-line class names; label {index} has a line break",
                "labels",
                label,
            )
    if len(labels) != classes:
        raise InputError(
            f"must hold one name per class: the model has {classes} classes. Received: "
            f"{len(labels)} labels",
            "labels",
        )
    return tuple(labels)


def _check_text(value, argument: str, allow_empty: bool) -> None:
    if not isinstance(value, str) or (not allow_empty and not value.strip()):
        requirement = "must be a string" if allow_empty else "must be a non-blank string"
        raise InputError(requirement, argument, value)


def _check_normalization(mean, std) -> tuple[list[float], list[float]]:
    values = {}
    for argument, given in (("mean", mean), ("std", std)):
        if isinstance(given, str) or not isinstance(given, Sequence) or len(given) not in (1, 3):
            raise InputError("must be a sequence of 1 or 3 numbers (per channel)", argument, given)
        low = 0.0 if argument == "std" else None
        values[argument] = [check_number(v, argument, low, low_open=True) for v in given]
    if len(values["mean"]) != len(values["std"]):
        raise InputError(
            f"`mean` and `std` must have as many values. Received: {len(values['mean'])} "
            f"and {len(values['std'])}"
        )
    return values["mean"], values["std"]


# --- writing ------------------------------------------------------------------------------


class _Tables:
    """Writes metadata_schema.fbs tables field slot by field slot."""

    def __init__(self):
        self.builder = flatbuffers.Builder(1024)

    def string(self, text: str) -> int:
        return self.builder.CreateString(text)

    def floats(self, values: Sequence[float]) -> int:
        self.builder.StartVector(4, len(values), 4)
        for value in reversed(values):
            self.builder.PrependFloat32(value)
        return self.builder.EndVector()

    def offsets(self, offsets: Sequence[int]) -> int:
        self.builder.StartVector(4, len(offsets), 4)
        for offset in reversed(offsets):
            self.builder.PrependUOffsetTRelative(offset)
        return self.builder.EndVector()

    def table(
        self, offsets: dict[int, int] | None = None, bytes_: dict[int, int] | None = None
    ) -> int:
        """A table of offset fields and one-byte fields (enums, union types), by slot."""
        offsets, bytes_ = offsets or {}, bytes_ or {}
        self.builder.StartObject(max([*offsets, *bytes_], default=-1) + 1)
        for slot, value in bytes_.items():
            self.builder.PrependUint8Slot(slot, value, 0)
        for slot, value in offsets.items():
            self.builder.PrependUOffsetTRelativeSlot(slot, value, 0)
        return self.builder.EndObject()


def _metadata(name: str, description: str, mean: list[float], std: list[float]) -> bytes:
    """The `ModelMetadata` flatbuffer of an image classifier with a label file."""
    t = _Tables()
    image = t.table(bytes_={_IMAGE_COLOR_SPACE: _RGB})
    image_content = t.table({_CONTENT_VALUE: image}, {_CONTENT_TYPE: _IMAGE_PROPERTIES})
    normalization = t.table(
        {_NORMALIZATION_MEAN: t.floats(mean), _NORMALIZATION_STD: t.floats(std)}
    )
    unit = t.table({_UNIT_VALUE: normalization}, {_UNIT_TYPE: _NORMALIZATION_OPTIONS})
    image_tensor = t.table(
        {
            _TENSOR_NAME: t.string("image"),
            _TENSOR_DESCRIPTION: t.string("Input image to be classified."),
            _TENSOR_CONTENT: image_content,
            _TENSOR_UNITS: t.offsets([unit]),
        }
    )
    features = t.table()
    score_content = t.table({_CONTENT_VALUE: features}, {_CONTENT_TYPE: _FEATURE_PROPERTIES})
    label_file = t.table(
        {
            _FILE_NAME: t.string(LABELS_FILE),
            _FILE_DESCRIPTION: t.string("Labels for categories that the model can recognize."),
        },
        {_FILE_TYPE: _TENSOR_AXIS_LABELS},
    )
    score_tensor = t.table(
        {
            _TENSOR_NAME: t.string("probability"),
            _TENSOR_DESCRIPTION: t.string("Probabilities of the labels respectively."),
            _TENSOR_CONTENT: score_content,
            _TENSOR_FILES: t.offsets([label_file]),
        }
    )
    subgraph = t.table(
        {_SUBGRAPH_INPUTS: t.offsets([image_tensor]), _SUBGRAPH_OUTPUTS: t.offsets([score_tensor])}
    )
    root = t.table(
        {
            _MODEL_NAME: t.string(name),
            _MODEL_DESCRIPTION: t.string(description),
            _MODEL_SUBGRAPHS: t.offsets([subgraph]),
            _MODEL_MIN_PARSER: t.string(MIN_PARSER_VERSION),
        }
    )
    t.builder.Finish(root, file_identifier=METADATA_IDENTIFIER)
    return bytes(t.builder.Output())


def _attach(model, metadata: bytes) -> None:
    """Adds `metadata` as a buffer and a `METADATA_NAME` entry, replacing an earlier one."""
    entries = []
    for entry in model.metadata or []:
        if _decode(entry.name) == METADATA_NAME:
            model.buffers[entry.buffer].data = None  # keeps buffer indices valid
        else:
            entries.append(entry)
    buffer = schema.BufferT()
    buffer.data = np.frombuffer(metadata, np.uint8)
    model.buffers.append(buffer)
    entry = schema.MetadataT()
    entry.name = METADATA_NAME
    entry.buffer = len(model.buffers) - 1
    model.metadata = [*entries, entry]


# --- reading ------------------------------------------------------------------------------


def _decode(name) -> str:
    return name.decode("utf-8", "replace") if isinstance(name, bytes) else str(name)


def _metadata_buffer(model) -> bytes | None:
    for index in range(model.MetadataLength()):
        entry = model.Metadata(index)
        if _decode(entry.Name()) == METADATA_NAME:
            buffer = model.Buffers(entry.Buffer())
            return buffer.DataAsNumpy().tobytes() if buffer.DataLength() else None
    return None


def _field(table: Table, slot: int) -> int:
    return table.Offset(4 + 2 * slot)


def _string(table: Table, slot: int) -> str | None:
    offset = _field(table, slot)
    return table.String(offset + table.Pos).decode("utf-8") if offset else None


def _byte(table: Table, slot: int) -> int:
    offset = _field(table, slot)
    return table.Get(number_types.Uint8Flags, offset + table.Pos) if offset else 0


def _child(table: Table, slot: int) -> Table | None:
    offset = _field(table, slot)
    return Table(table.Bytes, table.Indirect(offset + table.Pos)) if offset else None


def _tables(table: Table, slot: int) -> list[Table]:
    offset = _field(table, slot)
    if not offset:
        return []
    start = table.Vector(offset)
    return [
        Table(table.Bytes, table.Indirect(start + 4 * i)) for i in range(table.VectorLen(offset))
    ]


def _floats(table: Table, slot: int) -> list[float] | None:
    offset = _field(table, slot)
    if not offset:
        return None
    return [float(v) for v in table.GetVectorAsNumpy(number_types.Float32Flags, offset)]


def _read_input(tensor: Table) -> dict[str, Any]:
    found = {}
    content = _child(tensor, _TENSOR_CONTENT)
    if content is not None and _byte(content, _CONTENT_TYPE) == _IMAGE_PROPERTIES:
        image = _child(content, _CONTENT_VALUE)
        found["color_space"] = _COLOR_SPACES.get(_byte(image, _IMAGE_COLOR_SPACE), "UNKNOWN")
    for unit in _tables(tensor, _TENSOR_UNITS):
        if _byte(unit, _UNIT_TYPE) == _NORMALIZATION_OPTIONS:
            options = _child(unit, _UNIT_VALUE)
            found["mean"] = _floats(options, _NORMALIZATION_MEAN)
            found["std"] = _floats(options, _NORMALIZATION_STD)
    return found


def _label_file(tensor: Table) -> str | None:
    for associated in _tables(tensor, _TENSOR_FILES):
        if _byte(associated, _FILE_TYPE) == _TENSOR_AXIS_LABELS:
            return _string(associated, _FILE_NAME)
    return None


def _zip_labels(data: bytes, member: str) -> list[str] | None:
    if not zipfile.is_zipfile(io.BytesIO(data)):
        return None
    with zipfile.ZipFile(io.BytesIO(data)) as archive:
        if member not in archive.namelist():
            return None
        text = archive.read(member).decode("utf-8")
    return text.rstrip("\n").split("\n") if text.strip() else []
