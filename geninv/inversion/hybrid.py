"""The hybrid (default) method: layer-wise where it works, gradient descent only where it does not.

1. Latent-Pursuit, noise-aware, with its joint refit of z (exact on determined layers; with noise
   it lands on the maximum-likelihood point of the pattern it found).
2. Signals whose estimate does not fit the data (to the noise level, or to working precision
   when clean; :mod:`geninv.inversion.status`) get a joint solve: gradient descent from the
   pursuit estimate plus the random restarts plain gd would run, each refitted; per signal the
   lowest data-fit loss among the pursuit estimate and these wins. Such signals are the ones with
   a layer that is not determined on its own, wrong supports, or a decoder whose layer-by-layer
   noise gains multiply beyond repair (the shipped MNIST decoder under noise).

So gd's budget is spent only where the layer-wise answer is not already a fit, and the hybrid never
reports a worse loss than the pursuit or than plain gd with the same seed.
"""

from __future__ import annotations

import dataclasses
import time
import warnings
from dataclasses import dataclass

import numpy as np
import torch

from geninv._validation import check_int, check_real
from geninv.errors import ConvergenceWarning, UnsupportedError
from geninv.inversion._layerwise import finish, forward_pass_cost, has_output_step
from geninv.inversion.gradient import GradientDescentConfig, run_gradient_descent
from geninv.inversion.oracle import refit
from geninv.inversion.pursuit import LatentPursuitConfig, latent_pursuit
from geninv.inversion.registry import register
from geninv.inversion.result import Status
from geninv.inversion.status import data_fit, fits, residual_sq


@dataclass(frozen=True)
class HybridConfig:
    """Options of the hybrid.

    Parameters
    ----------
    gd_iter : int
        Iterations of the joint gradient solve for signals the layer-wise pass did not fit
        (gd's default, so that the hybrid never fits worse than plain gd).
    gd_restarts : int
        Random restarts of that solve (the same ones plain gd runs with this seed), plus one more
        that starts at the pursuit estimate.
    lr : float
    refit_iter : int
        Gauss-Newton iterations of the joint refits (after the pursuit and after each gd run).
    threshold : float
        The pursuit's support threshold in noise standard deviations.
    """

    gd_iter: int = GradientDescentConfig.n_iter
    gd_restarts: int = GradientDescentConfig.restarts
    lr: float = GradientDescentConfig.lr
    refit_iter: int = 20
    threshold: float = LatentPursuitConfig.threshold

    def __post_init__(self) -> None:
        check_int("gd_iter", self.gd_iter, low=1)
        check_int("gd_restarts", self.gd_restarts, low=1)
        check_real("lr", self.lr, low=0.0, low_open=True)
        check_int("refit_iter", self.refit_iter, low=0)
        check_real("threshold", self.threshold, low=0.0)


