"""Invertibility certificates (MISSION.md, section 3).

For each recovery step, from the output back to the latent, we look at the matrix that links the
unknown layer ``x_k`` to the equations the layer above gives: ``M = W_{k+1}[rows]``. The paper's
conditions use the spark of ``M``; its mutual coherence gives a sound but pessimistic bound. What
decides in practice (FINDINGS.md) is whether ``M`` restricted to the true support columns has full
column rank. The certificate reports all of them side by side.

Rank tolerance: a singular value counts as non-zero when it exceeds
``max(m, n) * eps(dtype) * sigma_max`` (numpy's ``matrix_rank`` default), computed in float64.
"""

from __future__ import annotations

import itertools
import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from geninv._threads import threads_for
from geninv._validation import as_tensor, check_int, check_real
from geninv.generator import Generator
from geninv.observation import _make_operator

HOLDS, FAILS, UNKNOWN = "holds", "fails", "unknown"
_CHUNK = 64


def _rank_tol(svals: torch.Tensor, m: int, n: int) -> torch.Tensor:
    eps = torch.finfo(torch.float64).eps
    return svals.amax(dim=-1, keepdim=True) * max(m, n) * eps


def mutual_coherence(matrix: Any) -> torch.Tensor:
    """``max_{j != k} |m_j . m_k| / (||m_j|| ||m_k||)`` over the columns; batched over leading dims.

    A zero column makes the columns dependent (spark 1): its coherence is reported as ``inf``.
    A matrix with one column has coherence 0.
    """
    m = as_tensor("matrix", matrix, ndim=(2, 3)).double()
    gram = m.transpose(-1, -2) @ m
    norms = torch.sqrt(torch.diagonal(gram, dim1=-2, dim2=-1))
    zero = (norms == 0).any(dim=-1)
    scale = norms.clamp_min(1e-300)
    corr = (gram / scale.unsqueeze(-1) / scale.unsqueeze(-2)).abs()
    n = corr.shape[-1]
    corr = corr.masked_fill(torch.eye(n, dtype=torch.bool, device=corr.device), 0.0)
    mu = corr.flatten(-2).amax(dim=-1) if n > 1 else corr.new_zeros(corr.shape[:-2])
    return torch.where(zero, torch.full_like(mu, math.inf), mu)


def spark_lower_bound(matrix: Any) -> torch.Tensor:
    """``1 + 1/mu(M)`` (``inf`` when the columns are orthogonal, 1 with a zero column)."""
    mu = mutual_coherence(matrix)
    return torch.where(mu == math.inf, torch.ones_like(mu), 1 + 1 / mu)


def matrix_rank(matrix: Any) -> int:
    """Numerical rank with the module's tolerance."""
    m = as_tensor("matrix", matrix, ndim=2).double()
    if m.numel() == 0:
        return 0
    s = torch.linalg.svdvals(m)
    return int((s > _rank_tol(s, *m.shape).squeeze(-1)).sum())


def spark(matrix: Any, *, max_subsets: int = 20000) -> float | None:
    """Exact spark: the size of the smallest linearly dependent set of columns.

    Returns ``math.inf`` when all columns are independent, and None when finding it would take more
    than ``max_subsets`` rank checks ("not computed"). The search starts at the coherence bound.
    """
    m = as_tensor("matrix", matrix, ndim=2).double()
    max_subsets = check_int("max_subsets", max_subsets, low=1)
    n = m.shape[1]
    if bool((torch.linalg.vector_norm(m, dim=0) == 0).any()):
        return 1
    rank = matrix_rank(m)
    if rank == n:
        return math.inf
    start = max(2, math.ceil(float(spark_lower_bound(m)) - 1e-9))
    stop = rank + 1  # any rank+1 columns are dependent
    checked = 0
    for k in range(start, stop + 1):
        if checked + math.comb(n, k) > max_subsets and k < stop:
            return None
        if k == stop:
            return stop
        cols = list(itertools.combinations(range(n), k))
        checked += len(cols)
        for start_i in range(0, len(cols), 4096):
            idx = torch.tensor(cols[start_i : start_i + 4096])
            sub = m[:, idx].permute(1, 0, 2)  # (S, rows, k)
            s = torch.linalg.svdvals(sub)
            ranks = (s > _rank_tol(s, m.shape[0], k)).sum(-1)
            if bool((ranks < k).any()):
                return k
    return stop


