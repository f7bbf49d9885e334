"""Keras trainers: Saliency-Guided Training as a `Model.train_step` override."""

from sgt_tfmot.trainers.batch_norm import reestimate_batch_norm, refit_stale_batch_norm
from sgt_tfmot.trainers.saliency_guided import SaliencyGuidedModel

__all__ = ["SaliencyGuidedModel", "refit_stale_batch_norm", "reestimate_batch_norm"]