@register("hybrid", HybridConfig, "Ours: latent-pursuit and a joint refit; gd only where they do not fit")
def run_hybrid(generator, obs, config: HybridConfig, *, seed: int = 0, progress=None):
    """Latent-Pursuit and its refit; gd (warm and random restarts, refitted) where that does not fit."""
    start = time.perf_counter()
    reason = np.full(obs.batch_size, Status.NOT_FIT.value, dtype=object)
    steps, layers = [], {}
    z = torch.zeros(obs.batch_size, generator.latent_dim, dtype=generator.dtype, device=generator.device)
    fit = torch.zeros(obs.batch_size, dtype=torch.bool, device=generator.device)
    # The squared residual of the current z, kept so that each pass costs one forward pass: G(0) is
    # the same for every signal.
    with torch.no_grad():
        fitted0 = obs.operator.forward(generator(z[:1])).double()
    loss = (fitted0 - obs.y.to(fitted0.device).double()).pow(2).sum(-1)
    # First the fast pass (undetermined steps left to the joint refit), then the paper's
    # non-negative least squares for the signals it does not fit.
    passes = ("joint", "nnls") if has_output_step(generator, obs) else ("joint",)  # else: both are the joint refit
    for undetermined in passes:
        todo = torch.nonzero(~fit).flatten()
        if todo.numel() == 0:
            break
        lp_config = LatentPursuitConfig(
            refit_iter=config.refit_iter, threshold=config.threshold, undetermined=undetermined
        )
        sub = obs[todo]
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", ConvergenceWarning)
            try:
                pursuit = latent_pursuit(generator, sub, lp_config, seed=seed)
            except UnsupportedError:
                break
        found = torch.isfinite(pursuit.z_hat).all(-1)
        # Its result carries G(z_hat): the loss without another forward pass (NaN where not found).
        res = residual_sq(generator, sub, pursuit.z_hat, output=pursuit.x_hat)
        better = found & (res < loss[todo])
        if todo.numel() == obs.batch_size and bool(better.all()) and bool(fits(res, obs, generator.dtype).all()):
            # The fast pass fits every signal: its result is the hybrid's, layers and supports read
            # off the same final forward pass.
            if progress is not None:
                progress(1.0, "hybrid: done")
            seconds = time.perf_counter() - start
            options = dataclasses.asdict(config) | {"joint_signals": 0}
            cost = forward_pass_cost(generator, obs.batch_size, seconds)
            return dataclasses.replace(pursuit, seconds=seconds, forward_passes=cost, method="hybrid", options=options)
        if not steps:  # the replay shows the first (fast) pass
            steps = list(pursuit.steps)
            layers = {
                k + 1: pursuit.layers[k].new_zeros(obs.batch_size, pursuit.layers[k].shape[1])
                for k in range(generator.n_layers - 1)
            }
        keep = todo[better]
        z[keep] = pursuit.z_hat[better]
        loss[keep] = res[better]
        for k in layers:
            layers[k][keep] = pursuit.layers[k - 1][better]
        fit = fits(loss, obs, generator.dtype)
    n_joint = int((~fit).sum())
    if n_joint:
        idx = torch.nonzero(~fit).flatten()
        sub = obs[idx]
        sub_progress = None
        if progress is not None:

            def sub_progress(frac, msg):
                return progress(0.2 + 0.75 * frac, f"hybrid (joint solve of {n_joint} signals): {msg}")

        # The same restarts plain gd would run, plus one started at the pursuit estimate.
        plain = GradientDescentConfig(lr=config.lr, n_iter=config.gd_iter, restarts=config.gd_restarts)
        warm = dataclasses.replace(plain, restarts=1, z_init=z[idx])
        candidates = [z[idx]]
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", ConvergenceWarning)
            for cfg in (warm, plain):
                gd = run_gradient_descent(generator, sub, cfg, seed=seed, progress=sub_progress)
                z_gd = refit(generator, sub, gd.z_hat, n_iter=config.refit_iter) if config.refit_iter else gd.z_hat
                candidates.append(z_gd)
                reason[idx.cpu().numpy()] = np.where(
                    gd.statuses == Status.MAX_ITER.value, Status.MAX_ITER.value, reason[idx.cpu().numpy()]
                )
        losses = torch.stack([residual_sq(generator, sub, c) for c in candidates])
        pick = losses.argmin(0)
        z = z.clone()
        z[idx] = torch.stack(candidates)[pick, torch.arange(idx.numel())]
        # Hidden layers of the re-solved signals: the forward trace of their final z.
        with torch.no_grad():
            trace = generator.trace(z)
        layers = {k: torch.where((~fit).unsqueeze(-1), trace.activations[k - 1], v) for k, v in layers.items()}
        fit = data_fit(generator, obs, z)
    if progress is not None:
        progress(1.0, "hybrid: done")
    options = dataclasses.asdict(config) | {"joint_signals": n_joint}
    return finish(generator, obs, z, layers, steps, fit, reason, start, "hybrid", options)
