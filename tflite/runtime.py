"""Running .tflite classifiers with LiteRT (`ai_edge_litert`): float in and float out
(`TFLiteModel`), or raw integers in one of LiteRT's runtimes (`integer_outputs`)."""

from __future__ import annotations

import os

import numpy as np
from ai_edge_litert.interpreter import Interpreter, OpResolverType


class TFLiteModel:
    """A LiteRT interpreter over one .tflite model with one input and one output.

    Quantizes float inputs with the input tensor's scale and zero point, runs the model in
    chunks of its fixed batch size, and dequantizes the outputs, so results compare directly
    with the Keras model's.

    Args:
      model: The flatbuffer bytes, or a path to a .tflite file.
      reference_kernels: Use LiteRT's builtin int8 kernels instead of the XNNPACK delegate
        (`RUNTIMES["builtin"]`; they round some requantizations differently).
    """

    def __init__(self, model: bytes | str | os.PathLike, reference_kernels: bool = False):
        kwargs = {}
        if reference_kernels:
            kwargs["experimental_op_resolver_type"] = (
                OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES
            )
        if isinstance(model, bytes | bytearray):
            self._interpreter = Interpreter(model_content=bytes(model), **kwargs)
        else:
            self._interpreter = Interpreter(model_path=os.fspath(model), **kwargs)
        try:
            self._interpreter.allocate_tensors()
        except RuntimeError as error:
            raise ValueError(_not_prepared(self._interpreter, error)) from None
        inputs = self._interpreter.get_input_details()
        outputs = self._interpreter.get_output_details()
        if len(inputs) != 1 or len(outputs) != 1:
            raise ValueError(
                f"Expected a model with one input and one output; this one has {len(inputs)} "
                f"inputs and {len(outputs)} outputs."
            )
        self.input, self.output = inputs[0], outputs[0]
        self.batch_size = int(self.input["shape"][0])
        self.input_shape = tuple(int(d) for d in self.input["shape"][1:])

    def quantize(self, x: np.ndarray) -> np.ndarray:
        """Float images as the input tensor's integers (scale, zero point, clipped to its
        type); unchanged but cast for a float input."""
        dtype = self.input["dtype"]
        if not np.issubdtype(dtype, np.integer):
            return x.astype(dtype)
        scale, zero_point = self.input["quantization"]
        info = np.iinfo(dtype)
        return np.clip(np.round(x / scale + zero_point), info.min, info.max).astype(dtype)

    def _dequantize(self, y: np.ndarray) -> np.ndarray:
        if not np.issubdtype(y.dtype, np.integer):
            return y.astype(np.float32)
        scale, zero_point = self.output["quantization"]
        return (y.astype(np.float32) - zero_point) * scale

    def predict(self, images: np.ndarray) -> np.ndarray:
        """Outputs (dequantized to float32) for a batch of float images of any length."""
        images = np.asarray(images, dtype=np.float32)
        if images.shape[1:] != self.input_shape:
            raise ValueError(
                f"Images of shape {images.shape[1:]} do not fit the model input {self.input_shape}."
            )
        batch = self.batch_size
        outputs = []
        for start in range(0, len(images), batch):
            chunk = images[start : start + batch]
            valid = len(chunk)
            if valid < batch:  # pad the last chunk to the fixed batch size
                chunk = np.concatenate([chunk, np.repeat(chunk[-1:], batch - valid, axis=0)])
            self._interpreter.set_tensor(self.input["index"], self.quantize(chunk))
            self._interpreter.invoke()
            outputs.append(
                self._dequantize(self._interpreter.get_tensor(self.output["index"]))[:valid]
            )
        return np.concatenate(outputs) if outputs else np.zeros((0,), np.float32)


# LiteRT's default runtime (the XNNPACK delegate), its builtin kernels and its reference
# kernels: they round some requantizations differently, so exactness is checked in each.
RUNTIMES = {
    "xnnpack": {},
    "builtin": {"experimental_op_resolver_type": OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES},
    "reference": {"experimental_op_resolver_type": OpResolverType.BUILTIN_REF},
}


def integer_outputs(flatbuffer: bytes, images: np.ndarray, runtime: str = "xnnpack") -> np.ndarray:
    """The raw outputs of a batch-1 model for already quantized images (one invoke each), in
    one of `RUNTIMES`, 1 thread."""
    interpreter = Interpreter(model_content=flatbuffer, num_threads=1, **RUNTIMES[runtime])
    interpreter.allocate_tensors()
    (source,), (sink,) = interpreter.get_input_details(), interpreter.get_output_details()
    found = []
    for image in images:
        interpreter.set_tensor(source["index"], image[None].astype(source["dtype"]))
        interpreter.invoke()
        found.append(interpreter.get_tensor(sink["index"]).copy())
    return np.concatenate(found)


def _not_prepared(interpreter, error: RuntimeError) -> str:
    """What LiteRT said when it could not prepare a model, in one line, with the smallest
    quantization scale of the model: a runtime refuses an op whose requantization is out
    of its range, which an activation range that collapsed in training causes."""
    said = " ".join(str(error).split())
    scales = [
        (float(scale), detail["name"])
        for detail in interpreter.get_tensor_details()
        for scale in detail["quantization_parameters"]["scales"][:1]
        if detail["dtype"] in (np.int8, np.uint8) and scale > 0
    ]
    hint = ""
    if scales:
        scale, name = min(scales)
        hint = (
            f"; the model's smallest int8 scale is {scale:.3g} (tensor {name!r}, a range of "
            f"{255 * scale:.3g}): a range that small usually means an activation's range or "
            "PACT α collapsed in training (see the run's alpha.json)"
        )
    return f"LiteRT could not prepare the converted model ({said}){hint}."
