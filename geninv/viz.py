"""Pure numpy / PIL helpers for pictures of signals (used by the dashboard and the CLI)."""

from __future__ import annotations

import io
import math
from typing import Any

import numpy as np

MASK_COLOUR = (230, 80, 60)  # hidden pixels in the observed image

# One colour-blind-safe palette (Okabe & Ito, "Color Universal Design", 2008) for every page, every
# figure of the dashboard and the README: a method keeps its colour, dash and marker everywhere.
OKABE_ITO = {
    "black": "#000000",
    "orange": "#E69F00",
    "sky blue": "#56B4E9",
    "bluish green": "#009E73",
    "yellow": "#F0E442",
    "blue": "#0072B2",
    "vermillion": "#D55E00",
    "reddish purple": "#CC79A7",
}
METHOD_COLORS = {
    "gd": OKABE_ITO["blue"],
    "plugin": OKABE_ITO["sky blue"],
    "latent-pursuit": OKABE_ITO["orange"],
    "lbp": OKABE_ITO["reddish purple"],
    "lp": OKABE_ITO["vermillion"],
    "hybrid": OKABE_ITO["bluish green"],
    "oracle": OKABE_ITO["black"],
}
"""Colour of each method (and of the oracle: least squares on the true supports)."""
METHOD_DASHES = {
    "gd": "solid",
    "plugin": "longdashdot",
    "latent-pursuit": "longdash",
    "lbp": "dashdot",
    "lp": "longdashdot",
    "hybrid": "dot",
    "oracle": "dash",
}
"""Line style of each method, so that lines that coincide still show each other."""
METHOD_SYMBOLS = {
    "gd": "circle",
    "plugin": "triangle-up",
    "latent-pursuit": "diamond",
    "lbp": "square",
    "lp": "triangle-down",
    "hybrid": "x",
    "oracle": "star",
}
OTHER_COLOR = "#777777"
SUPPORT_COLORS = ("#E8EAEE", OKABE_ITO["blue"], OKABE_ITO["orange"], OKABE_ITO["vermillion"])
"""Support maps, by code: inactive in both, found (true positive), missed, false alarm."""
SUPPORT_LABELS = ("inactive", "found (true positive)", "missed", "false alarm")


def method_color(method: str) -> str:
    """The colour of ``method`` on every page (grey for a method without one)."""
    return METHOD_COLORS.get(method, OTHER_COLOR)


def method_style(method: str) -> dict[str, Any]:
    """Plotly line and marker settings of ``method``: its colour, dash and marker symbol."""
    return {
        "line": {"color": method_color(method), "dash": METHOD_DASHES.get(method, "solid")},
        "marker": {"color": method_color(method), "symbol": METHOD_SYMBOLS.get(method, "circle")},
    }


def image_shape(n: int) -> tuple[int, int] | None:
    """(side, side) when ``n`` is a square number of pixels, else None (plot as a line)."""
    side = math.isqrt(n)
    return (side, side) if side * side == n else None


def to_unit(x: Any) -> np.ndarray:
    """Signals mapped to [0, 1] for display: clipped if already in [0, 1], else min-max scaled per signal."""
    arr = np.asarray(x.detach().cpu() if hasattr(x, "detach") else x, dtype=np.float64)
    arr = np.atleast_2d(arr)
    if arr.min() >= -1e-9 and arr.max() <= 1 + 1e-9:
        return arr.clip(0, 1)
    lo, hi = arr.min(axis=1, keepdims=True), arr.max(axis=1, keepdims=True)
    return (arr - lo) / np.where(hi > lo, hi - lo, 1.0)


def rgb_image(x: Any, shape: tuple[int, int], mask: Any = None) -> np.ndarray:
    """One signal as an (H, W, 3) uint8 image; hidden pixels (mask False) painted in MASK_COLOUR."""
    grey = (to_unit(x)[0].reshape(shape) * 255).astype(np.uint8)
    rgb = np.repeat(grey[..., None], 3, axis=-1)
    if mask is not None:
        hidden = ~np.asarray(mask, dtype=bool).reshape(shape)
        rgb[hidden] = MASK_COLOUR
    return rgb


def grid_png(x: Any, shape: tuple[int, int], *, mask: Any = None, columns: int = 8, scale: int = 3) -> bytes:
    """A grid of signals (B, n) as PNG bytes."""
    from PIL import Image

    arr = to_unit(x)
    rows = math.ceil(arr.shape[0] / columns)
    cols = min(columns, arr.shape[0])
    h, w = shape
    canvas = np.zeros((rows * (h + 1), cols * (w + 1), 3), dtype=np.uint8)
    for k in range(arr.shape[0]):
        r, c = divmod(k, columns)
        canvas[r * (h + 1) : r * (h + 1) + h, c * (w + 1) : c * (w + 1) + w] = rgb_image(arr[k], shape, mask)
    image = Image.fromarray(canvas).resize((canvas.shape[1] * scale, canvas.shape[0] * scale), Image.NEAREST)
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()


def difference_image(estimate: Any, truth: Any, shape: tuple[int, int], *, scale: float | None = None) -> np.ndarray:
    """``estimate - truth`` as an (H, W, 3) uint8 image: white = 0, blue = too dark, vermillion = too bright.

    ``scale`` is the difference drawn at full colour (default: the largest absolute difference), so
    that tiny errors are visible; pass the same scale to compare several images.
    """
    diff = np.asarray(estimate, dtype=np.float64).reshape(shape) - np.asarray(truth, dtype=np.float64).reshape(shape)
    top = float(np.abs(diff).max()) if scale is None else float(scale)
    t = np.clip(diff / top, -1.0, 1.0) if top > 0 else np.zeros_like(diff)
    white = np.array([255.0, 255.0, 255.0])
    neg, pos = _rgb(OKABE_ITO["blue"]), _rgb(OKABE_ITO["vermillion"])
    a = np.abs(t)[..., None]
    colour = np.where(t[..., None] < 0, neg, pos)
    return np.round(white * (1 - a) + colour * a).astype(np.uint8)


def _rgb(hex_colour: str) -> np.ndarray:
    h = hex_colour.lstrip("#")
    return np.array([int(h[k : k + 2], 16) for k in (0, 2, 4)], dtype=np.float64)
