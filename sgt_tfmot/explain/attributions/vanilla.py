"""Vanilla gradient: S = |∂ f_y(x) / ∂x| (Simonyan et al. 2013), in tf-keras-vis."""

from __future__ import annotations

from sgt_tfmot.explain import attribution
from sgt_tfmot.explain.attributions.base import Attribution, AttributionOptions


class Vanilla(Attribution):
    name, title, per_pixel = "vanilla", "vanilla gradient", False

    def features(self, model, images, targets, options: AttributionOptions | None = None):
        options = options or AttributionOptions()
        return attribution.saliency_maps(
            model, images, targets, "vanilla", batch_size=options.batch_size, seed=options.seed
        )

    def ranking(self, model, images, targets, options: AttributionOptions | None = None):
        """The same values through one graph function over whole batches (fast path)."""
        options = options or AttributionOptions()
        return attribution.input_gradients(model, images, targets, max(options.batch_size, 256))
