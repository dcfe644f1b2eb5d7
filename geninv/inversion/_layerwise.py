"""The backward sweep shared by the layer-wise methods (lbp, latent-pursuit, lp, hybrid).

Step k recovers ``x_k`` (k = L-1 .. 0; ``x_0 = z``) from the equations that layer k+1 gives:
``W_{k+1}[rows] x_k + b[rows] = target[rows]`` and, where the layer above is a relu, the
inequalities ``W_{k+1}[off] x_k + b[off] <= bound`` on its inactive units. A method supplies one
function that solves a step; the sweep prepares targets, decides supports and records steps.

With noise every step knows how uncertain its targets are. The output step weights each pixel by
the activation's slope (an error ``e`` in ``y`` is ``e / phi'`` after the inverse sigmoid), so its
weighted targets carry the pixel noise ``sigma``. Each later step whitens its targets with the
standard deviation of the estimate above (``sigma`` times the least-squares gain of the step that
produced it), and decides the support on that scale: units clearly above ``threshold`` standard
deviations give equations, units at zero give inequalities with a slack of the same size, and the
undecided ones in between give neither. A final joint refit of z (Gauss-Newton, first on the
pattern the sweep found, then with pattern updates) pays only the end-to-end noise gain instead of
the product of the steps' gains (see :mod:`geninv.inversion.oracle`).
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch

from geninv._memory import chunks
from geninv._random import torch_generator
from geninv.errors import UnsupportedError
from geninv.generator import Generator
from geninv.inversion.result import History, InversionResult, LayerStep, Status
from geninv.inversion.status import data_fit, fits, keep_lower, residual_sq, statuses, warn_unfit
from geninv.observation import Observation
from geninv.operators import Dense, LinearOperator
from geninv.solvers.linear import krylov_bytes, krylov_pays, rows_shared, support_gain
from geninv.solvers.matrix_free import lstsq_matrix_free, nnls_matrix_free


@dataclass(frozen=True)
class StepProblem:
    """One layer's problem, batched.

    Attributes
    ----------
    layer : int
        The recovered layer (0 = z).
    weight : Tensor (m, n) or None
        The step's matrix (``operator.dense()``); None when it is too large to materialise, and
        the step is solved matrix-free through ``operator``.
    bias : Tensor (m,) or None
    target : Tensor (B, m)
        Right-hand sides on ``rows``; on ``off_rows`` the upper bound of ``W x + b``.
    rows, off_rows : bool Tensor (B, m)
        Equations and inequalities per signal.
    row_weights : Tensor (B, m) or None
        Row scaling (slope of the output activation, or the inverse standard deviation of a noisy
        target), applied to both sides of the equations.
    nonneg : bool
        The unknown is the output of a relu (so ``x >= 0``).
    noise : Tensor (B,)
        Standard deviation of the weighted targets' errors (0 when clean).
    operator : LinearOperator or None
        The step's linear map (default: ``Dense(weight)``).
    """

    layer: int
    weight: torch.Tensor | None
    bias: torch.Tensor | None
    target: torch.Tensor
    rows: torch.Tensor
    off_rows: torch.Tensor
    row_weights: torch.Tensor | None
    nonneg: bool
    noise: torch.Tensor
    operator: LinearOperator | None = None

    @property
    def shifted_target(self) -> torch.Tensor:
        return self.target if self.bias is None else self.target - self.bias

    @property
    def op(self) -> LinearOperator:
        """The step's linear map."""
        return self.operator if self.operator is not None else Dense(self.weight)

    @property
    def shape(self) -> tuple[int, int]:
        return self.op.shape if self.weight is None else (int(self.weight.shape[0]), int(self.weight.shape[1]))

    @property
    def n(self) -> int:
        return self.shape[1]

    def apply(self, x: torch.Tensor) -> torch.Tensor:
        """``W x`` (without the bias) for a batch ``x`` of shape (B, n)."""
        return x @ self.weight.T if self.weight is not None else self.op.forward(x)


