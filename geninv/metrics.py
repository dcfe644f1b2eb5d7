"""Error metrics (docs/algorithms.md). All batched: inputs (B, n), outputs (B,)."""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import torch

from geninv._validation import check_real, fail
from geninv.errors import ShapeError

DEFAULT_THRESHOLD = 1e-3
_TINY = 1e-300


def _pair(name: str, estimate: Any, truth: Any) -> tuple[torch.Tensor, torch.Tensor]:
    est = torch.as_tensor(estimate).detach()
    tru = torch.as_tensor(truth).detach().to(device=est.device)
    if est.ndim == 1:
        est, tru = est.unsqueeze(0), tru.unsqueeze(0) if tru.ndim == 1 else tru
    if est.shape != tru.shape:
        fail(name, f"of the same shape as the truth {tuple(tru.shape)}", est, ShapeError)
    dtype = torch.promote_types(est.dtype, tru.dtype)
    if not dtype.is_floating_point:
        dtype = torch.float64
    return est.to(dtype), tru.to(dtype)


def relative_error(estimate: Any, truth: Any) -> torch.Tensor:
    """``||estimate - truth|| / ||truth||`` per row (absolute error where the truth is zero)."""
    est, tru = _pair("estimate", estimate, truth)
    num = torch.linalg.vector_norm(est - tru, dim=-1)
    den = torch.linalg.vector_norm(tru, dim=-1)
    return torch.where(den > 0, num / den.clamp_min(_TINY), num)


def latent_error(z_hat: Any, z_true: Any) -> torch.Tensor:
    """Relative latent error ``||z_hat - z|| / ||z||``."""
    return relative_error(z_hat, z_true)


def psnr(estimate: Any, truth: Any, *, data_range: float | None = None) -> torch.Tensor:
    """Peak signal-to-noise ratio in dB; ``data_range`` defaults to the truth's max - min per row."""
    est, tru = _pair("estimate", estimate, truth)
    mse = (est - tru).pow(2).mean(dim=-1)
    if data_range is None:
        rng = (tru.max(dim=-1).values - tru.min(dim=-1).values).clamp_min(_TINY)
    else:
        rng = torch.full_like(mse, check_real("data_range", data_range, low=0.0, low_open=True))
    return 10 * torch.log10(rng.pow(2) / mse.clamp_min(1e-30))


def support_scores(estimate: Any, truth: Any) -> dict[str, torch.Tensor]:
    """Precision, recall and F1 of an estimated support (bool) against the true one, per row.

    A perfect score is 1 when both supports are empty.
    """
    est = torch.as_tensor(estimate).bool()
    tru = torch.as_tensor(truth).bool().to(est.device)
    if est.shape != tru.shape:
        fail("estimate", f"a support of the same shape as the truth {tuple(tru.shape)}", est, ShapeError)
    tp = (est & tru).sum(-1).double()
    n_est, n_true = est.sum(-1).double(), tru.sum(-1).double()
    precision = torch.where(n_est > 0, tp / n_est.clamp_min(1), (n_true == 0).double())
    recall = torch.where(n_true > 0, tp / n_true.clamp_min(1), torch.ones_like(tp))
    f1 = torch.where(precision + recall > 0, 2 * precision * recall / (precision + recall).clamp_min(_TINY), 0 * tp)
    return {"precision": precision, "recall": recall, "f1": f1}


def success_rate(errors: Any, threshold: float = DEFAULT_THRESHOLD) -> float:
    """Fraction of errors at or below ``threshold``."""
    threshold = check_real("threshold", threshold, low=0.0)
    # Lists stay float64: torch.as_tensor would make them float32 and 1e-3 would fail a 1e-3 threshold.
    values = errors.detach().cpu().double().numpy() if isinstance(errors, torch.Tensor) else errors
    arr = np.asarray(values, dtype=np.float64).reshape(-1)
    return float(np.mean(arr <= threshold)) if arr.size else float("nan")


