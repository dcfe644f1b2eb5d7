"""Gradient descent on the latent ("gd") and PLUGIn ("plugin").

Both run batched over signals *and* restarts: one (B*R, n_0) tensor with per-row optimizer state,
so every (signal, restart) pair stops on its own and only the active rows are computed.
"""

from __future__ import annotations

import dataclasses
import functools
import math
import time
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from geninv._random import torch_generator
from geninv._validation import check_choice, check_int, check_real, fail
from geninv.errors import ShapeError
from geninv.inversion.registry import register
from geninv.inversion.result import History, InversionResult, Status
from geninv.inversion.status import data_fit, statuses, warn_unfit
from geninv.observation import Observation


@dataclass(frozen=True)
class GradientDescentConfig:
    """Options of gradient descent on ``0.5 ||A(G(z)) - y||^2 + weight_decay ||z||^2``.

    Parameters
    ----------
    optimizer : {'adam', 'momentum'}
    lr : float
        Step size (Adam's or the momentum method's).
    n_iter : int
        Iterations per restart. 8000 by default: on the shipped MNIST decoder gd converges slowly
        (with 2 restarts, 63% of 30 clean signals to 1e-3 after 8000 steps, none after 2000); a
        restart that settles stops early, so well-conditioned generators cost no more.
    restarts : int
        Random restarts; the best final loss per signal wins.
    init : {'random', 'zeros'}
        Start of the restarts (restart 0 starts at ``z_init`` when given).
    z_init : Tensor of shape (B, n_0), optional
    weight_decay : float
    negation_check : bool
        Every ``record_every`` steps, try ``-z`` and keep it when its loss is lower (Huang et al.).
    tol : float
        A plateau: the best loss improved by less than ``tol`` (relative) over ``patience`` iterations.
    patience : int
        Iterations without improvement before the step is halved (from the best iterate).
    lr_decay : float
        Factor applied to the step on a plateau.
    max_decays : int
        A restart has settled after this many decays (or at the floating-point floor of the loss).
    record_every : int
        Iterations between two records of the history (and progress reports).
    momentum : float
    """

    optimizer: str = "adam"
    lr: float = 0.05
    n_iter: int = 8000
    restarts: int = 2
    init: str = "random"
    z_init: Any = None
    weight_decay: float = 0.0
    negation_check: bool = False
    tol: float = 1e-4
    patience: int = 50
    lr_decay: float = 0.5
    max_decays: int = 30
    record_every: int = 10
    momentum: float = 0.9

    def __post_init__(self) -> None:
        check_choice("optimizer", self.optimizer, ("adam", "momentum"))
        check_real("lr", self.lr, low=0.0, low_open=True)
        check_int("n_iter", self.n_iter, low=1)
        check_int("restarts", self.restarts, low=1)
        check_choice("init", self.init, ("random", "zeros"))
        check_real("weight_decay", self.weight_decay, low=0.0)
        check_real("tol", self.tol, low=0.0, high=1.0, high_open=True)
        check_int("patience", self.patience, low=1)
        check_real("lr_decay", self.lr_decay, low=0.0, high=1.0, low_open=True, high_open=True)
        check_int("max_decays", self.max_decays, low=0)
        check_int("record_every", self.record_every, low=1)
        check_real("momentum", self.momentum, low=0.0, high=1.0, high_open=True)
        if not isinstance(self.negation_check, bool):
            fail("negation_check", "a bool", self.negation_check)

    def describe(self) -> dict[str, Any]:
        out = dataclasses.asdict(self)
        out["z_init"] = None if self.z_init is None else "given"
        return out


def _initial(generator, obs: Observation, config, seed: int) -> torch.Tensor:
    batch, n0, r = obs.batch_size, generator.latent_dim, config.restarts
    rng = torch_generator(seed, "init")
    if config.init == "random":
        z = torch.randn(batch, r, n0, generator=rng, dtype=torch.float64)
    else:
        z = torch.zeros(batch, r, n0, dtype=torch.float64)
    z = z.to(dtype=generator.dtype, device=generator.device)
    if config.z_init is not None:
        z0 = torch.as_tensor(config.z_init).to(dtype=generator.dtype, device=generator.device)
        if z0.shape != (batch, n0):
            fail("z_init", f"of shape ({batch}, {n0})", z0, ShapeError)
        if not bool(torch.isfinite(z0).all()):
            fail("z_init", "finite (no NaN or inf)", "an array containing NaN or inf")
        z[:, 0] = z0
    return z.reshape(batch * r, n0)


