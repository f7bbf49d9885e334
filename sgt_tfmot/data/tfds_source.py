"""Any TensorFlow Datasets image-classification set, by name (features `image` + `label`).

Shape and class count come from the data; class names from the `label` feature. A name that
TFDS does not know fails at once; a known set that is not downloaded yet is downloaded by
TFDS, and when the network cannot be reached that is said at once too (TFDS itself would
retry for minutes): pass `--data_dir` with `NAME.npz` instead.
"""

from __future__ import annotations

import socket

import numpy as np

from sgt_tfmot.data.base import KEYS, Arrays, DataError, DataOptions, DataSource, check_arrays

__all__ = ["TfdsSource"]

_DOWNLOAD_HOST = ("storage.googleapis.com", 443)


def _network_reachable(timeout: float = 3.0) -> bool:
    try:
        with socket.create_connection(_DOWNLOAD_HOST, timeout=timeout):
            return True
    except OSError:
        return False


class TfdsSource(DataSource):
    """Any other name: a TensorFlow Datasets image-classification set."""

    name, fallback = "tfds", True
    reference = "any TFDS image-classification name (e.g. mnist, cifar10)"

    def claims(self, reference: str, data_dir) -> bool:
        return True  # the last source: any other name is a TFDS name

    def load(self, reference: str, data_dir, options: DataOptions) -> Arrays:
        try:
            import tensorflow_datasets as tfds
        except ImportError as error:  # pragma: no cover - a dependency of the package
            raise DataError(f"tensorflow_datasets is not importable ({error}).") from None
        hint = (
            f"Pass --data_dir DIR with {reference}.npz (keys {', '.join(KEYS)}), an .npz path, "
            "or an image folder."
        )
        try:
            builder = tfds.builder(reference)
        except Exception as error:  # DatasetNotFoundError and the like
            first = str(error).strip().splitlines()[0] if str(error).strip() else repr(error)
            raise DataError(f"Unknown dataset {reference!r}: {first} {hint}") from None
        features = builder.info.features
        label = features["label"] if "label" in features else None
        if "image" not in features or label is None or not hasattr(label, "names"):
            raise DataError(
                f"TFDS dataset {reference!r} is not an image-classification dataset (its "
                f"features are {', '.join(features)}; needed: image and a class label). {hint}"
            )
        if not builder.is_prepared() and not _network_reachable():
            raise DataError(
                f"TFDS dataset {reference!r} is not downloaded and the network cannot be "
                f"reached to download it. {hint}"
            )
        try:
            splits = {
                split: tfds.as_numpy(
                    tfds.load(reference, split=split, batch_size=-1, as_supervised=True)
                )
                for split in ("train", "test")
            }
        except Exception as error:  # network, disk, a missing "test" split, ...
            first = str(error).strip().splitlines()[0] if str(error).strip() else repr(error)
            raise DataError(f"tensorflow_datasets could not load {reference!r}: {first}") from None
        names = tuple(label.names)
        arrays = [np.asarray(a) for split in ("train", "test") for a in splits[split]]
        return check_arrays(*arrays, class_names=names, source=f"tensorflow_datasets {reference!r}")
