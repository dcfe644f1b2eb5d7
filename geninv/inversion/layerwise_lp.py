"""Layer-wise linear programming ("lp"), after Lei et al., NeurIPS 2019.

Each step is an l_inf fit: ``min eps`` s.t. ``|W[S] x + b - t| <= eps`` on the active rows,
``W[S^c] x + b <= eps`` on the inactive ones, ``x >= 0`` for relu layers — a linear program solved
by HiGHS (scipy) per signal. Clean, determined layers give eps = 0 and the exact layer.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import numpy as np
import torch

from geninv._validation import check_int, check_real, fail
from geninv.inversion._layerwise import StepProblem, sweep
from geninv.inversion.registry import register


@dataclass(frozen=True)
class LinearProgramConfig:
    """Options of the layer-wise LP.

    Parameters
    ----------
    inequalities : bool
        Use the inactive rows' inequalities (Lei et al. do).
    refit_iter : int
        Gauss-Newton iterations of the joint refit of z applied where the layer-wise programs do
        not fit the data (noisy signals, or a layer not determined on its own, e.g. a dense
        leaky-relu layer with pixels missing); 0 keeps Lei et al.'s pure layer-wise method.
    saturation_tol : float
    """

    inequalities: bool = True
    refit_iter: int = 20
    saturation_tol: float = 1e-6

    def __post_init__(self) -> None:
        if not isinstance(self.inequalities, bool):
            fail("inequalities", "a bool", self.inequalities)
        check_int("refit_iter", self.refit_iter, low=0)
        check_real("saturation_tol", self.saturation_tol, low=0.0, high=0.1)


def lp_step(p: StepProblem, config: LinearProgramConfig) -> tuple[torch.Tensor, str, torch.Tensor]:
    """One l_inf-fit linear program per signal (HiGHS)."""
    from scipy.optimize import linprog  # here, not at the top: scipy.optimize costs 0.3 s at start-up

    w = p.weight.detach().cpu().double().numpy()
    n = w.shape[1]
    xs = torch.zeros(p.target.shape[0], n, dtype=p.weight.dtype, device=p.weight.device)
    ok = torch.zeros(p.target.shape[0], dtype=torch.bool, device=p.weight.device)
    for b in range(p.target.shape[0]):
        rows = p.rows[b].cpu().numpy()
        off = p.off_rows[b].cpu().numpy() if config.inequalities else np.zeros_like(rows)
        t = p.shifted_target[b].detach().cpu().double().numpy()
        a_eq, t_eq = w[rows], t[rows]
        ones = np.ones((a_eq.shape[0], 1))
        # variables [x, eps]; rows: a x - eps <= t, -a x - eps <= -t, a_off x - eps <= t_off (= -b)
        a_ub = np.vstack(
            [np.hstack([a_eq, -ones]), np.hstack([-a_eq, -ones]), np.hstack([w[off], -np.ones((off.sum(), 1))])]
        )
        b_ub = np.concatenate([t_eq, -t_eq, t[off]])
        bounds = [(0, None) if p.nonneg else (None, None)] * n + [(0, None)]
        c = np.zeros(n + 1)
        c[-1] = 1.0
        res = linprog(c, A_ub=a_ub, b_ub=b_ub, bounds=bounds, method="highs")
        if res.status == 0:
            xs[b] = torch.from_numpy(res.x[:n]).to(xs)
            ok[b] = True
    return xs, "linprog(highs)", ok


@register("lp", LinearProgramConfig, "Layer-wise linear programming (Lei et al. 2019), HiGHS")
def layerwise_lp(generator, obs, config: LinearProgramConfig, *, seed: int = 0, progress=None):
    """Layer-wise l_inf-fit linear programs from the output back to z."""
    return sweep(
        generator,
        obs,
        lambda p: lp_step(p, config),
        method="lp",
        options=dataclasses.asdict(config),
        progress=progress,
        saturation_tol=config.saturation_tol,
        refit_iter=config.refit_iter,
        seed=seed,
    )
