"""Layered Basis-Pursuit ("lbp") and Latent-Pursuit ("latent-pursuit"); see docs/algorithms.md.

Both sweep from the output back to z (see :mod:`geninv.inversion._layerwise`). Each step first
tries the exact shortcut: least squares on the rows, accepted when the rows
determine the layer, the fit is exact and the sign / off-support constraints hold. Otherwise:

- lbp: basis pursuit (HiGHS linear program) when clean, a Lasso (FISTA) with noise;
- latent-pursuit: non-negative (Lasso) least squares, batched, with an exact active-set fallback,
  then the off-support inequalities, met by a batched active-set pass.

With noise both are noise-aware (see :mod:`geninv.inversion._layerwise`) and end with a joint refit
of z on the pattern they found.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass

import numpy as np
import torch

from geninv._validation import check_choice, check_int, check_real, fail
from geninv.inversion._layerwise import StepProblem, sweep
from geninv.inversion.registry import register
from geninv.solvers.linear import enforce_inequalities, lstsq_rows, nnls_rows


def _fit_tol(dtype: torch.dtype) -> float:
    return 100 * math.sqrt(float(torch.finfo(dtype).eps))


def _exact_shortcut(p: StepProblem):
    """Least squares on the rows; ``(x, accepted, determined, x_accepted, pred)``: accepted where it
    is determined, exact and sign-feasible. For a relu layer ``x_accepted`` is x on x >= 0 (what the
    step returns), and the fit and the inequalities are checked on it; ``pred`` is its ``W x``, None
    where no signal could be accepted (an undetermined or noisy step: no product is made)."""
    t = p.shifted_target
    x, determined = lstsq_rows(p.weight, t, p.rows, weights=p.row_weights)
    xs = x.abs().amax(-1).clamp_min(torch.finfo(x.dtype).tiny)
    ok = determined & (p.noise == 0)
    accepted = x
    if p.nonneg:
        ok &= (x >= -_fit_tol(x.dtype) * xs.unsqueeze(-1)).all(-1)
        accepted = x.clamp_min(0)
    if not bool(ok.any()):
        return x, ok, determined, accepted, None
    pred = accepted @ p.weight.T
    scale = torch.linalg.vector_norm(torch.where(p.rows, t, 0), dim=-1).clamp_min(torch.finfo(x.dtype).tiny)
    resid = torch.linalg.vector_norm(torch.where(p.rows, pred - t, 0), dim=-1) / scale
    ok &= resid <= _fit_tol(x.dtype)
    ok &= _feasible(p, accepted, pred)
    return x, ok, determined, accepted, pred


def _feasible(p: StepProblem, x: torch.Tensor, pred: torch.Tensor | None = None) -> torch.Tensor:
    """The inequalities ``W[off] x + b[off] <= bound`` hold (to the fit tolerance of the scale);
    ``pred`` is ``x @ W^T`` where the caller has it."""
    if not bool(p.off_rows.any()):
        return torch.ones(x.shape[0], dtype=torch.bool, device=x.device)
    pred = x @ p.weight.T if pred is None else pred
    excess = (pred - p.shifted_target) * p.off_rows
    return (excess <= _ineq_tol(p, x).unsqueeze(-1)).all(-1)


def _ineq_tol(p: StepProblem, x: torch.Tensor) -> torch.Tensor:
    tscale = (p.shifted_target * (p.rows | p.off_rows)).abs().amax(-1).clamp_min(torch.finfo(x.dtype).tiny)
    return _fit_tol(x.dtype) * tscale


def _auto_lam(p: StepProblem, scale: float) -> torch.Tensor:
    """``scale * noise * sqrt(2 log n) * median column norm`` of each signal's weighted rows (B,)."""
    if scale == 0 or not bool((p.noise > 0).any()):
        return torch.zeros(p.rows.shape[0], dtype=p.weight.dtype, device=p.weight.device)
    r = p.rows.to(p.weight.dtype)
    if p.row_weights is not None:
        r = r * p.row_weights
    col = torch.sqrt(r.pow(2) @ p.weight.pow(2)).median(-1).values
    return scale * p.noise * math.sqrt(2 * math.log(max(p.n, 2))) * col


