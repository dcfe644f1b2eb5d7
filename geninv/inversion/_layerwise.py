"""The backward sweep shared by the layer-wise methods (lbp, latent-pursuit, lp, hybrid).

Step k recovers ``x_k`` (k = L-1 .. 0; ``x_0 = z``) from the equations that layer k+1 gives:
``W_{k+1}[rows] x_k + b[rows] = target[rows]`` and, where the layer above is a relu, the
inequalities ``W_{k+1}[off] x_k + b[off] <= 0`` on its inactive units. A method supplies one
function that solves a step; the sweep prepares targets, thresholds supports and records steps.
"""

from __future__ import annotations

import math
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch

from geninv.errors import ConvergenceWarning, UnsupportedError
from geninv.generator import Generator
from geninv.inversion.result import History, InversionResult, LayerStep, Status
from geninv.observation import GaussianMatrix, Observation
from geninv.solvers.linear import rows_shared

CHUNK = 128


@dataclass(frozen=True)
class StepProblem:
    """One layer's problem, batched: ``weight`` (m, n), ``bias`` (m,) or None, per-signal masks (B, m)."""

    layer: int
    weight: torch.Tensor
    bias: torch.Tensor | None
    target: torch.Tensor
    rows: torch.Tensor
    off_rows: torch.Tensor
    row_weights: torch.Tensor | None
    nonneg: bool
    noise: torch.Tensor  # (B,) noise level on the targets (0 when clean)

    @property
    def shifted_target(self) -> torch.Tensor:
        return self.target if self.bias is None else self.target - self.bias

    @property
    def n(self) -> int:
        return self.weight.shape[1]


# solve(problem) -> (x (B, n), solver name, ok (B,) bool)
StepSolver = Callable[[StepProblem], tuple[torch.Tensor, str, torch.Tensor]]


def support_threshold(x: torch.Tensor, noise: torch.Tensor) -> torch.Tensor:
    """Entries above this are in the support: sqrt(eps) of the layer's scale.

    Exact solves reach ~1e-15 and the NNLS path ~1e-12 (float64); true non-zeros are rarely below
    1e-8 of the largest entry, so sqrt(eps) separates them with margin on both sides.
    """
    scale = x.abs().amax(-1, keepdim=True).clamp_min(torch.finfo(x.dtype).tiny)
    return scale * math.sqrt(torch.finfo(x.dtype).eps) + 0 * noise.unsqueeze(-1)


def output_problem(generator: Generator, obs: Observation, *, saturation_tol: float = 1e-6) -> StepProblem:
    """The last layer's equations: undo the output activation on the usable observed coordinates."""
    last = generator.n_layers - 1
    act = generator.activation(last)
    weight, bias = generator.weight(last), generator.bias(last)
    y = obs.y.to(generator.dtype)
    sigma = obs.noise_sigma.to(generator.dtype)
    if isinstance(obs.operator, GaussianMatrix):
        if act.name != "identity":
            raise UnsupportedError(
                "Layer-wise methods handle a compressed-sensing operator only with an identity output "
                f"activation (this generator's is {act.name}); use method='gd'."
            )
        a = obs.operator.matrix.to(dtype=generator.dtype, device=generator.device)
        rows = torch.ones_like(y, dtype=torch.bool)
        return StepProblem(
            last, a @ weight, None if bias is None else a @ bias, y, rows, ~rows, None, generator.n_layers > 1, sigma
        )
    full = obs.operator.adjoint(y)
    observed = torch.from_numpy(np.array(obs.operator.mask)).to(generator.device)
    rows = observed.expand_as(full).clone()
    off = torch.zeros_like(rows)
    row_weights = None
    if act.name == "relu":
        thr = torch.maximum(3 * sigma, torch.full_like(sigma, 0.0)).unsqueeze(-1)
        pos = full > thr
        off = rows & ~pos & (sigma.unsqueeze(-1) == 0)
        rows &= pos
        target = full
    elif act.name in ("sigmoid", "tanh"):
        lo, hi = act.bounds
        tol = torch.maximum(torch.full_like(sigma, saturation_tol), 3 * sigma).unsqueeze(-1)
        usable = rows & (full - lo > tol) & (hi - full > tol)
        # Pixels saturated at the lower bound still say pre <= phi^{-1}(lo + tol): an inequality.
        off = rows & (full - lo <= tol)
        rows = usable
        target = act.inverse(full, eps=saturation_tol)
        floor = act.inverse(torch.full_like(full, lo) + tol, eps=saturation_tol)
        target = torch.where(off, floor, target)
        if bool((sigma > 0).any()):
            # Weighted in pixel space: an error e in y is e / phi'(pre) after the inverse.
            row_weights = act.derivative(target).clamp_min(1e-12)
    else:
        target = act.inverse(full) if act.invertible else full
    target = torch.where(rows | off, target, torch.zeros_like(target))
    return StepProblem(last, weight, bias, target, rows, off, row_weights, generator.n_layers > 1, sigma)


def hidden_problem(generator: Generator, layer: int, x_above: torch.Tensor, noise: torch.Tensor) -> StepProblem:
    """Equations on ``x_layer`` given the estimate of ``x_{layer+1}`` (a hidden layer)."""
    act = generator.activation(layer)
    if act.sparse:
        thr = support_threshold(x_above, noise)
        rows = x_above > thr
        off = ~rows
        target = torch.where(rows, x_above, torch.zeros_like(x_above))
    else:
        rows = torch.ones_like(x_above, dtype=torch.bool)
        off = torch.zeros_like(rows)
        target = act.inverse(x_above)
    return StepProblem(layer, generator.weight(layer), generator.bias(layer), target, rows, off, None, layer > 0, noise)


