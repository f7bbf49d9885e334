"""Drawing maps the way attribution users read them: a heat map over the image, a colour bar,
class names instead of ids (shared by the explain report and the converter's figure)."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

__all__ = ["class_name", "overlay"]

HEAT_MAP = "jet"
ALPHA = 0.5


def class_name(class_id: int, names: Sequence[str] | None) -> str:
    """The class's name when the data has names, else its id."""
    class_id = int(class_id)
    if names is not None and 0 <= class_id < len(names):
        return str(names[class_id])
    return str(class_id)


def overlay(axis, image: np.ndarray, heat: np.ndarray, vmax: float | None = None, alpha=ALPHA):
    """Draws `image` (H, W, C) in 0..255, grey for one channel, and `heat` (H, W) over it.

    Returns the heat map's image artist (for a colour bar). The heat map is scaled to
    [0, vmax] (default: its own maximum), so maps drawn with the same `vmax` compare.
    """
    image = np.clip(np.asarray(image, np.float32), 0, 255) / 255.0
    if image.ndim == 3 and image.shape[-1] == 1:
        axis.imshow(image[..., 0], cmap="gray", vmin=0, vmax=1)
    else:
        axis.imshow(image[..., :3])
    heat = np.asarray(heat, np.float32)
    top = float(vmax) if vmax is not None else float(heat.max())
    artist = axis.imshow(heat, cmap=HEAT_MAP, alpha=alpha, vmin=0.0, vmax=top if top > 0 else 1.0)
    axis.set_xticks([])
    axis.set_yticks([])
    return artist
