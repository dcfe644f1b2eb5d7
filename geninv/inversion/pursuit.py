"""Layered Basis-Pursuit ("lbp") and Latent-Pursuit ("latent-pursuit") (MISSION.md, section 4).

Both sweep from the output back to z (see :mod:`geninv.inversion._layerwise`). Each step first
tries the exact shortcut FINDINGS.md measured: least squares on the rows, accepted when the rows
determine the layer, the fit is exact and the sign / off-support constraints hold. Otherwise:

- lbp: basis pursuit (HiGHS linear program) when clean, a Lasso (FISTA) with noise;
- latent-pursuit: non-negative (Lasso) least squares, batched, with an exact active-set fallback,
  then the off-support inequalities; a cvxpy solve repairs the signals that violate them.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass

import numpy as np
import torch

from geninv._validation import check_real, fail
from geninv.inversion._layerwise import StepProblem, sweep
from geninv.inversion.registry import register
from geninv.solvers.linear import lstsq_rows, nnls_rows


def _fit_tol(dtype: torch.dtype) -> float:
    return 100 * math.sqrt(float(torch.finfo(dtype).eps))


def _exact_shortcut(p: StepProblem) -> tuple[torch.Tensor, torch.Tensor]:
    """Least squares on the rows; ``accepted`` where it is determined, exact and sign-feasible."""
    t = p.shifted_target
    x, determined = lstsq_rows(p.weight, t, p.rows, weights=p.row_weights)
    pred = x @ p.weight.T
    scale = torch.linalg.vector_norm(t * p.rows, dim=-1).clamp_min(torch.finfo(x.dtype).tiny)
    resid = torch.linalg.vector_norm((pred - t) * p.rows, dim=-1) / scale
    xs = x.abs().amax(-1).clamp_min(torch.finfo(x.dtype).tiny)
    ok = determined & (resid <= _fit_tol(x.dtype)) & (p.noise == 0)
    if p.nonneg:
        ok &= (x >= -_fit_tol(x.dtype) * xs.unsqueeze(-1)).all(-1)
    off = (pred - t) * p.off_rows  # W x + b on inactive rows must be <= 0
    tscale = t.abs().amax(-1, keepdim=True).clamp_min(torch.finfo(x.dtype).tiny)
    ok &= (off <= _fit_tol(x.dtype) * tscale).all(-1)
    return x, ok


def _auto_lam(p: StepProblem, scale: float) -> torch.Tensor:
    col = torch.linalg.vector_norm(p.weight, dim=0).median()
    return scale * p.noise * math.sqrt(2 * math.log(max(p.n, 2))) * col


@dataclass(frozen=True)
class LatentPursuitConfig:
    """Options of Latent-Pursuit.

    Parameters
    ----------
    lam_scale : float
        Sparsity weight as a multiple of ``sigma * sqrt(2 log n) * median column norm`` (noisy only).
    inequalities : bool
        Enforce ``W[S^c] x + b <= 0`` on the inactive units (a cvxpy solve for violators).
    saturation_tol : float
        Sigmoid / tanh outputs this close to their bounds give an inequality, not an equation.
    """

    lam_scale: float = 0.5
    inequalities: bool = True
    saturation_tol: float = 1e-6

    def __post_init__(self) -> None:
        check_real("lam_scale", self.lam_scale, low=0.0)
        check_real("saturation_tol", self.saturation_tol, low=0.0, high=0.1)
        if not isinstance(self.inequalities, bool):
            fail("inequalities", "a bool", self.inequalities)


def latent_pursuit_step(p: StepProblem, config: LatentPursuitConfig) -> tuple[torch.Tensor, str, torch.Tensor]:
    """One Latent-Pursuit step on a batch."""
    x, ok = _exact_shortcut(p)
    solver = "lstsq"
    todo = ~ok
    if bool(todo.any()):
        idx = torch.nonzero(todo).flatten()
        sub_t = p.shifted_target[idx]
        sub_rows = p.rows[idx]
        sub_w = None if p.row_weights is None else p.row_weights[idx]
        if p.nonneg:
            lam = _auto_lam(p, config.lam_scale)[idx]
            x_sub, kkt = nnls_rows(p.weight, sub_t, sub_rows, lam=lam, weights=sub_w)
            # Polish on the found support with a refined least-squares solve (to working precision).
            support = x_sub > x_sub.abs().amax(-1, keepdim=True) * math.sqrt(float(torch.finfo(x.dtype).eps))
            x_pol, det = lstsq_rows(p.weight, sub_t, sub_rows, support, weights=sub_w)
            better = det & (x_pol >= 0).all(-1) & (lam == 0)
            x_sub = torch.where(better.unsqueeze(-1), x_pol, x_sub)
            solver = "lstsq+nnls"
        else:
            x_sub, kkt = lstsq_rows(p.weight, sub_t, sub_rows, weights=sub_w)
        x[idx] = x_sub
        ok[idx] = kkt
    if config.inequalities and bool(p.off_rows.any()):
        pred = x @ p.weight.T - p.shifted_target
        tscale = p.shifted_target.abs().amax(-1, keepdim=True).clamp_min(1e-300)
        bad = ((pred * p.off_rows) > _fit_tol(x.dtype) * tscale + 3 * p.noise.unsqueeze(-1)).any(-1)
        if bool(bad.any()):
            x, fixed = _repair_inequalities(p, x, bad, config)
            ok = torch.where(bad, fixed, ok)
            solver += "+cvxpy"
    return x, solver, ok


def _repair_inequalities(p: StepProblem, x: torch.Tensor, bad: torch.Tensor, config: LatentPursuitConfig):
    """Solve the full constrained step with cvxpy for the signals that violate the inequalities."""
    from geninv.errors import SolverError
    from geninv.solvers.reference import constrained_lstsq

    ok = torch.zeros_like(bad)
    w = p.weight.detach().cpu().double().numpy()
    lam = _auto_lam(p, config.lam_scale).cpu().numpy()
    for b in torch.nonzero(bad).flatten().tolist():
        rows = p.rows[b].cpu().numpy()
        off = p.off_rows[b].cpu().numpy()
        t = p.shifted_target[b].detach().cpu().double().numpy()
        rw = np.ones(rows.sum()) if p.row_weights is None else p.row_weights[b].cpu().double().numpy()[rows]
        slack = 3 * float(p.noise[b])
        try:
            sol = constrained_lstsq(
                w[rows] * rw[:, None],
                t[rows] * rw,
                nonneg=p.nonneg,
                lam=float(lam[b]) if p.nonneg else 0.0,
                ineq_a=w[off],
                ineq_b=t[off] + slack,
            )
        except SolverError:
            continue
        if p.nonneg:
            sol = _polish_support(w, t, rows, sol)
        x[b] = torch.from_numpy(sol).to(x)
        ok[b] = True
    return x, ok


def _polish_support(w: np.ndarray, t: np.ndarray, rows: np.ndarray, sol: np.ndarray) -> np.ndarray:
    """Interior-point solutions leave ~1e-7 on true zeros: re-solve exactly on the clear support."""
    support = sol > 1e-6 * max(sol.max(), 1e-300)
    if support.sum() == 0 or support.sum() > rows.sum():
        return np.where(support, sol, 0.0)
    a = w[rows][:, support]
    refined, *_ = np.linalg.lstsq(a, t[rows], rcond=None)
    if (refined >= 0).all() and np.linalg.norm(a @ refined - t[rows]) <= np.linalg.norm(
        w[rows] @ sol - t[rows]
    ) + 1e-12:
        out = np.zeros_like(sol)
        out[support] = refined
        return out
    return np.where(support, sol, 0.0)


@register(
    "latent-pursuit", LatentPursuitConfig, "The paper's algorithm: non-negative pursuit with the relu's inequalities"
)
def latent_pursuit(generator, obs, config: LatentPursuitConfig, *, seed: int = 0, progress=None):
    """Latent-Pursuit: non-negative Lasso per hidden layer with the off-support inequalities."""
    return sweep(
        generator,
        obs,
        lambda p: latent_pursuit_step(p, config),
        method="latent-pursuit",
        options=dataclasses.asdict(config),
        progress=progress,
        saturation_tol=config.saturation_tol,
    )


@dataclass(frozen=True)
class LayeredBPConfig:
    """Options of Layered Basis-Pursuit.

    Parameters
    ----------
    lam_scale : float
        Lasso weight as a multiple of ``sigma * sqrt(2 log n) * median column norm`` (noisy only).
    iters : int
        FISTA iterations of the noisy Lasso.
    saturation_tol : float
    """

    lam_scale: float = 0.5
    iters: int = 300
    saturation_tol: float = 1e-6

    def __post_init__(self) -> None:
        check_real("lam_scale", self.lam_scale, low=0.0)
        check_real("saturation_tol", self.saturation_tol, low=0.0, high=0.1)
        from geninv._validation import check_int

        check_int("iters", self.iters, low=1)


def lbp_step(p: StepProblem, config: LayeredBPConfig) -> tuple[torch.Tensor, str, torch.Tensor]:
    """One Layered Basis-Pursuit step: no sign constraint, l1 for sparsity."""
    signed = dataclasses.replace(p, nonneg=False, off_rows=torch.zeros_like(p.off_rows))
    x, ok = _exact_shortcut(signed)
    solver = "lstsq"
    todo = ~ok
    if not bool(todo.any()):
        return x, solver, ok
    if not p.nonneg:  # the latent: plain least squares
        x2, det = lstsq_rows(p.weight, p.shifted_target, p.rows, weights=p.row_weights)
        return torch.where(todo.unsqueeze(-1), x2, x), solver, ok | (todo & det)
    idx = torch.nonzero(todo).flatten()
    clean = p.noise[idx] == 0
    if bool(clean.any()):
        solver += "+bp(highs)"
        for b in idx[clean].tolist():
            x[b], ok[b] = _basis_pursuit_highs(p, b)
    if bool((~clean).any()):
        solver += "+lasso"
        nid = idx[~clean]
        w2 = torch.cat([p.weight, -p.weight], dim=1)
        uv, _ = nnls_rows(
            w2,
            p.shifted_target[nid],
            p.rows[nid],
            lam=_auto_lam(p, config.lam_scale)[nid],
            weights=None if p.row_weights is None else p.row_weights[nid],
            iters=config.iters,
        )
        x[nid] = uv[:, : p.n] - uv[:, p.n :]
        ok[nid] = True
    return x, solver, ok


def _basis_pursuit_highs(p: StepProblem, b: int) -> tuple[torch.Tensor, bool]:
    from scipy.optimize import linprog

    rows = p.rows[b].cpu().numpy()
    a = p.weight.detach().cpu().double().numpy()[rows]
    t = p.shifted_target[b].detach().cpu().double().numpy()[rows]
    n = a.shape[1]
    res = linprog(np.ones(2 * n), A_eq=np.hstack([a, -a]), b_eq=t, bounds=(0, None), method="highs")
    if res.status != 0:
        return torch.zeros(n, dtype=p.weight.dtype, device=p.weight.device), False
    x = res.x[:n] - res.x[n:]
    return torch.from_numpy(x).to(dtype=p.weight.dtype, device=p.weight.device), True


@register("lbp", LayeredBPConfig, "Layered Basis-Pursuit: l1 pursuit per layer (the paper's guarantee)")
def layered_basis_pursuit(generator, obs, config: LayeredBPConfig, *, seed: int = 0, progress=None):
    """Layered Basis-Pursuit: basis pursuit (clean) or Lasso (noisy) per layer, least squares for z."""
    return sweep(
        generator,
        obs,
        lambda p: lbp_step(p, config),
        method="lbp",
        options=dataclasses.asdict(config),
        progress=progress,
        saturation_tol=config.saturation_tol,
    )
