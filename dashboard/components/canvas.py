"""Our small adapter over streamlit-drawable-canvas: draw the pixels to hide on top of the sample.

Everything the rest of the dashboard knows about the canvas is :func:`draw_mask`; when the
component cannot load (an old or missing package, a test harness without a browser) it returns
None and says so, and the mask presets stay available.
"""

from __future__ import annotations

import io

import numpy as np
import streamlit as st

SCALE = 10  # canvas pixels per image pixel


def strokes_to_mask(alpha: np.ndarray, shape: tuple[int, int], *, threshold: float = 0.25) -> np.ndarray:
    """Canvas alpha (H*s, W*s) -> flat bool mask over the image, True = observed (not painted)."""
    h, w = shape
    a = np.asarray(alpha, dtype=float)
    if a.ndim != 2 or a.shape[0] % h or a.shape[1] % w:
        raise ValueError(f"canvas of shape {a.shape} does not tile an image of shape {shape}")
    blocks = a.reshape(h, a.shape[0] // h, w, a.shape[1] // w).mean(axis=(1, 3)) / 255.0
    return (blocks < threshold).reshape(-1)


def draw_mask(background_rgb: np.ndarray, *, key: str, stroke_width: int = 18) -> np.ndarray | None:
    """Show the canvas over ``background_rgb`` (H, W, 3); returns the drawn mask or None if nothing is drawn."""
    try:
        from streamlit_drawable_canvas import st_canvas
    except Exception as exc:  # the component could not register in this environment
        st.info(f"Drawing is unavailable here ({type(exc).__name__}); use a mask preset or upload a PNG.")
        return None
    from PIL import Image

    h, w = background_rgb.shape[:2]
    image = Image.fromarray(background_rgb).resize((w * SCALE, h * SCALE), Image.NEAREST)
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    mode = st.radio(
        "Brush",
        ["freedraw", "rect"],
        horizontal=True,
        key=f"{key}_mode",
        format_func={"freedraw": "free hand", "rect": "rectangle"}.get,
    )
    result = st_canvas(
        fill_color="rgba(230, 80, 60, 0.9)",
        stroke_width=stroke_width,
        stroke_color="rgba(230, 80, 60, 0.9)",
        background_image=buffer.getvalue(),
        height=h * SCALE,
        width=w * SCALE,
        drawing_mode=mode,
        return_image_data=True,
        initial_drawing=st.session_state.get(f"{key}_drawing"),
        key=key,
    )
    if result.json_data and result.json_data.get("objects"):
        st.session_state[f"{key}_drawing"] = result.json_data  # redrawn when the canvas is mounted again
    data = result.image_data
    if data is None or data.ndim != 3 or not data[..., 3].any():
        return None
    alpha = np.asarray(Image.fromarray(data).resize((w * SCALE, h * SCALE)))[..., 3]
    return strokes_to_mask(alpha, (h, w))