def evaluate(result: Any, observation: Any, *, threshold: float = DEFAULT_THRESHOLD) -> dict[str, np.ndarray]:
    """Per-signal metrics of an :class:`InversionResult` against an :class:`Observation`.

    Always gives the residual on the observed coordinates; with ground truth also the latent
    error, signal error on all and on observed coordinates, PSNR, success, and per hidden layer
    the relative error and support precision / recall / F1 (keys ``layer{i}_...``, i = 1..L-1).
    """
    out: dict[str, np.ndarray] = {}
    fitted = observation.operator.forward(result.x_hat.to(observation.y.dtype))
    out["observed_residual"] = _np(relative_error(fitted, observation.y))
    if observation.z_true is None:
        return out
    out["latent_error"] = _np(latent_error(result.z_hat, observation.z_true))
    out["success"] = (out["latent_error"] <= threshold).astype(np.float64)
    out["signal_error"] = _np(relative_error(result.x_hat, observation.x_true))
    out["observed_signal_error"] = _np(relative_error(fitted, observation.operator.forward(observation.x_true)))
    out["psnr"] = _np(psnr(result.x_hat, observation.x_true))
    truth = observation.trace_true
    for i in range(len(truth.activations) - 1):
        out[f"layer{i + 1}_error"] = _np(relative_error(result.layers[i], truth.activations[i]))
        scores = support_scores(result.supports[i], truth.supports[i])
        for key, value in scores.items():
            out[f"layer{i + 1}_{key}"] = _np(value)
    return out


def _np(t: torch.Tensor) -> np.ndarray:
    return t.detach().cpu().double().numpy()


def wilson_interval(successes: int, trials: int, *, confidence: float = 0.95) -> tuple[float, float]:
    """Wilson score interval of a success rate (good at small ``trials`` and at rates of 0 or 1).

    Examples
    --------
    >>> low, high = wilson_interval(20, 20)
    >>> round(low, 3), high
    (0.839, 1.0)
    """
    from statistics import NormalDist

    from geninv._validation import check_int

    trials = check_int("trials", trials, low=1)
    successes = check_int("successes", successes, low=0, high=trials)
    confidence = check_real("confidence", confidence, low=0.0, high=1.0, low_open=True, high_open=True)
    z = NormalDist().inv_cdf(0.5 + confidence / 2)
    p = successes / trials
    denom = 1 + z * z / trials
    centre = (p + z * z / (2 * trials)) / denom
    half = z * math.sqrt(p * (1 - p) / trials + z * z / (4 * trials * trials)) / denom
    low = 0.0 if successes == 0 else max(0.0, centre - half)  # exact ends, not rounding residue
    high = 1.0 if successes == trials else min(1.0, centre + half)
    return low, high


def bootstrap_interval(
    values: Any, *, statistic: str = "median", confidence: float = 0.95, resamples: int = 2000, seed: int = 0
) -> tuple[float, float]:
    """Percentile bootstrap interval of the median (or mean) of ``values``; NaNs are dropped.

    Returns ``(nan, nan)`` when no finite value is left.
    """
    from geninv._validation import check_choice, check_int

    check_choice("statistic", statistic, ("median", "mean"))
    resamples = check_int("resamples", resamples, low=10)
    confidence = check_real("confidence", confidence, low=0.0, high=1.0, low_open=True, high_open=True)
    arr = np.asarray(values, dtype=np.float64).reshape(-1)
    arr = arr[~np.isnan(arr)]
    if arr.size == 0:
        return math.nan, math.nan
    rng = np.random.default_rng([seed, 0x5EED])
    draws = arr[rng.integers(0, arr.size, size=(resamples, arr.size))]
    stats = np.median(draws, axis=1) if statistic == "median" else draws.mean(axis=1)
    alpha = (1 - confidence) / 2
    return float(np.quantile(stats, alpha)), float(np.quantile(stats, 1 - alpha))
