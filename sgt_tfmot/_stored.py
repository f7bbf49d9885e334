"""What a Keras model file stores, checked before any of its arrays is read (`sgt_tfmot.saving`).

A model file says what it holds: an HDF5 dataset has a shape and a dtype that h5py reads
without reading the data, and a zip member has a declared size. A hostile or damaged file can
claim anything (a 16 kB `.h5` whose kernel claims 10^13 floats, chunked, compressed and never
written, reads as 36.4 TiB of zeros), so `check_stored_weights` compares every weight the
loader will read with the weight the layer built from the file's config expects, and with
what the file really stores, before the loader reads anything:

* each weight's stored shape is the shape its layer expects (the layers matched as Keras
  matches them: by order in an `.h5`, by the object path of its weights store in a `.keras`);
* each dataset's bytes are stored in the file itself (`sgt_tfmot._files.check_claim`:
  compressed data may expand at most as deflate can), and no dataset or group is a link to
  another file, an external raw file or a virtual dataset;
* zip members (`config.json`, `model.weights.h5`) are no larger than deflate allows.
"""

from __future__ import annotations

import math
import zipfile
from pathlib import Path

from sgt_tfmot._checks import InputError
from sgt_tfmot._files import check_claim
from sgt_tfmot.keras import keras

__all__ = [
    "StoredWeightsError",
    "check_storage",
    "check_stored_weights",
    "check_zip_member",
    "read_dataset",
]

WEIGHTS_MEMBER = "model.weights.h5"  # the weights of a tf_keras .keras zip


class StoredWeightsError(InputError):
    """A model file whose stored weights are not those of the model its config describes."""


def check_zip_member(archive: zipfile.ZipFile, name: str, file: Path) -> zipfile.ZipInfo:
    """The member `name` of a .keras zip, its declared size checked before it is read."""
    info = archive.getinfo(name)
    what = f"{file} member {name}"
    check_claim(info.compress_size, file.stat().st_size, what)
    check_claim(info.file_size, info.compress_size, what,
                compressed=info.compress_type != zipfile.ZIP_STORED)  # fmt: skip
    return info


def check_stored_weights(file: Path, model: keras.Model) -> None:
    """Refuses `file` unless every weight the loader reads is what `model`'s layers expect.

    Args:
      file: The .h5 or .keras file.
      model: The model built from the file's config (no weights read yet).

    Raises:
      StoredWeightsError (an InputError): naming the file, the layer, the weight, the stored
        and the expected shape, or what the file does not store.
    """
    import h5py

    if file.suffix == ".keras":
        with zipfile.ZipFile(file) as archive:
            check_zip_member(archive, WEIGHTS_MEMBER, file)
            with archive.open(WEIGHTS_MEMBER) as member, h5py.File(member, "r") as handle:
                _check_keras_store(handle, model, f"{file} ({WEIGHTS_MEMBER})")
        return
    with h5py.File(file, "r") as handle:
        group = handle["model_weights"] if "model_weights" in handle else handle
        _check_h5_layers(group, model, str(file))


def _names(group, attribute: str) -> list[str]:
    """A list-of-names attribute of an .h5 group, also when Keras split it in chunks."""
    if attribute in group.attrs:
        values = list(group.attrs[attribute])
    else:
        values, chunk = [], 0
        while f"{attribute}{chunk}" in group.attrs:
            values.extend(group.attrs[f"{attribute}{chunk}"])
            chunk += 1
    return [v.decode("utf8") if isinstance(v, bytes) else str(v) for v in values]


def _legacy_weights(layer) -> list:
    return layer.trainable_weights + layer.non_trainable_weights


def _check_h5_layers(group, model: keras.Model, where: str) -> None:
    """The legacy .h5 layout: layers with weights, matched in order (as Keras loads them)."""
    layers = [layer for layer in model.layers if _legacy_weights(layer)]
    stored = [(name, _names(_member(group, name, where), "weight_names"))
              for name in _names(group, "layer_names")]  # fmt: skip
    stored = [(name, weights) for name, weights in stored if weights]
    if len(stored) != len(layers):
        raise StoredWeightsError(
            f"{where} stores weights for {len(stored)} layers, but the model its config "
            f"describes has {len(layers)} layers with weights; nothing was read."
        )
    for (name, weight_names), layer in zip(stored, layers, strict=True):
        expected = [tuple(w.shape) for w in _legacy_weights(layer)]
        datasets = [_member(group[name], weight, where) for weight in weight_names]
        _compare(datasets, weight_names, expected, f"{where}: layer {layer.name!r}")
    if "top_level_model_weights" in group:
        top = group["top_level_model_weights"]
        names = _names(top, "weight_names")
        expected = [tuple(w.shape) for w in model._trainable_weights + model._non_trainable_weights]
        _compare([_member(top, n, where) for n in names], names, expected, f"{where}: the model")


