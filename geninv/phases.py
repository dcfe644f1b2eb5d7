"""2-D phase maps: success and the certificate's verdict over every cell of two swept variables.

A :class:`PhaseConfig` crosses two sweep variables (e.g. the expansion ratio and the fraction
missing); :func:`run_phase` (or :func:`run_phase_cell`, one cell at a time) runs every method and
the certificate on each cell, and :func:`phase_grid` turns the records into per-cell rates and the
certificate's predicted boundary (:func:`phase_boundary`).
"""

from __future__ import annotations

import dataclasses
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from geninv import masks
from geninv._random import derive
from geninv._validation import check_choice, fail
from geninv.generator import Generator
from geninv.observation import observe
from geninv.sweeps import CLEAN_DB, ORACLE, VARIABLES, SweepConfig, _cached_generator, sweep_widths

PHASE_SPARK_BUDGET = 200
"""Column subsets the certificate of a phase map may search per matrix (its verdicts need rank, not spark)."""


@dataclass(frozen=True)
class PhaseConfig:
    """A 2-D sweep: every (x, y) cell of two variables, ``trials`` signals each, every method and the certificate.

    Parameters
    ----------
    generator : str
        Generator spec; with ``"expansion"`` as a variable only its seed is used (widths
        ``[20, 20r, 20r^2, 20r^3]``, as in :class:`SweepConfig`).
    x_variable, y_variable : {'noise_db', 'missing', 'box', 'expansion'}
        Two different variables; 'missing' and 'box' cannot be combined (both are masks).
    x_values, y_values : tuple of float
    methods : tuple of str
        Registered methods (and "oracle").
    trials, seed, threshold, method_options
        As in :class:`SweepConfig`.
    """

    generator: str = "random:20-40-80-160:seed=0"
    x_variable: str = "expansion"
    x_values: tuple[float, ...] = (1.25, 1.5, 1.75, 2.0, 2.5, 3.0)
    y_variable: str = "missing"
    y_values: tuple[float, ...] = (0.0, 0.2, 0.4, 0.6, 0.8)
    methods: tuple[str, ...] = ("latent-pursuit",)
    trials: int = 10
    seed: int = 0
    threshold: float = 1e-3
    method_options: dict[str, dict[str, Any]] = field(default_factory=dict)

    def __post_init__(self) -> None:
        check_choice("x_variable", self.x_variable, VARIABLES)
        check_choice("y_variable", self.y_variable, VARIABLES)
        if self.x_variable == self.y_variable:
            fail("y_variable", f"a variable other than x_variable ({self.x_variable!r})", self.y_variable)
        if {self.x_variable, self.y_variable} == {"missing", "box"}:
            fail("y_variable", "not both 'missing' and 'box' (each is a mask)", self.y_variable)
        for axis in ("x", "y"):  # each axis is validated as a 1-D sweep over it
            sweep = self.axis_sweep(axis)
            object.__setattr__(self, f"{axis}_values", sweep.values)
        object.__setattr__(self, "methods", self.axis_sweep("x").methods)

    def axis_sweep(self, axis: str) -> SweepConfig:
        """The 1-D sweep along one axis (how the axis's values are checked and its generators built)."""
        variable, values = (self.x_variable, self.x_values) if axis == "x" else (self.y_variable, self.y_values)
        return SweepConfig(
            generator=self.generator,
            variable=variable,
            values=values,
            methods=self.methods,
            trials=self.trials,
            seed=self.seed,
            threshold=self.threshold,
            method_options=self.method_options,
        )

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def widths(self, x: float, y: float) -> tuple[int, ...]:
        """Widths of the generator of cell (x, y), without building it."""
        settings = {self.x_variable: x, self.y_variable: y}
        if "expansion" in settings:
            return sweep_widths(self.axis_sweep("x" if self.x_variable == "expansion" else "y"), settings["expansion"])
        from geninv.io import spec_widths

        return spec_widths(self.generator)

    @property
    def cells(self) -> int:
        return len(self.x_values) * len(self.y_values)


def _phase_observation(config: PhaseConfig, gen: Generator, settings: dict[str, float], ix: int, iy: int):
    seed = derive(config.seed, "phase", ix, iy)
    z = gen.sample_latent(config.trials, seed=seed)
    n = gen.output_dim
    mask = None
    if settings.get("missing", 0) > 0:
        mask = masks.random_pixels(n, settings["missing"], seed=seed)
    elif settings.get("box", 0) > 0:
        mask = masks.center_box(n, int(settings["box"]))
    snr = settings.get("noise_db", CLEAN_DB)
    return observe(gen, z, mask=mask, snr_db=None if snr >= CLEAN_DB else snr, seed=seed)