# solve(problem) -> (x (B, n), solver name, ok (B,) bool), or with a fourth entry W x (B, m) of that x
# (without the bias) where the solver has it
StepSolver = Callable[[StepProblem], tuple]


def support_threshold(x: torch.Tensor) -> torch.Tensor:
    """Clean support threshold: sqrt(eps) of the layer's scale.

    Exact solves reach ~1e-15 and the NNLS path ~1e-12 (float64); true non-zeros are rarely below
    1e-8 of the largest entry, so sqrt(eps) separates them with margin on both sides.
    """
    scale = x.abs().amax(-1, keepdim=True).clamp_min(torch.finfo(x.dtype).tiny)
    return scale * math.sqrt(torch.finfo(x.dtype).eps)


def _nonneg(generator: Generator, layer: int) -> bool:
    """``x_layer`` is a relu output (z and leaky-relu layers are signed)."""
    return layer > 0 and generator.activation(layer - 1).sparse


def has_output_step(generator: Generator, obs: Observation) -> bool:
    """Whether a layer-wise output step exists: a selection operator, or an identity output activation."""
    return obs.operator.is_selection or generator.output_activation.name == "identity"


def output_problem(
    generator: Generator, obs: Observation, *, saturation_tol: float = 1e-6, threshold: float = 2.0
) -> StepProblem | None:
    """The last layer's equations: undo the output activation on the usable observed coordinates.

    A selection (identity, mask) gives the observed coordinates, inverted elementwise. Any other
    operator ``A`` gives ``A W_L x + A b_L = y`` when the output activation is the identity; with a
    nonlinear output activation, ``y = A phi(W_L x + b_L)`` is not linear in ``x`` and ``A`` (m < n)
    cannot be undone coordinate by coordinate before ``phi^{-1}``: there is no layer-wise output step,
    and None is returned (the sweep then starts from the joint refit of z).
    """
    last = generator.n_layers - 1
    act = generator.activation(last)
    layer_op = generator.operator(last)
    weight, bias = layer_op.dense(), generator.bias(last)
    y = obs.y.to(generator.dtype)
    sigma = obs.noise_sigma.to(y)
    nonneg = _nonneg(generator, last)
    selection = obs.operator.selection()
    if selection is None:
        if act.name != "identity":
            return None
        op = obs.operator.to(dtype=generator.dtype, device=generator.device) @ layer_op
        a_bias = None if bias is None else obs.operator.forward(bias.unsqueeze(0))[0]
        rows = torch.ones_like(y, dtype=torch.bool)
        return StepProblem(last, op.dense(), a_bias, y, rows, ~rows, None, nonneg, sigma, op)
    observed = torch.zeros(generator.output_dim, dtype=torch.bool)
    observed[selection] = True
    observed = observed.to(generator.device)
    full = torch.zeros(y.shape[0], generator.output_dim, dtype=y.dtype, device=y.device)
    full[:, selection.to(y.device)] = y
    rows = observed.expand_as(full).clone()
    off = torch.zeros_like(rows)
    row_weights = None
    noisy = (sigma > 0).unsqueeze(-1)
    slack = threshold * sigma.unsqueeze(-1)
    if act.name == "relu":
        # Clearly positive pixels give equations; the others say pre <= slack (0 when clean).
        pos = full > slack
        off = rows & ~pos
        rows &= pos
        target = torch.where(off, slack.expand_as(full), full)
    elif act.name in ("sigmoid", "tanh"):
        lo, hi = act.bounds
        tol = torch.full_like(full, saturation_tol)
        clipped = torch.minimum(torch.maximum(full, lo + tol), hi - tol)
        target = act.inverse(clipped, eps=saturation_tol)
        # Clean: pixels at saturation carry only an inequality (pre <= phi^{-1}(lo + tol) at the lower
        # bound). Noisy: every observed pixel is an equation weighted by the slope, so a pixel near
        # saturation, whose inverse the noise makes meaningless, weighs next to nothing.
        saturated = rows & ((full - lo <= tol) | (hi - full <= tol)) & ~noisy
        off = saturated & (full - lo <= tol)
        rows &= ~saturated
        if bool(noisy.any()):
            row_weights = act.derivative(target).clamp_min(torch.finfo(y.dtype).tiny)
            row_weights = torch.where(noisy, row_weights, torch.ones_like(row_weights))
    else:
        target = full
    target = torch.where(rows | off, target, torch.zeros_like(target))
    return StepProblem(last, weight, bias, target, rows, off, row_weights, nonneg, sigma, layer_op)


