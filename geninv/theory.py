"""Invertibility certificates: can ``z`` be recovered from ``A(G(z)) + e``, and how well?

Every answer is per sample, on the sample's own activation pattern (docs/theory.md explains each
verdict for users).

1. **Layer by layer** (the paper's conditions). For each recovery step, from the output back to the
   latent, the matrix that links the unknown layer ``x_k`` to the equations the layer above gives is
   ``M = W_{k+1}[rows]``. The certificate reports the spark condition (exact where affordable, else
   its mutual-coherence bound), the Layered Basis-Pursuit guarantee, and whether ``M`` restricted to
   the true support columns has full column rank. These conditions are **sufficient, not
   necessary**: when a step fails them, the whole network may still be identifiable.
2. **Whole network** (local identifiability). On the sample's activation pattern the map from ``z`` to
   the observed output is affine, ``J_S z + c`` (rows: observed, non-saturated, and for a relu output
   positive; a sigmoid / tanh output scales each row by ``phi'(pre)``, the Jacobian at the sample).
   ``z`` is locally unique iff ``J_S`` has full column rank ``n_0``. This is the verdict: a sample is
   never called "not identifiable" from the layer-wise test alone.
3. **Stability.** With output noise of standard deviation sigma, least squares on the true pattern
   (the oracle) has latent error about ``sigma * ||J_S^+||_F``; its noise gain is ``1 / sigma_min(J_S)``
   and ``cond(J_S)`` is the amplification of relative errors. A layer-by-layer pass pays the product
   of its per-step gains instead (``1 / sigma_min`` of each restricted matrix), which can be far
   larger.

Rank tolerance: a singular value counts as non-zero when it exceeds
``max(m, n) * eps * sigma_max`` (numpy's ``matrix_rank`` default), where ``eps`` is the precision the
generator (or matrix) is stored in; the arithmetic itself is float64.
"""

from __future__ import annotations

import copy
import itertools
import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from geninv._threads import threads_for
from geninv._validation import as_tensor, check_int, check_real, fail
from geninv.errors import ShapeError
from geninv.generator import Generator
from geninv.observation import _make_operator
from geninv.solvers.linear import smallest_eigenvalues

HOLDS, FAILS, UNKNOWN = "holds", "fails", "unknown"
STABLE_CONDITION = 100.0
"""Default largest condition number of ``J_S`` that the verdict calls stable."""
_EPS64 = torch.finfo(torch.float64).eps
_GRAM_SAFETY = 1e4
"""An eigenvalue of a Gram matrix is trusted when it exceeds this many times its rounding bound."""


def _eps_of(value: Any, dtype: torch.dtype | None) -> float:
    """Machine epsilon of the precision ``value`` is stored in (float64 for non-float input)."""
    if dtype is not None:
        return float(torch.finfo(dtype).eps)
    if isinstance(value, torch.Tensor) and value.is_floating_point():
        return float(torch.finfo(value.dtype).eps)
    if isinstance(value, np.ndarray) and value.dtype.kind == "f":
        return float(np.finfo(value.dtype).eps)
    return _EPS64


def _rank_tol(svals: torch.Tensor, m: int, n: int, eps: float = _EPS64) -> torch.Tensor:
    return svals.amax(dim=-1, keepdim=True) * max(m, n) * eps


def _coherence_from_gram(gram: torch.Tensor) -> torch.Tensor:
    norms = torch.sqrt(torch.diagonal(gram, dim1=-2, dim2=-1).clamp_min(0))
    zero = (norms == 0).any(dim=-1)
    scale = norms.clamp_min(1e-300)
    corr = (gram / scale.unsqueeze(-1) / scale.unsqueeze(-2)).abs()
    n = corr.shape[-1]
    corr = corr.masked_fill(torch.eye(n, dtype=torch.bool, device=corr.device), 0.0)
    mu = corr.flatten(-2).amax(dim=-1) if n > 1 else corr.new_zeros(corr.shape[:-2])
    return torch.where(zero, torch.full_like(mu, math.inf), mu)


def mutual_coherence(matrix: Any) -> torch.Tensor:
    """``max_{j != k} |m_j . m_k| / (||m_j|| ||m_k||)`` over the columns; batched over leading dims.

    A zero column makes the columns dependent (spark 1): its coherence is reported as ``inf``.
    A matrix with one column has coherence 0.
    """
    m = as_tensor("matrix", matrix, ndim=(2, 3)).double()
    return _coherence_from_gram(m.transpose(-1, -2) @ m)


def spark_lower_bound(matrix: Any) -> torch.Tensor:
    """``1 + 1/mu(M)`` (``inf`` when the columns are orthogonal, 1 with a zero column)."""
    mu = mutual_coherence(matrix)
    return torch.where(mu == math.inf, torch.ones_like(mu), 1 + 1 / mu)


