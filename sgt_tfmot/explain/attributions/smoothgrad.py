"""SmoothGrad: the vanilla gradient averaged over noisy copies (Smilkov et al. 2017).

    S = 1/N Σ_i |∂ f_y(x + ε_i) / ∂x|,   ε_i ~ N(0, (noise · (max x − min x))²)

with N = `smooth_samples` copies per image; the noise is drawn from numpy's generator seeded
with `seed` (`_gradients.saliency`).
"""

from __future__ import annotations

from sgt_tfmot.explain import _validation as checks
from sgt_tfmot.explain.attributions import _gradients
from sgt_tfmot.explain.attributions.base import Attribution, AttributionOptions


class SmoothGrad(Attribution):
    name, title, per_pixel = "smoothgrad", "SmoothGrad", False

    def features(self, model, images, targets, options: AttributionOptions | None = None):
        options = options or AttributionOptions()
        return _gradients.saliency(
            model, images, targets, checks.check_positive_int(options.smooth_samples,
            "smooth_samples"), options.noise, options.batch_size, options.seed,
        )  # fmt: skip