def hidden_problem(
    generator: Generator,
    layer: int,
    x_above: torch.Tensor,
    spread: torch.Tensor | None = None,
    *,
    threshold: float = 2.0,
) -> StepProblem:
    """Equations on ``x_layer`` given the estimate of ``x_{layer+1}`` (a hidden layer).

    ``spread`` (B, n_{layer+1}) is the standard deviation of that estimate's errors (None or zeros:
    clean). Noisy targets are whitened by it, so the weighted problem has unit noise.
    """
    act = generator.activation(layer)
    batch = x_above.shape[0]
    noisy = torch.zeros(batch, dtype=torch.bool, device=x_above.device)
    if spread is not None:
        noisy = (spread > 0).any(-1)
    tiny = torch.finfo(x_above.dtype).tiny
    if spread is not None and bool(noisy.any()):
        # Undetermined entries (no gain computed) borrow the layer's typical spread.
        typical = (spread.sum(-1) / (spread > 0).sum(-1).clamp_min(1)).unsqueeze(-1)
        spread = torch.where(spread > 0, spread, typical)
    if act.sparse:
        clean_rows = x_above > support_threshold(x_above)
        if spread is None or not bool(noisy.any()):
            rows, off = clean_rows, ~clean_rows
            target = torch.where(rows, x_above, torch.zeros_like(x_above))
            weights = None
        else:
            clear = _clearly_active(x_above, spread, threshold, generator.widths[layer])
            zero = x_above <= 0
            rows = torch.where(noisy.unsqueeze(-1), clear, clean_rows)
            off = torch.where(noisy.unsqueeze(-1), zero, ~clean_rows)
            bound = torch.where(noisy.unsqueeze(-1), threshold * spread, torch.zeros_like(spread))
            target = torch.where(rows, x_above, torch.where(off, bound, torch.zeros_like(x_above)))
            weights = torch.where(noisy.unsqueeze(-1), 1 / spread.clamp_min(tiny), torch.ones_like(spread))
    else:
        rows = torch.ones_like(x_above, dtype=torch.bool)
        off = torch.zeros_like(rows)
        target = act.inverse(x_above)
        weights = None
        if spread is not None and bool(noisy.any()):
            # A negative leaky unit's pre-activation is x / slope: its error is spread / slope.
            slope = torch.where(x_above >= 0, torch.ones_like(x_above), torch.full_like(x_above, act.negative_slope))
            weights = torch.where(noisy.unsqueeze(-1), slope / spread.clamp_min(tiny), torch.ones_like(spread))
    noise = noisy.to(x_above.dtype)  # unit noise after whitening
    layer_op = generator.operator(layer)
    return StepProblem(
        layer,
        layer_op.dense(),
        generator.bias(layer),
        target,
        rows,
        off,
        weights,
        _nonneg(generator, layer),
        noise,
        layer_op,
    )


def _clearly_active(x: torch.Tensor, spread: torch.Tensor, threshold: float, needed: int) -> torch.Tensor:
    """Units more than ``threshold`` standard deviations above zero; where that leaves fewer than
    ``needed`` equations (the unknowns of the next step), the ``needed`` positive units with the
    highest ratio to their standard deviation instead, so that no step is starved of equations."""
    score = x / spread.clamp_min(torch.finfo(x.dtype).tiny)
    clear = score > threshold
    short = clear.sum(-1) < needed
    if bool(short.any()):
        k = min(needed, x.shape[-1])
        kth = score.topk(k, dim=-1).values[:, -1:]
        top = (score >= kth) & (x > 0)
        clear = torch.where(short.unsqueeze(-1), clear | top, clear)
    return clear