def matrix_rank(matrix: Any, *, dtype: torch.dtype | None = None) -> int:
    """Numerical rank with the module's tolerance.

    Parameters
    ----------
    matrix : array of shape (m, n)
    dtype : torch.dtype, optional
        Precision the matrix was stored in; sets ``eps`` of the tolerance
        ``max(m, n) * eps * sigma_max``. Default: the matrix's own floating dtype (float64 otherwise).
    """
    eps = _eps_of(matrix, dtype)
    m = as_tensor("matrix", matrix, ndim=2).double()
    if m.numel() == 0:
        return 0
    s = torch.linalg.svdvals(m)
    return int((s > _rank_tol(s, *m.shape, eps).squeeze(-1)).sum())


def spark(matrix: Any, *, max_subsets: int = 20000, dtype: torch.dtype | None = None) -> float | None:
    """Exact spark: the size of the smallest linearly dependent set of columns.

    Returns ``math.inf`` when all columns are independent, and None when finding it would take more
    than ``max_subsets`` rank checks ("not computed"). The search starts at the coherence bound.
    ``dtype`` sets the rank tolerance as in :func:`matrix_rank`.
    """
    eps = _eps_of(matrix, dtype)
    m = as_tensor("matrix", matrix, ndim=2).double()
    return _spark(m, check_int("max_subsets", max_subsets, low=1), eps)


def _spark(m: torch.Tensor, max_subsets: int, eps: float) -> float | None:
    n = m.shape[1]
    if bool((torch.linalg.vector_norm(m, dim=0) == 0).any()):
        return 1
    s = torch.linalg.svdvals(m)
    rank = int((s > _rank_tol(s, *m.shape, eps).squeeze(-1)).sum())
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
            ranks = (s > _rank_tol(s, m.shape[0], k, eps)).sum(-1)
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
    noise_gain : ndarray of float
        ``1 / sigma_min`` of the step's restricted matrix, as the noise sees it: the error this step
        adds per unit of error in its equations (least squares on the true support). On the output
        step of a sigmoid / tanh generator the rows are scaled by ``phi'(pre)``, since the noise is
        added to the pixels. ``inf`` when the step is not identifiable, 1 when the layer is empty.
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
    noise_gain: np.ndarray

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
            "noise_gain_median": float(np.median(self.noise_gain)),
        }


@dataclass(frozen=True)
class NetworkCertificate:
    """Whole-network local identifiability and stability; every array has shape (B,).

    On the sample's activation pattern the observed output is ``J_S z + c`` (see :func:`certify`).

    Attributes
    ----------
    rows : ndarray of int
        Usable output rows: observed, not saturated, and positive for a relu output.
    rank : ndarray of int
        Rank of ``J_S``.
    identifiable : ndarray of bool
        ``rank == n_0``: z is locally unique.
    sigma_min, sigma_max : ndarray of float
        Extreme singular values of ``J_S`` (``sigma_min`` is 0 when it has fewer rows than ``n_0``).
    pinv_norm : ndarray of float
        ``||J_S^+||_F``: the oracle's latent error per unit of noise sigma (``inf`` when not identifiable).
    latent_norm : ndarray of float
        ``||z||``.
    """

    rows: np.ndarray
    rank: np.ndarray
    identifiable: np.ndarray
    sigma_min: np.ndarray
    sigma_max: np.ndarray
    pinv_norm: np.ndarray
    latent_norm: np.ndarray

    @property
    def noise_gain(self) -> np.ndarray:
        """``1 / sigma_min(J_S)``: worst-case latent error per unit of output error (``inf`` if not identifiable)."""
        with np.errstate(divide="ignore"):
            return np.where(self.identifiable, 1.0 / self.sigma_min, np.inf)

    @property
    def condition(self) -> np.ndarray:
        """``sigma_max / sigma_min`` of ``J_S`` (``inf`` if not identifiable)."""
        with np.errstate(divide="ignore", invalid="ignore"):
            return np.where(self.identifiable, self.sigma_max / self.sigma_min, np.inf)


