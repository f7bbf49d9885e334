"""Former name of `sgt_tfmot.masking` (SGT's masking rule), kept so old imports work."""

from sgt_tfmot.masking import *  # noqa: F401,F403
from sgt_tfmot.masking import __all__, masked_count, saliency_mask  # noqa: F401
