"""A user's own model file as the model to train, and the checks of a classifier."""

from __future__ import annotations

import numpy as np

from sgt_tfmot._checks import InputError
from sgt_tfmot._graph import AUGMENTATION_LAYERS
from sgt_tfmot.heads import check_head
from sgt_tfmot.keras import keras

MODEL_FILE_SUFFIXES = (".h5", ".keras")

__all__ = [
    "MODEL_FILE_SUFFIXES",
    "check_classifier",
    "copy_weights",
    "is_model_file",
    "model_from_file",
    "with_channel_axis",
    "without_augmentation",
]


def is_model_file(name: str) -> bool:
    """True when `name` names a saved model file (.h5 / .keras) rather than a builder."""
    return isinstance(name, str) and name.endswith(MODEL_FILE_SUFFIXES)


def model_from_file(path, input_shape, num_classes, trust_code) -> keras.Model:
    """The float classifier in `path`, checked against the data, its layers under Keras's
    global precision policy like a built-in model's (`sgt_tfmot.saving.with_policy`)."""
    from sgt_tfmot import saving
    from sgt_tfmot.export import is_quantized

    model = saving.load_model(path, trust_code=trust_code)
    if is_quantized(model):
        raise InputError(
            f"--model {path} is already a QAT model; pass its float model (or train it "
            "further with the Keras API: sgt_tfmot.load_model and fit)."
        )
    model = with_channel_axis(model, f"--model {path}")
    check_classifier(model, f"--model {path}", input_shape, num_classes)
    return saving.with_policy(model)


def with_channel_axis(model: keras.Model, what: str) -> keras.Model:
    """`model` itself, or, when it takes (batch, H, W) images without a channel axis (TFMOT's
    tutorial model: a `Reshape` to (H, W, 1) first), the same layers and weights rebuilt
    with input (batch, H, W, 1), the one-channel images the tools give.

    The rebuilt model is checked: every weight fits its layer, and it computes the same
    outputs as `model` on random images (within 1e-5 of their size).

    Raises:
      InputError: naming `what` and the layer that does not take the channel axis (its
        weights no longer fit, or it cannot be built on it), or the outputs that differ.
    """
    from sgt_tfmot import saving

    if len(model.inputs) != 1 or len(model.inputs[0].shape) != 3:
        return model
    shape = tuple(model.inputs[0].shape)
    if None in shape[1:]:
        return model  # check_classifier names it: no fixed image size
    height, width = shape[1:]
    refused = (
        f"{what}: the model takes ({height}, {width}) images without a channel axis; the "
        f"tools give ({height}, {width}, 1) and the model rebuilt on them"
    )
    config = _with_channel(model.get_config(), [None, height, width])
    try:
        rebuilt = saving.from_own_config(model, config)
    except (ValueError, TypeError) as error:
        first = str(error).strip().splitlines()[0]
        raise InputError(f"{refused} cannot be built ({first}).") from None
    for layer in model.layers:
        try:
            rebuilt.get_layer(layer.name).set_weights(layer.get_weights())
        except ValueError:
            raise InputError(
                f"{refused} does not take the weights of layer {layer.name!r} "
                f"({type(layer).__name__}): give the model a ({height}, {width}, 1) input."
            ) from None
    images = np.random.default_rng(0).uniform(0, 255, (2, height, width)).astype(np.float32)
    expected = np.asarray(model(images, training=False))
    found = np.asarray(rebuilt(images[..., np.newaxis], training=False))
    difference = float(np.abs(found - expected).max())
    if difference > 1e-5 * max(1.0, float(np.abs(expected).max())):
        raise InputError(
            f"{refused} computes other outputs (up to {difference:.3g} apart): give the model "
            f"a ({height}, {width}, 1) input."
        )
    return rebuilt


def _is_augmentation(layer) -> bool:
    """A layer of `AUGMENTATION_LAYERS`, or a nested model made of them only."""
    if isinstance(layer, keras.Model):
        inner = [x for x in layer.layers if not isinstance(x, keras.layers.InputLayer)]
        return bool(inner) and all(_is_augmentation(x) for x in inner)
    return type(layer).__name__ in AUGMENTATION_LAYERS


