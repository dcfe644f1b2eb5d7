"""Matrix-free least squares and non-negative least squares on row-masked batches.

The fallback of the layer-wise steps when a layer's matrix is too large to materialise
(:func:`geninv.operators.dense_limit`): the operator is only applied (``forward`` / ``adjoint``),
once per iteration for the whole batch. Signal b solves

    min_x 0.5 || diag(r_b) (A x - t_b) ||^2        (r_b = rows_b * weights_b)

over all x (:func:`lstsq_matrix_free`, CGLS: conjugate gradients on the normal equations) or over
x >= 0 (:func:`nnls_matrix_free`: accelerated projected gradient, then CGLS on the support it found,
which makes a clean, determined step exact). These solvers know nothing about generators.
"""

from __future__ import annotations

import math

import torch

from geninv.operators import LinearOperator
from geninv.solvers.linear import row_factors


def _eps(dtype: torch.dtype) -> float:
    return float(torch.finfo(dtype).eps)


def _dot(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    return (a * b).sum(-1)


def lstsq_matrix_free(
    op: LinearOperator,
    target: torch.Tensor,
    rows: torch.Tensor,
    *,
    weights: torch.Tensor | None = None,
    cols: torch.Tensor | None = None,
    x0: torch.Tensor | None = None,
    max_iter: int | None = None,
    tol: float | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Least squares per signal by CGLS, x zero outside ``cols``; returns ``(x, converged)``.

    ``converged`` (B,) is True where the normal-equation residual fell below ``tol`` (default
    ``sqrt(eps)`` squared, i.e. ~eps relative) times its initial value within ``max_iter``
    (default ``2 n``) iterations. From ``x0 = 0`` an under-determined system gives its minimum-norm
    solution.
    """
    batch, n = target.shape[0], op.shape[1]
    dtype = target.dtype
    r = row_factors(rows, weights, dtype)
    c = None if cols is None else cols.to(dtype)
    tol = tol if tol is not None else 10 * _eps(dtype)
    max_iter = max_iter or 2 * n

    def a_fwd(x: torch.Tensor) -> torch.Tensor:
        return r * op.forward(x if c is None else x * c)

    def a_adj(v: torch.Tensor) -> torch.Tensor:
        out = op.adjoint(r * v)
        return out if c is None else out * c

    x = torch.zeros(batch, n, dtype=dtype, device=target.device) if x0 is None else x0.clone()
    if c is not None:
        x = x * c
    res = r * target - a_fwd(x)
    s = a_adj(res)
    p = s.clone()
    gamma = _dot(s, s)
    start = torch.sqrt(_dot(a_adj(r * target), a_adj(r * target))).clamp_min(torch.finfo(dtype).tiny)
    done = torch.sqrt(gamma) <= tol * start
    for _ in range(max_iter):
        if bool(done.all()):
            break
        q = a_fwd(p)
        qq = _dot(q, q)
        alpha = torch.where(done | (qq == 0), torch.zeros_like(gamma), gamma / qq.clamp_min(torch.finfo(dtype).tiny))
        x = x + alpha.unsqueeze(-1) * p
        res = res - alpha.unsqueeze(-1) * q
        s = a_adj(res)
        gamma_new = _dot(s, s)
        beta = torch.where(gamma > 0, gamma_new / gamma.clamp_min(torch.finfo(dtype).tiny), torch.zeros_like(gamma))
        p = s + beta.unsqueeze(-1) * p
        gamma = torch.where(done, gamma, gamma_new)
        done = done | (torch.sqrt(gamma_new) <= tol * start)
    return x, done


def _lipschitz(op: LinearOperator, r: torch.Tensor, n: int, iters: int = 30) -> torch.Tensor:
    """Largest eigenvalue of ``A^T diag(r^2) A`` per signal (power iteration), with a 10% margin."""
    rng = torch.Generator().manual_seed(0)
    v = torch.randn(r.shape[0], n, generator=rng, dtype=torch.float64).to(dtype=r.dtype, device=r.device)
    v = v / torch.linalg.vector_norm(v, dim=-1, keepdim=True)
    lam = torch.ones(r.shape[0], dtype=r.dtype, device=r.device)
    for _ in range(iters):
        w = op.adjoint(r * r * op.forward(v))
        lam = torch.linalg.vector_norm(w, dim=-1)
        v = w / lam.clamp_min(torch.finfo(r.dtype).tiny).unsqueeze(-1)
    return 1.1 * lam.clamp_min(torch.finfo(r.dtype).tiny)


def nnls_matrix_free(
    op: LinearOperator,
    target: torch.Tensor,
    rows: torch.Tensor,
    *,
    weights: torch.Tensor | None = None,
    lam: torch.Tensor | float = 0.0,
    max_iter: int = 3000,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Non-negative (Lasso) least squares per signal, matrix-free; returns ``(x, ok)``.

    FISTA with projection on x >= 0 (step 1 / L, L from a power iteration), then, where ``lam`` is
    0, least squares (CGLS) on the support found, kept when it stays non-negative and fits at least
    as well. ``ok`` is True where the KKT conditions hold to ``sqrt(eps)`` of the gradient's scale.
    """
    batch, n = target.shape[0], op.shape[1]
    dtype = target.dtype
    r = row_factors(rows, weights, dtype)
    lam_t = torch.as_tensor(lam, dtype=dtype, device=target.device).reshape(-1, 1).expand(batch, 1)
    big_l = _lipschitz(op, r, n).unsqueeze(-1)
    aty = op.adjoint(r * r * target)

    def grad(x: torch.Tensor) -> torch.Tensor:
        return op.adjoint(r * r * op.forward(x)) - aty + lam_t

    x = torch.zeros(batch, n, dtype=dtype, device=target.device)
    y, t = x.clone(), 1.0
    scale = aty.abs().amax(-1, keepdim=True).clamp_min(torch.finfo(dtype).tiny)
    tol = math.sqrt(_eps(dtype))
    for k in range(max_iter):
        x_new = (y - grad(y) / big_l).clamp_min(0)
        t_new = (1 + math.sqrt(1 + 4 * t * t)) / 2
        y = x_new + ((t - 1) / t_new) * (x_new - x)
        x, t = x_new, t_new
        if k % 50 == 49:
            g = grad(x)
            kkt = (((g.abs() * (x > 0)) <= tol * scale) & ((g * (x <= 0)) >= -tol * scale)).all(-1)
            if bool(kkt.all()):
                break
    if float(lam_t.abs().max()) == 0.0:
        support = x > x.abs().amax(-1, keepdim=True) * tol
        x_pol, _ = lstsq_matrix_free(op, target, rows, weights=weights, cols=support, x0=x * support)
        fit_old = torch.linalg.vector_norm(r * (op.forward(x) - target), dim=-1)
        fit_new = torch.linalg.vector_norm(r * (op.forward(x_pol) - target), dim=-1)
        better = (x_pol >= -tol * x.abs().amax(-1, keepdim=True)).all(-1) & (fit_new <= fit_old * (1 + tol))
        x = torch.where(better.unsqueeze(-1), x_pol.clamp_min(0), x)
    g = grad(x)
    ok = (((g.abs() * (x > 0)) <= tol * scale) & ((g * (x <= 0)) >= -tol * scale)).all(-1)
    return x, ok
