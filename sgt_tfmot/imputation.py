"""Fills that keep an image with removed pixels close to the data: ROAD's noisy linear
imputation and a Gaussian blur of the image.

A removal protocol replaces some pixels of an image; a constant fill (the mean, zero) makes
the result out of distribution, and the shape of the removed set alone can tell the class
(Rong, Leemann et al., "A Consistent and Efficient Evaluation Strategy for Attribution
Methods", ICML 2022). These fills avoid that, as numpy/scipy functions over whole batches:

* `linear_imputation(images, removed)`: every removed pixel takes the weighted mean of its
  eight neighbours (ROAD's weights: 1/6 for the four direct neighbours, 1/12 for the four
  diagonal ones, renormalised at the border), removed neighbours included. For the removed
  pixels i of one image that is the linear system

      (Σ_{j∈N(i)} w_ij) x_i − Σ_{j∈N(i), j removed} w_ij x_j = Σ_{j∈N(i), j kept} w_ij v_j

  (one right-hand side per channel), a symmetric positive definite system whenever the image
  keeps at least one pixel. The systems of a batch are built at once with array slices, as
  one block-diagonal matrix whose unknowns in row-major order make it banded (bandwidth at
  most W + 1), and solved by one banded Cholesky factorisation (LAPACK, via scipy) per 256
  images, in float32 (the system is diagonally dominant: on 0..255 images the values differ
  from a float64 solve by about 1e-4, against ROAD's noise of 2.55).
  The trainer's graph version (conjugate gradients in TensorFlow) is
  `sgt_tfmot.masking.impute`; this one is exact and fast on whole evaluation batches.
* `noisy_linear_imputation(...)`: the same plus N(0, (noise · value_range)²) on each
  removed value (ROAD: noise 0.01 of a [0, 1] image), from a seeded generator.
* `blur(images, sigma)`: the image filtered by a Gaussian of standard deviation `sigma`
  pixels over height and width (RISE's deletion/insertion baseline, Petsiuk et al. 2018).

Layout: images are (N, H, W) or (N, H, W, C), channels last; `removed` is (N, H, W), True
where a pixel (all its channels) is replaced.

Example:

    removed = np.zeros((1, 4, 4), bool); removed[0, 1:3, 1:3] = True
    filled = linear_imputation(images, removed)  # the 2x2 hole takes its border's values
"""

from __future__ import annotations

import numpy as np
from scipy import linalg, ndimage
from threadpoolctl import threadpool_limits

from sgt_tfmot.masking import NEIGHBOUR_WEIGHTS  # ROAD's weights: one home, the trainer's too

__all__ = [
    "DEFAULT_NOISE",
    "NEIGHBOUR_WEIGHTS",
    "blur",
    "linear_imputation",
    "noisy_linear_imputation",
]

DEFAULT_NOISE = 0.01  # ROAD's noise, as a share of the value range
_CHUNK = 256  # images per banded system (bounds its memory: 34 x 8 bytes per unknown)


def _with_channels(images, removed) -> tuple[np.ndarray, np.ndarray, bool]:
    """(images as float32 (N, H, W, C), removed as bool (N, H, W), whether C was added)."""
    images = np.asarray(images)
    squeeze = images.ndim == 3
    if squeeze:
        images = images[..., None]
    removed = np.asarray(removed)
    if images.ndim != 4 or removed.shape != images.shape[:3] or removed.dtype != bool:
        raise ValueError(
            "`images` must be (N, H, W) or (N, H, W, C) and `removed` a boolean (N, H, W) "
            f"mask of the same N, H, W. Received: images {np.shape(images)}, removed "
            f"{removed.shape} {removed.dtype}"
        )
    full = removed.reshape(len(removed), -1).all(axis=1)
    if np.any(full):
        raise ValueError(
            "Linear imputation needs at least one kept pixel per image (its neighbours give "
            f"the values). Received: every pixel removed in image {int(np.argmax(full))}"
        )
    return images.astype(np.float32), removed, squeeze


def _shifted(padded: np.ndarray, dy: int, dx: int, h: int, w: int) -> np.ndarray:
    """The view of a 1-padded (N, H + 2, W + 2, ...) array at offset (dy, dx)."""
    return padded[:, 1 + dy : 1 + dy + h, 1 + dx : 1 + dx + w]