def without_augmentation(model: keras.Model, what: str) -> tuple[keras.Model, list[str]]:
    """`model` without its data-augmentation layers (`AUGMENTATION_LAYERS`, and nested models
    of them only), and the names of the layers taken out.

    Those layers are the identity at inference, so the model computes the same without them
    (checked on random images); they cannot be quantized, and under Saliency-Guided Training
    each of the step's forward passes would draw another augmentation. A training run
    augments its batches itself (`--augment`). A model without such layers is returned as
    it is.

    Raises:
      InputError: naming `what` and the layer, when an augmentation layer is called more
        than once or on more than one tensor, or the model without them computes other
        outputs.
    """
    from sgt_tfmot import saving

    removed = [layer.name for layer in model.layers if _is_augmentation(layer)]
    if not removed:
        return model, []
    if isinstance(model, keras.Sequential):
        kept = [layer for layer in model.layers if layer.name not in removed]
        rebuilt = keras.Sequential(
            [keras.Input(model.input_shape[1:], dtype=model.inputs[0].dtype), *kept],
            name=model.name,
        )
    else:
        config = model.get_config()
        source = {}  # removed layer -> the tensor it takes
        for entry in config["layers"]:
            if entry["name"] in removed:
                nodes = entry["inbound_nodes"]
                if len(nodes) != 1 or len(nodes[0]) != 1:
                    raise InputError(
                        f"{what}: the data-augmentation layer {entry['name']!r} is called "
                        f"{len(nodes)} times or on several tensors; take it out of the model "
                        "(train augments the images itself: --augment)."
                    )
                source[entry["name"]] = nodes[0][0][:3]

        def resolve(reference):
            while reference[0] in source:
                reference = source[reference[0]]
            return reference

        layers = []
        for entry in config["layers"]:
            if entry["name"] in removed:
                continue
            nodes = [
                [[*resolve(ref[:3]), *ref[3:]] for ref in node] for node in entry["inbound_nodes"]
            ]
            layers.append({**entry, "inbound_nodes": nodes})
        outputs = [resolve(ref) for ref in config["output_layers"]]
        rebuilt = saving.from_own_config(
            model, {**config, "layers": layers, "output_layers": outputs}
        )
        for layer in rebuilt.layers:
            layer.set_weights(model.get_layer(layer.name).get_weights())
    shape = tuple(model.inputs[0].shape[1:])
    images = np.random.default_rng(0).uniform(0, 255, (2, *shape)).astype(np.float32)
    expected = np.asarray(model(images, training=False), np.float32)
    found = np.asarray(rebuilt(images, training=False), np.float32)
    difference = float(np.abs(found - expected).max())
    if difference > 1e-5 * max(1.0, float(np.abs(expected).max())):
        raise InputError(
            f"{what}: without its data-augmentation layers ({', '.join(removed)}) the model "
            f"computes other outputs (up to {difference:.3g} apart); take them out of the "
            "model yourself (train augments the images itself: --augment)."
        )
    return rebuilt, removed


_SHAPE_KEYS = ("batch_input_shape", "build_input_shape", "input_shape", "batch_shape")


def _with_channel(value, shape: list):
    """A model config with every input shape `shape` (batch, H, W) given a channel axis."""
    if isinstance(value, dict):
        return {
            key: [*shape, 1]
            if key in _SHAPE_KEYS and isinstance(item, list | tuple) and list(item) == shape
            else _with_channel(item, shape)
            for key, item in value.items()
        }
    if isinstance(value, list):
        return [_with_channel(item, shape) for item in value]
    return value