def sweep(
    generator: Generator,
    obs: Observation,
    solve: StepSolver,
    *,
    method: str,
    options: dict,
    progress=None,
    saturation_tol: float = 1e-6,
) -> InversionResult:
    """Run the backward sweep with ``solve`` on every step; returns the method's result."""
    start = time.perf_counter()
    estimates: dict[int, torch.Tensor] = {}
    steps: list[LayerStep] = []
    ok_all = torch.ones(obs.batch_size, dtype=torch.bool, device=generator.device)
    problem = output_problem(generator, obs, saturation_tol=saturation_tol)
    noise = problem.noise
    for layer in range(generator.n_layers - 1, -1, -1):
        t0 = time.perf_counter()
        if layer < generator.n_layers - 1:
            problem = hidden_problem(generator, layer, estimates[layer + 1], noise)
        xs, oks, names = [], [], set()
        # Rows shared by the whole batch (a fixed mask) are factorised once: no chunking then.
        chunk = obs.batch_size if rows_shared(problem.rows, problem.row_weights) else CHUNK
        for lo in range(0, obs.batch_size, chunk):
            sub = _slice(problem, slice(lo, lo + chunk))
            x, name, ok = solve(sub)
            xs.append(x)
            oks.append(ok)
            names.add(name)
        x = torch.cat(xs)
        ok = torch.cat(oks)
        if problem.nonneg and generator.activation(layer - 1).sparse:
            x = x.clamp_min(0)
        estimates[layer] = x
        ok_all &= ok
        pred = x @ problem.weight.T + (0 if problem.bias is None else problem.bias)
        resid = torch.linalg.vector_norm((pred - problem.target) * problem.rows, dim=-1)
        dof = (problem.rows.sum(-1) - problem.n).clamp_min(1).to(x.dtype)
        noise = torch.where(obs.noise_sigma > 0, resid / dof.sqrt(), torch.zeros_like(resid))
        steps.append(
            LayerStep(
                layer=layer,
                rows=problem.rows.sum(-1).cpu().numpy(),
                residual=resid.cpu().numpy(),
                seconds=time.perf_counter() - t0,
                solver="+".join(sorted(names)),
                estimate=x.detach().clone(),
            )
        )
        if progress is not None:
            progress((generator.n_layers - layer) / generator.n_layers, f"{method}: recovered layer {layer}")
    z_hat = estimates[0]
    return finish(generator, obs, z_hat, estimates, steps, ok_all, start, method, options)


def finish(generator, obs, z_hat, estimates, steps, ok, start, method, options, history=None) -> InversionResult:
    """Assemble an InversionResult: hidden layers from ``estimates`` where given, output G(z_hat)."""
    with torch.no_grad():
        trace = generator.trace(z_hat)
    layers = []
    supports = []
    for i in range(generator.n_layers):
        est = estimates.get(i + 1) if i < generator.n_layers - 1 else None
        x = trace.activations[i] if est is None else est
        layers.append(x)
        act = generator.activation(i)
        if est is not None and act.sparse:
            supports.append(est > support_threshold(est, obs.noise_sigma))
        else:
            supports.append(trace.supports[i])
    statuses = np.where(ok.cpu().numpy(), Status.CONVERGED.value, Status.INFEASIBLE.value)
    if not bool(ok.all()):
        warnings.warn(
            f"{method}: {int((~ok).sum())} of {ok.numel()} signals did not meet the step's optimality or "
            "feasibility check (status 'infeasible').",
            ConvergenceWarning,
            stacklevel=3,
        )
    seconds = time.perf_counter() - start
    return InversionResult(
        z_hat=z_hat.detach(),
        layers=tuple(t.detach() for t in layers),
        supports=tuple(supports),
        history=history or History(),
        steps=tuple(steps),
        statuses=statuses,
        seconds=seconds,
        forward_passes=seconds / max(forward_seconds(generator, obs.batch_size), 1e-9),
        method=method,
        options=options,
    )


_FORWARD_CACHE: dict[tuple, float] = {}


def forward_seconds(generator: Generator, batch: int) -> float:
    """Wall time of one forward pass of the whole batch (best of 10), cached per shape.

    Costs are reported as wall time divided by this: forward-pass equivalents per signal.
    """
    key = (generator.widths, generator.dtype, str(generator.device), batch)
    if key not in _FORWARD_CACHE:
        z = torch.zeros(batch, generator.latent_dim, dtype=generator.dtype, device=generator.device)
        best = math.inf
        with torch.no_grad():
            generator(z)  # warm-up
            for _ in range(10):
                t0 = time.perf_counter()
                generator(z)
                best = min(best, time.perf_counter() - t0)
        _FORWARD_CACHE[key] = best
    return _FORWARD_CACHE[key]


def _slice(p: StepProblem, s: slice) -> StepProblem:
    return StepProblem(
        p.layer,
        p.weight,
        p.bias,
        p.target[s],
        p.rows[s],
        p.off_rows[s],
        None if p.row_weights is None else p.row_weights[s],
        p.nonneg,
        p.noise[s],
    )
