"""Grad-CAM: ReLU(Σ_k α_k A_k), α_k = mean ∂f_y/∂A_k (Selvaraju et al. 2017), tf-keras-vis."""

from __future__ import annotations

from sgt_tfmot.explain import attribution
from sgt_tfmot.explain.attributions.base import Attribution, AttributionOptions


class GradCAM(Attribution):
    name, title, uses_layer = "gradcam", "Grad-CAM", True
    _method = "gradcam"

    def __call__(self, model, images, targets, options: AttributionOptions | None = None):
        options = options or AttributionOptions()
        return attribution.gradcam_maps(
            model, images, targets, self._method, options.penultimate_layer, options.batch_size
        )

    def features(self, model, images, targets, options: AttributionOptions | None = None):
        return self._broadcast(self(model, images, targets, options), images)