def check_classifier(
    model: keras.Model, what: str, input_shape=None, num_classes: int | None = None
) -> tuple[tuple[int, ...], int]:
    """(image shape, classes) of a one-input image classifier, checked against the data.

    Raises:
        InputError: naming `what` when the model is not a (batch, H, W, C) -> (batch, C)
            classifier with logits or a softmax (`sgt_tfmot.heads.check_head`), or does not
            fit `input_shape` / `num_classes`.
    """
    if len(model.inputs) != 1 or len(model.outputs) != 1:
        raise InputError(
            f"{what}: expected a classifier with one input and one output; the model has "
            f"{len(model.inputs)} inputs and {len(model.outputs)} outputs."
        )
    image_shape = tuple(model.inputs[0].shape[1:])
    output_shape = tuple(model.outputs[0].shape)
    if len(image_shape) != 3 or None in image_shape:
        raise InputError(
            f"{what}: expected an image classifier with input (batch, height, width, "
            f"channels); the model's input is {tuple(model.inputs[0].shape)}."
        )
    if len(output_shape) != 2 or output_shape[-1] is None or output_shape[-1] < 2:
        raise InputError(
            f"{what}: the model is not a classifier: its output has shape {output_shape}, "
            "expected (batch, num_classes) with num_classes >= 2."
        )
    if input_shape is not None and image_shape != tuple(input_shape):
        raise InputError(
            f"{what}: the model's input shape {image_shape} does not fit the images "
            f"{tuple(input_shape)} of the data."
        )
    if num_classes is not None and output_shape[-1] != num_classes:
        raise InputError(
            f"{what}: the model has {output_shape[-1]} outputs but the data has "
            f"{num_classes} classes."
        )
    check_head(model, what)
    return image_shape, int(output_shape[-1])


def copy_weights(source: keras.Model, target: keras.Model, what: str) -> None:
    """Copies a trained model's float weights into `target`, the same architecture.

    `source` is a float model (its weighted layers in order, as `target`'s), or a QAT model:
    TFMOT's wrappers hold the float kernels and biases the quantizers read, so each weighted
    layer of `target` takes the variables of the same names (kernel, bias, ...) of the
    wrapped layer of its name, and the quantizers' state (α, ranges, steps) stays behind.
    That starts a lower bit width from a trained higher one (W2A2 from W4A4).

    Raises:
        InputError: naming `what` when the layers and weight shapes differ from `target`'s
            (the first difference is named).
    """
    from sgt_tfmot.export import is_quantized

    if is_quantized(source):
        layers = [layer for layer in target.layers if layer.weights]
        values = _qat_float_weights(source, layers, what)
    else:
        mine, theirs = _signature(target), _signature(source)
        if mine != theirs:
            index = next((i for i, (a, b) in enumerate(zip(mine, theirs, strict=False))
                          if a != b), min(len(mine), len(theirs)))  # fmt: skip
            got = theirs[index] if index < len(theirs) else "nothing"
            wanted = mine[index] if index < len(mine) else "nothing"
            raise InputError(
                f"{what} has another architecture than the model being trained: its weighted "
                f"layer #{index} is {got}, expected {wanted}."
            )
        values = source.get_weights()
    target.set_weights(values)


def _signature(model: keras.Model) -> list[tuple]:
    """(class, weight shapes) of each weighted layer, in order."""
    return [(type(layer).__name__, tuple(tuple(w.shape) for w in layer.weights))
            for layer in model.layers if layer.weights]  # fmt: skip


def _qat_float_weights(model: keras.Model, layers, what: str) -> list:
    """The float weights of a QAT model for `layers` (a float model's weighted layers):
    each layer's variables, by name, from the wrapper of the layer of its name."""
    held = {}
    for layer in model.layers:
        inner = getattr(layer, "layer", None) if hasattr(layer, "quantize_config") else None
        held[(inner or layer).name] = {_variable_name(w): w for w in layer.weights}
    values = []
    for layer in layers:
        variables = held.get(layer.name)
        if variables is None:
            raise InputError(
                f"{what} has another architecture than the model being trained: it has no "
                f"layer {layer.name!r} ({type(layer).__name__})."
            )
        for weight in layer.weights:
            found = variables.get(_variable_name(weight))
            if found is None or tuple(found.shape) != tuple(weight.shape):
                shape = "no such variable" if found is None else f"shape {tuple(found.shape)}"
                raise InputError(
                    f"{what} has another architecture than the model being trained: its "
                    f"layer {layer.name!r} holds {_variable_name(weight)!r} with {shape}, "
                    f"expected {tuple(weight.shape)}."
                )
            values.append(found.numpy())
    return values


def _variable_name(variable) -> str:
    """The variable's own name: "kernel" of "quant_conv1/kernel:0"."""
    return variable.name.rsplit("/", 1)[-1].split(":")[0]
