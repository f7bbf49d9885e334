"""Files checked before they are trusted: .npz members (data.npz) and the weights stored in
model files (sgt_tfmot._stored), beyond the rows of tests/test_bad_input.py."""

import shutil
import zipfile

import h5py
import numpy as np
import pytest

from sgt_tfmot import quantize_model, quantize_scope, saving
from sgt_tfmot.data import DataError
from sgt_tfmot.data.npz import read_npz
from sgt_tfmot.keras import keras
from tests.helpers import hostile
from tests.helpers.hostile import tiny_model
from tests.helpers.models import residual_model

X = np.random.default_rng(0).uniform(0, 255, (3, 28, 28, 1)).astype(np.float32)


# ----------------------------------------------------------------------------- .npz
def test_a_compressed_npz_reads_as_numpy_reads_it(tmp_path):
    arrays = hostile.small_dataset()
    arrays["x_train"] = np.asfortranarray(arrays["x_train"])  # a Fortran-order member too
    np.savez_compressed(tmp_path / "d.npz", labels=np.array(["cat", "dog"]), **arrays)
    read = read_npz(tmp_path / "d.npz")
    with np.load(tmp_path / "d.npz") as reference:
        np.testing.assert_array_equal(read.x_train[..., 0], reference["x_train"])
        np.testing.assert_array_equal(read.y_test, reference["y_test"])
    assert read.class_names == ("cat", "dog")


def test_a_member_claiming_more_than_it_holds_is_refused_unread(tmp_path):
    data = hostile.npy(hostile.small_dataset()["x_train"])  # (8, 28, 28) uint8
    claiming = hostile.npy_claiming((100, 28, 28), data=data[128:])  # header for 100 images
    hostile.npz_with(tmp_path / "d.npz", {"x_train": claiming})
    claim = r"x_train.npy \(shape \(100, 28, 28\), uint8\) claims 76.6 KiB \(78,400 bytes\)"
    with pytest.raises(DataError, match=claim + " but only 6.12 KiB are stored in the file"):
        read_npz(tmp_path / "d.npz")


def test_class_names_stored_as_objects_are_never_unpickled(tmp_path):
    marker = tmp_path / "ran"
    names = np.empty(2, dtype=object)
    names[:] = [hostile.Trojan(marker), "dog"]
    hostile.npz_with(tmp_path / "d.npz", {"labels": hostile.npy(names)})
    with pytest.raises(DataError, match="member labels.npy holds Python objects"):
        read_npz(tmp_path / "d.npz")
    assert not marker.exists()


def test_other_members_are_never_read(tmp_path):
    """Only the dataset's keys are read: a bomb under another name changes nothing."""
    hostile.npz_with(tmp_path / "d.npz", {"extra": hostile.npy_claiming((10**13,))})
    assert read_npz(tmp_path / "d.npz").x_train.shape == (8, 28, 28, 1)


# ----------------------------------------------------------------------------- model files
@pytest.fixture(scope="module")
def tiny_files(tmp_path_factory):
    """A float and a QAT model, each saved as .h5 and .keras."""
    root = tmp_path_factory.mktemp("models")
    model = tiny_model()
    model.save(root / "tiny.h5")
    model.save(root / "tiny.keras")
    qat = quantize_model(residual_model((28, 28, 1), 10))
    saving.save_model(qat, root / "qat.h5")
    saving.save_model(qat, root / "qat.keras")
    return root, model


def _replace(path, name, make):
    with h5py.File(path, "r+") as handle:
        parent, _, leaf = name.rpartition("/")
        del handle[parent][leaf]
        make(handle[parent], leaf)


KERNEL = "model_weights/logits/logits/kernel:0"  # (2704, 10) float32


def test_a_weight_of_the_right_shape_that_was_never_written_is_refused(tiny_files, tmp_path):
    path = tmp_path / "m.h5"
    shutil.copyfile(tiny_files[0] / "tiny.h5", path)
    _replace(path, KERNEL, lambda group, name: group.create_dataset(
        name, shape=(2704, 10), dtype="float32", chunks=(16, 10), compression="gzip"))  # fmt: skip
    with pytest.raises(saving.ModelFileError,
                       match=r"layer 'logits' weight logits/kernel:0 claims 106 KiB \(108,160 "
                             r"bytes\) but only 0 bytes are compressed in the file"):  # fmt: skip
        saving.load_model(path)


