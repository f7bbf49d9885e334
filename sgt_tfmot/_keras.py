"""Former name of `sgt_tfmot.keras`, kept so old imports work."""

from sgt_tfmot.keras import keras, tf, tfmot  # noqa: F401