@dataclass(frozen=True)
class LatentPursuitConfig:
    """Options of Latent-Pursuit.

    Parameters
    ----------
    lam_scale : float
        Sparsity weight as a multiple of ``noise * sqrt(2 log n) * median column norm`` of the
        (whitened) rows (noisy only).
    inequalities : bool
        Enforce ``W[S^c] x + b <= 0`` on the inactive units (with a slack of the noise level).
    threshold : float
        With noise, a unit is active when its estimate exceeds ``threshold`` standard deviations of
        its error, and a zero unit gives an inequality with that slack; the undecided ones give
        neither.
    refit_iter : int
        Gauss-Newton iterations of the final joint refit of z (noisy signals, and clean signals the
        sweep did not fit); 0 turns it off (the paper's pure layer-wise pass).
    saturation_tol : float
        Sigmoid / tanh outputs this close to their bounds give an inequality, not an equation.
    undetermined : {'nnls', 'joint'}
        Steps whose rows do not determine the layer: ``'nnls'`` solves the paper's non-negative
        least-squares problem with the inequalities; ``'joint'`` takes the minimum-norm least-squares
        solution and leaves the rest to the joint refit of z (much faster where the generator as a
        whole is determined, e.g. many pixels missing on a well-expanded network; the hybrid tries
        it first).
    """

    lam_scale: float = 0.0
    inequalities: bool = True
    threshold: float = 2.0
    refit_iter: int = 20
    saturation_tol: float = 1e-6
    undetermined: str = "nnls"

    def __post_init__(self) -> None:
        check_real("lam_scale", self.lam_scale, low=0.0)
        check_real("threshold", self.threshold, low=0.0)
        check_int("refit_iter", self.refit_iter, low=0)
        check_real("saturation_tol", self.saturation_tol, low=0.0, high=0.1)
        check_choice("undetermined", self.undetermined, ("nnls", "joint"))
        if not isinstance(self.inequalities, bool):
            fail("inequalities", "a bool", self.inequalities)


def _nnls_polished(p: StepProblem, t, rows, weights, lam) -> tuple[torch.Tensor, torch.Tensor]:
    """Non-negative (Lasso) least squares, then an exact least-squares solve on the found support."""
    x, kkt = nnls_rows(p.weight, t, rows, lam=lam, weights=weights)
    support = x > x.abs().amax(-1, keepdim=True) * math.sqrt(float(torch.finfo(x.dtype).eps))
    x_pol, det = lstsq_rows(p.weight, t, rows, support, weights=weights)
    better = det & (x_pol >= 0).all(-1) & (lam == 0)
    return torch.where(better.unsqueeze(-1), x_pol, x), kkt