@dataclass(frozen=True)
class Certificate:
    """Per-sample invertibility certificate of a generator (see :func:`certify`).

    ``layers`` runs in recovery order: from the last hidden layer down to z. ``network`` holds the
    whole-network check. Arrays from the properties have shape (B,) unless stated otherwise.
    """

    layers: tuple[LayerCertificate, ...]
    widths: tuple[int, ...]
    network: NetworkCertificate
    options: dict[str, Any] = field(default_factory=dict)

    @property
    def batch_size(self) -> int:
        return int(self.layers[0].cardinality.shape[0])

    @property
    def identifiable(self) -> np.ndarray:
        """Per sample: every step is identifiable on its own (layer by layer; sufficient, not necessary)."""
        return np.logical_and.reduce([lc.identifiable for lc in self.layers])

    @property
    def identifiable_network(self) -> np.ndarray:
        """Per sample: ``J_S`` has full column rank, so z is locally unique (the deciding test)."""
        return self.network.identifiable

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
    def noise_gain(self) -> np.ndarray:
        """End-to-end noise gain ``1 / sigma_min(J_S)`` (``inf`` when not identifiable)."""
        return self.network.noise_gain

    @property
    def condition_number(self) -> np.ndarray:
        """Condition number of ``J_S``: how much relative output error is amplified in z."""
        return self.network.condition

    @property
    def step_gains(self) -> np.ndarray:
        """Array of shape (n_steps, B): each step's noise gain, in recovery order (as ``layers``)."""
        return np.stack([lc.noise_gain for lc in self.layers])

    @property
    def step_gain_product(self) -> np.ndarray:
        """Product of the step gains: the amplification a purely layer-by-layer pass can pay."""
        with np.errstate(invalid="ignore"):
            return np.prod(self.step_gains, axis=0)

    @property
    def stable(self) -> np.ndarray:
        """Identifiable on the network with a condition number at most ``options['stable_condition']``."""
        limit = self.options.get("stable_condition", STABLE_CONDITION)
        return self.identifiable_network & (self.condition_number <= limit)

    def predicted_error(self, sigma: Any) -> np.ndarray:
        """Relative latent error least squares on the true pattern (the oracle) is predicted to reach.

        ``sigma * ||J_S^+||_F / ||z||``: the root-mean-square error of the linearised least-squares
        solution under Gaussian output noise of standard deviation ``sigma`` (in pixel space).

        Parameters
        ----------
        sigma : float or array of shape (B,)
            Noise standard deviation, one for all samples or one per sample.

        Returns
        -------
        ndarray of shape (B,)
            ``inf`` where the network is not identifiable (0 with ``sigma = 0`` where it is).
        """
        s = np.asarray(sigma.detach().cpu() if isinstance(sigma, torch.Tensor) else sigma, dtype=float)
        if s.ndim > 1 or (s.ndim == 1 and s.shape[0] != self.batch_size):
            fail("sigma", f"a number or an array of shape ({self.batch_size},)", s, ShapeError)
        if not bool(np.all(np.isfinite(s))) or bool(np.any(s < 0)):
            fail("sigma", "finite and non-negative", s)
        with np.errstate(divide="ignore", invalid="ignore"):
            err = s * self.network.pinv_norm / self.network.latent_norm
        return np.where(self.identifiable_network, np.nan_to_num(err, nan=0.0), np.inf)

    @property
    def verdict(self) -> np.ndarray:
        """One phrase per sample, in plain words (see docs/theory.md).

        "not identifiable on this pattern" only when the whole-network test fails; otherwise
        "certified" (the paper's conditions hold at every step) or "identifiable", then "and stable"
        or "but unstable: noise xK" (K the condition number), and "(network); layer-by-layer test
        inconclusive" when only the whole-network test shows it.
        """
        cond = self.condition_number
        paper = self.paper_unique == HOLDS
        out = []
        for b in range(self.batch_size):
            if not self.identifiable_network[b]:
                out.append("not identifiable on this pattern")
                continue
            layerwise = bool(self.identifiable[b])
            head = "certified" if paper[b] and layerwise else "identifiable"
            if not layerwise:
                head += " (network)"
            stab = " and stable" if self.stable[b] else f" but unstable: noise x{_times(cond[b])}"
            tail = "" if layerwise else "; layer-by-layer test inconclusive"
            out.append(head + stab + tail)
        return np.array(out, dtype=str)

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
                "identifiable_network": float(np.mean(self.identifiable_network)),
                "stable": float(np.mean(self.stable)),
                "noise_gain_median": float(np.median(self.noise_gain)),
                "condition_median": float(np.median(self.condition_number)),
                "step_gain_product_median": float(np.median(self.step_gain_product)),
            }
        )
        return rows

    def to_records(self) -> list[dict[str, Any]]:
        """One JSON-friendly dict per sample and step (see :meth:`network_records` for one per sample)."""
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
                        "noise_gain": float(lc.noise_gain[b]),
                    }
                )
        return out

    def network_records(self) -> list[dict[str, Any]]:
        """One JSON-friendly dict per sample: the whole-network verdict, gains and predicted error.

        ``predicted_error`` is at the certificate's ``noise_sigma`` (0 when certified clean).
        """
        net = self.network
        verdict = self.verdict
        gain, cond, product = self.noise_gain, self.condition_number, self.step_gain_product
        predicted = self.predicted_error(self.options.get("noise_sigma", 0.0))
        return [
            {
                "sample": b,
                "verdict": str(verdict[b]),
                "identifiable_network": bool(net.identifiable[b]),
                "identifiable_layerwise": bool(self.identifiable[b]),
                "paper_unique": str(self.paper_unique[b]),
                "lbp_guaranteed": bool(self.lbp_guaranteed[b]),
                "stable": bool(self.stable[b]),
                "rows": int(net.rows[b]),
                "rank": int(net.rank[b]),
                "sigma_min": float(net.sigma_min[b]),
                "sigma_max": float(net.sigma_max[b]),
                "noise_gain": float(gain[b]),
                "condition": float(cond[b]),
                "step_gain_product": float(product[b]),
                "pinv_norm": float(net.pinv_norm[b]),
                "latent_norm": float(net.latent_norm[b]),
                "predicted_error": float(predicted[b]),
            }
            for b in range(self.batch_size)
        ]