def _check_keras_store(handle, model: keras.Model, where: str) -> None:
    """The .keras layout: `PATH/vars/I` for the I-th variable of the object at PATH, PATH
    as Keras's own saving walk gives it (recorded without writing anything)."""
    names = _layer_paths(model)
    for path, shapes in _expected_store(model).items():
        group_path = f"{path}/vars" if path else "vars"
        owner = names.get(path.split("/")[1] if path.startswith("layers/") else "", path)
        what = f"{where}: layer {owner!r}" if owner != path else f"{where}: {path or 'the model'}"
        if not shapes:
            continue
        if group_path not in handle:
            raise StoredWeightsError(
                f"{what} has no stored weights ({group_path} is missing); nothing was read."
            )
        group = _member(handle, group_path, where)
        keys = [str(i) for i in range(len(shapes))]
        _compare([_member(group, key, where) for key in keys if key in group], keys, shapes,
                 what)  # fmt: skip


def _layer_paths(model: keras.Model) -> dict[str, str]:
    """Name under `layers/` in a .keras weights store -> the layer's name (Keras names each
    layer of the list by its class in snake case, numbered from the second on)."""
    snake = keras.src.utils.generic_utils.to_snake_case
    used, found = {}, {}
    for layer in model.layers:
        name = snake(type(layer).__name__)
        if name in used:
            used[name] += 1
            name = f"{name}_{used[name]}"
        else:
            used[name] = 0
        found[name] = layer.name
    return found


class _Recorder:
    """A weights store for Keras's saving walk that keeps each variable's shape only."""

    def __init__(self):
        self.shapes: dict[str, list] = {}

    def make(self, path: str):
        recorder = self

        class Store(dict):
            def __setitem__(self, key, value):
                recorder.shapes.setdefault(path, []).append((int(key), tuple(value.shape)))

        self.shapes.setdefault(path, [])
        return Store()


def _expected_store(model: keras.Model) -> dict[str, list[tuple]]:
    """Object path -> the shapes of its variables, in order, as Keras would save `model`."""
    recorder = _Recorder()
    keras.src.saving.saving_lib._save_state(
        model, weights_store=recorder, assets_store=None, inner_path="", visited_trackables=set()
    )
    return {path: [shape for _, shape in sorted(items)] for path, items in recorder.shapes.items()}


def _member(group, path: str, where: str):
    """`group[path]`, following hard and soft links only (never into another file)."""
    import h5py

    node = group
    for part in path.split("/"):
        link = node.get(part, getlink=True)
        if link is None:
            raise StoredWeightsError(f"{where}: {path} is missing; nothing was read.")
        if isinstance(link, h5py.ExternalLink):
            raise StoredWeightsError(
                f"{where}: {path} links to another file ({link.filename}); a model file must "
                "hold its own weights. Nothing was read."
            )
        node = node[part]
    return node


def _compare(datasets, names, expected, what: str) -> None:
    if len(datasets) != len(expected):
        raise StoredWeightsError(
            f"{what} stores {len(datasets)} weights, the layer expects {len(expected)}; "
            "nothing was read."
        )
    for dataset, name, shape in zip(datasets, names, expected, strict=True):
        stored = tuple(getattr(dataset, "shape", ()) or ())
        if not hasattr(dataset, "shape") or stored != shape:
            raise StoredWeightsError(
                f"{what} weight {name} is stored with shape {stored}, the layer expects "
                f"{shape}; nothing was read."
            )
        check_storage(dataset, f"{what} weight {name}")


def check_storage(dataset, what: str) -> None:
    """The dataset's bytes are in the file: no external or virtual storage, and no more data
    claimed than stored (compressed chunks: as deflate allows)."""
    if dataset.is_virtual or dataset.external:
        raise StoredWeightsError(
            f"{what} is stored outside the file (a virtual or external dataset); nothing was read."
        )
    claimed = math.prod(dataset.shape) * dataset.dtype.itemsize
    filtered = dataset.id.get_create_plist().get_nfilters() > 0
    check_claim(claimed, dataset.id.get_storage_size(), what, compressed=filtered)


def read_dataset(dataset, what: str):
    """The array of an HDF5 dataset, read only after `check_storage` (for readers that check
    shapes after reading, as `sgt_tfmot.keras3` does)."""
    import numpy as np

    check_storage(dataset, what)
    return np.asarray(dataset)