def _banded_system(images: np.ndarray, removed: np.ndarray):
    """(ab, b): the system of the removed pixels of a batch in upper banded storage.

    The unknowns are the removed pixels in row-major order, image after image, so the
    block-diagonal matrix of the batch is banded: a neighbour (dy, dx) of a pixel is at most
    W + 1 unknowns away. `ab[u + i - j, j]` holds A[i, j] for the upper bandwidth u
    (`scipy.linalg.solveh_banded`'s layout); built with array slices, no per-pixel loop.
    """
    n, h, w, c = images.shape
    number = np.cumsum(removed.reshape(-1)).reshape(removed.shape) - 1  # unknown id where removed
    pad = ((0, 0), (1, 1), (1, 1))
    removed_p = np.pad(removed, pad)
    number_p = np.pad(number, pad)
    kept_p = np.pad(images * ~removed[..., None], (*pad, (0, 0)))
    inside_p = np.pad(np.ones((1, h, w), bool), pad)
    weight_sum = np.zeros((1, h, w), np.float32)
    neighbours = np.zeros_like(images)
    pairs = []
    for (dy, dx), weight in NEIGHBOUR_WEIGHTS.items():
        weight_sum += weight * _shifted(inside_p, dy, dx, h, w)
        neighbours += weight * _shifted(kept_p, dy, dx, h, w)
        if (dy, dx) > (0, 0):  # the upper triangle: the neighbour comes later in the order
            both = removed & _shifted(removed_p, dy, dx, h, w)
            pairs.append((number[both], _shifted(number_p, dy, dx, h, w)[both], weight))
    upper = max([int(np.max(j - i)) for i, j, _ in pairs if len(i)] + [0])
    ab = np.zeros((upper + 1, int(removed.sum())), np.float32)
    ab[upper] = np.broadcast_to(weight_sum, removed.shape)[removed]
    for i, j, weight in pairs:
        ab[upper + i - j, j] = -weight
    return ab, neighbours[removed]


def _solve(images: np.ndarray, removed: np.ndarray) -> np.ndarray:
    """The values (removed pixels, C) of one chunk of images: one banded Cholesky solve."""
    if not removed.any():
        return np.zeros((0, images.shape[-1]), np.float32)
    ab, rhs = _banded_system(images, removed)
    with threadpool_limits(1, user_api="blas"):  # tiny blocks: threads only wait
        return linalg.solveh_banded(ab, rhs, check_finite=False)


def linear_imputation(images: np.ndarray, removed: np.ndarray) -> np.ndarray:
    """The images with their removed pixels set by ROAD's linear imputation (no noise).

    Args:
      images: (N, H, W) or (N, H, W, C) images, any value range.
      removed: Boolean (N, H, W), True where a pixel is replaced; at least one pixel of
        each image must be kept.

    Returns:
      float32 array shaped like `images`: kept pixels unchanged, each removed pixel the
      weighted mean of its neighbours (see the module docstring).

    Raises:
      ValueError: On shapes that do not match, a non-boolean mask, or an image with every
        pixel removed.
    """
    return noisy_linear_imputation(images, removed, noise=0.0)


def noisy_linear_imputation(
    images: np.ndarray,
    removed: np.ndarray,
    noise: float = DEFAULT_NOISE,
    value_range: float | None = None,
    seed: int | np.random.Generator = 0,
) -> np.ndarray:
    """ROAD's noisy linear imputation (Rong et al. 2022) of the removed pixels of a batch.

    Solves the block-diagonal system of the module docstring for all images at once, then
    adds independent Gaussian noise of standard deviation `noise · value_range` to every
    removed value (each channel its own draw, in the order of the removed pixels, image by
    image, row-major, channels last).

    Args:
      images: (N, H, W) or (N, H, W, C) images.
      removed: Boolean (N, H, W), True where a pixel is replaced; each image keeps >= 1.
      noise: Standard deviation of the noise as a share of `value_range`, >= 0 (ROAD: 0.01).
      value_range: The images' value range (255 for 0..255 pixels); None: max − min of
        `images`.
      seed: Seed (or generator) of the noise.

    Returns:
      float32 array shaped like `images`.

    Raises:
      ValueError: On a negative `noise`, or the errors of `linear_imputation`.
    """
    if isinstance(noise, bool) or not isinstance(noise, int | float) or not noise >= 0:
        raise ValueError(f"`noise` must be a number >= 0. Received: noise={noise!r}")
    values, removed, squeeze = _with_channels(images, removed)
    out = values.copy()
    if removed.any():
        solved = np.concatenate(
            [
                _solve(values[start : start + _CHUNK], removed[start : start + _CHUNK])
                for start in range(0, len(values), _CHUNK)
            ]
        )
        if noise:
            if value_range is None:
                value_range = float(values.max() - values.min())
            rng = np.random.default_rng(seed)
            solved += rng.normal(0.0, noise * float(value_range), solved.shape)
        out[removed] = solved
    out = out.astype(np.float32)
    return out[..., 0] if squeeze else out


def blur(images: np.ndarray, sigma: float) -> np.ndarray:
    """The images filtered by a Gaussian of `sigma` pixels over height and width.

    `scipy.ndimage.gaussian_filter` per image and channel (reflecting borders, truncated at
    4 sigma); RISE's deletion/insertion baseline (Petsiuk et al. 2018) blurs with sigma 5 on
    224x224 images.

    Args:
      images: (N, H, W) or (N, H, W, C) images.
      sigma: Standard deviation in pixels, > 0.

    Returns:
      float32 array shaped like `images`.

    Raises:
      ValueError: On a `sigma` that is not > 0 or images that are not 3-D or 4-D.
    """
    if isinstance(sigma, bool) or not isinstance(sigma, int | float) or not sigma > 0:
        raise ValueError(f"`sigma` must be a number > 0 (pixels). Received: sigma={sigma!r}")
    images = np.asarray(images, np.float32)
    if images.ndim not in (3, 4):
        raise ValueError(f"`images` must be (N, H, W) or (N, H, W, C). Received: {images.shape}")
    spread = (0, sigma, sigma, 0)[: images.ndim]
    return ndimage.gaussian_filter(images, spread, mode="reflect", truncate=4.0)