@dataclass(frozen=True)
class LayerCertificate:
    """Certificate of one recovery step: recover ``x_layer`` (0 = z) from the layer above.

    Every array has shape (B,), one entry per sample.

    Attributes
    ----------
    layer : int
    unknowns : int
        Width of the recovered layer ``n_layer``.
    cardinality : ndarray of int
        ``s_layer``: non-zeros of the true ``x_layer`` (all of them for z and dense layers).
    rows : ndarray of int
        Equations available: active (and observed, non-saturated) rows of the layer above.
    expansion : ndarray of float
        ``rows / cardinality``; the paper needs at least 2.
    coherence : ndarray of float
        Mutual coherence of ``W_{layer+1}[rows]``.
    spark_bound : ndarray of float
        ``1 + 1/coherence``.
    spark : ndarray of float
        Exact spark, ``inf`` for independent columns, ``nan`` when not computed.
    rank : ndarray of int
        Rank of ``W_{layer+1}[rows]``.
    support_rank : ndarray of int
        Rank of ``W_{layer+1}[rows]`` on the true support columns.
    support_sigma_min : ndarray of float
        Smallest singular value there (how well conditioned the exact check is).
    paper_unique : ndarray of str
        The paper's uniqueness condition (spark > 2 s; for z: full column rank): "holds", "fails" or
        "unknown" when neither the bound nor an exact spark decides it.
    lbp_guaranteed : ndarray of bool
        ``s < (1 + 1/mu) / 2``: Layered Basis-Pursuit provably recovers this layer.
    identifiable : ndarray of bool
        Full column rank on the true support: the equations pin ``x_layer`` down given its support.
    """

    layer: int
    unknowns: int
    cardinality: np.ndarray
    rows: np.ndarray
    expansion: np.ndarray
    coherence: np.ndarray
    spark_bound: np.ndarray
    spark: np.ndarray
    rank: np.ndarray
    support_rank: np.ndarray
    support_sigma_min: np.ndarray
    paper_unique: np.ndarray
    lbp_guaranteed: np.ndarray
    identifiable: np.ndarray

    def summary(self) -> dict[str, Any]:
        """Per-step averages and the fraction of samples for which each verdict holds."""
        return {
            "layer": self.layer,
            "unknowns": self.unknowns,
            "cardinality_mean": float(self.cardinality.mean()),
            "rows_mean": float(self.rows.mean()),
            "expansion_median": float(np.median(self.expansion)),
            "coherence_median": float(np.median(self.coherence)),
            "spark_bound_median": float(np.median(self.spark_bound)),
            "spark_computed": float(np.mean(~np.isnan(self.spark))),
            "paper_unique_holds": float(np.mean(self.paper_unique == HOLDS)),
            "paper_unique_fails": float(np.mean(self.paper_unique == FAILS)),
            "paper_unique_unknown": float(np.mean(self.paper_unique == UNKNOWN)),
            "lbp_guaranteed": float(np.mean(self.lbp_guaranteed)),
            "identifiable": float(np.mean(self.identifiable)),
        }


@dataclass(frozen=True)
class Certificate:
    """Per-sample, per-step invertibility certificate of a generator (see :func:`certify`).

    ``layers`` runs in recovery order: from the last hidden layer down to z.
    """

    layers: tuple[LayerCertificate, ...]
    widths: tuple[int, ...]
    options: dict[str, Any] = field(default_factory=dict)

    @property
    def batch_size(self) -> int:
        return int(self.layers[0].cardinality.shape[0])

    @property
    def identifiable(self) -> np.ndarray:
        """Per sample: every step is identifiable (full column rank on the true supports)."""
        return np.logical_and.reduce([lc.identifiable for lc in self.layers])

    @property
    def lbp_guaranteed(self) -> np.ndarray:
        """Per sample: the coherence guarantee holds at every step."""
        return np.logical_and.reduce([lc.lbp_guaranteed for lc in self.layers])

    @property
    def paper_unique(self) -> np.ndarray:
        """Per sample: "holds" if every step holds, "fails" if any fails, else "unknown"."""
        verdicts = np.stack([lc.paper_unique for lc in self.layers])
        out = np.full(self.batch_size, UNKNOWN, dtype=object)
        out[(verdicts == HOLDS).all(0)] = HOLDS
        out[(verdicts == FAILS).any(0)] = FAILS
        return out.astype(str)

    @property
    def verdict(self) -> np.ndarray:
        """One word per sample: "certified" (paper), "identifiable" (exact checks only) or "not identifiable"."""
        out = np.where(self.identifiable, "identifiable", "not identifiable").astype(object)
        out[self.paper_unique == HOLDS] = "certified"
        return out.astype(str)

    def summary(self) -> list[dict[str, Any]]:
        """One dict per step plus an "all" row: fractions of samples for which each verdict holds."""
        rows = [lc.summary() for lc in self.layers]
        rows.append(
            {
                "layer": "all",
                "paper_unique_holds": float(np.mean(self.paper_unique == HOLDS)),
                "paper_unique_fails": float(np.mean(self.paper_unique == FAILS)),
                "paper_unique_unknown": float(np.mean(self.paper_unique == UNKNOWN)),
                "lbp_guaranteed": float(np.mean(self.lbp_guaranteed)),
                "identifiable": float(np.mean(self.identifiable)),
            }
        )
        return rows

    def to_records(self) -> list[dict[str, Any]]:
        """One JSON-friendly dict per sample and step."""
        out = []
        for b in range(self.batch_size):
            for lc in self.layers:
                spark_value = float(lc.spark[b])
                out.append(
                    {
                        "sample": b,
                        "layer": lc.layer,
                        "unknowns": lc.unknowns,
                        "cardinality": int(lc.cardinality[b]),
                        "rows": int(lc.rows[b]),
                        "expansion": float(lc.expansion[b]),
                        "coherence": float(lc.coherence[b]),
                        "spark_bound": float(lc.spark_bound[b]),
                        "spark": None if math.isnan(spark_value) else spark_value,
                        "rank": int(lc.rank[b]),
                        "support_rank": int(lc.support_rank[b]),
                        "support_sigma_min": float(lc.support_sigma_min[b]),
                        "paper_unique": str(lc.paper_unique[b]),
                        "lbp_guaranteed": bool(lc.lbp_guaranteed[b]),
                        "identifiable": bool(lc.identifiable[b]),
                    }
                )
        return out