def _step_bytes(problem: StepProblem) -> int:
    """Peak bytes per signal of a step's solvers: per-signal Gram and row stacks, unless the whole
    batch shares its rows (a fixed mask, no weights), when one factorisation serves everyone, or the
    step's least squares goes by conjugate gradients (:func:`~geninv.solvers.linear.krylov_pays`),
    which want the batch in one piece (chunks of 8 signals made them 2.5x slower)."""
    m, n = problem.shape
    size = problem.target.element_size()
    if problem.weight is None:  # matrix-free: a few vectors per signal
        return 8 * (m + n) * size
    if rows_shared(problem.rows, problem.row_weights):
        return 8 * (m + n) * size
    if krylov_pays(problem.weight, problem.rows):
        # Conjugate gradients: vectors per signal; the solvers chunk any direct fallback themselves.
        return krylov_bytes(m, n, problem.target.dtype)
    return 3 * (m * n + n * n) * size


def _estimate_spread(problem: StepProblem, x: torch.Tensor) -> torch.Tensor:
    """Standard deviation of each entry of a noisy step's estimate (zeros for clean signals)."""
    noisy = problem.noise > 0
    spread = torch.zeros_like(x)
    if not bool(noisy.any()) or problem.weight is None:  # matrix-free steps are not noise-aware
        return spread
    idx = torch.nonzero(noisy).flatten()
    rows = problem.rows[idx]
    weights = None if problem.row_weights is None else problem.row_weights[idx]
    # Least squares on every column where the rows determine them (that is the estimate a noisy
    # determined step takes); on the found support where they do not (non-negative least squares).
    determined = rows.sum(-1) >= problem.n
    gain = torch.zeros_like(x[idx])
    if bool(determined.all()):
        gain = support_gain(problem.weight, rows, None, weights)
    else:
        cols = x[idx] > 0 if problem.nonneg else torch.ones_like(x[idx], dtype=torch.bool)
        cols = cols | determined.unsqueeze(-1)
        gain = support_gain(problem.weight, rows, cols, weights)
    spread[idx] = gain * problem.noise[idx].unsqueeze(-1)
    return spread


def estimated_pattern(
    generator: Generator, estimates: dict[int, torch.Tensor], spreads: dict[int, torch.Tensor], threshold: float
) -> tuple[torch.Tensor, ...]:
    """Hidden supports the sweep found: relu units clearly active (clean: above sqrt(eps) of the
    scale), leaky units on the positive side."""
    pattern = []
    for k in range(1, generator.n_layers):
        x = estimates[k]
        if generator.activation(k - 1).sparse:
            clean = x > support_threshold(x)
            noisy_thr = threshold * spreads[k]
            pattern.append(torch.where((spreads[k] > 0).any(-1, keepdim=True), x > noisy_thr, clean))
        else:
            pattern.append(x > 0)
    return tuple(pattern)


