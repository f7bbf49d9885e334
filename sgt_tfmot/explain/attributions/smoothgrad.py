"""SmoothGrad: the vanilla gradient averaged over noisy copies (Smilkov et al. 2017)."""

from __future__ import annotations

from sgt_tfmot.explain import attribution
from sgt_tfmot.explain.attributions.base import Attribution, AttributionOptions


class SmoothGrad(Attribution):
    name, title, per_pixel = "smoothgrad", "SmoothGrad", False

    def features(self, model, images, targets, options: AttributionOptions | None = None):
        options = options or AttributionOptions()
        return attribution.saliency_maps(
            model, images, targets, "smoothgrad", options.smooth_samples, options.noise,
            options.batch_size, options.seed,
        )  # fmt: skip
