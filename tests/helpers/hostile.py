"""Files a hostile (or just broken) source would hand the tools (tests/test_bad_input.py,
tests/test_stored_files.py), and the small models they are made from.

Every maker writes one file (or folder) and returns its path. Where loading the file the
unsafe way would run code, the code writes `marker`, so a test sees that it never ran.
"""

import io
import json
import shutil
import struct
import zipfile
import zlib
from pathlib import Path

import numpy as np

from sgt_tfmot.keras import keras

KEYS = ("x_train", "y_train", "x_test", "y_test")


def npy(array: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    np.save(buffer, array, allow_pickle=True)
    return buffer.getvalue()


def npy_claiming(shape, descr: str = "|u1", data: bytes = b"\0" * 16) -> bytes:
    """An .npy member whose header claims `shape` but which holds only `data`."""
    buffer = io.BytesIO()
    header = {"descr": descr, "fortran_order": False, "shape": tuple(shape)}
    np.lib.format.write_array_header_1_0(buffer, header)
    return buffer.getvalue() + data


def small_dataset() -> dict[str, np.ndarray]:
    rng = np.random.default_rng(0)
    return {
        "x_train": rng.integers(0, 256, (8, 28, 28), dtype=np.uint8),
        "y_train": np.arange(8) % 2,
        "x_test": rng.integers(0, 256, (4, 28, 28), dtype=np.uint8),
        "y_test": np.arange(4) % 2,
    }


def npz_with(path: Path, members: dict[str, bytes]) -> Path:
    """An .npz (a stored zip) holding the small dataset with `members` in place of some."""
    with zipfile.ZipFile(path, "w") as archive:
        for key, array in small_dataset().items():
            archive.writestr(f"{key}.npy", members.get(key, npy(array)))
        for key in set(members) - set(KEYS):
            archive.writestr(f"{key}.npy", members[key])
    return path


class Trojan:
    """Unpickling it creates the file `marker` (pickle calls open(marker, "w"))."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return open, (self.marker, "w")


def pickled_npz(path: Path, marker: Path) -> Path:
    """An .npz whose labels are a pickled object array: loading it with pickle runs code."""
    trojans = np.empty(8, dtype=object)
    trojans[:] = [Trojan(marker) for _ in range(8)]
    return npz_with(path, {"y_train": npy(trojans)})


def bomb_npz(path: Path) -> Path:
    """An .npz whose x_train header claims 10^13 uint8 elements (9.09 TiB) in 16 bytes."""
    return npz_with(path, {"x_train": npy_claiming((10**13, 1, 1))})


def npy_as_npz(path: Path) -> Path:
    """One array written with np.save under an .npz name."""
    np.save(path.with_suffix(".tmp.npy"), small_dataset()["x_train"])
    path.with_suffix(".tmp.npy").rename(path)
    return path


def pickle_as_npz(path: Path, marker: Path) -> Path:
    """A Python pickle of a dict of arrays under an .npz name; unpickling runs code."""
    import pickle

    path.write_bytes(pickle.dumps({"x_train": Trojan(marker)}))
    return path


def wrong_rank_npz(path: Path) -> Path:
    """x_train of rank 2: (8, 784) flattened digits."""
    return npz_with(path, {"x_train": npy(small_dataset()["x_train"].reshape(8, -1))})


def truncated(source: Path, path: Path) -> Path:
    data = source.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    return path


HUGE = (10**7, 10**6)  # 10^13 float32 values, 36.4 TiB: chunked, compressed, never written


def _never_written(group, name: str) -> None:
    del group[name]
    group.create_dataset(name, shape=HUGE, dtype="float32", chunks=(1, 1024), compression="gzip")


def h5_bomb(source: Path, path: Path, dataset: str) -> Path:
    """A copy of the .h5 model `source` whose `dataset` claims 36.4 TiB (stored: nothing)."""
    import h5py

    shutil.copyfile(source, path)
    with h5py.File(path, "r+") as handle:
        parent, _, name = dataset.rpartition("/")
        _never_written(handle[parent], name)
    return path


def _rewrite_keras(source: Path, path: Path, config=None, weights=None) -> Path:
    """A copy of the .keras zip `source` with another config.json and/or model.weights.h5."""
    with zipfile.ZipFile(source) as archive:
        members = {name: archive.read(name) for name in archive.namelist()}
    if config is not None:
        members["config.json"] = json.dumps(config(json.loads(members["config.json"]))).encode()
    if weights is not None:
        members["model.weights.h5"] = weights(members["model.weights.h5"])
    with zipfile.ZipFile(path, "w") as archive:
        for name, data in members.items():
            archive.writestr(name, data)
    return path


def keras_bomb(source: Path, path: Path, dataset: str) -> Path:
    """A copy of the .keras model `source` whose weight `dataset` claims 36.4 TiB."""
    import h5py

    def bomb(data: bytes) -> bytes:
        buffer = io.BytesIO(data)
        with h5py.File(buffer, "r+") as handle:
            parent, _, name = dataset.rpartition("/")
            _never_written(handle[parent], name)
        return buffer.getvalue()

    return _rewrite_keras(source, path, weights=bomb)


def _layer(config: dict, name: str) -> dict:
    return next(layer for layer in config["config"]["layers"] if layer["config"]["name"] == name)


def keras_naming_function(source: Path, path: Path, layer: str) -> Path:
    """A .keras whose layer `layer` has the activation os.system (a module function)."""

    def edit(config):
        _layer(config, layer)["config"]["activation"] = {
            "module": "os", "class_name": "function", "config": "system",
            "registered_name": "function",
        }  # fmt: skip
        return config

    return _rewrite_keras(source, path, config=edit)


def keras_naming_class(source: Path, path: Path, layer: str) -> Path:
    """A .keras whose layer `layer` is of an unregistered class from an outside module, with
    a long config (as a real custom layer has)."""

    def edit(config):
        entry = _layer(config, layer)
        entry.update(module="payload.layers", class_name="Payload", registered_name="Payload")
        entry["config"]["notes"] = ["x" * 60] * 30  # the whole config is about 2 kB
        return config

    return _rewrite_keras(source, path, config=edit)


def image_folder_with_a_corrupt_file(root: Path) -> Path:
    """train/ and test/ with two classes of 8x8 PNGs; one training file is not an image."""
    import PIL.Image

    for split in ("train", "test"):
        for label in ("a", "b"):
            folder = root / split / label
            folder.mkdir(parents=True)
            for i in range(2):
                PIL.Image.new("L", (8, 8), 40 * i).save(folder / f"{i}.png")
    (root / "train" / "a" / "broken.png").write_bytes(b"\x89PNG but nothing after")
    return root


def image_folder_with_a_png_bomb(root: Path) -> Path:
    """train/ and test/ with two classes of 8x8 PNGs, and train/a/bomb.png: a 2 kB PNG whose
    header says 60000x60000 RGB (10.8 GB decoded; its deflate stream stops after 10 rows)."""
    import PIL.Image

    for split in ("train", "test"):
        for label in ("a", "b"):
            folder = root / split / label
            folder.mkdir(parents=True)
            for i in range(2):
                PIL.Image.new("L", (8, 8), 40 * i).save(folder / f"{i}.png")
    side = 60_000
    rows = zlib.compress(b"\0" * (1 + 3 * side) * 10, 9)
    header = struct.pack(">IIBBBBB", side, side, 8, 2, 0, 0, 0)  # 8 bits, RGB
    (root / "train" / "a" / "bomb.png").write_bytes(
        b"\x89PNG\r\n\x1a\n" + _png_chunk(b"IHDR", header) + _png_chunk(b"IDAT", rows)
        + _png_chunk(b"IEND", b"")
    )  # fmt: skip
    return root


def _png_chunk(kind: bytes, payload: bytes) -> bytes:
    crc = zlib.crc32(kind + payload) & 0xFFFFFFFF
    return struct.pack(">I", len(payload)) + kind + payload + struct.pack(">I", crc)


def lambda_model(path, marker):
    """A float classifier whose Lambda layer writes `marker` whenever it runs."""
    inputs = keras.Input((28, 28, 1))
    hidden = keras.layers.Lambda(
        lambda x, m=str(marker): (open(m, "w").write("ran"), x)[1], name="trojan"
    )(inputs)
    outputs = keras.layers.Dense(10)(keras.layers.Flatten()(hidden))
    keras.Model(inputs, outputs).save(path)
    if marker.exists():
        marker.unlink()  # saving traced the lambda; only loading counts here
    return path


def tiny_model(layer=None, channels=1, size=28):
    """A float `size` x `size` classifier: conv, ReLU, (`layer`), flatten, logits."""
    inputs = keras.Input((size, size, channels))
    x = keras.layers.ReLU(name="relu")(keras.layers.Conv2D(4, 3, name="conv")(inputs))
    if layer is not None:
        x = layer(x)
    outputs = keras.layers.Dense(10, name="logits")(keras.layers.Flatten()(x))
    return keras.Model(inputs, outputs)


def rgb_tflite(path):
    """A float .tflite of a 32x32 three-channel model (explained on the 28x28 one-channel
    mnist_subset: LiteRT opens it, and logs, before the shapes are compared)."""
    from sgt_tfmot.tflite.converter import float_tflite

    path.write_bytes(float_tflite(tiny_model(channels=3, size=32)))
    return path