def run_phase_cell(config: PhaseConfig, ix: int, iy: int) -> list[dict[str, Any]]:
    """The records of one cell: per method and trial the latent error and success, with the certificate."""
    from geninv.inversion import invert
    from geninv.inversion.oracle import oracle_latent
    from geninv.metrics import latent_error
    from geninv.theory import certify

    x, y = config.x_values[ix], config.y_values[iy]
    settings = {config.x_variable: x, config.y_variable: y}
    widths = config.widths(x, y)
    if "expansion" in settings:
        gen = _cached_generator(config.generator, widths)
    else:
        gen = _cached_generator(config.generator, None)
    obs = _phase_observation(config, gen, settings, ix, iy)
    sigma = float(obs.noise_sigma.max())
    cert = certify(gen, obs.z_true, mask=obs.mask, noise_sigma=sigma, spark_budget=PHASE_SPARK_BUDGET)
    out = []
    for method in config.methods:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            try:
                if method == ORACLE:
                    z_hat = oracle_latent(gen, obs)
                else:
                    opts = config.method_options.get(method, {})
                    z_hat = invert(gen, obs, method, seed=config.seed, **opts).z_hat
            except Exception:  # a method that cannot run here: its cells are failures, the map goes on
                z_hat = torch.full_like(obs.z_true, float("nan"))
        err = latent_error(z_hat, obs.z_true).numpy()
        for b in range(config.trials):
            out.append(
                {
                    "x": x,
                    "y": y,
                    "method": method,
                    "trial": b,
                    "latent_error": float(err[b]),
                    "success": bool(err[b] <= config.threshold),
                    "identifiable_network": bool(cert.identifiable_network[b]),
                    "identifiable": bool(cert.identifiable[b]),
                    "widths": "-".join(map(str, gen.widths)),
                }
            )
    return out


def run_phase(config: PhaseConfig, *, progress: Callable[[float, str], Any] | None = None) -> list[dict[str, Any]]:
    """Run a phase map cell by cell; ``progress`` returning False stops it (the records so far are returned)."""
    if not isinstance(config, PhaseConfig):
        fail("config", "a PhaseConfig", config)
    records: list[dict[str, Any]] = []
    done = 0
    for ix, x in enumerate(config.x_values):
        for iy, y in enumerate(config.y_values):
            records.extend(run_phase_cell(config, ix, iy))
            done += 1
            message = f"{config.x_variable}={x:g}, {config.y_variable}={y:g}"
            if progress is not None and progress(done / config.cells, message) is False:
                return records
    return records


def phase_grid(records: Sequence[dict[str, Any]], method: str) -> dict[str, Any]:
    """Per cell (rows: y values, columns: x values): the method's success rate and median error, and
    the fractions of samples the certificate calls identifiable (whole network / layer by layer).

    Cells without records are NaN. Also the certificate's predicted boundary along y for each x
    (:func:`phase_boundary`).
    """
    xs = sorted({r["x"] for r in records})
    ys = sorted({r["y"] for r in records})
    shape = (len(ys), len(xs))
    grid = {key: np.full(shape, np.nan) for key in ("success", "median_error", "network", "layerwise", "trials")}
    for j, x in enumerate(xs):
        for i, y in enumerate(ys):
            cell = [r for r in records if r["x"] == x and r["y"] == y and r["method"] == method]
            if not cell:
                continue
            err = np.array([r["latent_error"] for r in cell], dtype=float)
            grid["success"][i, j] = np.mean([r["success"] for r in cell])
            grid["median_error"][i, j] = np.nanmedian(err) if np.isfinite(err).any() else np.nan
            grid["network"][i, j] = np.mean([r["identifiable_network"] for r in cell])
            grid["layerwise"][i, j] = np.mean([r["identifiable"] for r in cell])
            grid["trials"][i, j] = len(cell)
    return {
        "x": xs,
        "y": ys,
        **grid,
        "boundary_network": phase_boundary(grid["network"], ys),
        "boundary_layerwise": phase_boundary(grid["layerwise"], ys),
    }


def phase_boundary(fractions: np.ndarray, ys: Sequence[float], *, level: float = 0.5) -> list[float | None]:
    """For each column, where along y the fraction first drops below ``level`` (counting from the first
    row): the midpoint between that value and the one before; the first value when the first row is
    already below, the last value when no row is; None when the column has no data."""
    out: list[float | None] = []
    for j in range(fractions.shape[1]):
        col = fractions[:, j]
        if np.isnan(col).all():
            out.append(None)
            continue
        below = np.flatnonzero(np.nan_to_num(col, nan=0.0) < level)
        if below.size == 0:
            out.append(float(ys[-1]))
        elif below[0] == 0:
            out.append(float(ys[0]))
        else:
            k = int(below[0])
            out.append((float(ys[k - 1]) + float(ys[k])) / 2)
    return out
