"""The MediaPipe deployment target (sgt_tfmot.tflite.mediapipe) on the tiny colour classifier.

The classifier and its files come from tests/helpers/colours.py: a softmax over the three
colour channels, uint8 (scale 1, zero point 0 in; 1/256 out) or int8 I/O. MediaPipe is not a
dependency of the package (requirements/mediapipe.txt installs it with --no-deps): these
tests skip without it, except on CI (the CI variable set), where its absence is a failure.
"""

import json
import os
import sys
from pathlib import Path

import numpy as np
import pytest

from sgt_tfmot.tflite.mediapipe import INSTALL_COMMAND, MediaPipe
from sgt_tfmot.tflite.runtime import TFLiteModel
from sgt_tfmot.tflite.targets import TargetContext
from tests.helpers.colours import LABELS, colour_images, converted, with_metadata

REQUIREMENTS = Path(__file__).resolve().parents[1] / "requirements" / "mediapipe.txt"
OUTPUT_STEP = 1 / 256  # the uint8 softmax output's scale


@pytest.fixture(scope="module")
def mediapipe():
    try:
        import mediapipe
    except ImportError as error:
        message = (
            f"mediapipe is not installed ({error}): "
            "python3 -m pip install --no-deps -r requirements/mediapipe.txt"
        )
        if os.environ.get("CI"):
            pytest.fail(f"CI installs requirements/mediapipe.txt, yet {message}")
        pytest.skip(message)
    return mediapipe


def context(flatbuffer: bytes, images=None, class_names=LABELS, predict=None) -> TargetContext:
    images = colour_images(8, seed=3) if images is None else images
    predict = TFLiteModel(flatbuffer).predict if predict is None else predict
    return TargetContext(flatbuffer, "model.tflite", images, class_names, predict)


def test_the_uint8_file_with_metadata_is_compatible(mediapipe):
    flatbuffer = with_metadata()
    images = colour_images(8, seed=3)
    assert set(TFLiteModel(flatbuffer).predict(images).argmax(-1)) == {0, 1, 2}  # not trivial
    report = MediaPipe().check(context(flatbuffer, images))
    assert (report.name, report.title) == ("mediapipe", "MediaPipe Tasks ImageClassifier")
    assert (report.compatible, report.failure) == (True, None)
    section = report.section
    assert section["loaded"] is True
    assert (section["agreement"], section["images"]) == (1.0, 8)
    assert section["category_names_match"] is True
    assert section["scores_in_unit_interval"] is True
    assert section["max_score_difference"] <= OUTPUT_STEP
    assert (section["version"], section["reason"]) == (mediapipe.__version__, None)
    assert (section["input_type"], section["labels"]) == ("UINT8", True)
    assert section["input_quantization"] == {"scale": 1.0, "zero_point": 0}
    assert report.lines[0] == "MediaPipe: compatible."
    assert "top-1 agreement with LiteRT 100.00 % on 8 images" in report.lines[1]
    json.dumps(report.to_dict())  # the converter's JSON report holds it


def test_mediapipe_scores_are_litert_outputs(mediapipe):
    """MediaPipe run directly: names from the label file, scores LiteRT's within a step."""
    from mediapipe.tasks.python import vision
    from mediapipe.tasks.python.core.base_options import BaseOptions

    flatbuffer = with_metadata()
    images = colour_images(6, seed=4)
    expected = TFLiteModel(flatbuffer).predict(images)
    options = vision.ImageClassifierOptions(
        base_options=BaseOptions(model_asset_buffer=flatbuffer), max_results=-1
    )
    with vision.ImageClassifier.create_from_options(options) as classifier:
        for image, reference, colour in zip(images, expected, [0, 1, 2, 0, 1, 2], strict=True):
            pixels = mediapipe.Image(
                image_format=mediapipe.ImageFormat.SRGB, data=image.astype(np.uint8)
            )
            categories = classifier.classify(pixels).classifications[0].categories
            assert categories[0].category_name == LABELS[colour]  # sorted by score
            by_index = sorted(categories, key=lambda category: category.index)
            assert [category.category_name for category in by_index] == list(LABELS)
            scores = np.array([category.score for category in by_index])
            assert ((scores >= 0) & (scores <= 1)).all()
            np.testing.assert_allclose(scores, reference, rtol=0, atol=OUTPUT_STEP)


def test_the_metadata_parses_with_mediapipe_schema(mediapipe):
    """The hand-written tables read back with MediaPipe's generated schema bindings."""
    from ai_edge_litert import schema_py_generated as schema
    from mediapipe.tasks.metadata import metadata_schema_py_generated as metadata_schema

    model = schema.Model.GetRootAs(with_metadata(), 0)
    entries = [model.Metadata(i) for i in range(model.MetadataLength())]
    (entry,) = [entry for entry in entries if entry.Name() == b"TFLITE_METADATA"]
    data = model.Buffers(entry.Buffer()).DataAsNumpy().tobytes()
    assert metadata_schema.ModelMetadata.ModelMetadataBufferHasIdentifier(data, 0)
    found = metadata_schema.ModelMetadataT.InitFromObj(
        metadata_schema.ModelMetadata.GetRootAs(data, 0)
    )
    (subgraph,) = found.subgraphMetadata
    (image,), (scores,) = subgraph.inputTensorMetadata, subgraph.outputTensorMetadata
    assert (found.name, found.minParserVersion) == (b"tiny_colours", b"1.0.0")
    properties = metadata_schema.ContentProperties
    assert image.content.contentPropertiesType == properties.ImageProperties
    assert image.content.contentProperties.colorSpace == metadata_schema.ColorSpaceType.RGB
    (unit,) = image.processUnits
    assert unit.optionsType == metadata_schema.ProcessUnitOptions.NormalizationOptions
    assert (list(unit.options.mean), list(unit.options.std)) == ([0.0], [1.0])
    assert scores.content.contentPropertiesType == properties.FeatureProperties
    (labels,) = scores.associatedFiles
    axis_labels = metadata_schema.AssociatedFileType.TENSOR_AXIS_LABELS
    assert (labels.name, labels.type) == (b"labels.txt", axis_labels)