def sweep(
    generator: Generator,
    obs: Observation,
    solve: StepSolver,
    *,
    method: str,
    options: dict,
    progress=None,
    saturation_tol: float = 1e-6,
    threshold: float = 2.0,
    refit_iter: int = 0,
    seed: int = 0,
) -> InversionResult:
    """Run the backward sweep with ``solve`` on every step; returns the method's result.

    ``refit_iter > 0``: signals whose sweep estimate does not fit the data (all noisy signals, and
    clean ones with a wrong or undetermined step) get the joint refit of z. A step whose matrix is
    too large to materialise is solved matrix-free (:mod:`geninv.solvers.matrix_free`) instead of
    by ``solve``. Where no layer-wise output step exists (a non-selection operator with a
    nonlinear output activation, see :func:`output_problem`), z comes from the joint refit started
    at the prior mean and at :data:`JOINT_STARTS` latents drawn from ``seed``.
    """
    from geninv.inversion.oracle import refit

    start = time.perf_counter()
    estimates: dict[int, torch.Tensor] = {}
    spreads: dict[int, torch.Tensor] = {}
    steps: list[LayerStep] = []
    ok_all = torch.ones(obs.batch_size, dtype=torch.bool, device=generator.device)
    problem = output_problem(generator, obs, saturation_tol=saturation_tol, threshold=threshold)
    if problem is None:
        if not refit_iter:
            raise UnsupportedError(
                f"{method}: no layer-wise output step exists for the measurement operator {obs.operator!r} "
                f"with a {generator.output_activation.name} output (y = A phi(W x + b) is not linear in x); "
                "set refit_iter > 0 for the joint refit of z, or use method='hybrid' or 'gd'."
            )
        return _joint_only(generator, obs, method, options, start, refit_iter, seed, progress)
    for layer in range(generator.n_layers - 1, -1, -1):
        t0 = time.perf_counter()
        if layer < generator.n_layers - 1:
            problem = hidden_problem(generator, layer, estimates[layer + 1], spreads[layer + 1], threshold=threshold)
        xs, oks, sps, preds, names = [], [], [], [], set()
        for part in chunks(obs.batch_size, _step_bytes(problem)):
            sub = _slice(problem, part)
            x, name, ok, *wx = solve(sub) if sub.weight is not None else matrix_free_step(sub)
            if sub.nonneg and not bool((x >= 0).all()):
                x, wx = x.clamp_min(0), []
            xs.append(x)
            oks.append(ok)
            sps.append(_estimate_spread(sub, x))
            preds.append(wx[0] if wx else sub.apply(x))
            names.add(name)
        x = torch.cat(xs)
        ok = torch.cat(oks)
        estimates[layer] = x
        spreads[layer] = torch.cat(sps)
        ok_all &= ok
        pred = preds[0] if len(preds) == 1 else torch.cat(preds)
        resid = torch.where(problem.rows, pred - problem.shifted_target, 0)
        if problem.row_weights is not None:
            resid = resid * problem.row_weights
        steps.append(
            LayerStep(
                layer=layer,
                rows=problem.rows.sum(-1).cpu().numpy(),
                residual=torch.linalg.vector_norm(resid, dim=-1).cpu().numpy(),
                seconds=time.perf_counter() - t0,
                solver="+".join(sorted(names)),
                estimate=x.detach().clone(),
            )
        )
        if progress is not None:
            progress((generator.n_layers - layer) / generator.n_layers, f"{method}: recovered layer {layer}")
    z_hat = estimates[0]
    # One forward pass for the fit and the result's layers (where no refit changes z).
    trace = generator._trace(z_hat) if bool(torch.isfinite(z_hat).all()) else None
    fit = data_fit(generator, obs, z_hat, output=None if trace is None else trace.activations[-1])
    todo = ~fit | (obs.noise_sigma.to(fit.device) > 0)
    refitted = torch.zeros_like(todo)
    if refit_iter and bool(todo.any()) and generator.n_layers > 1:
        t0 = time.perf_counter()
        idx = torch.nonzero(todo).flatten()
        sub = obs[idx]
        pattern = tuple(p[idx] for p in estimated_pattern(generator, estimates, spreads, threshold))
        z_sub = z_hat[idx]
        # Clean signals: the refit with pattern updates straight from the sweep's estimate; where that
        # does not fit, and for noisy signals, first on the pattern the sweep found (its values may
        # carry the product of the steps' noise gains, its supports rarely do), then with pattern
        # updates. At 60% missing the direct refit fits every signal: the hybrid took 12-25% less time;
        # the fallback keeps signals of the convolutional decoder with half the image hidden that the
        # direct refit alone loses (3 of 100 for lbp, 1 for latent-pursuit, with mnist_report's
        # latents). Never a higher loss than the direct attempt.
        z_sub, fit_sub = _refit_from_sweep(generator, sub, z_sub, pattern, refit_iter)
        # A sweep that collapsed (a step starved of equations, or gains that multiplied beyond
        # repair) can leave the refit in a far basin: those signals also try the latent's prior mean.
        if not bool(fit_sub.all()):
            li = torch.nonzero(~fit_sub).flatten()
            z_zero = refit(generator, sub[li], torch.zeros_like(z_sub[li]), n_iter=refit_iter)
            better = _half_loss(generator, sub[li], z_zero) < _half_loss(generator, sub[li], z_sub[li])
            z_sub[li] = torch.where(better.unsqueeze(-1), z_zero, z_sub[li])
        z_hat = z_hat.clone()
        z_hat[idx] = z_sub
        refitted[idx] = True
        # One forward pass for the step's residual and the fit
        res = residual_sq(generator, obs, z_hat)
        steps.append(
            LayerStep(
                layer=0,
                rows=np.full(obs.batch_size, int(obs.y.shape[1])),
                residual=torch.sqrt(res).cpu().numpy(),
                seconds=time.perf_counter() - t0,
                solver="joint refit (Gauss-Newton)",
                estimate=z_hat.detach().clone(),
            )
        )
        fit = fits(res, obs, generator.dtype) & torch.isfinite(z_hat).all(-1)
    # Layers the refit changed are read off the forward pass of the final z.
    keep = {k: v for k, v in estimates.items() if k > 0}
    if bool(refitted.any()):
        with torch.no_grad():
            trace = generator.trace(z_hat)
        for k in keep:
            keep[k] = torch.where(refitted.unsqueeze(-1), trace.activations[k - 1], keep[k])
    reason = np.where(ok_all.cpu().numpy(), Status.NOT_FIT.value, Status.INFEASIBLE.value)
    return finish(
        generator, obs, z_hat, keep, steps, fit, reason, start, method, options, refitted=refitted, trace=trace
    )


