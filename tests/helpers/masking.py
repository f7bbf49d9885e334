"""Brute-force numpy references of the masking rule, shared by the masking and trainer tests."""

import math

import numpy as np


def numpy_patch_mask(saliency, fraction, patch, reduce_channels="mean", rank_by="abs"):
    """Brute force, patch by patch: the score of each patch summed in a Python loop, a stable
    argsort per sample, the first k = floor(f·n) patches (n patches, per channel when
    reduce_channels is None) marked on every position of the patch."""
    score = np.abs(saliency) if rank_by == "abs" else saliency.copy()
    score = score.astype(np.float64)
    reduced = reduce_channels is not None and saliency.ndim >= 3
    if reduced:
        score = score.mean(axis=-1) if reduce_channels == "mean" else score.max(axis=-1)
    channels = saliency.ndim >= 3 and not reduced  # a trailing channel axis to keep apart
    if not channels:
        score = score[..., None]
    grid = [d // patch for d in score.shape[1:-1]]
    units = list(np.ndindex(*grid, score.shape[-1]))
    mask = np.zeros(score.shape, bool)
    k = math.floor(round(fraction * len(units), 9))
    for b in range(len(score)):
        sums = []
        for *cell, c in units:
            block = tuple(slice(i * patch, (i + 1) * patch) for i in cell)
            sums.append(score[(b, *block, c)].sum())
        for u in np.argsort(np.array(sums), kind="stable")[:k]:
            *cell, c = units[u]
            mask[(b, *(slice(i * patch, (i + 1) * patch) for i in cell), c)] = True
    if not channels:
        mask = mask[..., 0]
    if reduced:
        mask = np.broadcast_to(mask[..., None], saliency.shape)
    return mask
