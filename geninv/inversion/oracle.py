"""Least squares on a fixed activation pattern: the oracle, and the hybrid's refit.

On the region where every hidden unit keeps its sign, a relu / leaky-relu generator is affine in z:
``pre_L(z) = J z + c``. With the *true* pattern this gives the oracle of FINDINGS.md (least squares
that knows the true supports); with an estimated pattern it is a Gauss-Newton step that the hybrid
repeats until the pattern stops changing. Sigmoid / tanh outputs are linearised at the current
point and iterated (Gauss-Newton in pixel space, so noise is not amplified by the inverse).
"""

from __future__ import annotations

import numpy as np
import torch

from geninv.generator import Generator
from geninv.observation import Observation


def affine_map(generator: Generator, pattern: tuple[torch.Tensor, ...]) -> tuple[torch.Tensor, torch.Tensor]:
    """``J`` (B, n_L, n_0) and ``c`` (B, n_L) with ``pre_L = J z + c`` under the hidden ``pattern``.

    ``pattern[i]`` is the bool support of hidden layer i+1 (pre-activation > 0).
    """
    batch = pattern[0].shape[0] if pattern else 1
    n0 = generator.latent_dim
    jac = generator.weight(0).unsqueeze(0).expand(batch, -1, -1)
    b0 = generator.bias(0)
    c = torch.zeros(batch, generator.widths[1], dtype=generator.dtype, device=generator.device)
    if b0 is not None:
        c = c + b0
    for i in range(1, generator.n_layers):
        act = generator.activation(i - 1)
        slope = pattern[i - 1].to(generator.dtype)
        if act.name == "leaky_relu":
            slope = slope + (1 - slope) * act.negative_slope
        jac = generator.weight(i) @ (jac * slope.unsqueeze(-1))
        c = (c * slope) @ generator.weight(i).T
        if generator.bias(i) is not None:
            c = c + generator.bias(i)
    del n0
    return jac, c


def refit(
    generator: Generator,
    obs: Observation,
    z: torch.Tensor,
    *,
    pattern: tuple[torch.Tensor, ...] | None = None,
    n_iter: int = 8,
) -> torch.Tensor:
    """Least squares in z on the activation pattern of ``z`` (or the fixed ``pattern``), iterated.

    Each iteration recomputes the pattern at the new point unless ``pattern`` is given; a signal keeps
    the new point only where it lowers the data-fit loss.
    """
    out_act = generator.output_activation
    y = obs.y.to(generator.dtype)
    z = z.detach().clone()
    best_loss = _loss(generator, obs, z)
    for _ in range(n_iter):
        trace = generator.trace(z)
        pat = pattern if pattern is not None else trace.supports[:-1]
        jac, c = affine_map(generator, pat)
        pre = trace.pre_activations[-1]
        if out_act.name in ("identity", "leaky_relu"):
            a_full, rhs_full = jac, -c
        elif out_act.name == "relu":
            on = (pre > 0).to(generator.dtype).unsqueeze(-1)
            a_full, rhs_full = jac * on, -c * on.squeeze(-1)
        else:  # sigmoid / tanh: linearise y ~ phi(pre0) + phi'(pre0) (J (z - z0))
            d = out_act.derivative(pre)
            a_full = jac * d.unsqueeze(-1)
            rhs_full = (jac @ z.unsqueeze(-1)).squeeze(-1) * d - out_act(pre)
        a_obs = _apply_operator(obs, a_full)
        rhs = y + _apply_operator(obs, rhs_full.unsqueeze(-1)).squeeze(-1)
        sol = torch.linalg.lstsq(a_obs, rhs.unsqueeze(-1), driver="gelsd" if z.device.type == "cpu" else None)
        z_new = sol.solution.squeeze(-1)
        new_loss = _loss(generator, obs, z_new)
        better = new_loss < best_loss
        if not bool(better.any()):
            break
        z = torch.where(better.unsqueeze(-1), z_new, z)
        best_loss = torch.where(better, new_loss, best_loss)
    return z


def _apply_operator(obs: Observation, a: torch.Tensor) -> torch.Tensor:
    """Apply the measurement operator to the rows of a (B, n, k) stack."""
    if hasattr(obs.operator, "matrix"):
        return obs.operator.matrix.to(a) @ a
    mask = torch.from_numpy(np.array(obs.operator.mask)).to(a.device)
    return a[:, mask]


def _loss(generator: Generator, obs: Observation, z: torch.Tensor) -> torch.Tensor:
    with torch.no_grad():
        resid = obs.operator.forward(generator(z)) - obs.y.to(generator.dtype)
    return 0.5 * resid.pow(2).sum(-1)


def oracle_latent(generator: Generator, obs: Observation, *, n_iter: int = 8) -> torch.Tensor:
    """Least squares that knows the true supports (needs ``obs.trace_true``): the reference error.

    Identity / relu outputs: one exact solve. Sigmoid / tanh: Gauss-Newton from the truth.
    """
    if obs.trace_true is None or obs.z_true is None:
        raise ValueError("The oracle needs the ground truth: build the observation with geninv.observe.")
    pattern = obs.trace_true.supports[:-1]
    return refit(generator, obs, obs.z_true, pattern=pattern, n_iter=n_iter)
