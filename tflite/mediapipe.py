"""MediaPipe Tasks' `ImageClassifier` as a deployment target: the file is run, not read.

`MediaPipe.check` loads the .tflite file in `mediapipe.tasks.python.vision.ImageClassifier`
(CPU, every class returned) and classifies the context's test images, given as uint8 SRGB
pixels as an app's camera frames are. The file is compatible when MediaPipe loads it, its
top-1 class equals LiteRT's (`context.integer_predict`) on every image (or the two runtimes
broke a tie: LiteRT's scores of both classes within one output step), and, if the file
carries labels (`sgt_tfmot.tflite.metadata`), the category names are the class names.

What MediaPipe 1.2.3 accepts (measured): uint8 or float32 input with 3 channels (4 by its
error message) and batch 1; uint8 or float32 output, dequantized into scores. A uint8 input
gets the pixels unchanged, so its quantization should be the identity (scale 1, zero point
0), as for this package's models converted with `--uint8`. MediaPipe refuses int8 input
("Type mismatch for input tensor ... Requested one of these types: uint8/float32, got
INT8"), int8 output, and one-channel input. Those are recognised from the flatbuffer too,
so an int8 file is reported incompatible even where mediapipe is not installed.

mediapipe is not a dependency of this package: pip cannot resolve it beside TFMOT (see
requirements/mediapipe.txt). Without it the verdict is None and the report says how to
install it.

Example:

    report = MediaPipe().check(context)
    print(report.compatible, report.section["agreement"], report.failure)
"""

from __future__ import annotations

import numpy as np

from sgt_tfmot.tflite.flatbuffer import read_model
from sgt_tfmot.tflite.metadata import read_image_classifier_metadata
from sgt_tfmot.tflite.target_base import Target, TargetContext, TargetReport

__all__ = ["INSTALL_COMMAND", "MediaPipe"]

INSTALL_COMMAND = (
    "python3 -m pip install --no-deps mediapipe==1.2.3 opencv-python-headless==5.0.0.93"
)
"""How to install what the check needs (the pins of requirements/mediapipe.txt); --no-deps
because pip cannot resolve mediapipe beside TFMOT's absl-py pin."""

_UINT8_HINT = "convert with --uint8"
_RGB_HINT = "convert with --rgb_input"
_ACCEPTED_INPUTS = ("UINT8", "FLOAT32")
_ACCEPTED_OUTPUTS = ("UINT8", "FLOAT32")
_ACCEPTED_CHANNELS = (3, 4)


class MediaPipe(Target):
    """MediaPipe Tasks' `ImageClassifier` as a deployment target (`sgt_tfmot.tflite.targets`).

    The report section holds: "loaded" (MediaPipe created the classifier), "agreement" (the
    share of images whose top-1 equals LiteRT's), "ties" and "differences" (images whose top-1
    differs from LiteRT's where LiteRT's two scores are within one output step, and by
    more), "images", "category_names_match" (None
    when the file has no labels or the class names are unknown), "scores_in_unit_interval",
    "max_score_difference" (largest |MediaPipe score - LiteRT output|), "version" (of
    mediapipe, None when it is not installed), "reason" (why it could not be checked or
    loaded, else None), and the file's "input_type", "output_type", "input_shape",
    "input_quantization" and "labels" (whether it carries a label file).
    """

    name, title = "mediapipe", "MediaPipe Tasks ImageClassifier"

    def check(self, context: TargetContext) -> TargetReport:
        """Runs the file in MediaPipe on `context.images` and compares it with LiteRT.

        Args:
          context: The file, its test images (float, 0..255, (N, H, W, 3)), class names and
            LiteRT's predict function.

        Returns:
          The verdict: True, False (with a one-line `failure`), or None when mediapipe is
          not installed or there is nothing to compare.
        """
        summary = read_model(context.flatbuffer)
        metadata = read_image_classifier_metadata(context.flatbuffer)
        section = _file_section(summary, metadata)
        problems = _static_problems(section)
        run, error = _run(context, section)
        section.update(run)

        if run["version"] is None:
            verdict = False if problems else None
            detail = f"mediapipe is not installed ({run['reason']}); to check: {INSTALL_COMMAND}"
        elif error is not None:
            verdict, detail = False, f"MediaPipe {run['version']}: {error}"
        else:
            verdict, detail = _verdict(run)
            detail = f"MediaPipe {run['version']}: {detail}"
        failure = None
        if verdict is False:
            failure = "; ".join(problems) if problems else error or _disagreement(run)
            head = f"MediaPipe: NOT compatible: {failure}"
        else:
            head = "MediaPipe: compatible." if verdict else "MediaPipe: not checked."
        lines = (head, f"  {detail}", *_notes(section))
        return TargetReport(self.name, self.title, verdict, failure, lines, section)


