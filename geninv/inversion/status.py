"""One rule for every method: ``converged`` means the estimate fits the data.

A status must say whether the problem was solved, not whether a loop ended (scipy's
``OptimizeResult.success``, cvxpy's ``optimal``). For an estimate ``z_hat`` of one signal with
``m`` measurements and noise standard deviation ``sigma``, let ``r = A G(z_hat) - y``:

- clean (``sigma = 0``): ``||r|| <= CLEAN_RTOL_FACTOR * eps(dtype) * ||y||``, the data fit to working
  precision of the generator's dtype (2.2e-13 relative in float64, 1.2e-4 in float32);
- noisy: ``||r||^2 <= sigma^2 (m + 3 sqrt(2 m))``, three standard deviations above the mean of
  ``||e||^2`` for Gaussian noise; the true latent misses it with probability 2.0e-3 at m = 784 (the
  chi-square tail), a maximum-likelihood estimate, whose residual is smaller than the noise's, with
  ~4e-4 (docs/algorithms.md, *Statuses*, has the measured rate).

A fit at that level is ``converged`` whatever method produced it; anything else carries the
method's reason (``not_fit``, ``max_iter``, ``infeasible`` or ``solver_error``).
"""

from __future__ import annotations

import math
import warnings

import numpy as np
import torch

from geninv.errors import ConvergenceWarning
from geninv.inversion.result import Status

CLEAN_RTOL_FACTOR = 1000.0
NOISE_SIGMAS = 3.0


def clean_rtol(dtype: torch.dtype) -> float:
    """Relative residual below which a clean signal counts as fit (working precision)."""
    return CLEAN_RTOL_FACTOR * float(torch.finfo(dtype).eps)


def residual_sq(generator, obs, z: torch.Tensor, *, output: torch.Tensor | None = None) -> torch.Tensor:
    """``||A G(z) - y||^2`` per signal, accumulated in float64; ``output``: ``G(z)`` where the caller
    has it (a trace's last activations)."""
    with torch.no_grad():
        fitted = obs.operator.forward(generator(z.to(generator.dtype)) if output is None else output)
        r = fitted.double() - obs.y.to(fitted.device).double()
    return r.pow(2).sum(-1)


def keep_lower(
    best: torch.Tensor | None, best_loss: torch.Tensor | None, z: torch.Tensor, loss: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """Per signal, whichever of ``best`` and the candidate ``z`` has the lower loss (``z`` when there
    is no ``best`` yet); returns the estimate and its loss."""
    if best is None or best_loss is None:
        return z, loss
    better = loss < best_loss
    return torch.where(better.unsqueeze(-1), z, best), torch.where(better, loss, best_loss)


def fit_bound(obs, dtype: torch.dtype) -> torch.Tensor:
    """Largest ``||r||^2`` per signal that counts as a fit (float64, on the observation's device)."""
    y = obs.y.double()
    m = y.shape[1]
    sigma2 = obs.noise_sigma.to(y.device).double().pow(2)
    noisy = sigma2 * (m + NOISE_SIGMAS * math.sqrt(2 * m))
    clean = (clean_rtol(dtype) * torch.linalg.vector_norm(y, dim=-1)).pow(2)
    # A tiny sigma cannot demand more than working precision.
    return torch.maximum(noisy, clean)


def data_fit(generator, obs, z: torch.Tensor, *, output: torch.Tensor | None = None) -> torch.Tensor:
    """Bool (B,): the estimate fits the data (see the module docstring). Non-finite estimates never do.
    ``output``: ``G(z)`` where the caller has it."""
    finite = torch.isfinite(z).all(-1)
    z_safe = torch.where(finite.unsqueeze(-1), z, torch.zeros_like(z))
    return fits(residual_sq(generator, obs, z_safe, output=output), obs, generator.dtype) & finite.to(z.device)


def fits(res: torch.Tensor, obs, dtype: torch.dtype) -> torch.Tensor:
    """Bool (B,): squared residuals ``res`` (from :func:`residual_sq`) within the fit bound."""
    return torch.isfinite(res) & (res <= fit_bound(obs, dtype).to(res.device))


def statuses(fit: torch.Tensor, reason: np.ndarray | str = Status.NOT_FIT.value) -> np.ndarray:
    """Per-signal statuses: ``converged`` where ``fit``, else the method's ``reason`` (per signal or one)."""
    fit_np = fit.detach().cpu().numpy().astype(bool)
    reasons = np.broadcast_to(np.asarray(reason, dtype=object), fit_np.shape)
    if np.any((reasons == Status.CONVERGED.value) & ~fit_np):
        reasons = np.where(reasons == Status.CONVERGED.value, Status.NOT_FIT.value, reasons)
    return np.where(fit_np, Status.CONVERGED.value, reasons).astype(str)


def warn_unfit(method: str, status: np.ndarray, *, stacklevel: int = 3) -> None:
    """One ConvergenceWarning that counts the signals that are not ``converged``, by status."""
    bad = status[status != Status.CONVERGED.value]
    if bad.size:
        counts = ", ".join(f"{int((bad == s).sum())} {s}" for s in sorted(set(bad.tolist())))
        warnings.warn(
            f"{method}: {bad.size} of {status.size} signals do not fit the data to the noise level "
            f"(or to working precision when clean): {counts}.",
            ConvergenceWarning,
            stacklevel=stacklevel,
        )