def equation_rows(
    generator: Generator,
    trace: Any,
    layer: int,
    observed: torch.Tensor,
    *,
    noise_sigma: torch.Tensor | float = 0.0,
    saturation_tol: float = 1e-6,
) -> torch.Tensor:
    """Bool (B, n_{layer+1}): rows of layer ``layer + 1`` that give an equation on ``x_layer``.

    Output layer: observed coordinates, minus zeros of a relu output and saturated pixels of a sigmoid /
    tanh output (within ``saturation_tol`` of the bound, or 3 sigma when noisy). Hidden relu layers:
    the support. Leaky-relu layers: every row.
    """
    act = generator.activation(layer)
    pre = trace.pre_activations[layer]
    if layer < generator.n_layers - 1:
        return trace.supports[layer].clone() if act.sparse else torch.ones_like(pre, dtype=torch.bool)
    rows = observed.to(pre.device).expand_as(pre).clone()
    y = trace.activations[layer]
    if act.name == "relu":
        rows &= y > 0
    elif act.name in ("sigmoid", "tanh"):
        lo, hi = act.bounds
        sigma = torch.as_tensor(noise_sigma, dtype=y.dtype, device=y.device).reshape(-1, 1)
        tol = torch.maximum(torch.full_like(sigma, saturation_tol), 3 * sigma)
        rows &= (y - lo > tol) & (hi - y > tol)
    return rows


def certify(
    generator: Generator,
    z: Any,
    mask: Any = None,
    *,
    noise_sigma: float = 0.0,
    spark_budget: int = 20000,
    saturation_tol: float = 1e-6,
) -> Certificate:
    """Certify, per sample and per layer, whether ``z`` can be recovered from ``A(G(z))``.

    Parameters
    ----------
    generator : Generator
    z : array of shape (B, n_0) or (n_0,)
    mask : bool array of shape (n_L,), optional
        True = observed. A compressed-sensing operator is not supported here.
    noise_sigma : float
        With noise, sigmoid / tanh pixels within 3 sigma of saturation give no equation.
    spark_budget : int
        Largest number of column subsets the exact spark search may check per matrix; above it the
        spark is "not computed" (nan).
    saturation_tol : float

    Returns
    -------
    Certificate

    Examples
    --------
    >>> import geninv
    >>> G = geninv.Generator.random([20, 128, 392, 784], seed=0)
    >>> cert = geninv.certify(G, G.sample_latent(8, seed=1))
    >>> bool(cert.identifiable.all())
    True
    """
    noise_sigma = check_real("noise_sigma", noise_sigma, low=0.0)
    spark_budget = check_int("spark_budget", spark_budget, low=1)
    saturation_tol = check_real("saturation_tol", saturation_tol, low=0.0)
    with threads_for(generator, np.shape(z)[0] if np.ndim(z) == 2 else 1):
        return _certify(generator, z, mask, noise_sigma, spark_budget, saturation_tol)


