"""Measurement operators, noise and the :class:`Observation` every algorithm takes.

``y_obs = A(G(z)) + e`` (docs/algorithms.md). A measurement operator is any
:class:`~geninv.operators.LinearOperator` on the generator's output: :class:`Identity`,
:class:`Mask` (inpainting), :class:`GaussianMatrix` (compressed sensing), or a structured one
(:class:`~geninv.operators.SubsampledDCT`, :class:`~geninv.operators.Blur`), also built from a spec
string with :func:`measurement_operator` (``"gaussian:300:seed=1"``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from geninv import masks as _masks
from geninv._random import torch_generator
from geninv._validation import as_tensor, check_real, fail
from geninv.errors import InvalidMaskError, ShapeError
from geninv.generator import Generator, Trace
from geninv.operators import GaussianMatrix, Identity, LinearOperator, Mask, from_spec

__all__ = [
    "GaussianMatrix",
    "GaussianNoise",
    "Identity",
    "Mask",
    "MeasurementOperator",
    "Observation",
    "measurement_operator",
    "observe",
    "snr_to_sigma",
]


MeasurementOperator = LinearOperator
"""Measurement operators follow the one linear-operator contract (:mod:`geninv.operators`)."""


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
    operator : LinearOperator
        The measurement operator ``A`` (shape (m, n_L)).
    noise_sigma : Tensor of shape (B,)
        Noise standard deviation per signal (zeros when clean).
    z_true : Tensor of shape (B, n_0) or None
        Ground truth, when the observation was simulated.
    trace_true : Trace or None
        Every true layer, when simulated.
    """

    y: torch.Tensor
    operator: LinearOperator
    noise_sigma: torch.Tensor
    z_true: torch.Tensor | None = None
    trace_true: Trace | None = None

    @property
    def batch_size(self) -> int:
        return self.y.shape[0]

    @property
    def mask(self) -> np.ndarray | None:
        """Flat bool mask over the output (True = observed) for an identity or a mask; None otherwise."""
        return self.operator.mask if isinstance(self.operator, Identity | Mask) else None

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


def measurement_operator(spec: str, generator: Generator) -> LinearOperator:
    """The measurement operator a spec string names, on ``generator``'s output.

    ``gaussian:M[:seed=S]`` (i.i.d. N(0, 1/M) entries), ``dct:M[:seed=S]`` (M coefficients of the 2-D
    DCT), ``subsample:M[:seed=S]`` (M random pixels) or ``blur[:sigma=X][:stride=K]`` (a Gaussian blur
    sampled every K pixels); see :func:`geninv.operators.from_spec`. Image operators use the
    generator's image shape (its last layer's, or a square).
    """
    return from_spec(spec, generator.output_dim, image_shape=generator.image_shape)


def _make_operator(generator: Generator, mask: Any, operator: Any) -> LinearOperator:
    n = generator.output_dim
    if isinstance(operator, str):
        operator = measurement_operator(operator, generator)
    if mask is not None and operator is not None:
        raise InvalidMaskError("Pass either 'mask' or 'operator', not both.")
    if operator is not None:
        if not isinstance(operator, LinearOperator):
            fail("operator", "a geninv.operators.LinearOperator (Identity, Mask, GaussianMatrix, ...)", operator)
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
    operator : LinearOperator or str, optional
        The measurement operator, or its spec string (see :func:`measurement_operator`).
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