def _file_section(summary, metadata: dict | None) -> dict:
    """What the flatbuffer says about the file's I/O."""
    tensor, output = summary.inputs[0], summary.outputs[0]
    quantization = tensor.quantization
    return {
        "input_type": tensor.type,
        "output_type": output.type,
        "input_shape": list(tensor.shape),
        "input_quantization": (
            {"scale": quantization.scale[0], "zero_point": quantization.zero_point[0]}
            if quantization is not None
            else None
        ),
        "labels": bool(metadata and metadata["labels"]),
        "output_step": (
            float(output.quantization.scale[0]) if output.quantization is not None else 0.0
        ),
    }


def _static_problems(section: dict) -> list[str]:
    """What MediaPipe refuses, read from the flatbuffer (its messages are measured ones)."""
    problems = []
    if section["input_type"] not in _ACCEPTED_INPUTS:
        problems.append(
            f"MediaPipe needs uint8 input, the file's is {section['input_type']} ({_UINT8_HINT})"
        )
    elif section["output_type"] not in _ACCEPTED_OUTPUTS:
        problems.append(
            f"MediaPipe needs uint8 output, the file's is {section['output_type']} ({_UINT8_HINT})"
        )
    shape = section["input_shape"]
    if len(shape) != 4:
        problems.append(f"MediaPipe needs an image input (1, H, W, 3), the file's is {shape}")
    elif shape[-1] not in _ACCEPTED_CHANNELS:
        problems.append(
            f"MediaPipe needs 3-channel RGB input, the file takes {shape[-1]} channel(s) "
            f"({_RGB_HINT})"
        )
    return problems


def _run(context: TargetContext, section: dict) -> tuple[dict, str | None]:
    """Classifies the images in MediaPipe: (the run's part of the report section, the error
    that made the file fail in MediaPipe or None)."""
    found = {"loaded": False, "agreement": None, "ties": 0, "differences": 0, "images": 0,
             "category_names_match": None,
             "scores_in_unit_interval": None, "max_score_difference": None, "version": None,
             "reason": None}  # fmt: skip
    try:
        import mediapipe as mp
        from mediapipe.tasks.python import vision
        from mediapipe.tasks.python.core.base_options import BaseOptions
    except ImportError as error:
        found["reason"] = f"import mediapipe failed: {error}"
        return found, None
    found["version"] = getattr(mp, "__version__", "unknown")
    options = vision.ImageClassifierOptions(
        base_options=BaseOptions(
            model_asset_buffer=bytes(context.flatbuffer), delegate=BaseOptions.Delegate.CPU
        ),
        max_results=-1,
    )
    images = np.asarray(context.images)
    try:
        with vision.ImageClassifier.create_from_options(options) as classifier:
            found["loaded"] = True
            results = [
                classifier.classify(mp.Image(image_format=mp.ImageFormat.SRGB, data=_pixels(x)))
                for x in images
            ]
    except (RuntimeError, ValueError) as error:
        found["reason"] = _first_line(error)
        step = "classified no image" if found["loaded"] else "did not load the file"
        return found, f"MediaPipe {step}: {found['reason']}"
    if not len(images) or context.integer_predict is None:
        found["reason"] = "no test images or no LiteRT predictions to compare with"
        return found, None
    scores, names = _scores(results)
    reference = np.asarray(context.integer_predict(images), np.float32)
    found["images"] = len(images)
    mine, theirs = scores.argmax(-1), reference.argmax(-1)
    found["agreement"] = float(np.mean(mine == theirs))
    # A different top class where LiteRT's own scores of the two classes are within one
    # output step is a tie that two correct runtimes may break either way (MediaPipe's
    # kernels requantize some ops with TFLite's fixed-point rule, LiteRT's default runtime,
    # XNNPACK, with its own); a larger gap is a real difference.
    rows = np.arange(len(images))
    gap = reference[rows, theirs] - reference[rows, mine]
    tie = gap <= section["output_step"] * 1.0001
    found["ties"] = int(np.sum((mine != theirs) & tie))
    found["differences"] = int(np.sum((mine != theirs) & ~tie))
    found["max_score_difference"] = float(np.abs(scores - reference).max())
    found["scores_in_unit_interval"] = bool(((scores >= 0) & (scores <= 1)).all())
    if section["labels"] and context.class_names is not None:
        found["category_names_match"] = names == list(context.class_names)
    return found, None


