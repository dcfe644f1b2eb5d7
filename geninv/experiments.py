"""Experiments: several methods on one signal (:func:`run_methods`).

Sweeps live in :mod:`geninv.sweeps`, their named presets in :mod:`geninv.presets`, their chart in
:mod:`geninv.charts`, and 2-D phase maps in :mod:`geninv.phases`; the phase-map names are also
importable from here (``geninv.experiments.run_phase``...).
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Sequence
from typing import Any

from geninv.generator import Generator
from geninv.observation import Observation
from geninv.phases import PhaseConfig, phase_boundary, phase_grid, run_phase, run_phase_cell

__all__ = ["PhaseConfig", "phase_boundary", "phase_grid", "run_methods", "run_phase", "run_phase_cell"]


# --------------------------------------------------------------------------- one signal, many methods
def run_methods(
    generator: Generator,
    obs: Observation,
    methods: Sequence[str],
    *,
    options: dict[str, dict[str, Any]] | None = None,
    seed: int = 0,
    progress: Callable[[float, str], Any] | None = None,
) -> dict[str, Any]:
    """Run ``methods`` on the same observation and seed; returns ``{method: InversionResult}``.

    A method that cannot handle the case (e.g. layer-wise with a compressed-sensing operator and a
    sigmoid output) maps to the exception it raised, so one failure does not hide the others.
    """
    from geninv.errors import GeninvError
    from geninv.inversion import invert

    options = options or {}
    out: dict[str, Any] = {}
    for k, method in enumerate(methods):
        sub = None
        if progress is not None:

            def sub(frac, msg, k=k):
                return progress((k + frac) / len(methods), msg)

        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            try:
                out[method] = invert(generator, obs, method, seed=seed, progress=sub, **options.get(method, {}))
            except GeninvError as exc:
                out[method] = exc
    return out
