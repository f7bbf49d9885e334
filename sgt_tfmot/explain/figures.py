"""Drawing maps the way attribution users read them: a heat map over the image, a colour bar,
class names instead of ids (shared by the explain report and the converter's figure); and
the frame of an accuracy-drop figure (`drop_axis`, `drop_legends`: the explain report's
curves and `examples/bitwidth_sweep.py`'s). Figures are drawn off screen (`new_figure`)
and returned as PNG bytes (`png`)."""

from __future__ import annotations

import io
from collections.abc import Mapping, Sequence

import numpy as np

__all__ = ["class_name", "drop_axis", "drop_legends", "new_figure", "overlay", "png"]

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


def new_figure(width: float, height: float):
    """A matplotlib `Figure` of `width` x `height` inches at 100 dpi, drawn off screen (Agg)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    figure = Figure(figsize=(width, height), dpi=100)
    FigureCanvasAgg(figure)
    return figure


def png(figure) -> bytes:
    """The figure as PNG bytes."""
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png")
    return buffer.getvalue()


def drop_axis(axis, title: str, *, ylabel: str = "test accuracy (%)") -> None:
    """The frame of an accuracy-drop figure: features removed (%) against accuracy (%), from
    -2 to 102 so that 0 and 100 % show, a light grid, a small `title`."""
    axis.set_xlabel("features removed (%)")
    axis.set_ylabel(ylabel)
    axis.set_ylim(-2, 102)
    axis.grid(alpha=0.3)
    axis.set_title(title, fontsize=9)


def drop_legends(axis, orders: Mapping[str, str], models: tuple = (), **placement) -> None:
    """The two legends of an accuracy-drop figure: the models, placed by `placement` (`loc`,
    `bbox_to_anchor`), from `models` = (handles, labels) or else the axis's labelled lines;
    and, upper right, the removal orders: `orders` maps a label to its line style (black)."""
    from matplotlib.lines import Line2D

    model_legend = axis.legend(*models, fontsize=7, title="model", title_fontsize=7, **placement)
    axis.add_artist(model_legend)
    axis.legend(
        [Line2D([], [], color="black", linestyle=style) for style in orders.values()],
        list(orders),
        loc="upper right",
        fontsize=7,
    )
