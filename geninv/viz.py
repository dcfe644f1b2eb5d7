"""Pure numpy / PIL helpers for pictures of signals (used by the dashboard and the CLI)."""

from __future__ import annotations

import io
import math
from typing import Any

import numpy as np

MASK_COLOUR = (230, 80, 60)  # hidden pixels in the observed image


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
