"""cvxpy reference formulations of every layer subproblem (slow, trusted; tests compare against them).

cvxpy is imported inside the functions so that ``import geninv`` stays fast.
"""

from __future__ import annotations

import numpy as np

from geninv.errors import SolverError


def _solve(problem) -> None:
    import cvxpy as cp

    try:
        problem.solve(solver=cp.CLARABEL)
    except cp.error.SolverError as exc:
        raise SolverError(f"cvxpy/CLARABEL failed: {exc}") from None
    if problem.status not in (cp.OPTIMAL, cp.OPTIMAL_INACCURATE):
        raise SolverError(f"cvxpy/CLARABEL ended with status {problem.status!r}.")


def constrained_lstsq(
    a: np.ndarray,
    b: np.ndarray,
    *,
    nonneg: bool = False,
    lam: float = 0.0,
    ineq_a: np.ndarray | None = None,
    ineq_b: np.ndarray | None = None,
) -> np.ndarray:
    """``min 0.5||a x - b||^2 + lam * sum(x)`` s.t. ``x >= 0`` (if nonneg) and ``ineq_a x <= ineq_b``.

    This is the Latent-Pursuit step; with ``nonneg`` and no inequalities it is (Lasso) NNLS.
    """
    import cvxpy as cp

    x = cp.Variable(a.shape[1], nonneg=nonneg)
    objective = 0.5 * cp.sum_squares(a @ x - b) + (lam * cp.sum(x) if lam else 0)
    cons = [] if ineq_a is None or ineq_a.shape[0] == 0 else [ineq_a @ x <= ineq_b]
    problem = cp.Problem(cp.Minimize(objective), cons)
    _solve(problem)
    return np.asarray(x.value, dtype=np.float64)


def basis_pursuit(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """``min ||x||_1`` s.t. ``a x = b`` (the noiseless Layered Basis-Pursuit step)."""
    import cvxpy as cp

    x = cp.Variable(a.shape[1])
    problem = cp.Problem(cp.Minimize(cp.norm1(x)), [a @ x == b])
    _solve(problem)
    return np.asarray(x.value, dtype=np.float64)


def lasso(a: np.ndarray, b: np.ndarray, lam: float) -> np.ndarray:
    """``min 0.5||a x - b||^2 + lam ||x||_1`` (the noisy Layered Basis-Pursuit step)."""
    import cvxpy as cp

    x = cp.Variable(a.shape[1])
    problem = cp.Problem(cp.Minimize(0.5 * cp.sum_squares(a @ x - b) + lam * cp.norm1(x)))
    _solve(problem)
    return np.asarray(x.value, dtype=np.float64)


class NNLSReference:
    """NNLS built once with cvxpy Parameters (DPP) and re-solved for new right-hand sides."""

    def __init__(self, a: np.ndarray) -> None:
        import cvxpy as cp

        self._b = cp.Parameter(a.shape[0])
        self._x = cp.Variable(a.shape[1], nonneg=True)
        self._problem = cp.Problem(cp.Minimize(cp.sum_squares(a @ self._x - self._b)))

    def __call__(self, b: np.ndarray) -> np.ndarray:
        self._b.value = np.asarray(b, dtype=np.float64)
        _solve(self._problem)
        return np.asarray(self._x.value, dtype=np.float64)