def test_weights_in_another_file_are_refused(tiny_files, tmp_path):
    path, other = tmp_path / "m.h5", tmp_path / "other.h5"
    shutil.copyfile(tiny_files[0] / "tiny.h5", path)
    with h5py.File(other, "w") as handle:
        handle["kernel"] = np.zeros((2704, 10), np.float32)
    _replace(path, KERNEL, lambda group, name: group.__setitem__(
        name, h5py.ExternalLink(str(other), "kernel")))  # fmt: skip
    with pytest.raises(saving.ModelFileError, match="links to another file"):
        saving.load_model(path)
    raw = tmp_path / "raw.bin"
    raw.write_bytes(b"\0" * 108160)
    _replace(path, KERNEL, lambda group, name: group.create_dataset(
        name, shape=(2704, 10), dtype="float32", external=[(str(raw), 0, 108160)]))  # fmt: skip
    with pytest.raises(saving.ModelFileError, match="is stored outside the file"):
        saving.load_model(path)


def test_a_missing_weight_is_named(tiny_files, tmp_path):
    path = tmp_path / "m.h5"
    shutil.copyfile(tiny_files[0] / "tiny.h5", path)
    with h5py.File(path, "r+") as handle:
        handle["model_weights/logits"].attrs["weight_names"] = [b"logits/kernel:0"]
    with pytest.raises(saving.ModelFileError,
                       match="layer 'logits' stores 1 weights, the layer expects 2"):  # fmt: skip
        saving.load_model(path)


def test_a_keras_file_missing_a_layers_weights_is_named(tiny_files, tmp_path):
    def drop(data):
        import io

        buffer = io.BytesIO(data)
        with h5py.File(buffer, "r+") as handle:
            del handle["layers/dense/vars"]
        return buffer.getvalue()

    path = hostile._rewrite_keras(tiny_files[0] / "tiny.keras", tmp_path / "m.keras",
                                  weights=drop)  # fmt: skip
    with pytest.raises(saving.ModelFileError,
                       match=r"layer 'logits' has no stored weights \(layers/dense/vars is "
                             r"missing\)"):  # fmt: skip
        saving.load_model(path)


@pytest.mark.parametrize("name", ["tiny.h5", "tiny.keras", "qat.h5", "qat.keras"])
def test_checked_loading_gives_keras_own_model(tiny_files, name):
    """The same weights and outputs as keras.models.load_model, float and QAT; with
    compile=True Keras's own loader runs after the checks."""
    path = tiny_files[0] / name
    with quantize_scope():
        reference = keras.models.load_model(path, compile=False)
    loaded = saving.load_model(path, compile=name == "tiny.h5")
    assert len(loaded.get_weights()) == len(reference.get_weights())
    for a, b in zip(loaded.get_weights(), reference.get_weights(), strict=True):
        np.testing.assert_array_equal(a, b)
    np.testing.assert_array_equal(loaded.predict(X, verbose=0), reference.predict(X, verbose=0))


def test_a_keras_config_member_claiming_more_than_deflate_allows_is_refused(tiny_files, tmp_path):
    path = tmp_path / "m.keras"
    shutil.copyfile(tiny_files[0] / "tiny.keras", path)
    with zipfile.ZipFile(path) as archive:
        info = archive.getinfo("config.json")
    data = bytearray(path.read_bytes())
    # The central directory's uncompressed size of config.json: 2^31 bytes, stored 1:1.
    central = data.rindex(b"PK\x01\x02", 0, data.rindex(b"config.json"))
    data[central + 24 : central + 28] = (2**31).to_bytes(4, "little")
    path.write_bytes(bytes(data))
    assert info.compress_type == zipfile.ZIP_STORED
    with pytest.raises(saving.ModelFileError, match="member config.json claims 2 GiB"):
        saving.load_model(path)


def test_a_keras3_file_claiming_more_than_it_stores_is_refused_unread(tmp_path):
    """A .keras that says Keras 3 wrote it is read as data (sgt_tfmot.keras3): its weights
    are checked against what the file stores before they are read too."""
    import io
    import json

    buffer = io.BytesIO()
    with h5py.File(buffer, "w") as handle:
        handle.create_dataset("layers/dense/vars/0", shape=hostile.HUGE, dtype="float32",
                              chunks=(1, 1024), compression="gzip")  # fmt: skip
    config = {
        "class_name": "Functional",
        "config": {
            "layers": [
                {"class_name": "Dense", "name": "dense", "config": {"name": "dense", "units": 10}}
            ]
        },
    }
    path = tmp_path / "k3.keras"
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("metadata.json", json.dumps({"keras_version": "3.15.0"}))
        archive.writestr("config.json", json.dumps(config))
        archive.writestr("model.weights.h5", buffer.getvalue())
    with pytest.raises(ValueError, match=r"layer 'dense' weight 0 claims 36.4 TiB .* but only 0 "
                                         r"bytes are compressed in the file"):  # fmt: skip
        saving.load_model(path)
