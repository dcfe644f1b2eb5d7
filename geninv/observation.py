"""Measurement operators, noise and the :class:`Observation` every algorithm takes.

``y_obs = A(G(z)) + e`` (docs/algorithms.md). Operators follow the PyLops contract: a
``forward`` and an ``adjoint``, batched over the leading dimension, checked by a dot test.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Protocol, runtime_checkable

import numpy as np
import torch

from geninv import masks as _masks
from geninv._random import torch_generator
from geninv._validation import as_tensor, check_int, check_real, fail
from geninv.errors import InvalidMaskError, ShapeError
from geninv.generator import Generator, Trace


@runtime_checkable
class MeasurementOperator(Protocol):
    """A linear map from the generator's output (B, n) to measurements (B, m)."""

    @property
    def shape(self) -> tuple[int, int]: ...

    def forward(self, x: torch.Tensor) -> torch.Tensor: ...

    def adjoint(self, y: torch.Tensor) -> torch.Tensor: ...

    @property
    def is_selection(self) -> bool:
        """True when the operator keeps a subset of coordinates (identity or mask)."""
        ...

    def describe(self) -> dict[str, Any]: ...


@dataclass(frozen=True)
class Identity:
    """Every coordinate observed."""

    n: int

    def __post_init__(self) -> None:
        check_int("n", self.n, low=1)

    @property
    def shape(self) -> tuple[int, int]:
        return (self.n, self.n)

    @property
    def is_selection(self) -> bool:
        return True

    @property
    def mask(self) -> np.ndarray:
        return np.ones(self.n, dtype=bool)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x

    def adjoint(self, y: torch.Tensor) -> torch.Tensor:
        return y

    def describe(self) -> dict[str, Any]:
        return {"type": "identity", "n": self.n}


@dataclass(frozen=True, eq=False)
class Mask:
    """Keep the coordinates where ``mask`` is True (inpainting)."""

    mask: np.ndarray

    def __post_init__(self) -> None:
        object.__setattr__(self, "mask", _masks.validate(self.mask))
        self.mask.setflags(write=False)
        object.__setattr__(self, "_index", torch.from_numpy(np.flatnonzero(self.mask)))

    @property
    def shape(self) -> tuple[int, int]:
        return (int(self.mask.sum()), self.mask.size)

    @property
    def is_selection(self) -> bool:
        return True

    @property
    def rows(self) -> torch.Tensor:
        """Indices of the observed coordinates."""
        return self._index  # type: ignore[attr-defined,no-any-return]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x[..., self.rows.to(x.device)]

    def adjoint(self, y: torch.Tensor) -> torch.Tensor:
        out = y.new_zeros((*y.shape[:-1], self.mask.size))
        out[..., self.rows.to(y.device)] = y
        return out

    def describe(self) -> dict[str, Any]:
        return {"type": "mask", "n": int(self.mask.size), "observed": int(self.mask.sum())}


@dataclass(frozen=True, eq=False)
class GaussianMatrix:
    """Compressed sensing: ``A`` with i.i.d. N(0, 1/m) entries (Bora et al. 2017)."""

    m: int
    n: int
    seed: int = 0
    matrix: torch.Tensor = field(init=False, repr=False)

    def __post_init__(self) -> None:
        check_int("m", self.m, low=1)
        check_int("n", self.n, low=1)
        rng = torch_generator(self.seed, "measurement")
        a = torch.randn(self.m, self.n, generator=rng, dtype=torch.float64) / math.sqrt(self.m)
        object.__setattr__(self, "matrix", a)

    @property
    def shape(self) -> tuple[int, int]:
        return (self.m, self.n)

    @property
    def is_selection(self) -> bool:
        return False

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x @ self.matrix.to(dtype=x.dtype, device=x.device).T

    def adjoint(self, y: torch.Tensor) -> torch.Tensor:
        return y @ self.matrix.to(dtype=y.dtype, device=y.device)

    def describe(self) -> dict[str, Any]:
        return {"type": "gaussian", "m": self.m, "n": self.n, "seed": self.seed}


SNR_DB_RANGE = (-100.0, 300.0)
"""SNRs (dB) that give a usable sigma; beyond them sigma overflows or underflows."""


def snr_to_sigma(clean: torch.Tensor, snr_db: float) -> torch.Tensor:
    """Per-signal sigma giving ``snr_db`` = 10 log10(mean(clean^2) / sigma^2)."""
    snr_db = check_real("snr_db", snr_db, low=SNR_DB_RANGE[0], high=SNR_DB_RANGE[1])
    power = clean.pow(2).mean(dim=-1)
    return torch.sqrt(power / 10 ** (snr_db / 10))


@dataclass(frozen=True)
class GaussianNoise:
    """Additive white Gaussian noise with per-signal standard deviation ``sigma`` (B,)."""

    sigma: torch.Tensor

    def sample(self, shape: torch.Size, *, seed: int | None, dtype: torch.dtype, device: Any) -> torch.Tensor:
        rng = torch_generator(seed, "noise")
        e = torch.randn(shape, generator=rng, dtype=torch.float64).to(dtype=dtype, device=device)
        return e * self.sigma.to(dtype=dtype, device=device).unsqueeze(-1)