def _loss(generator, obs, z, y_rep, weight_decay) -> torch.Tensor:
    resid = obs.operator.forward(generator(z)) - y_rep
    loss = 0.5 * resid.pow(2).sum(-1)
    if weight_decay:
        loss = loss + weight_decay * z.pow(2).sum(-1)
    return loss


def _run(generator, obs, config, *, seed, progress, method, direction) -> InversionResult:
    """Shared loop: ``direction(z_active, y_active) -> (loss, grad)``.

    Every (signal, restart) row keeps the lowest-loss iterate it has visited. When that best loss
    has not improved by ``tol`` (relative) for ``patience`` iterations, the row returns to its best
    iterate with half the step (Adam's moments restart); after ``max_decays`` halvings, or at the
    floating-point floor of the loss, the row is settled and stops. A constant-step Adam oscillates
    around a minimum it has found (on the shipped MNIST decoder its last iterate was 1000x further
    from the truth than its best one); the decay lets it settle there instead.
    """
    start = time.perf_counter()
    batch, r, n0 = obs.batch_size, config.restarts, generator.latent_dim
    dtype = generator.dtype
    z = _initial(generator, obs, config, seed)
    rows = batch * r
    y_rep = obs.y.to(dtype).repeat_interleave(r, dim=0)
    floor = 0.5 * (10 * torch.finfo(dtype).eps * torch.linalg.vector_norm(y_rep, dim=-1)).pow(2)
    active = torch.ones(rows, dtype=torch.bool, device=z.device)
    settled = torch.zeros_like(active)
    m = torch.zeros_like(z)
    v = torch.zeros_like(z)
    step_count = torch.zeros(rows, dtype=dtype, device=z.device)
    base_step = getattr(direction, "step", None)
    lr = torch.full((rows,), float(config.lr), dtype=dtype, device=z.device) if base_step is None else base_step
    lr = lr.clone()
    decays = torch.zeros(rows, dtype=torch.int64, device=z.device)
    best_loss = torch.full((rows,), math.inf, dtype=dtype, device=z.device)
    best_z = z.clone()
    window_best = best_loss.clone()  # best loss at the start of the current patience window
    window_start = torch.zeros(rows, dtype=torch.int64, device=z.device)
    rec_iters, rec_loss, rec_err, rec_z = [], [], [], []
    z_true = None if obs.z_true is None else obs.z_true.to(z).repeat_interleave(r, dim=0)
    iterations_run = torch.zeros(rows, dtype=torch.float64, device=z.device)
    stopped = False
    b1, b2 = 0.9, 0.999
    adam = method == "gd" and config.optimizer == "adam"

    def back_to_best(which: torch.Tensor) -> None:
        """Rows ``which`` return to their best iterate with a smaller step (Adam's moments restart)."""
        lr[which] = lr[which] * config.lr_decay
        z[which] = best_z[which]
        m[which] = 0
        v[which] = 0
        step_count[which] = 0

    every_row = torch.arange(rows, device=z.device)
    # The active rows, looked up again only when some stop (they stop for good); every row active:
    # plain views instead of gathers and scatters.
    idx: Any = slice(None)
    for it in range(config.n_iter + 1):
        if idx is None:
            idx = torch.nonzero(active).flatten()
            if idx.numel() == 0:
                break
        za = z[idx]
        if config.negation_check and it % config.record_every == 0:
            with torch.no_grad():
                l_pos = _loss(generator, obs, za, y_rep[idx], config.weight_decay)
                l_neg = _loss(generator, obs, -za, y_rep[idx], config.weight_decay)
            za = torch.where((l_neg < l_pos).unsqueeze(-1), -za, za)
            z[idx] = za
        loss, grad = direction(za, y_rep[idx])
        loss = torch.nan_to_num(loss, nan=math.inf, posinf=math.inf, neginf=math.inf)  # non-finite: inf
        better = loss < best_loss[idx]
        best_loss[idx] = torch.where(better, loss, best_loss[idx])
        best_z[idx] = torch.where(better.unsqueeze(-1), za, best_z[idx])
        ids = every_row if isinstance(idx, slice) else idx
        if it % config.record_every == 0 or it == config.n_iter:
            # Records hold each row's best iterate so far: what gd returns if it stops there.
            rec_iters.append(it)
            rec_loss.append(best_loss.clone())
            if z_true is not None:
                rec_err.append(_rel(best_z, z_true))
            rec_z.append(best_z.detach().clone())
            if progress is not None and progress(it / config.n_iter, f"{method}: iteration {it}") is False:
                stopped = True
                break
        # Plateau: the best loss did not improve by tol over `patience` iterations.
        at_floor = best_loss[idx] <= floor[idx]
        window_done = window_start[idx] <= it - config.patience
        if _quiet(window_done, at_floor):
            move = None  # every active row moves
        else:
            improved = best_loss[idx] < window_best[idx] * (1 - config.tol)
            plateau = window_done & ~improved & ~at_floor
            if bool(window_done.any()):  # a plateau ends its window too
                rw = ids[window_done]
                window_best[rw] = best_loss[rw]
                window_start[rw] = it
            if bool(plateau.any()):
                pl = ids[plateau]
                decays[pl] += 1
                back_to_best(pl)
            done = at_floor | (decays[idx] > config.max_decays)
            if bool(done.any()):
                settled[ids[done]] = True
                active[ids[done]] = False
                idx = None  # looked up again next step
            move = ~done & ~plateau
        if it == config.n_iter:
            break
        if _every_row_moves(idx, move):
            # Every row moves (most iterations): whole tensors, in place, instead of gathers and
            # scatters of the moving rows (one MNIST signal, 2 restarts: ~15 fewer small ops per step).
            moved = ids
            iterations_run += 1
            if adam:
                step_count += 1
            new = _update(method, config, za.detach(), grad.detach(), m, v, lr, step_count, b1, b2)
            for held, value in zip((z, m, v), new):
                if value is not held:
                    held.copy_(value)
            z_moved = z
        elif move is None or bool(move.any()):
            move = torch.ones_like(at_floor) if move is None else move
            moved = ids[move]
            iterations_run[moved] += 1
            if adam:
                step_count[moved] += 1
            g, zm = grad.detach()[move], za.detach()[move]
            z[moved], m[moved], v[moved] = _update(
                method, config, zm, g, m[moved], v[moved], lr[moved], step_count[moved], b1, b2
            )
            z_moved = z[moved]
        else:
            continue
        if not bool(torch.isfinite(z_moved).all()):  # a step that overflowed: back to the best point
            back_to_best(moved[~torch.isfinite(z_moved).all(-1)])
    losses = best_loss.reshape(batch, r)
    pick = losses.argmin(-1)
    z_hat = best_z.reshape(batch, r, n0)[torch.arange(batch), pick]
    row_settled = settled.reshape(batch, r)[torch.arange(batch), pick]
    fit = data_fit(generator, obs, z_hat)
    reason = np.where(row_settled.cpu().numpy() & ~stopped, Status.NOT_FIT.value, Status.MAX_ITER.value)
    result_statuses = statuses(fit, reason)
    warn_unfit(method, result_statuses, stacklevel=4)
    history = _history(rec_iters, rec_loss, rec_err, rec_z, batch, r, pick)
    with torch.no_grad():
        trace = generator.trace(z_hat)
    seconds = time.perf_counter() - start
    return InversionResult(
        z_hat=z_hat.detach(),
        layers=trace.activations,
        supports=trace.supports,
        history=history,
        steps=(),
        statuses=result_statuses,
        seconds=seconds,
        forward_passes=3.0 * float(iterations_run.sum()) / batch,
        method=method,
        options=config.describe(),
    )


