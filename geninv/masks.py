"""Mask factories. Convention everywhere: a flat boolean array, True = observed.

Image masks take the image ``shape`` (rows, columns) and are flattened in row-major order,
matching ``G(z).reshape(rows, cols)``.
"""

from __future__ import annotations

import io
import math
import warnings
from os import PathLike
from pathlib import Path
from typing import Any

import numpy as np

from geninv._random import numpy_generator
from geninv._validation import check_choice, check_int, check_real, fail
from geninv.errors import InvalidMaskError

MAX_MASK_PNG_BYTES = 5_000_000
MAX_MASK_NPY_BYTES = 5_000_000
MAX_MASK_PIXELS = 4_000_000
"""A mask file decoding to more pixels than this is refused before it is decoded."""


def _check_shape(shape: Any) -> tuple[int, int]:
    if isinstance(shape, int):
        side = math.isqrt(shape)
        if side * side != shape:
            fail("shape", "(rows, cols) or a square number of pixels", shape)
        return side, side
    if not isinstance(shape, tuple | list) or len(shape) != 2:
        fail("shape", "a pair (rows, cols)", shape)
    return check_int("shape[0]", shape[0], low=1), check_int("shape[1]", shape[1], low=1)


def validate(mask: Any, n: int | None = None, *, name: str = "mask") -> np.ndarray:
    """Return ``mask`` as a flat bool array of length ``n`` that observes at least one entry.

    Raises
    ------
    InvalidMaskError
        On a wrong size, non-boolean values other than 0/1, or a mask that observes nothing.
    """
    try:
        arr = np.asarray(mask.detach().cpu() if hasattr(mask, "detach") else mask)
    except (TypeError, ValueError):
        fail(name, "a boolean array (True = observed)", mask, InvalidMaskError)
    if arr.dtype != bool:
        if not np.issubdtype(arr.dtype, np.number) or not np.isin(arr, (0, 1)).all():
            fail(name, "a boolean array or an array of 0/1 (1 = observed)", arr, InvalidMaskError)
        arr = arr.astype(bool)
    arr = arr.reshape(-1)
    if n is not None and arr.size != n:
        fail(name, f"of size {n} (one entry per output coordinate)", arr, InvalidMaskError)
    if not arr.any():
        raise InvalidMaskError(f"The '{name}' hides every coordinate: at least one must be observed.")
    return arr


def full(n: int) -> np.ndarray:
    """Everything observed."""
    return np.ones(check_int("n", n, low=1), dtype=bool)


def random_pixels(n: int, missing: float, *, seed: int = 0) -> np.ndarray:
    """Hide ``round(missing * n)`` coordinates chosen uniformly at random."""
    n = check_int("n", n, low=1)
    missing = check_real("missing", missing, low=0.0, high=1.0, high_open=True)
    k = round(missing * n)
    rng = numpy_generator(seed, "mask")
    mask = np.ones(n, dtype=bool)
    mask[rng.choice(n, size=k, replace=False)] = False
    return validate(mask, n)


def box(shape: Any, *, top: int, left: int, height: int, width: int) -> np.ndarray:
    """Hide a rectangle of the image (clipped to the image)."""
    rows, cols = _check_shape(shape)
    top, left = check_int("top", top, low=0), check_int("left", left, low=0)
    height, width = check_int("height", height, low=0), check_int("width", width, low=0)
    mask = np.ones((rows, cols), dtype=bool)
    mask[top : top + height, left : left + width] = False
    return validate(mask, rows * cols)


