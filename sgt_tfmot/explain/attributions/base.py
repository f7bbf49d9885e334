"""The interface of an attribution method: one class per method, behind one call.

An `Attribution` explains an image classifier's output for given classes:

    maps = method(model, images, targets)                  # (N, H, W), one value per pixel
    ranking = method.features(model, images, targets)       # shaped like the images

`__call__` gives the maps of the figures and of the agreement, concentration and sanity
measures; `features` the per-feature scores that rank pixels for the accuracy-drop curves
and SGT's masking rule (a per-pixel method repeats its map over the channels). Options a
method does not use are ignored, so every caller passes the same `AttributionOptions`.

Adding a method is one module with a subclass and one line in
`sgt_tfmot.explain.attributions.REGISTRY` (or `attributions.register(Method())` at run time);
the CLIs' flags, the drop curves, the report and the converter's fidelity check read the
registry when they run.
"""

from __future__ import annotations

import dataclasses

import numpy as np

__all__ = ["Attribution", "AttributionOptions"]


@dataclasses.dataclass(frozen=True)
class AttributionOptions:
    """Settings shared by the methods (each reads the ones it needs).

    Attributes:
      batch_size: Images per call of the model.
      seed: Seed of any randomness (SmoothGrad's noise, random masks).
      smooth_samples: SmoothGrad's noisy copies per image.
      noise: SmoothGrad's noise level σ / (max x − min x).
      penultimate_layer: Grad-CAM's layer (None: the last convolution).
      patch: Occlusion's square patch size, in pixels.
      stride: Occlusion's stride, in pixels.
    """

    batch_size: int = 64
    seed: int = 0
    smooth_samples: int = 20
    noise: float = 0.2
    penultimate_layer: str | None = None
    patch: int = 4
    stride: int = 2


class Attribution:
    """Base class of the attribution methods.

    Class attributes:
      name: The registry name ("vanilla", ...), used by flags and reports.
      title: How reports name it ("vanilla gradient").
      per_pixel: The method gives one value per pixel (else one per input feature).
      uses_layer: The method reads an inner convolution (`penultimate_layer`).
      needs_gradients: The method needs a Keras model (else any predict function works,
        including an integer TFLite model's).
    """

    name: str = ""
    title: str = ""
    per_pixel: bool = True
    uses_layer: bool = False
    needs_gradients: bool = True

    def __call__(self, model, images, targets, options: AttributionOptions | None = None):
        """(N, H, W) maps, >= 0, of the classes `targets` (N,) for `images` (N, H, W, C)."""
        maps = self.features(model, images, targets, options)
        return np.asarray(maps, np.float32).mean(axis=-1) if maps.ndim >= 3 else maps

    def features(self, model, images, targets, options: AttributionOptions | None = None):
        """Scores shaped like `images` (a per-pixel map repeated over the channels)."""
        raise NotImplementedError

    @staticmethod
    def _broadcast(maps: np.ndarray, images: np.ndarray) -> np.ndarray:
        maps = np.asarray(maps, np.float32)
        return np.broadcast_to(maps[..., None], np.shape(images)).copy()

    def __repr__(self) -> str:
        return f"{type(self).__name__}()"
