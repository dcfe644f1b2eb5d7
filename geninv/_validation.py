"""Validation helpers with one message format: parameter, expectation, received value."""

from __future__ import annotations

import math
from collections.abc import Iterable
from numbers import Integral, Real
from typing import Any

import numpy as np
import torch

from geninv.errors import InvalidValueError, ShapeError


def _show(value: Any) -> str:
    if isinstance(value, torch.Tensor | np.ndarray):
        return f"an array of shape {tuple(value.shape)} and dtype {value.dtype}"
    text = repr(value)
    return text if len(text) <= 80 else text[:77] + "..."


def fail(name: str, expected: str, got: Any, cls: type[Exception] = InvalidValueError) -> None:
    """Raise ``cls`` with the standard message."""
    raise cls(f"The '{name}' parameter must be {expected}. Got {_show(got)} instead.")


def check_int(name: str, value: Any, *, low: int | None = None, high: int | None = None) -> int:
    """Return ``value`` as int if it is an integer in [low, high]."""
    if isinstance(value, bool) or not isinstance(value, Integral):
        fail(name, _range_text("an integer", low, high), value)
    value = int(value)
    if (low is not None and value < low) or (high is not None and value > high):
        fail(name, _range_text("an integer", low, high), value)
    return value


def check_real(
    name: str,
    value: Any,
    *,
    low: float | None = None,
    high: float | None = None,
    low_open: bool = False,
    high_open: bool = False,
) -> float:
    """Return ``value`` as float if it is a finite real in the given interval."""
    expected = _range_text("a finite number", low, high, low_open, high_open)
    if isinstance(value, bool) or not isinstance(value, Real) or not math.isfinite(value):
        fail(name, expected, value)
    value = float(value)
    if low is not None and (value < low or (low_open and value == low)):
        fail(name, expected, value)
    if high is not None and (value > high or (high_open and value == high)):
        fail(name, expected, value)
    return value


def check_choice(name: str, value: Any, choices: Iterable[str]) -> str:
    """Return ``value`` if it is one of ``choices``."""
    choices = tuple(choices)
    if value not in choices:
        fail(name, "one of " + ", ".join(repr(c) for c in choices), value)
    return value


def as_tensor(
    name: str,
    value: Any,
    *,
    ndim: tuple[int, ...] | int | None = None,
    dtype: torch.dtype | None = None,
    device: torch.device | str | None = None,
    finite: bool = True,
) -> torch.Tensor:
    """Convert ``value`` to a floating tensor, checking dimensions and finiteness."""
    if isinstance(value, torch.Tensor):
        tensor = value
    else:
        try:
            tensor = torch.as_tensor(np.asarray(value))
        except (TypeError, ValueError):
            fail(name, "an array of numbers", value, ShapeError)
    if tensor.dtype == torch.bool or not (tensor.is_floating_point() or _is_int(tensor)):
        fail(name, "an array of real numbers", tensor)
    if dtype is not None or not tensor.is_floating_point():
        tensor = tensor.to(dtype or torch.get_default_dtype())
    if device is not None:
        tensor = tensor.to(device)
    if ndim is not None:
        allowed = (ndim,) if isinstance(ndim, int) else ndim
        if tensor.ndim not in allowed:
            dims = " or ".join(f"{d}-D" for d in allowed)
            fail(name, f"a {dims} array", tensor, ShapeError)
    if finite and not bool(torch.isfinite(tensor).all()):
        fail(name, "finite (no NaN or inf)", "an array containing NaN or inf")
    return tensor


def _is_int(tensor: torch.Tensor) -> bool:
    return tensor.dtype in (torch.int8, torch.int16, torch.int32, torch.int64, torch.uint8)


def _range_text(
    what: str,
    low: float | None,
    high: float | None,
    low_open: bool = False,
    high_open: bool = False,
) -> str:
    if low is None and high is None:
        return what
    left = "(" if low_open or low is None else "["
    right = ")" if high_open or high is None else "]"
    lo = "-inf" if low is None else f"{low:g}"
    hi = "inf" if high is None else f"{high:g}"
    return f"{what} in the range {left}{lo}, {hi}{right}"
