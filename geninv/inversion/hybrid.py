"""The hybrid (default) method: layer-wise where it works, gradient descent where it does not.

1. Latent-Pursuit sweep (exact on determined layers, FINDINGS.md).
2. Refit: least squares in z on the estimate's activation pattern, repeated until it settles
   (with noise this is the maximum-likelihood point of that linear region; the oracle when the
   supports are right).
3. Noisy signals, and clean ones whose fit is still poor — a layer not determined on its own, wrong
   supports, saturated outputs — get a joint solve: gradient descent from the pursuit estimate plus random restarts,
   each refitted; per signal the lowest data-fit loss wins. So the hybrid is never worse than either
   family on the loss it reports.
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
from geninv.inversion._layerwise import finish
from geninv.inversion.gradient import GradientDescentConfig, run_gradient_descent
from geninv.inversion.oracle import refit
from geninv.inversion.pursuit import LatentPursuitConfig, latent_pursuit
from geninv.inversion.registry import register
from geninv.inversion.result import Status


@dataclass(frozen=True)
class HybridConfig:
    """Options of the hybrid.

    Parameters
    ----------
    gd_iter : int
        Iterations of the joint gradient solve for signals the layer-wise pass did not settle
        (gd's default, so that the hybrid never fits worse than plain gd).
    gd_restarts : int
        Random restarts of that solve (the same ones plain gd runs with this seed), plus one more
        that starts at the pursuit estimate.
    lr : float
    refit_iter : int
        Pattern-refit iterations.
    accept : float
        A signal is settled when its loss is within ``accept`` of the noise floor:
        ``||A G(z) - y||^2 <= m sigma^2 (1 + accept)``, or relative residual <= 1e-9 when clean.
    """

    gd_iter: int = GradientDescentConfig.n_iter
    gd_restarts: int = GradientDescentConfig.restarts
    lr: float = GradientDescentConfig.lr
    refit_iter: int = 8
    accept: float = 0.25

    def __post_init__(self) -> None:
        check_int("gd_iter", self.gd_iter, low=1)
        check_int("gd_restarts", self.gd_restarts, low=1)
        check_real("lr", self.lr, low=0.0, low_open=True)
        check_int("refit_iter", self.refit_iter, low=0)
        check_real("accept", self.accept, low=0.0)


def _fit(generator, obs, z):
    with torch.no_grad():
        resid = obs.operator.forward(generator(z)) - obs.y.to(generator.dtype)
    return resid.pow(2).sum(-1)


def _settled(generator, obs, z, accept):
    fit = _fit(generator, obs, z)
    m = obs.y.shape[1]
    sigma2 = obs.noise_sigma.to(fit).pow(2)
    ynorm = obs.y.to(fit).pow(2).sum(-1)
    clean_ok = fit <= 1e-18 * ynorm
    noisy_ok = fit <= m * sigma2 * (1 + accept)
    return torch.where(sigma2 > 0, noisy_ok, clean_ok)


@register("hybrid", HybridConfig, "Ours: latent-pursuit, pattern refit, and a joint gradient solve where needed")
def run_hybrid(generator, obs, config: HybridConfig, *, seed: int = 0, progress=None):
    """Layer-wise where determined, refit, joint gradient descent where not; best loss per signal."""
    start = time.perf_counter()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        try:
            pursuit = latent_pursuit(generator, obs, LatentPursuitConfig(), seed=seed)
            z = pursuit.z_hat.clone()
            steps = list(pursuit.steps)
        except UnsupportedError:
            steps = []
            z = torch.zeros(obs.batch_size, generator.latent_dim, dtype=generator.dtype, device=generator.device)
    if progress is not None:
        progress(0.2, "hybrid: layer-wise pass done")
    noisy = obs.noise_sigma.to(z.device) > 0
    if config.refit_iter and generator.n_layers > 0:
        # Only where the pursuit did not already fit exactly (clean signals solved to ~1e-15 skip it:
        # the refit was 60% of the hybrid's time on a clean batch).
        idx = torch.nonzero(~_settled(generator, obs, z, config.accept) | noisy).flatten()
        if idx.numel():
            sub = _take(obs, idx)
            z_ref = refit(generator, sub, z[idx], n_iter=config.refit_iter)
            better = _fit(generator, sub, z_ref) < _fit(generator, sub, z[idx])
            z[idx] = torch.where(better.unsqueeze(-1), z_ref, z[idx])
    # With noise a settled fit can still be a worse local minimum than plain restarts find, so
    # noisy signals always get the joint solve (FINDINGS.md: keep the lower loss of both).
    settled = _settled(generator, obs, z, config.accept) & ~noisy
    history = None
    n_joint = int((~settled).sum())
    if n_joint:
        idx = torch.nonzero(~settled).flatten()
        sub = _take(obs, idx)
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
                z_gd = run_gradient_descent(generator, sub, cfg, seed=seed, progress=sub_progress).z_hat
                if config.refit_iter:
                    z_gd = refit(generator, sub, z_gd, n_iter=config.refit_iter)
                candidates.append(z_gd)
        fits = torch.stack([_fit(generator, sub, c) for c in candidates])
        pick = fits.argmin(0)
        z[idx] = torch.stack(candidates)[pick, torch.arange(idx.numel())]
    # Hidden layers: the forward trace of the final z is the hybrid's answer (steps keep the pursuit's).
    ok = torch.ones(obs.batch_size, dtype=torch.bool, device=z.device)
    result = finish(generator, obs, z, {}, steps, ok, start, "hybrid", dataclasses.asdict(config), history)
    final_settled = _settled(generator, obs, z, config.accept).cpu().numpy()
    statuses = np.where(final_settled, Status.CONVERGED.value, Status.MAX_ITER.value)
    if progress is not None:
        progress(1.0, "hybrid: done")
    return dataclasses.replace(
        result, statuses=statuses, options=dataclasses.asdict(config) | {"joint_signals": n_joint}
    )


def _take(obs, idx: torch.Tensor):
    """Sub-batch of an observation by an index tensor."""
    from geninv.observation import Observation

    return Observation(
        y=obs.y[idx],
        operator=obs.operator,
        noise_sigma=obs.noise_sigma[idx],
        z_true=None if obs.z_true is None else obs.z_true[idx],
        trace_true=None if obs.trace_true is None else obs.trace_true[idx],
    )