def _certify(generator, z, mask, noise_sigma, spark_budget, saturation_tol) -> Certificate:
    op = _make_operator(generator, mask, None)
    observed = torch.from_numpy(np.array(op.mask)).to(generator.device)
    trace = generator.trace(z)
    batch = trace.latent.shape[0]
    steps = []
    for layer in range(generator.n_layers - 1, -1, -1):
        rows = equation_rows(generator, trace, layer, observed, noise_sigma=noise_sigma, saturation_tol=saturation_tol)
        if layer == 0:
            support = torch.ones_like(trace.latent, dtype=torch.bool)
        else:
            act = generator.activation(layer - 1)
            support = trace.supports[layer - 1] if act.sparse else torch.ones_like(trace.supports[layer - 1])
        steps.append(_certify_step(generator.weight(layer).double(), rows, support, layer, spark_budget))
    options = {"noise_sigma": noise_sigma, "spark_budget": spark_budget, "saturation_tol": saturation_tol}
    del batch
    return Certificate(layers=tuple(steps), widths=generator.widths, options=options)


def _certify_step(
    weight: torch.Tensor, rows: torch.Tensor, support: torch.Tensor, layer: int, spark_budget: int
) -> LayerCertificate:
    batch = rows.shape[0]
    n_out, n_in = weight.shape
    out: dict[str, list[Any]] = {k: [] for k in ("coh", "rank", "srank", "smin")}
    for lo in range(0, batch, _CHUNK):
        r = rows[lo : lo + _CHUNK].double().unsqueeze(-1)
        s = support[lo : lo + _CHUNK].double().unsqueeze(-2)
        masked = weight.unsqueeze(0) * r  # zeroed rows keep the rank of W[rows]
        out["coh"].append(mutual_coherence(masked))
        sv = torch.linalg.svdvals(masked)
        out["rank"].append((sv > _rank_tol(sv, n_out, n_in)).sum(-1))
        sv_s = torch.linalg.svdvals(masked * s)  # zeroed columns drop out of the rank
        tol = _rank_tol(sv_s, n_out, n_in)
        out["srank"].append((sv_s > tol).sum(-1))
        k = support[lo : lo + _CHUNK].sum(-1)
        kth = (k - 1).clamp(0, sv_s.shape[-1] - 1).unsqueeze(-1)
        out["smin"].append(sv_s.gather(-1, kth).squeeze(-1) * ((k > 0) & (k <= sv_s.shape[-1])))
    coh = torch.cat(out["coh"]).cpu().numpy()
    rank = torch.cat(out["rank"]).cpu().numpy()
    srank = torch.cat(out["srank"]).cpu().numpy()
    smin = torch.cat(out["smin"]).cpu().numpy()
    card = support.sum(-1).cpu().numpy()
    nrows = rows.sum(-1).cpu().numpy()
    with np.errstate(divide="ignore", invalid="ignore"):
        bound = np.where(np.isinf(coh), 1.0, 1.0 + 1.0 / coh)
        expansion = np.where(card > 0, nrows / np.maximum(card, 1), np.inf)
    sparks = np.full(batch, np.nan)
    small = n_in <= 64 and spark_budget > 0
    verdict = np.full(batch, UNKNOWN, dtype=object)
    for b in range(batch):
        if layer == 0:
            verdict[b] = HOLDS if rank[b] == n_in else FAILS
            continue
        need = 2 * card[b]
        if bound[b] > need or rank[b] == n_in:  # independent columns: spark is infinite
            verdict[b] = HOLDS
        elif rank[b] + 1 <= need:  # rank + 1 columns are always dependent
            verdict[b] = FAILS
        if small:
            value = spark(weight[rows[b]], max_subsets=spark_budget) if bool(rows[b].any()) else 1
            sparks[b] = np.nan if value is None else float(value)
            if value is not None:
                verdict[b] = HOLDS if value > need else FAILS
    if layer == 0:
        lbp = np.zeros(batch, dtype=bool)
        lbp[:] = rank == n_in
    else:
        lbp = card < bound / 2
    return LayerCertificate(
        layer=layer,
        unknowns=n_in,
        cardinality=card.astype(np.int64),
        rows=nrows.astype(np.int64),
        expansion=expansion.astype(np.float64),
        coherence=coh.astype(np.float64),
        spark_bound=bound.astype(np.float64),
        spark=sparks,
        rank=rank.astype(np.int64),
        support_rank=srank.astype(np.int64),
        support_sigma_min=smin.astype(np.float64),
        paper_unique=verdict.astype(str),
        lbp_guaranteed=lbp,
        identifiable=(srank == card) & (card <= nrows),
    )