@dataclass(frozen=True, eq=False)
class Observation:
    """Measurements plus everything an algorithm may use about how they were taken.

    Attributes
    ----------
    y : Tensor of shape (B, m)
        The (noisy) measurements.
    operator : MeasurementOperator
    noise_sigma : Tensor of shape (B,)
        Noise standard deviation per signal (zeros when clean).
    z_true : Tensor of shape (B, n_0) or None
        Ground truth, when the observation was simulated.
    trace_true : Trace or None
        Every true layer, when simulated.
    """

    y: torch.Tensor
    operator: Any
    noise_sigma: torch.Tensor
    z_true: torch.Tensor | None = None
    trace_true: Trace | None = None

    @property
    def batch_size(self) -> int:
        return self.y.shape[0]

    @property
    def mask(self) -> np.ndarray | None:
        """Flat bool mask over the output (True = observed); None for a dense operator."""
        return getattr(self.operator, "mask", None)

    @property
    def x_true(self) -> torch.Tensor | None:
        """The clean full output ``G(z)``, when known."""
        return None if self.trace_true is None else self.trace_true.output

    @property
    def noisy(self) -> bool:
        return bool((self.noise_sigma > 0).any())

    def __getitem__(self, index: Any) -> Observation:
        """Select signals of the batch."""
        if isinstance(index, int):
            index = slice(index, index + 1)
        return Observation(
            y=self.y[index],
            operator=self.operator,
            noise_sigma=self.noise_sigma[index],
            z_true=None if self.z_true is None else self.z_true[index],
            trace_true=None if self.trace_true is None else self.trace_true[index],
        )

    @classmethod
    def from_measurements(
        cls,
        generator: Generator,
        y: Any,
        *,
        mask: Any = None,
        operator: Any = None,
        noise_sigma: float = 0.0,
    ) -> Observation:
        """Wrap real measurements (no ground truth) for inversion.

        ``y`` holds only the observed coordinates (shape (B, m)), or the full output (B, n) when a
        mask is given, in which case the hidden entries are dropped.
        """
        op = _make_operator(generator, mask, operator)
        y = as_tensor("y", y, ndim=(1, 2), dtype=generator.dtype, device=generator.device)
        if y.ndim == 1:
            y = y.unsqueeze(0)
        m, n = op.shape
        if isinstance(op, Mask) and y.shape[1] == n and m != n:
            y = op.forward(y)
        if y.shape[1] != m:
            fail("y", f"of shape (B, {m}) (one entry per measurement)", y, ShapeError)
        sigma = check_real("noise_sigma", noise_sigma, low=0.0)
        return cls(y=y, operator=op, noise_sigma=torch.full((y.shape[0],), sigma, dtype=generator.dtype))


def _make_operator(generator: Generator, mask: Any, operator: Any) -> Any:
    n = generator.output_dim
    if mask is not None and operator is not None:
        raise InvalidMaskError("Pass either 'mask' or 'operator', not both.")
    if operator is not None:
        if not isinstance(operator, MeasurementOperator):
            fail("operator", "an Identity, Mask or GaussianMatrix", operator)
        if operator.shape[1] != n:
            fail("operator", f"an operator on {n} coordinates (the generator's output)", operator.shape, ShapeError)
        return operator
    if mask is None:
        return Identity(n)
    mask = _masks.validate(mask, n)
    return Identity(n) if mask.all() else Mask(mask)


def observe(
    generator: Generator,
    z: Any,
    *,
    mask: Any = None,
    operator: Any = None,
    noise_sigma: float | None = None,
    snr_db: float | None = None,
    seed: int | None = 0,
) -> Observation:
    """Simulate measurements ``A(G(z)) + e`` of latents ``z`` and keep the ground truth.

    Parameters
    ----------
    generator : Generator
    z : array of shape (B, n_0) or (n_0,)
    mask : bool array of shape (n_L,), optional
        True = observed. Mutually exclusive with ``operator``.
    operator : MeasurementOperator, optional
    noise_sigma : float, optional
        Standard deviation of the additive Gaussian noise.
    snr_db : float, optional
        Alternatively, the signal-to-noise ratio of each measured signal in dB.
    seed : int or None
        Seed of the noise.

    Examples
    --------
    >>> import geninv
    >>> G = geninv.Generator.random([4, 16, 64], seed=0)
    >>> obs = geninv.observe(G, G.sample_latent(3, seed=1), mask=geninv.masks.random_pixels(64, 0.5))
    >>> tuple(obs.y.shape)
    (3, 32)
    """
    op = _make_operator(generator, mask, operator)
    trace = generator.trace(z)
    clean = op.forward(trace.output)
    if noise_sigma is not None and snr_db is not None:
        fail("snr_db", "None when 'noise_sigma' is given (pass one of them)", snr_db)
    if snr_db is not None:
        sigma = snr_to_sigma(clean, snr_db)
    else:
        s = 0.0 if noise_sigma is None else check_real("noise_sigma", noise_sigma, low=0.0)
        sigma = torch.full((clean.shape[0],), s, dtype=clean.dtype, device=clean.device)
    y = clean
    if bool((sigma > 0).any()):
        y = clean + GaussianNoise(sigma).sample(clean.shape, seed=seed, dtype=clean.dtype, device=clean.device)
    return Observation(y=y, operator=op, noise_sigma=sigma, z_true=trace.latent, trace_true=trace)