def _every_row_moves(idx, move: torch.Tensor | None) -> bool:
    """Whether :func:`_run` steps on whole tensors: every row active (``idx`` is a slice) and moving
    (``move`` None: every active row moves)."""
    return isinstance(idx, slice) and (move is None or bool(move.all()))


def _quiet(window_done: torch.Tensor, at_floor: torch.Tensor) -> bool:
    """Whether no active row's patience window ends and none is at the floor this step: then none
    decays or stops (a row past ``max_decays`` stopped in the step that put it there) and every active
    row moves, so :func:`_run` skips that bookkeeping (most steps; a few small operations and two
    synchronisations fewer)."""
    return not bool((window_done | at_floor).any())


def _update(method, config, zm, g, m, v, lr, t, b1, b2):
    """One step of the rows ``zm`` with gradients ``g``, their moments ``m``, ``v``, steps ``lr`` and
    Adam step counts ``t``: the new ``(z, m, v)``."""
    step = lr.unsqueeze(-1)
    if method == "gd" and config.optimizer == "adam":
        m = b1 * m + (1 - b1) * g
        v = b2 * v + (1 - b2) * g * g
        t = t.unsqueeze(-1)
        mhat = m / (1 - b1**t)
        vhat = v / (1 - b2**t)
        return zm - step * mhat / (vhat.sqrt() + 1e-12 * (1 + vhat.amax(-1, keepdim=True).sqrt())), m, v
    if method == "gd":
        m = config.momentum * m + g
        return zm - step * m, m, v
    return zm - step * g, m, v