def _times(x: float) -> str:
    if not math.isfinite(x):
        return "inf"
    return f"{x:,.0f}" if x < 1e6 else f"{x:.1e}"


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
    operator: Any = None,
    noise_sigma: float = 0.0,
    spark_budget: int = 20000,
    saturation_tol: float = 1e-6,
    stable_condition: float = STABLE_CONDITION,
    memory_mb: float = 64.0,
) -> Certificate:
    """Certify, per sample, whether and how stably ``z`` can be recovered from ``A(G(z)) + e``.

    Parameters
    ----------
    generator : Generator
    z : array of shape (B, n_0) or (n_0,)
    mask : bool array of shape (n_L,), optional
        True = observed. Mutually exclusive with ``operator``.
    operator : LinearOperator or str, optional
        Any measurement operator (or its spec string, e.g. ``"gaussian:300:seed=1"``; see
        :func:`geninv.observation.measurement_operator`). For a selection (identity, mask) the
        output step's rows are the observed pixels; for any other operator ``A`` they are the ``m``
        measurements, and the output step's matrix is ``A diag(phi'(pre)) W_L`` (the output
        activation linearised at the sample: exact for an identity output, local for the others),
        which needs ``A.dense()``.
    noise_sigma : float
        With noise, sigmoid / tanh pixels within 3 sigma of saturation give no equation to the
        layer-by-layer steps (the whole-network test uses them, weighted by ``phi'``); also the sigma
        of ``network_records()['predicted_error']``.
    spark_budget : int
        Largest number of column subsets the exact spark search may check per matrix; above it the
        spark is "not computed" (nan).
    saturation_tol : float
        Sigmoid / tanh outputs this close to their bound count as saturated (no equation).
    stable_condition : float
        Largest condition number of ``J_S`` the verdict calls stable.
    memory_mb : float
        Memory budget of the batched linear algebra; the batch is processed in chunks that fit it.
        The default 64 measured fastest on a 2-core CPU (1,000 MNIST signals: 10 s against 14 s
        with 256; smaller chunks pay more per-chunk overhead).

    Returns
    -------
    Certificate

    Examples
    --------
    >>> import geninv
    >>> G = geninv.Generator.random([20, 128, 392, 784], seed=0)
    >>> cert = geninv.certify(G, G.sample_latent(8, seed=1))
    >>> bool(cert.identifiable.all()), bool(cert.identifiable_network.all())
    (True, True)
    >>> str(cert.verdict[0])
    'certified and stable'
    """
    noise_sigma = check_real("noise_sigma", noise_sigma, low=0.0)
    spark_budget = check_int("spark_budget", spark_budget, low=1)
    saturation_tol = check_real("saturation_tol", saturation_tol, low=0.0)
    stable_condition = check_real("stable_condition", stable_condition, low=1.0)
    memory_mb = check_real("memory_mb", memory_mb, low=0.0, low_open=True)
    options = {
        "noise_sigma": noise_sigma,
        "spark_budget": spark_budget,
        "saturation_tol": saturation_tol,
        "stable_condition": stable_condition,
        "memory_mb": memory_mb,
    }
    op = _make_operator(generator, mask, operator)
    batch = np.shape(z)[0] if np.ndim(z) == 2 else 1
    with threads_for(generator, batch):
        return _certify(generator, z, op, options)


def _float64(generator: Generator) -> Generator:
    """The generator itself if float64, else a float64 copy (``Module.double`` would change it in place)."""
    if generator.dtype == torch.float64:
        return generator
    return copy.deepcopy(generator).to(torch.float64)


def _observed(op: Any, n: int, device: torch.device) -> torch.Tensor | None:
    """Bool (n,) of the coordinates a selection keeps; None for any other operator."""
    sel = op.selection()
    if sel is None:
        return None
    observed = torch.zeros(n, dtype=torch.bool)
    observed[sel] = True
    return observed.to(device)


def _certify(generator: Generator, z: Any, op: Any, options: dict[str, Any]) -> Certificate:
    observed = _observed(op, generator.output_dim, generator.device)
    trace = generator.trace(z)  # the generator's own precision decides the activation pattern
    eps = float(torch.finfo(generator.dtype).eps)
    budget = int(options["memory_mb"] * 2**20)
    out_act = generator.output_activation
    smooth_output = out_act.name in ("sigmoid", "tanh")
    steps = []
    for layer in range(generator.n_layers - 1, -1, -1):
        if observed is None and layer == generator.n_layers - 1:
            steps.append(_certify_output_step(generator, trace, op, options, eps, budget))
            continue
        rows = equation_rows(
            generator,
            trace,
            layer,
            observed,
            noise_sigma=options["noise_sigma"],
            saturation_tol=options["saturation_tol"],
        )
        if layer == 0:
            support = torch.ones_like(trace.latent, dtype=torch.bool)
        else:
            act = generator.activation(layer - 1)
            support = trace.supports[layer - 1] if act.sparse else torch.ones_like(trace.supports[layer - 1])
        scale = None
        if smooth_output and layer == generator.n_layers - 1:
            scale = out_act.derivative(trace.pre_activations[-1].double())
        steps.append(
            _certify_step(
                generator.weight(layer).double(),
                rows,
                support,
                layer=layer,
                eps=eps,
                spark_budget=options["spark_budget"],
                budget=budget,
                scale=scale,
            )
        )
    network = _certify_network(generator, trace, op, observed, options, eps, budget)
    return Certificate(layers=tuple(steps), widths=generator.widths, network=network, options=options)