def _pixels(image: np.ndarray) -> np.ndarray:
    """A float image in 0..255 as the contiguous uint8 pixels a camera frame holds."""
    return np.ascontiguousarray(np.clip(np.round(image), 0, 255).astype(np.uint8))


def _scores(results) -> tuple[np.ndarray, list | None]:
    """(N, classes) scores in class order, and the category names of the first result."""
    rows, names = [], None
    for result in results:
        categories = sorted(result.classifications[0].categories, key=lambda c: c.index)
        rows.append([category.score for category in categories])
        if names is None:
            names = [category.category_name for category in categories]
    return np.asarray(rows, np.float32), names


def _verdict(run: dict) -> tuple[bool | None, str]:
    """The verdict on a run that loaded and classified, and its summary."""
    if run["agreement"] is None:
        return None, f"loaded; {run['reason']}"
    text = (
        f"top-1 agreement with LiteRT {100 * run['agreement']:.2f} % on {run['images']} "
        f"images, max score difference {run['max_score_difference']:.3g}"
    )
    if run["ties"]:
        text += f" ({_ties(run)})"
    if run["category_names_match"] is not None:
        text += "; category names " + ("match" if run["category_names_match"] else "DIFFER")
    return run["differences"] == 0 and run["category_names_match"] is not False, text


def _ties(run: dict) -> str:
    return (
        f"{run['ties']} image{'s' if run['ties'] > 1 else ''} where LiteRT's top two scores are "
        "within one output step: a tie the runtimes break differently"
    )


def _disagreement(run: dict) -> str:
    if run["differences"]:
        return (
            f"MediaPipe's top-1 differs from LiteRT's on {run['differences']} of "
            f"{run['images']} images by more than a tie"
        )
    return "MediaPipe's category names differ from the class names"


def _notes(section: dict) -> list[str]:
    notes = []
    if section["loaded"] and not section["labels"]:
        notes.append(
            "  the file carries no labels: MediaPipe reports category_name None "
            "(add them with sgt_tfmot.tflite.metadata.add_image_classifier_metadata)"
        )
    if section["scores_in_unit_interval"] is False:
        notes.append("  scores outside [0, 1]: the model ends without a softmax (logits)")
    quantization = section["input_quantization"]
    if section["input_type"] == "UINT8" and quantization is not None:
        if (quantization["scale"], quantization["zero_point"]) != (1.0, 0):
            notes.append(
                f"  MediaPipe feeds pixels 0..255 unchanged; the file's input quantization "
                f"(scale {quantization['scale']:.6g}, zero point {quantization['zero_point']}) "
                "reads pixel p as scale * (p - zero point)"
            )
    return notes


def _first_line(error: Exception) -> str:
    text = str(error).strip()
    return text.splitlines()[0] if text else type(error).__name__