def latent_pursuit_step(
    p: StepProblem, config: LatentPursuitConfig
) -> tuple[torch.Tensor, str, torch.Tensor, torch.Tensor]:
    """One Latent-Pursuit step on a batch.

    Clean signals: least squares accepted where it is determined, exact and feasible, else
    non-negative least squares. Noisy signals on a determined step: least squares projected on
    x >= 0 (the supports are decided afterwards on the noise scale, and the final refit fixes the
    values), else non-negative (Lasso) least squares. Then the inequalities, batched.
    Returns ``(x, solver names, ok, W x)``: the product of the shortcut where it was accepted (the
    sweep's step residual needs no further pass with the layer's matrix there).
    """
    lam = _auto_lam(p, config.lam_scale)
    names: set[str] = set()

    def solve(rows: torch.Tensor, idx: torch.Tensor, ls=None) -> tuple[torch.Tensor, torch.Tensor]:
        t = p.shifted_target[idx]
        w = None if p.row_weights is None else p.row_weights[idx]
        x, det = lstsq_rows(p.weight, t, rows, weights=w) if ls is None else ls  # ls: already solved
        if not p.nonneg:
            names.add("lstsq")
            return x, det
        tol = _fit_tol(x.dtype) * x.abs().amax(-1, keepdim=True)
        noisy = p.noise[idx] > 0
        take = det & (lam[idx] == 0) & (noisy | (x >= -tol).all(-1))
        if config.undetermined == "joint":
            take = torch.ones_like(take)  # the joint refit resolves what the rows do not determine
        x = x.clamp_min(0)
        names.add("lstsq")
        rest = ~take
        if bool(rest.any()):
            r = torch.nonzero(rest).flatten()
            x[r], ok_r = _nnls_polished(p, t[r], rows[r], None if w is None else w[r], lam[idx][r])
            det = det.clone()
            det[r] = ok_r
            names.add("nnls")
        return x, det

    x, ok, det, accepted, pred = _exact_shortcut(p)
    todo = ~ok
    if bool(todo.any()):
        idx = torch.nonzero(todo).flatten()
        x[idx], ok[idx] = solve(p.rows[idx], idx, (x[idx].clone(), det[idx]))
    x = torch.where(todo.unsqueeze(-1), x, accepted)
    names.add("lstsq")
    if config.inequalities and config.undetermined == "nnls" and bool(todo.any()) and bool(p.off_rows.any()):
        # The shortcut's accepted signals passed this check already: only the re-solved ones.
        rest = torch.nonzero(todo).flatten()
        idx = rest[~_feasible(_take(p, rest), x[rest])]
        if idx.numel():
            sub = _take(p, idx)
            x_sub, feasible = enforce_inequalities(
                lambda rows: solve(rows, idx)[0],
                p.weight,
                sub.shifted_target,
                sub.rows,
                sub.off_rows,
                x[idx],
                tol=_ineq_tol(sub, x[idx]),
            )
            x[idx] = x_sub
            ok[idx] = ok[idx] & feasible
            names.add("active-set")
    if pred is None:
        pred = x @ p.weight.T
    elif bool(todo.any()):  # W x of the re-solved signals (the accepted ones' is the shortcut's)
        rest = torch.nonzero(todo).flatten()
        pred[rest] = x[rest] @ p.weight.T
    return x, "+".join(sorted(names)), ok, pred


def _take(p: StepProblem, idx: torch.Tensor) -> StepProblem:
    return dataclasses.replace(
        p,
        target=p.target[idx],
        rows=p.rows[idx],
        off_rows=p.off_rows[idx],
        row_weights=None if p.row_weights is None else p.row_weights[idx],
        noise=p.noise[idx],
    )


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
        threshold=config.threshold,
        refit_iter=config.refit_iter,
        seed=seed,
    )


@dataclass(frozen=True)
class LayeredBPConfig:
    """Options of Layered Basis-Pursuit.

    Parameters
    ----------
    lam_scale : float
        Lasso weight as a multiple of ``noise * sqrt(2 log n) * median column norm`` of the
        (whitened) rows (noisy only).
    threshold, refit_iter, saturation_tol : as for latent-pursuit.
    """

    lam_scale: float = 0.5
    threshold: float = 2.0
    refit_iter: int = 20
    saturation_tol: float = 1e-6

    def __post_init__(self) -> None:
        check_real("lam_scale", self.lam_scale, low=0.0)
        check_real("threshold", self.threshold, low=0.0)
        check_int("refit_iter", self.refit_iter, low=0)
        check_real("saturation_tol", self.saturation_tol, low=0.0, high=0.1)


def lbp_step(p: StepProblem, config: LayeredBPConfig) -> tuple[torch.Tensor, str, torch.Tensor]:
    """One Layered Basis-Pursuit step: no sign constraint, l1 for sparsity."""
    signed = dataclasses.replace(p, nonneg=False, off_rows=torch.zeros_like(p.off_rows))
    x, ok, *_ = _exact_shortcut(signed)
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
        # Equations that an upstream error made inconsistent have no basis-pursuit solution: keep
        # the least-squares one there (flagged not ok), so that the joint refit has a start.
        failed = idx[clean][~ok[idx[clean]]]
        if failed.numel():
            x_ls, _ = lstsq_rows(p.weight, p.shifted_target[failed], p.rows[failed])
            x[failed] = x_ls
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
        threshold=config.threshold,
        refit_iter=config.refit_iter,
        seed=seed,
    )