def _refit_from_sweep(
    generator: Generator, obs: Observation, z: torch.Tensor, pattern, n_iter: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """The joint refit of the sweep's estimate ``z`` (see :func:`sweep`): directly for clean signals;
    through the sweep's ``pattern`` first for noisy ones and for clean ones the direct refit did not
    fit, keeping the lower loss of the two attempts. Returns the estimates and whether they fit."""
    from geninv.inversion.oracle import refit, refit_on_pattern

    out = z.clone()
    retry = obs.noise_sigma.to(z.device) > 0
    direct = torch.nonzero(~retry).flatten()
    if direct.numel():
        out[direct] = refit(generator, obs[direct], z[direct], n_iter=n_iter)
        retry[direct] = ~data_fit(generator, obs[direct], out[direct])
    fit = ~retry
    again = torch.nonzero(retry).flatten()
    if again.numel():
        sub = obs[again]
        on_pattern = tuple(p[again] for p in pattern)
        z_pat = refit_on_pattern(generator, sub, z[again], on_pattern, n_iter=n_iter, polish=False)
        z_new = refit(generator, sub, z_pat, n_iter=n_iter)
        # (a noisy signal's out is the sweep's estimate, whose loss the refits never exceed)
        better = _half_loss(generator, sub, z_new) <= _half_loss(generator, sub, out[again])
        out[again] = torch.where(better.unsqueeze(-1), z_new, out[again])
        fit[again] = data_fit(generator, sub, out[again])
    return out, fit


JOINT_STARTS = 4
"""Random starts (besides z = 0) of the joint refit where no layer-wise output step exists."""


def joint_start(generator: Generator, obs: Observation, *, n_iter: int, seed: int = 0) -> torch.Tensor:
    """Per signal, the lowest-loss of the Gauss-Newton refits from z = 0 and :data:`JOINT_STARTS`
    latents drawn from N(0, I) (stream ``(seed, "init", 1)``, apart from gd's restarts)."""
    from geninv.inversion.oracle import refit

    rng = torch_generator(seed, "init", 1)
    batch, n0 = obs.batch_size, generator.latent_dim
    starts = torch.randn(JOINT_STARTS, batch, n0, generator=rng, dtype=torch.float64)
    starts = torch.cat([torch.zeros(1, batch, n0, dtype=torch.float64), starts]).to(
        dtype=generator.dtype, device=generator.device
    )
    best = best_loss = None
    for z0 in starts:
        z = refit(generator, obs, z0, n_iter=n_iter)
        loss = _half_loss(generator, obs, z)
        loss = torch.where(torch.isfinite(loss), loss, torch.full_like(loss, math.inf))
        best, best_loss = keep_lower(best, best_loss, z, loss)
    return best


def _joint_only(generator, obs, method, options, start, refit_iter, seed, progress) -> InversionResult:
    t0 = time.perf_counter()
    z_hat = joint_start(generator, obs, n_iter=refit_iter, seed=seed)
    steps = [
        LayerStep(
            layer=0,
            rows=np.full(obs.batch_size, int(obs.y.shape[1])),
            residual=torch.sqrt(2 * _half_loss(generator, obs, z_hat)).cpu().numpy(),
            seconds=time.perf_counter() - t0,
            solver=f"joint refit (Gauss-Newton, {JOINT_STARTS + 1} starts): no layer-wise output step",
            estimate=z_hat.detach().clone(),
        )
    ]
    if progress is not None:
        progress(1.0, f"{method}: joint refit of z")
    fit = data_fit(generator, obs, z_hat)
    reason = np.full(obs.batch_size, Status.NOT_FIT.value, dtype=object)
    refitted = torch.ones(obs.batch_size, dtype=torch.bool, device=generator.device)
    return finish(generator, obs, z_hat, {}, steps, fit, reason, start, method, options, refitted=refitted)


def matrix_free_step(p: StepProblem) -> tuple[torch.Tensor, str, torch.Tensor]:
    """A step whose matrix is not materialised: CGLS, or non-negative least squares by projected
    gradient, on the equations (the off-support inequalities are not used)."""
    t = p.shifted_target
    if p.nonneg:
        lam = 0.0
        x, ok = nnls_matrix_free(p.op, t, p.rows, weights=p.row_weights, lam=lam)
        return x, "matrix-free nnls", ok
    x, ok = lstsq_matrix_free(p.op, t, p.rows, weights=p.row_weights)
    return x, "matrix-free cgls", ok


def _half_loss(generator: Generator, obs: Observation, z: torch.Tensor) -> torch.Tensor:
    with torch.no_grad():
        resid = obs.operator.forward(generator(z)) - obs.y.to(generator.dtype)
    return 0.5 * resid.pow(2).sum(-1)


def finish(
    generator,
    obs,
    z_hat,
    estimates,
    steps,
    fit,
    reason,
    start,
    method,
    options,
    history=None,
    refitted=None,
    trace=None,
) -> InversionResult:
    """Assemble an InversionResult: hidden layers from ``estimates`` where given, output G(z_hat).

    ``fit`` (B,) decides ``converged``; other signals get ``reason`` (see
    :mod:`geninv.inversion.status`). ``trace``: the caller's ``generator.trace(z_hat)``, if it has one.
    """
    if trace is None:
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
            sup = est > support_threshold(est)
            if refitted is not None:
                sup = torch.where(refitted.unsqueeze(-1), trace.supports[i], sup)
            supports.append(sup)
        else:
            supports.append(trace.supports[i])
    result_statuses = statuses(fit, reason)
    warn_unfit(method, result_statuses, stacklevel=4)
    seconds = time.perf_counter() - start
    return InversionResult(
        z_hat=z_hat.detach(),
        layers=tuple(t.detach() for t in layers),
        supports=tuple(supports),
        history=history or History(),
        steps=tuple(steps),
        statuses=result_statuses,
        seconds=seconds,
        forward_passes=forward_pass_cost(generator, obs.batch_size, seconds),
        method=method,
        options=options,
    )


def forward_pass_cost(generator: Generator, batch: int, seconds: float) -> float:
    """Forward-pass equivalents per signal of ``seconds`` spent on a batch (see :func:`forward_seconds`)."""
    return seconds / max(forward_seconds(generator, batch), 1e-9)


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
                _sync(generator.device)
                t0 = time.perf_counter()
                generator(z)
                _sync(generator.device)
                best = min(best, time.perf_counter() - t0)
        _FORWARD_CACHE[key] = best
    return _FORWARD_CACHE[key]


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


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
        p.operator,
    )
