"""Vanilla gradient: S = |∂ f_y(x) / ∂x| (Simonyan et al. 2013), one value per input feature.

f_y is the model's output for the class y (logit or probability, whichever the model ends
in), in eval mode; the maps keep the channel axis and are not normalised (`_gradients`).
`input_gradients` computes the same values in one graph function over whole batches.
"""

from __future__ import annotations

from sgt_tfmot.explain.attributions import _gradients
from sgt_tfmot.explain.attributions.base import Attribution, AttributionOptions


class Vanilla(Attribution):
    name, title, per_pixel = "vanilla", "vanilla gradient", False

    def features(self, model, images, targets, options: AttributionOptions | None = None):
        options = options or AttributionOptions()
        return _gradients.saliency(
            model, images, targets, batch_size=options.batch_size, seed=options.seed
        )