def output_slopes(generator: Generator, trace: Any, *, noise_sigma: float = 0.0, saturation_tol: float = 1e-6):
    """``phi'(pre_L)`` (B, n_L), float64: the output activation linearised at each sample.

    1 for an identity output, the 0/1 support for a relu output; a sigmoid / tanh pixel within
    ``saturation_tol`` (or 3 sigma when noisy) of its bound gives 0, like a saturated pixel gives no
    equation to a mask.
    """
    act = generator.output_activation
    pre = trace.pre_activations[-1].double()
    if act.name == "relu":
        return (pre > 0).double()
    if act.name in ("sigmoid", "tanh"):
        lo, hi = act.bounds
        y = trace.activations[-1].double()
        tol = max(saturation_tol, 3 * noise_sigma)
        return act.derivative(pre) * ((y - lo > tol) & (hi - y > tol))
    return torch.ones_like(pre)


def _dense_measurements(op: Any) -> torch.Tensor:
    from geninv.errors import UnsupportedError

    a = op.dense()
    if a is None:
        raise UnsupportedError(
            f"certify needs the matrix of the measurement operator {op!r}, which exceeds "
            "geninv.operators.dense_limit(); raise the limit (GENINV_DENSE_LIMIT)."
        )
    return a.double()


def _certify_output_step(
    generator: Generator, trace: Any, op: Any, options: dict[str, Any], eps: float, budget: int
) -> LayerCertificate:
    """The output step under a general measurement operator ``A`` (m rows): per sample
    ``M = A diag(phi'(pre)) W_L`` on the last hidden layer, with the step's usual verdicts."""
    last = generator.n_layers - 1
    a = _dense_measurements(op).to(generator.device)
    weight = generator.weight(last).double()
    slopes = output_slopes(
        generator, trace, noise_sigma=options["noise_sigma"], saturation_tol=options["saturation_tol"]
    )
    if last == 0:
        support = torch.ones_like(trace.latent, dtype=torch.bool)
    else:
        act = generator.activation(last - 1)
        support = trace.supports[last - 1] if act.sparse else torch.ones_like(trace.supports[last - 1])
    m, n_in = a.shape[0], weight.shape[1]
    batch = support.shape[0]
    chunk = max(1, min(batch, budget // max(8 * (3 * m * n_in + 2 * n_in * n_in), 1)))
    coh, rank, srank, smin, sparks = [], [], [], [], []
    for lo in range(0, batch, chunk):
        sl = slice(lo, lo + chunk)
        mats = a @ (weight * slopes[sl].unsqueeze(-1))  # (C, m, n_in)
        coh.append(_coherence_from_gram(mats.mT @ mats))
        sv = torch.linalg.svdvals(mats)
        rank.append((sv > _rank_tol(sv, m, n_in, eps)).sum(-1))
        ssv = torch.linalg.svdvals(mats * support[sl].double().unsqueeze(-2))  # zero columns off the support
        if ssv.shape[-1] < n_in:  # fewer measurements than unknowns: the missing singular values are 0
            ssv = torch.cat([ssv, ssv.new_zeros(ssv.shape[0], n_in - ssv.shape[-1])], dim=-1)
        srank.append((ssv > _rank_tol(ssv, m, n_in, eps)).sum(-1))
        smin.append(_kth(ssv, support[sl].sum(-1)))
        if n_in <= 64:
            for b in range(mats.shape[0]):
                value = _spark(mats[b], options["spark_budget"], eps)
                sparks.append(np.nan if value is None else float(value))
    coh_np, rank_np, srank_np, smin_np = (torch.cat(v).cpu().numpy() for v in (coh, rank, srank, smin))
    return _layer_certificate(
        last,
        n_in,
        card=support.sum(-1).cpu().numpy(),
        nrows=np.full(batch, m),
        coh=coh_np,
        rank=rank_np,
        srank=srank_np,
        smin=smin_np,
        gain_smin=smin_np,
        sparks=np.asarray(sparks, dtype=float) if sparks else np.full(batch, np.nan),
    )


def _gather_index(mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Per row of ``mask`` (C, n): indices of its True entries first (C, k_max), their count, validity."""
    counts = mask.sum(-1)
    k = int(counts.max()) if mask.shape[0] else 0
    order = torch.argsort(mask.logical_not().to(torch.uint8), dim=-1, stable=True)[:, :k]
    valid = torch.arange(k, device=mask.device) < counts.unsqueeze(-1)
    return order, counts, valid


def _gram_bound(trace: torch.Tensor, n_rows: torch.Tensor, n_cols: torch.Tensor) -> torch.Tensor:
    """Bound on the rounding error of the eigenvalues of a float64 Gram ``A^T A`` (``trace = ||A||_F^2``)."""
    return 2 * (n_rows + n_cols).to(trace.dtype) * _EPS64 * trace


def _full_rank(gram: torch.Tensor, n_rows: torch.Tensor, stack: Any, dims: int, eps: float) -> torch.Tensor:
    """Rank of each stack ``A`` (C, m, n) given its Gram (C, n, n); zero padding rows allowed.

    A Cholesky factorisation of ``A^T A - t I`` succeeds only when every eigenvalue exceeds ``t`` (up
    to rounding far below ``t``); ``t`` is above both the Gram's rounding bound and the square of the
    rank tolerance, so success proves full column rank at a sixth of an eigvalsh's cost. The others
    get an SVD of ``A``, so ranks keep the documented tolerance.
    """
    c, n = gram.shape[0], gram.shape[-1]
    rank = torch.full((c,), n, dtype=torch.int64, device=gram.device)
    if n == 0:
        return rank
    trace = torch.diagonal(gram, dim1=-2, dim2=-1).sum(-1)
    shift = torch.maximum(
        _GRAM_SAFETY * _gram_bound(trace, n_rows, torch.full_like(n_rows, n)), 4 * (dims * eps) ** 2 * trace
    )
    eye = torch.eye(n, dtype=gram.dtype, device=gram.device)
    _, info = torch.linalg.cholesky_ex(gram - shift.reshape(-1, 1, 1) * eye)
    redo = torch.nonzero((info != 0) | (n_rows < n) | (trace == 0)).squeeze(-1)
    if redo.numel():
        sv = torch.linalg.svdvals(stack(redo))
        rank[redo] = (sv > sv.amax(-1, keepdim=True) * dims * eps).sum(-1) if sv.shape[-1] else 0
    return rank


def _smallest_singular_values(
    gram: torch.Tensor, n_rows: torch.Tensor, n_cols: torch.Tensor, stack: Any, dims: int, eps: float
) -> tuple[torch.Tensor, torch.Tensor]:
    """Smallest real singular value and rank of gathered stacks whose padding rows and columns are zero.

    ``gram`` (C, k, k) is ``A^T A`` of the stack; ``n_rows`` / ``n_cols`` (C,) count its real rows and
    columns; ``stack(index)`` builds ``A`` or ``A^T`` for the signals the Gram cannot decide.
    Returns ``(smin, rank)``, both (C,). Through the smallest eigenvalue of the Gram only (half an
    SVD's work, and LAPACK computes no other) where it is far above both its rounding bound and the
    square of the rank tolerance (bounded through the trace): there the matrix has full column rank
    and the value is accurate to ~1e-4 relative or better. Elsewhere an SVD of the stack, so that
    ranks keep the documented tolerance.
    """
    c, k = gram.shape[0], gram.shape[-1]
    if k == 0:
        return gram.new_zeros(c), torch.zeros_like(n_cols)
    pad = torch.arange(k, device=gram.device) >= n_cols.unsqueeze(-1)
    trace = torch.diagonal(gram, dim1=-2, dim2=-1).sum(-1)
    shifted = gram.clone()
    diag = shifted.diagonal(dim1=-2, dim2=-1)
    diag.copy_(torch.where(pad, (2 * trace + 1).unsqueeze(-1), diag))  # padding sits above every real eigenvalue
    smallest = smallest_eigenvalues(shifted)
    tol_sq = trace * (dims * eps) ** 2  # >= (largest singular value * dims * eps)^2
    bound = _gram_bound(trace, n_rows, n_cols)
    trusted = (n_cols == 0) | ((smallest > _GRAM_SAFETY * bound) & (smallest > 4 * tol_sq) & (n_cols <= n_rows))
    smin = torch.where(n_cols > 0, smallest.clamp_min(0).sqrt(), torch.zeros_like(smallest))
    rank = n_cols.clone()
    if not bool(trusted.all()):
        redo = torch.nonzero(~trusted).squeeze(-1)
        exact = torch.linalg.svdvals(stack(redo))
        full = exact.new_zeros(redo.shape[0], k)
        full[:, : exact.shape[-1]] = exact
        rank[redo] = (full > _rank_tol(full, dims, dims, eps)).sum(-1)
        smin[redo] = _kth(full, n_cols[redo])
    return smin, rank


def _kth(sv: torch.Tensor, k: torch.Tensor) -> torch.Tensor:
    """``sv[b, k_b - 1]``: the smallest of the first ``k_b`` singular values (0 when ``k_b`` is 0)."""
    if sv.shape[-1] == 0:
        return sv.new_zeros(k.shape)
    return sv.gather(-1, (k - 1).clamp_min(0).unsqueeze(-1)).squeeze(-1) * (k > 0)


def _step_chunk(
    weight: torch.Tensor,
    patterns: torch.Tensor,
    pattern_of: torch.Tensor,
    support: torch.Tensor,
    scale: torch.Tensor | None,
    eps: float,
) -> dict[str, torch.Tensor]:
    """One chunk of signals sharing the row sets ``patterns`` (signal i uses ``patterns[pattern_of[i]]``)."""
    n_out, n_in = weight.shape
    dims = max(n_out, n_in)
    order, n_rows, valid = _gather_index(patterns)
    a = weight[order] * valid.unsqueeze(-1)  # (P, m, n_in): each pattern's rows, zero padded
    gram = a.mT @ a
    rank = _full_rank(gram, n_rows, lambda i: a[i], dims, eps)
    cols, n_cols, cvalid = _gather_index(support)
    pair = cvalid.unsqueeze(-1) & cvalid.unsqueeze(-2)
    sub_gram = gram[pattern_of.unsqueeze(-1), cols]  # (C, k, n_in): the support rows
    sub_gram = sub_gram.gather(-1, cols.unsqueeze(-2).expand(-1, cols.shape[1], -1)) * pair
    m_signal = n_rows[pattern_of]
    a_t = a.mT.contiguous()  # (P, n_in, m): a support column is a contiguous row here

    def sub_stack(i: torch.Tensor) -> torch.Tensor:  # transposed (k, m) stacks: same singular values
        return a_t[pattern_of[i].unsqueeze(-1), cols[i]] * cvalid[i].unsqueeze(-1)

    smin, srank = _smallest_singular_values(sub_gram, m_signal, n_cols, sub_stack, dims, eps)
    gain_smin = smin
    if scale is not None:  # the noise sees the rows scaled by phi'(pre)
        d = (scale.gather(-1, order[pattern_of]) * valid[pattern_of]).unsqueeze(-2)

        def scaled_stack(i: torch.Tensor) -> torch.Tensor:
            return sub_stack(i) * d[i]

        scaled = scaled_stack(torch.arange(support.shape[0], device=support.device))
        gain_smin, _ = _smallest_singular_values(scaled @ scaled.mT, m_signal, n_cols, scaled_stack, dims, eps)
    return {
        "coh": _coherence_from_gram(gram)[pattern_of],
        "rank": rank[pattern_of],
        "srank": srank,
        "smin": smin,
        "gain_smin": gain_smin,
    }


def _chunks(cost: np.ndarray, budget: int) -> list[tuple[int, int]]:
    """Consecutive ranges whose summed ``cost`` stays within ``budget`` (at least one item each)."""
    bounds, lo, total = [], 0, 0
    for i, c in enumerate(cost.tolist()):
        if i > lo and total + c > budget:
            bounds.append((lo, i))
            lo, total = i, 0
        total += c
    bounds.append((lo, len(cost)))
    return bounds


def _certify_step(
    weight: torch.Tensor,
    rows: torch.Tensor,
    support: torch.Tensor,
    *,
    layer: int,
    eps: float,
    spark_budget: int,
    budget: int,
    scale: torch.Tensor | None = None,
) -> LayerCertificate:
    batch = rows.shape[0]
    n_in = weight.shape[1]
    # Signals often share their rows (every output row when clean, a fixed mask): group them so that a
    # row set's Gram and rank are computed once per chunk. A chunk holds what fits the memory budget.
    patterns, pattern_of = torch.unique(rows, dim=0, return_inverse=True)
    perm = torch.argsort(pattern_of, stable=True)
    sorted_of = pattern_of[perm]
    first = torch.ones(batch, dtype=torch.bool, device=rows.device)
    first[1:] = sorted_of[1:] != sorted_of[:-1]
    card_t = support.sum(-1)
    k = card_t[perm].cpu().numpy().astype(np.int64)
    m = rows.sum(-1)[perm].cpu().numpy().astype(np.int64)
    per_signal = 8 * (6 * k * k + (2 * m * k if scale is not None else 0))
    per_pattern = 8 * (2 * m * n_in + 3 * n_in * n_in)
    cost = per_signal + per_pattern * first.cpu().numpy()
    keys = ("coh", "rank", "srank", "smin", "gain_smin")
    out: dict[str, list[torch.Tensor]] = {key: [] for key in keys}
    for lo, hi in _chunks(cost, budget):
        idx = perm[lo:hi]
        ids, local = torch.unique_consecutive(sorted_of[lo:hi], return_inverse=True)
        part = _step_chunk(weight, patterns[ids], local, support[idx], None if scale is None else scale[idx], eps)
        for key in keys:
            out[key].append(part[key])
    unsort = torch.argsort(perm)
    coh, rank, srank, smin, gain_smin = (torch.cat(out[key])[unsort].cpu().numpy() for key in keys)
    sparks = np.full(batch, np.nan)
    if layer != 0 and n_in <= 64:
        sparks = _sparks(weight, patterns, pattern_of.cpu().numpy(), rank, spark_budget, eps)
    return _layer_certificate(
        layer,
        n_in,
        card=card_t.cpu().numpy(),
        nrows=rows.sum(-1).cpu().numpy(),
        coh=coh,
        rank=rank,
        srank=srank,
        smin=smin,
        gain_smin=gain_smin,
        sparks=sparks,
    )


def _layer_certificate(
    layer: int,
    n_in: int,
    *,
    card: np.ndarray,
    nrows: np.ndarray,
    coh: np.ndarray,
    rank: np.ndarray,
    srank: np.ndarray,
    smin: np.ndarray,
    gain_smin: np.ndarray,
    sparks: np.ndarray,
) -> LayerCertificate:
    """A step's verdicts from its per-signal numbers: support rank, smallest singular values (on the
    support; ``gain_smin`` the one the noise sees), coherence, rank, and the sparks computed exactly
    (NaN where not)."""
    with np.errstate(divide="ignore", invalid="ignore"):
        bound = np.where(np.isinf(coh), 1.0, 1.0 + 1.0 / coh)
        expansion = np.where(card > 0, nrows / np.maximum(card, 1), np.inf)
    identifiable = (srank == card) & (card <= nrows)
    with np.errstate(divide="ignore"):
        gain = np.where(card == 0, 1.0, np.where(identifiable & (gain_smin > 0), 1.0 / gain_smin, np.inf))
    verdict = np.full(card.shape[0], UNKNOWN, dtype=object)
    if layer == 0:  # z from x_1: the paper's condition is full column rank
        verdict[:] = np.where(rank == n_in, HOLDS, FAILS)
        lbp = rank == n_in
    else:
        need = 2 * card
        holds = (bound > need) | (rank == n_in)  # independent columns: spark is infinite
        verdict[holds] = HOLDS
        verdict[~holds & (rank + 1 <= need)] = FAILS  # rank + 1 columns are always dependent
        computed = ~np.isnan(sparks)
        verdict[computed] = np.where(sparks > need, HOLDS, FAILS)[computed]
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
        lbp_guaranteed=np.asarray(lbp, dtype=bool),
        identifiable=identifiable,
        noise_gain=gain.astype(np.float64),
    )


def _sparks(
    weight: torch.Tensor, patterns: torch.Tensor, pattern_of: np.ndarray, rank: np.ndarray, budget: int, eps: float
) -> np.ndarray:
    """Exact spark of ``weight[rows]`` per signal (nan when over budget), once per distinct row set."""
    n_in = weight.shape[1]
    cache: dict[int, float] = {}
    out = np.full(pattern_of.shape[0], math.inf)
    for b in np.flatnonzero(rank < n_in):
        p = int(pattern_of[b])
        if p not in cache:
            rows = patterns[p]
            value = _spark(weight[rows], budget, eps) if bool(rows.any()) else 1
            cache[p] = np.nan if value is None else float(value)
        out[b] = cache[p]
    return out


def _jacobian(generator: Generator, pattern: tuple[torch.Tensor, ...]) -> torch.Tensor:
    """``J`` (B, n_L, n_0) of ``pre_L`` in z on the hidden ``pattern``: :func:`oracle.affine_map`'s ``J``."""
    from geninv.inversion.oracle import affine_map

    return affine_map(generator, pattern)[0]


def _certify_network(
    generator: Generator,
    trace: Any,
    op: Any,
    observed: torch.Tensor | None,
    options: dict[str, Any],
    eps: float,
    budget: int,
) -> NetworkCertificate:
    """Rank and singular values of ``J_S``, the Jacobian of the measured output on the sample's pattern.

    A selection: the usable observed rows of ``J`` (scaled by ``phi'`` for a sigmoid / tanh output).
    Any other operator ``A``: ``A diag(phi'(pre)) J`` with its ``m`` rows.
    """
    gen64 = _float64(generator)
    n0 = generator.latent_dim
    out_act = generator.output_activation
    pre = trace.pre_activations[-1].double()
    pattern = tuple(trace.supports[:-1])
    batch = pre.shape[0]
    if observed is not None:
        rows = equation_rows(
            generator, trace, generator.n_layers - 1, observed, saturation_tol=options["saturation_tol"]
        )
        n_rows = rows.sum(-1).cpu().numpy()
        dims = max(generator.output_dim, n0)
    else:
        a = _dense_measurements(op).to(generator.device)
        slopes = output_slopes(gen64, trace, saturation_tol=options["saturation_tol"])
        n_rows = np.full(batch, a.shape[0])
        dims = max(a.shape[0], n0)
    chunk = max(1, min(batch, budget // (8 * 4 * n0 * max(*generator.widths[1:], int(n_rows.max())))))
    svals = []
    for lo in range(0, batch, chunk):
        sl = slice(lo, lo + chunk)
        jac = _jacobian(gen64, tuple(p[sl] for p in pattern))
        if observed is None:
            js = a @ (jac * slopes[sl].unsqueeze(-1))
        else:
            weight = rows[sl].double()
            if out_act.name in ("sigmoid", "tanh"):
                weight = weight * out_act.derivative(pre[sl])
            js = jac * weight.unsqueeze(-1)  # zero rows do not change the singular values
        svals.append(torch.linalg.svdvals(js))
    sv = torch.cat(svals).cpu().numpy()
    if sv.shape[1] < n0:  # fewer output rows than latents
        sv = np.concatenate([sv, np.zeros((batch, n0 - sv.shape[1]))], axis=1)
    rank = (sv > sv[:, :1] * dims * eps).sum(-1)
    identifiable = rank == n0
    with np.errstate(divide="ignore"):
        pinv = np.where(identifiable, np.sqrt((1.0 / np.where(sv > 0, sv, np.inf) ** 2).sum(-1)), np.inf)
    return NetworkCertificate(
        rows=np.asarray(n_rows).astype(np.int64),
        rank=rank.astype(np.int64),
        identifiable=identifiable,
        sigma_min=sv[:, -1].copy(),
        sigma_max=sv[:, 0].copy(),
        pinv_norm=pinv,
        latent_norm=torch.linalg.vector_norm(trace.latent.double(), dim=-1).cpu().numpy(),
    )