def center_box(shape: Any, size: int) -> np.ndarray:
    """Hide a centred ``size`` x ``size`` square."""
    rows, cols = _check_shape(shape)
    size = check_int("size", size, low=0)
    return box((rows, cols), top=max((rows - size) // 2, 0), left=max((cols - size) // 2, 0), height=size, width=size)


def half(shape: Any, *, hide: str = "bottom") -> np.ndarray:
    """Hide one half of the image: 'top', 'bottom', 'left' or 'right'."""
    rows, cols = _check_shape(shape)
    hide = check_choice("hide", hide, ("top", "bottom", "left", "right"))
    mask = np.ones((rows, cols), dtype=bool)
    if hide == "top":
        mask[: rows // 2] = False
    elif hide == "bottom":
        mask[rows // 2 :] = False
    elif hide == "left":
        mask[:, : cols // 2] = False
    else:
        mask[:, cols // 2 :] = False
    return validate(mask, rows * cols)


def from_array(array: Any, n: int | None = None) -> np.ndarray:
    """A user array (any shape; bool or 0/1) as a flat mask."""
    return validate(array, n)


def from_png(source: str | PathLike[str] | bytes, shape: Any = None, *, threshold: float = 0.5) -> np.ndarray:
    """Read a mask from a PNG: bright pixels (>= threshold of full scale) are observed.

    ``shape`` (rows, cols), when given, resizes with nearest-neighbour sampling.
    """
    from PIL import Image, UnidentifiedImageError

    threshold = check_real("threshold", threshold, low=0.0, high=1.0)
    data = _read_bytes(source, MAX_MASK_PNG_BYTES, "a PNG")
    too_big = f"a PNG of at most {MAX_MASK_PIXELS} pixels"
    bombs = (Image.DecompressionBombError, Image.DecompressionBombWarning)
    with warnings.catch_warnings():
        warnings.simplefilter("error", Image.DecompressionBombWarning)
        try:
            image = Image.open(io.BytesIO(data), formats=["PNG"])  # reads the header only
        except bombs:
            fail("source", too_big, "a decompression bomb", InvalidMaskError)
        except (UnidentifiedImageError, OSError, ValueError, SyntaxError):
            fail("source", "a readable PNG image", f"{len(data)} bytes that are not a PNG", InvalidMaskError)
        if image.width * image.height > MAX_MASK_PIXELS:
            fail("source", too_big, f"{image.width} x {image.height}", InvalidMaskError)
        try:
            image.load()
        except bombs:
            fail("source", too_big, "a decompression bomb", InvalidMaskError)
        except (OSError, ValueError, SyntaxError, EOFError):
            fail("source", "a readable PNG image", f"{len(data)} bytes that do not decode", InvalidMaskError)
    image = image.convert("L")
    if shape is not None:
        rows, cols = _check_shape(shape)
        image = image.resize((cols, rows), Image.NEAREST)
    arr = np.asarray(image, dtype=np.float64) / 255.0
    return validate(arr >= threshold)


def to_png(mask: Any, shape: Any, path: str | PathLike[str] | None = None) -> bytes:
    """Write the mask as a black (hidden) / white (observed) PNG; returns the bytes."""
    from PIL import Image

    rows, cols = _check_shape(shape)
    arr = validate(mask, rows * cols).reshape(rows, cols)
    buffer = io.BytesIO()
    Image.fromarray((arr * 255).astype(np.uint8), mode="L").save(buffer, format="PNG")
    data = buffer.getvalue()
    if path is not None:
        with open(path, "wb") as handle:
            handle.write(data)
    return data


def to_npy(mask: Any, path: str | PathLike[str] | None = None) -> bytes:
    """Save the flat mask as ``.npy``; returns the bytes."""
    buffer = io.BytesIO()
    np.save(buffer, validate(mask), allow_pickle=False)
    data = buffer.getvalue()
    if path is not None:
        with open(path, "wb") as handle:
            handle.write(data)
    return data


def from_npy(source: str | PathLike[str] | bytes, n: int | None = None) -> np.ndarray:
    """Load a mask saved by :func:`to_npy` (never unpickles).

    The header is read first: a file whose shape, dtype or length does not fit a mask (of size
    ``n`` when given, at most :data:`MAX_MASK_PIXELS`) is refused before any array is allocated.
    """
    from numpy.lib import format as npy

    data = _read_bytes(source, MAX_MASK_NPY_BYTES, "a .npy file")
    buffer = io.BytesIO(data)
    try:
        version = npy.read_magic(buffer)
        if version not in ((1, 0), (2, 0)):
            raise ValueError(f"unsupported .npy version {version}")
        read = npy.read_array_header_1_0 if version == (1, 0) else npy.read_array_header_2_0
        shape, fortran, dtype = read(buffer)
    except (ValueError, OSError, SyntaxError, TypeError):
        fail("source", "a .npy file holding a boolean array", "a file that is not one", InvalidMaskError)
    if dtype.hasobject or dtype.kind not in "biuf" or dtype.itemsize > 8:
        fail("source", "a .npy file of booleans or 0/1 numbers", f"a .npy file of dtype {dtype}", InvalidMaskError)
    count = math.prod(shape)
    # (a dimension past the limit is refused even where another is 0: numpy cannot reshape to it)
    if count > MAX_MASK_PIXELS or max(shape, default=0) > MAX_MASK_PIXELS or (n is not None and count != n):
        fail(
            "source",
            f"a mask of {n if n is not None else f'at most {MAX_MASK_PIXELS}'} entries",
            f"a .npy header of shape {shape}",
            InvalidMaskError,
        )
    if len(data) - buffer.tell() != count * dtype.itemsize:
        fail("source", f"a complete .npy file of shape {shape}", f"{len(data)} bytes", InvalidMaskError)
    arr = np.frombuffer(data, dtype=dtype, count=count, offset=buffer.tell())
    return validate(arr.reshape(shape, order="F" if fortran else "C"), n)


def _read_bytes(source: Any, limit: int, what: str) -> bytes:
    """The bytes of ``source`` (bytes or a path), refused above ``limit`` before they are read."""
    if isinstance(source, bytes | bytearray):
        data = bytes(source)
    elif isinstance(source, str | PathLike):
        path = Path(source)
        if not path.is_file():
            fail("source", f"the path of {what} file", f"{str(path)[-50:]} (not a file)", InvalidMaskError)
        if path.stat().st_size > limit:
            fail("source", f"{what} of at most {limit} bytes", f"{path.stat().st_size} bytes", InvalidMaskError)
        data = path.read_bytes()
    else:
        fail("source", f"bytes or the path of {what}", source, InvalidMaskError)
    if len(data) > limit:
        fail("source", f"{what} of at most {limit} bytes", f"{len(data)} bytes", InvalidMaskError)
    return data