def _rel(z: torch.Tensor, z_true: torch.Tensor) -> torch.Tensor:
    return torch.linalg.vector_norm(z - z_true, dim=-1) / torch.linalg.vector_norm(z_true, dim=-1).clamp_min(1e-300)


def _history(iters, losses, errs, zs, batch, r, best) -> History:
    if not iters:
        return History()
    loss = torch.stack(losses).reshape(len(iters), batch, r).cpu().numpy()
    err = torch.stack(errs).reshape(len(iters), batch, r).cpu().numpy() if errs else None
    z_rec = torch.stack(zs).reshape(len(iters), batch, r, -1)
    iterates = z_rec[:, torch.arange(batch), best]
    return History(iterations=np.asarray(iters), loss=loss, latent_error=err, iterates=iterates)


@register("gd", GradientDescentConfig, "Gradient descent on the latent (Adam, random restarts)")
def run_gradient_descent(generator, obs: Observation, config: GradientDescentConfig, *, seed: int = 0, progress=None):
    """Minimise ``0.5 ||A(G(z)) - y||^2`` over z with Adam or momentum, restarts kept by best loss.

    ``forward_passes`` counts one forward plus one backward pass as 3 forward passes per iteration
    and restart actually run (restarts stop on their own), averaged over the signals.
    """

    plan = _backprop_plan(generator)

    def direction(za: torch.Tensor, ya: torch.Tensor):
        return _loss_and_grad(generator, obs, za, ya, config.weight_decay, plan=plan)

    return _run(generator, obs, config, seed=seed, progress=progress, method="gd", direction=direction)


def _backprop_plan(generator) -> tuple:
    """Per layer ``(pre_activation, activation, through_activation, adjoint, reads_output)``, bound once per run: a
    dense layer's matrix and bias held directly, so that a step makes no attribute lookups or layer-type
    checks (on one MNIST signal a step is a few dozen small operations). ``through_activation(d, pre, out)`` is
    ``d`` times the activation's derivative at ``pre``, from its output ``out`` where that is the same
    number (sigmoid: ``out (1 - out)``; ``reads_output`` says so, else ``out`` is None); the values are
    those of :meth:`Activation.derivative`."""
    plan = []
    for i in range(generator.n_layers):
        act = generator.activation(i)
        if generator.layer_type(i) == "dense":
            w, b = generator.weight_of(i), generator.bias(i)
            wt = w.T
            pre = (lambda x, wt=wt: x @ wt) if b is None else (lambda x, wt=wt, b=b: x @ wt + b)

            def adjoint(d, w=w):
                return d @ w
        else:
            pre = functools.partial(generator.pre_activation, i)
            adjoint = functools.partial(generator.backward_layer, i)
        if act.name == "relu":

            def through(d, p, out):
                return d * (p > 0)
        elif act.name == "sigmoid":

            def through(d, p, out):
                return d * (out * (1 - out))
        else:

            def through(d, p, out, act=act):
                return d * act.derivative(p)

        plan.append((pre, act, through, adjoint, act.name == "sigmoid"))
    return tuple(plan)


