"""Image-classifier metadata (sgt_tfmot.tflite.metadata) on a tiny converted classifier.

The classifier (tests/helpers/colours.py) names an 8x8 image's brightest colour channel with
hand-set weights: its scores are softmax(4 * channel means / 255), and its uint8 input
quantization is the identity (scale 1, zero point 0).
"""

import io
import re
import zipfile

import numpy as np
import pytest
from ai_edge_litert import schema_py_generated as schema

from sgt_tfmot._checks import InputError
from sgt_tfmot.tflite.converter import float_tflite
from sgt_tfmot.tflite.metadata import (
    add_image_classifier_metadata,
    read_image_classifier_metadata,
)
from sgt_tfmot.tflite.runtime import TFLiteModel
from tests.helpers.colours import (
    DESCRIPTION,
    LABELS,
    NAME,
    colour_classifier,
    colour_images,
    converted,
    with_metadata,
)


def test_the_uint8_file_takes_pixels_and_gives_probabilities():
    model = TFLiteModel(converted())
    assert model.input["quantization"] == (1.0, 0)  # calibration range exactly 0..255
    assert model.output["quantization"] == (1 / 256, 0)  # the converter's softmax output
    scores = model.predict(colour_images(6, seed=1))
    np.testing.assert_array_equal(scores.argmax(-1), [0, 1, 2, 0, 1, 2])


def test_metadata_reads_back():
    assert read_image_classifier_metadata(converted()) is None
    assert read_image_classifier_metadata(with_metadata()) == {
        "name": NAME,
        "description": DESCRIPTION,
        "min_parser_version": "1.0.0",
        "input_type": "UINT8",
        "output_type": "UINT8",
        "color_space": "RGB",
        "mean": [0.0],
        "std": [1.0],
        "label_file": "labels.txt",
        "labels": list(LABELS),
    }


def test_litert_runs_the_file_as_before():
    images = colour_images(8, seed=1)
    before, after = TFLiteModel(converted()), TFLiteModel(with_metadata())
    assert (before.input_shape, before.input["quantization"], before.output["quantization"]) == (
        after.input_shape,
        after.input["quantization"],
        after.output["quantization"],
    )
    np.testing.assert_array_equal(before.predict(images), after.predict(images))


def test_the_file_is_a_zip_holding_the_labels():
    data = with_metadata()
    assert data[4:8] == b"TFL3"
    assert zipfile.is_zipfile(io.BytesIO(data))
    with zipfile.ZipFile(io.BytesIO(data)) as archive:
        (info,) = archive.infolist()
        assert (info.filename, info.compress_type) == ("labels.txt", zipfile.ZIP_STORED)
        assert archive.read(info) == b"red\ngreen\nblue"


def test_writing_again_replaces_the_metadata():
    data = add_image_classifier_metadata(with_metadata(), ("r", "g", "b"), "again", "")
    found = read_image_classifier_metadata(data)
    assert (found["name"], found["description"], found["labels"]) == ("again", "", ["r", "g", "b"])
    model = schema.Model.GetRootAs(data, 0)
    names = [model.Metadata(i).Name() for i in range(model.MetadataLength())]
    assert names.count(b"TFLITE_METADATA") == 1
    assert zipfile.ZipFile(io.BytesIO(data)).namelist() == ["labels.txt"]
    images = colour_images(4, seed=2)
    np.testing.assert_array_equal(
        TFLiteModel(converted()).predict(images), TFLiteModel(data).predict(images)
    )


def test_buffers_start_on_16_byte_boundaries():
    data = with_metadata()
    model = schema.Model.GetRootAs(data, 0)
    starts = [
        buffer._tab.Vector(buffer._tab.Offset(4))  # the first data byte's file offset
        for buffer in map(model.Buffers, range(model.BuffersLength()))
        if buffer.DataLength()
    ]
    assert len(starts) >= 5  # conv and dense weights and biases, the metadata
    assert [start % 16 for start in starts] == [0] * len(starts)


def test_an_int8_file_gets_the_same_metadata():
    found = read_image_classifier_metadata(with_metadata("int8"))
    assert (found["input_type"], found["output_type"]) == ("INT8", "INT8")
    assert (found["labels"], found["mean"], found["std"]) == (list(LABELS), [0.0], [1.0])


def test_normalisation_is_written_as_given():
    data = add_image_classifier_metadata(
        converted(), LABELS, NAME, DESCRIPTION, mean=(127.5, 127.5, 127.5), std=(2, 2, 2)
    )
    found = read_image_classifier_metadata(data)
    assert (found["mean"], found["std"]) == ([127.5] * 3, [2.0] * 3)


@pytest.mark.parametrize(
    ("labels", "kwargs", "message"),
    [
        (
            ("red", "green"),
            {},
            "`labels` must hold one name per class: the model has 3 classes. Received: 2 labels",
        ),
        (
            ("red", "  ", "blue"),
            {},
            "`labels` must hold non-blank class names; label 1 is blank or not a string. "
            "Received: labels='  '",
        ),
        (
            ("red", "", "blue"),
            {},
            "`labels` must hold non-blank class names; label 1 is blank or not a string. "
            "Received: labels=''",
        ),
        (
            ("red", "green\nblue", "blue"),
            {},
            "`labels` must hold one-line class names; label 1 has a line break. "
            "Received: labels='green\\nblue'",
        ),
        ("rgb", {}, "`labels` must be a sequence of class names. Received: labels='rgb'"),
        (LABELS, {"name": " "}, "`name` must be a non-blank string. Received: name=' '"),
        (LABELS, {"std": (0.0,)}, "`std` must be a finite number > 0. Received: std=0.0"),
        (
            LABELS,
            {"mean": (0.0, 0.0)},
            "`mean` must be a sequence of 1 or 3 numbers (per channel). Received: mean=(0.0, 0.0)",
        ),
        (
            LABELS,
            {"mean": (0.0, 0.0, 0.0)},
            "`mean` and `std` must have as many values. Received: 3 and 1",
        ),
    ],
)
def test_bad_input_is_refused(labels, kwargs, message):
    arguments = {"name": NAME, "description": DESCRIPTION, **kwargs}
    with pytest.raises(InputError) as raised:
        add_image_classifier_metadata(converted(), labels, **arguments)
    assert str(raised.value) == message


def test_a_float_model_is_refused():
    flatbuffer = float_tflite(colour_classifier())
    pattern = r"metadata for MediaPipe needs an integer model \(uint8 or int8 input\); input "
    with pytest.raises(InputError, match=pattern + r"'.+' is FLOAT32: convert with") as raised:
        add_image_classifier_metadata(flatbuffer, LABELS, NAME, DESCRIPTION)
    assert "\n" not in str(raised.value)


def test_bytes_that_are_not_a_model_are_refused():
    with pytest.raises(InputError, match=re.escape("`flatbuffer` is not a TFLite model: Not a")):
        add_image_classifier_metadata(b"not a model at all", LABELS, NAME, DESCRIPTION)
    with pytest.raises(InputError, match="`flatbuffer` must be the .tflite file's bytes"):
        read_image_classifier_metadata("model.tflite")
