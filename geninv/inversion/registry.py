"""The one list of inversion methods: dashboard, CLI, benchmarks and tests read it from here.

A method is a plain function with the :class:`Inverter` signature and a frozen config dataclass,
registered with :func:`register`; :func:`invert` validates the inputs and the options, then calls it.
"""

from __future__ import annotations

import dataclasses
import importlib
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

import torch

from geninv._threads import threads_for
from geninv._validation import check_int, fail
from geninv.errors import InvalidValueError, ShapeError
from geninv.generator import Generator
from geninv.observation import Observation

if TYPE_CHECKING:
    from geninv.inversion.result import InversionResult

Progress = Callable[[float, str], Any]
"""Progress callback: ``progress(fraction_done, message)``. Returning False asks to stop."""


@runtime_checkable
class Inverter(Protocol):
    """The method contract: ``method(generator, observation, config, *, seed, progress) -> InversionResult``.

    ``config`` is the method's frozen config dataclass (validated in its ``__post_init__``), ``seed``
    seeds every random choice the method makes, and ``progress(fraction, message)`` may return False
    to stop an iterative method early. The method must not modify its inputs and must return one
    :class:`~geninv.inversion.result.InversionResult` whatever happens (statuses say what went wrong);
    it raises only on input it cannot handle (an :class:`~geninv.errors.UnsupportedError` naming why).
    """

    def __call__(
        self,
        generator: Generator,
        observation: Observation,
        config: Any,
        *,
        seed: int = 0,
        progress: Progress | None = None,
    ) -> InversionResult: ...


# Modules that register methods when imported, in display order.
_METHOD_MODULES = (
    "geninv.inversion.gradient",
    "geninv.inversion.pursuit",
    "geninv.inversion.layerwise_lp",
    "geninv.inversion.hybrid",
)


@dataclass(frozen=True)
class MethodSpec:
    """A registered method: its function, its config class and a one-line description."""

    name: str
    function: Inverter
    config: type
    summary: str


_REGISTRY: dict[str, MethodSpec] = {}
_loaded = False


def register(name: str, config: type, summary: str) -> Callable[[Inverter], Inverter]:
    """Decorator: ``@register("gd", GradientDescentConfig, "...")`` on an :class:`Inverter`."""

    def wrap(function: Inverter) -> Inverter:
        if not dataclasses.is_dataclass(config):
            fail("config", "a dataclass of the method's options", config)
        _REGISTRY[name] = MethodSpec(name, function, config, summary)
        return function

    return wrap


def _load() -> None:
    global _loaded
    if not _loaded:
        for module in _METHOD_MODULES:
            try:
                importlib.import_module(module)
            except ModuleNotFoundError as exc:  # a method module not written yet
                if exc.name != module:
                    raise
        _loaded = True


def methods() -> tuple[str, ...]:
    """Names of the registered inversion methods."""
    _load()
    return tuple(_REGISTRY)


def spec(name: str) -> MethodSpec:
    """The :class:`MethodSpec` of ``name``."""
    _load()
    if not isinstance(name, str) or name not in _REGISTRY:
        fail("method", "one of " + ", ".join(repr(m) for m in _REGISTRY), name)
    return _REGISTRY[name]


def make_config(name: str, **options: Any) -> Any:
    """Validated config of method ``name`` from keyword options."""
    cls = spec(name).config
    known = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(options) - known)
    if unknown:
        raise InvalidValueError(
            f"Unknown option(s) {', '.join(map(repr, unknown))} for method '{name}'. "
            f"Valid options: {', '.join(sorted(known))}."
        )
    return cls(**options)


SEED_MAX = 2**64 - 1
"""Largest seed torch's random generators take."""


def check_observation(generator: Generator, observation: Observation) -> None:
    """Check that ``observation`` can be inverted with ``generator``: sizes, dtype, device, values.

    Raises
    ------
    ShapeError
        An empty batch, or measurements / operator whose sizes do not fit the generator's output.
    InvalidValueError
        Another dtype or device than the generator's, or measurements that are not finite.
    """
    y, op = observation.y, observation.operator
    if not isinstance(y, torch.Tensor) or y.ndim != 2:
        fail("observation.y", "a 2-D tensor of shape (B, m)", y, ShapeError)
    if y.shape[0] < 1:
        fail("observation.y", "at least one signal (B >= 1)", y, ShapeError)
    shape = getattr(op, "shape", None)
    if not isinstance(shape, tuple) or len(shape) != 2:
        fail("observation.operator", "a measurement operator with a (m, n) shape", op)
    if shape[1] != generator.output_dim:
        got = f"an operator of shape {shape}"
        fail("observation.operator", f"an operator on the generator's {generator.output_dim} outputs", got, ShapeError)
    if y.shape[1] != shape[0]:
        fail("observation.y", f"of shape (B, {shape[0]}) to match the operator", y, ShapeError)
    if y.dtype != generator.dtype:
        fail("observation.y", f"of the generator's dtype {generator.dtype} (observe with this generator)", y)
    if y.device != generator.device:
        fail("observation.y", f"on the generator's device {generator.device}", f"a tensor on {y.device}")
    if not bool(torch.isfinite(y).all()) or not bool(torch.isfinite(y.pow(2).sum(-1)).all()):
        fail("observation.y", "finite, with a finite squared norm", "values that are NaN, inf or too large")
    sigma = observation.noise_sigma
    if not isinstance(sigma, torch.Tensor) or tuple(sigma.shape) != (y.shape[0],):
        fail("observation.noise_sigma", f"a tensor of shape ({y.shape[0]},)", sigma, ShapeError)
    if not bool(torch.isfinite(sigma).all()) or bool((sigma < 0).any()):
        fail("observation.noise_sigma", "finite and non-negative", sigma)
    z = observation.z_true
    if z is not None and (not isinstance(z, torch.Tensor) or tuple(z.shape) != (y.shape[0], generator.latent_dim)):
        fail("observation.z_true", f"None or of shape ({y.shape[0]}, {generator.latent_dim})", z, ShapeError)


def invert(
    generator: Generator,
    observation: Observation,
    method: str = "hybrid",
    *,
    seed: int = 0,
    progress: Progress | None = None,
    **options: Any,
) -> Any:
    """Estimate the latent that produced ``observation``.

    Parameters
    ----------
    generator : Generator
    observation : Observation
    method : str
        One of :func:`methods` (default ``'hybrid'``).
    seed : int
        Seed of every random choice the method makes (restarts, initialisation).
    progress : callable, optional
        ``progress(fraction, message)``; returning False stops an iterative method early.
    **options
        The method's options (fields of its config dataclass).

    Returns
    -------
    InversionResult

    Raises
    ------
    GeninvError
        A bad method, option or seed, or an observation that does not fit the generator
        (see :func:`check_observation`).
    """
    if not isinstance(generator, Generator):
        fail("generator", "a geninv.Generator", generator)
    if not isinstance(observation, Observation):
        fail("observation", "a geninv.Observation (see geninv.observe)", observation)
    check_observation(generator, observation)
    seed = check_int("seed", seed, low=0, high=SEED_MAX)
    entry = spec(method)
    config = make_config(method, **options)
    with threads_for(generator, observation.batch_size):
        return entry.function(generator, observation, config, seed=seed, progress=progress)
