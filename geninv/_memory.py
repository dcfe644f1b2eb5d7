"""One memory budget for the batched solvers: work is split into chunks of signals that fit it.

Per-signal matrices (a Gram matrix per signal, a Jacobian per signal) grow with the batch times the
width squared; without chunks a float32 batch of 1024 on a [64, 512, 2048, 8192] generator asked
for 128 GiB of GPU memory. Every batched solver sizes its chunks from this budget, so peak memory
grows with the chunk, not with the batch.

The budget defaults to 1 GiB on any device; set ``GENINV_MEMORY_BUDGET`` (bytes, or a number with
a ``KiB`` / ``MiB`` / ``GiB`` suffix) or call :func:`set_budget` to change it.
"""

from __future__ import annotations

import os
import re

from geninv._validation import fail

DEFAULT_BUDGET = 1 << 30
_UNITS = {"": 1, "b": 1, "kib": 1 << 10, "mib": 1 << 20, "gib": 1 << 30, "kb": 10**3, "mb": 10**6, "gb": 10**9}
_override: int | None = None


def parse_bytes(text: str, *, name: str = "GENINV_MEMORY_BUDGET", minimum: int = 1 << 20) -> int:
    """``"512MiB"`` -> 536870912; a plain integer is bytes. ``name`` is the setting errors name."""
    match = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([a-zA-Z]*)\s*", str(text))
    if not match or match.group(2).lower() not in _UNITS:
        fail(name, "a size such as 1073741824, 512MiB or 2GiB", text)
    value = int(float(match.group(1)) * _UNITS[match.group(2).lower()])
    if value < minimum:
        fail(name, "at least 1MiB" if minimum == 1 << 20 else f"at least {minimum} bytes", text)
    return value


def budget() -> int:
    """The memory budget in bytes (see the module docstring)."""
    if _override is not None:
        return _override
    env = os.environ.get("GENINV_MEMORY_BUDGET")
    return parse_bytes(env) if env else DEFAULT_BUDGET


def set_budget(n_bytes: int | str | None) -> None:
    """Set the budget for this process (``None`` restores the default / environment)."""
    global _override
    _override = None if n_bytes is None else parse_bytes(str(n_bytes))


def chunk_size(batch: int, bytes_per_signal: float) -> int:
    """Signals per chunk so that ``chunk * bytes_per_signal`` stays within the budget (at least 1)."""
    if bytes_per_signal <= 0:
        return max(batch, 1)
    return int(max(1, min(batch, budget() // max(int(bytes_per_signal), 1))))


def chunks(batch: int, bytes_per_signal: float):
    """Slices covering ``range(batch)`` in chunks that fit the budget."""
    size = chunk_size(batch, bytes_per_signal)
    return [slice(lo, min(lo + size, batch)) for lo in range(0, batch, size)]