@torch.no_grad()
def _loss_and_grad(generator, obs, z, y, weight_decay, *, plan: tuple | None = None) -> tuple[torch.Tensor, ...]:
    """Loss and its gradient in z by hand-written back-propagation: the same numbers as autograd
    (tested) at 70% of its cost on small batches, where the per-step overhead dominates. ``plan``:
    :func:`_backprop_plan` of the generator, made once per run by the caller (else here)."""
    plan = _backprop_plan(generator) if plan is None else plan
    pres, outs, x = [], [], z
    for pre, act, _, _, reads_output in plan:
        p = pre(x)
        x = act(p)
        pres.append(p)
        outs.append(x if reads_output else None)
    resid = obs.operator.forward(x) - y
    loss = 0.5 * resid.pow(2).sum(-1)
    d = obs.operator.adjoint(resid)
    for (_, _, through, adjoint, _), p, out in zip(reversed(plan), reversed(pres), reversed(outs)):
        d = adjoint(through(d, p, out))
    if weight_decay:
        loss = loss + weight_decay * z.pow(2).sum(-1)
        d = d + 2 * weight_decay * z
    return loss, d


@dataclass(frozen=True)
class PluginConfig:
    """Options of PLUGIn (Joshi et al., NeurIPS 2021).

    Parameters
    ----------
    eta : float or None
        Step; None picks ``2^(L-1) / ||W_L ... W_1||_2^2`` (the plug-in operator's scale for
        relu nets, where about half the units are active).
    n_iter, restarts, init, z_init, tol, patience, lr_decay, max_decays, record_every : as for gd
        (the step ``eta`` is halved on a plateau, from the best iterate).
    """

    eta: float | None = None
    n_iter: int = 2000
    restarts: int = 1
    init: str = "zeros"
    z_init: Any = None
    tol: float = 1e-4
    patience: int = 50
    lr_decay: float = 0.5
    max_decays: int = 30
    record_every: int = 10
    weight_decay: float = 0.0
    negation_check: bool = False

    def __post_init__(self) -> None:
        if self.eta is not None:
            check_real("eta", self.eta, low=0.0, low_open=True)
        check_int("n_iter", self.n_iter, low=1)
        check_int("restarts", self.restarts, low=1)
        check_choice("init", self.init, ("random", "zeros"))
        check_real("tol", self.tol, low=0.0, high=1.0, high_open=True)
        check_int("patience", self.patience, low=1)
        check_real("lr_decay", self.lr_decay, low=0.0, high=1.0, low_open=True, high_open=True)
        check_int("max_decays", self.max_decays, low=0)
        check_int("record_every", self.record_every, low=1)
        if not isinstance(self.negation_check, bool):
            fail("negation_check", "a bool", self.negation_check)

    def describe(self) -> dict[str, Any]:
        out = dataclasses.asdict(self)
        out["z_init"] = None if self.z_init is None else "given"
        return out


@register("plugin", PluginConfig, "PLUGIn: gradient steps with the weights' transposes plugged in")
def run_plugin(generator, obs: Observation, config: PluginConfig, *, seed: int = 0, progress=None):
    """``z <- z - eta * W_1^T ... W_L^T A^T (A G(z) - y)``: the activations' derivatives dropped."""
    # The chain W_L ... W_1 (n_L, n_0), built by pushing the n_0 latent directions through the layers'
    # operators (any layer of the linear-operator contract, dense or convolutional).
    chain_t = torch.eye(generator.latent_dim, dtype=generator.dtype, device=generator.device)
    for i in range(generator.n_layers):
        chain_t = generator.operator(i).forward(chain_t)
    chain = chain_t.T
    chain_a = obs.operator.forward(chain_t.to(obs.y.dtype)).T  # A W_L ... W_1 (m, n_0)
    sigma = float(torch.linalg.matrix_norm(chain_a, ord=2))
    if config.eta is not None:
        eta = config.eta
    elif sigma > 0 and math.isfinite(sigma):
        eta = 2.0 ** (generator.n_layers - 1) / sigma**2
    else:  # a zero chain: the plug-in direction is zero, any step leaves z where it is
        eta = 1.0
    rows = obs.batch_size * config.restarts
    step = torch.full((rows,), eta, dtype=generator.dtype, device=generator.device)

    def direction(za: torch.Tensor, ya: torch.Tensor):
        with torch.no_grad():
            resid = obs.operator.forward(generator(za)) - ya
            loss = 0.5 * resid.pow(2).sum(-1)
            grad = obs.operator.adjoint(resid) @ chain
        return loss, grad

    direction.step = step  # type: ignore[attr-defined]
    return _run(generator, obs, config, seed=seed, progress=progress, method="plugin", direction=direction)