def test_a_file_without_labels_runs_with_unnamed_categories(mediapipe):
    report = MediaPipe().check(context(converted()))
    assert report.compatible is True
    assert (report.section["labels"], report.section["category_names_match"]) == (False, None)
    assert any("carries no labels" in line for line in report.lines)


def test_disagreeing_with_litert_or_the_class_names_is_incompatible(mediapipe):
    flatbuffer = with_metadata()
    litert = TFLiteModel(flatbuffer).predict
    shifted = MediaPipe().check(context(flatbuffer, predict=lambda x: np.roll(litert(x), 1, -1)))
    assert (shifted.compatible, shifted.section["agreement"]) == (False, 0.0)
    assert shifted.failure.startswith("MediaPipe's top-1 differs from LiteRT's on ")
    assert shifted.failure.endswith(" of 8 images by more than a tie")
    renamed = MediaPipe().check(context(flatbuffer, class_names=("r", "g", "b")))
    assert (renamed.compatible, renamed.section["category_names_match"]) == (False, False)
    assert renamed.failure == "MediaPipe's category names differ from the class names"


@pytest.mark.parametrize("steps", [1, 2])
def test_a_tie_broken_the_other_way_is_not_a_difference(mediapipe, steps):
    """LiteRT's scores of MediaPipe's top class and of another one `steps` output steps
    apart, the other one ahead: one step is a tie two correct runtimes may break either way
    (seen on a model with LEAKY_RELU: 1 of 32 images); two steps is a real difference."""
    flatbuffer = with_metadata()
    litert = TFLiteModel(flatbuffer).predict
    step = float(MediaPipe().check(context(flatbuffer)).section["output_step"])
    assert step == pytest.approx(1 / 256)  # a softmax's uint8 output

    def nudged(x):
        scores = np.array(litert(x), np.float32)
        rows = np.arange(len(scores))
        top = scores.argmax(-1)
        scores[rows, (top + 1) % scores.shape[1]] = scores[rows, top] + steps * step
        return scores

    report = MediaPipe().check(context(flatbuffer, predict=nudged))
    assert report.section["agreement"] == 0.0
    if steps == 1:
        assert (report.compatible, report.section["ties"], report.section["differences"]) == (
            True, 8, 0)  # fmt: skip
        assert (
            "(8 images where LiteRT's top two scores are within one output step"
            in (report.lines[1])
        )
    else:
        assert (report.compatible, report.section["ties"], report.section["differences"]) == (
            False, 0, 8)  # fmt: skip
        assert report.failure == (
            "MediaPipe's top-1 differs from LiteRT's on 8 of 8 images by more than a tie"
        )


def test_an_int8_file_is_incompatible(mediapipe):
    report = MediaPipe().check(context(with_metadata("int8")))
    assert report.compatible is False
    assert (
        report.failure == "MediaPipe needs uint8 input, the file's is INT8 (convert with --uint8)"
    )
    assert report.section["loaded"] is False
    assert "Type mismatch for input tensor" in report.section["reason"]
    assert report.lines[0] == f"MediaPipe: NOT compatible: {report.failure}"


def test_a_one_channel_file_is_incompatible(mediapipe):
    flatbuffer = converted("uint8", channels=1)
    report = MediaPipe().check(context(flatbuffer, colour_images(4, channels=1)))
    assert report.compatible is False
    assert report.failure == (
        "MediaPipe needs 3-channel RGB input, the file takes 1 channel(s) "
        "(convert with --rgb_input)"
    )
    assert report.section["loaded"] is False


def test_without_mediapipe_the_report_says_how_to_install_it(monkeypatch):
    monkeypatch.setitem(sys.modules, "mediapipe", None)  # `import mediapipe` raises
    unknown = MediaPipe().check(context(with_metadata()))
    assert (unknown.compatible, unknown.failure) == (None, None)
    assert (unknown.section["version"], unknown.section["loaded"]) == (None, False)
    assert unknown.lines[0] == "MediaPipe: not checked."
    assert INSTALL_COMMAND in unknown.lines[1]
    # An int8 file is refused from the flatbuffer alone.
    refused = MediaPipe().check(context(with_metadata("int8")))
    assert refused.compatible is False
    assert "(convert with --uint8)" in refused.failure


def test_the_install_command_has_the_pins_of_the_requirements_file():
    lines = REQUIREMENTS.read_text().splitlines()
    pins = [line.strip() for line in lines if line.strip() and not line.startswith("#")]
    assert pins == ["mediapipe==1.2.3", "opencv-python-headless==5.0.0.93"]
    assert INSTALL_COMMAND == "python3 -m pip install --no-deps " + " ".join(pins)
