"""The one list of inversion methods: dashboard, CLI, benchmarks and tests read it from here."""

from __future__ import annotations

import dataclasses
import importlib
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from geninv._threads import threads_for
from geninv._validation import check_int, fail
from geninv.errors import InvalidValueError
from geninv.generator import Generator
from geninv.observation import Observation

Progress = Callable[[float, str], Any]
"""Progress callback: ``progress(fraction_done, message)``. Returning False asks to stop."""

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
    function: Callable[..., Any]
    config: type
    summary: str


_REGISTRY: dict[str, MethodSpec] = {}
_loaded = False


def register(name: str, config: type, summary: str) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """Decorator: ``@register("gd", GradientDescentConfig, "...")`` on ``f(G, obs, config, *, seed, progress)``."""

    def wrap(function: Callable[..., Any]) -> Callable[..., Any]:
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
    if name not in _REGISTRY:
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
    """
    if not isinstance(generator, Generator):
        fail("generator", "a geninv.Generator", generator)
    if not isinstance(observation, Observation):
        fail("observation", "a geninv.Observation (see geninv.observe)", observation)
    if observation.y.shape[1] != observation.operator.shape[0]:
        fail("observation.y", f"of shape (B, {observation.operator.shape[0]})", observation.y)
    seed = check_int("seed", seed, low=0)
    entry = spec(method)
    config = make_config(method, **options)
    with threads_for(generator, observation.batch_size):
        return entry.function(generator, observation, config, seed=seed, progress=progress)
