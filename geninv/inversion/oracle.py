"""Least squares on an activation pattern: the oracle, and the pattern-updating Gauss-Newton refit.

On the region where every hidden unit keeps its sign, a relu / leaky-relu generator is affine in z:
``pre_L(z) = J z + c``. Two estimators are built on it:

- :func:`oracle_latent`: least squares on the *true* activation pattern (it knows the true supports
  and nothing else), the reference error of noisy inversion. It is an estimator in its own right:
  it starts from a linear solve of the data, never from the true latent, and returns its own
  minimiser (clean data give the truth to working precision because the truth is that minimiser).
- :func:`refit`: Gauss-Newton with pattern updates from a given start: at each iteration the
  pattern is read off the current z, the residual is linearised there and a least-squares step is
  taken with a backtracking line search on the true data-fit loss. From a start whose pattern is
  nearly right it lands on the maximum-likelihood point of that region, i.e. on the oracle.

Sigmoid / tanh outputs are linearised at the current point (Gauss-Newton in pixel space, so the
noise is not amplified by the inverse activation).
"""

from __future__ import annotations

import math

import torch

from geninv._memory import chunks
from geninv.generator import Generator
from geninv.observation import Observation
from geninv.operators import Dense
from geninv.solvers.linear import lstsq_svd

_STEPS = (1.0, 0.5, 0.25, 0.125, 1 / 16, 1 / 64, 1 / 256)
"""Line-search step lengths tried (all at once, batched) along each Gauss-Newton direction."""


def _slopes(generator: Generator, pattern: tuple[torch.Tensor, ...], dtype: torch.dtype) -> list[torch.Tensor]:
    """Each hidden layer's activation slope on ``pattern`` (1 on the support; 0, or leaky-relu's
    negative slope, off it), one (B, n_i) tensor per hidden layer."""
    return [_slope(generator, i, support, dtype) for i, support in enumerate(pattern)]


def _slope(generator: Generator, i: int, support: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """Hidden layer ``i + 1``'s activation slope on ``support``."""
    slope = support.to(dtype)
    act = generator.activation(i)
    if act.name == "leaky_relu":
        slope = slope + (1 - slope) * act.negative_slope
    return slope


def _push(
    generator, slopes, h, out_rows, *, start: int = 0, bias: bool = True, keep: list | None = None
) -> torch.Tensor:
    """Layers ``start`` .. L-1 on the fixed ``slopes`` from ``h`` (B, ..., n_start): the last
    pre-activation (its ``out_rows``), affine in the input; ``bias=False`` gives its linear part.
    ``keep``: a list that receives the hidden pre-activations on the way (layers start+1 .. L-1)."""
    for i in range(start, generator.n_layers):
        if i:
            s = slopes[i - 1]
            h = h * s.reshape(s.shape[0], *([1] * (h.ndim - 2)), s.shape[-1]).to(h.dtype)
        op, b = generator._layer_on(i, out_rows)
        h = op.forward(h)
        if bias and b is not None:
            h = h + b.to(h.dtype)
        if keep is not None and i < generator.n_layers - 1:
            keep.append(h)
    return h


def _pull(generator, slopes, v: torch.Tensor, out_rows) -> torch.Tensor:
    """``J^T v`` for the affine map of the last pre-activation (its ``out_rows``) on ``slopes``:
    one backward pass, (B, m) -> (B, n_0)."""
    for i in reversed(range(generator.n_layers)):
        op, _ = generator._layer_on(i, out_rows)
        v = op.adjoint(v)
        if i:
            v = v * slopes[i - 1].to(v.dtype)
    return v


def _first_jacobian_t(generator: Generator, out_rows, dtype: torch.dtype) -> torch.Tensor:
    """``J^T`` (n_0, n_1) of the first pre-activation, the same for every signal: row j is the image
    of the latent's unit direction e_j."""
    eye = torch.eye(generator.latent_dim, dtype=dtype, device=generator.device)
    op, _ = generator._layer_on(0, out_rows)
    return op.forward(eye)


def _jacobian_t(generator, slopes, out_rows, dtype: torch.dtype, batch: int, keep: list | None = None) -> torch.Tensor:
    """``J^T`` (B, n_0, m) of the last pre-activation (its ``out_rows``) on ``slopes``, computed in
    ``dtype``: the n_0 unit directions of the latent pushed through the layers' operators
    (``forward`` only, so any layer of the linear-operator contract works, dense or not).
    ``keep`` receives ``J^T`` of the hidden pre-activations 2 .. L-1 (B, n_0, n_i)."""
    first = _first_jacobian_t(generator, out_rows, dtype).unsqueeze(0).expand(batch, -1, -1)
    return _push(generator, slopes, first, out_rows, start=1, bias=False, keep=keep)


def affine_map(
    generator: Generator, pattern: tuple[torch.Tensor, ...], out_rows: torch.Tensor | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """``J`` (B, n_L, n_0) and ``c`` (B, n_L) with ``pre_L = J z + c`` under the hidden ``pattern``.

    ``pattern[i]`` is the bool support of hidden layer i+1 (pre-activation > 0). ``out_rows``
    (indices into the output) restricts J and c to those outputs, e.g. the observed pixels.
    One product per layer for the whole batch (see :func:`_jacobian_t`).
    """
    slopes = _slopes(generator, pattern, generator.dtype)
    batch = pattern[0].shape[0] if pattern else 1
    jt = _jacobian_t(generator, slopes, out_rows, generator.dtype, batch)
    zero = torch.zeros(batch, generator.latent_dim, dtype=generator.dtype, device=generator.device)
    return jt.transpose(1, 2).contiguous(), _push(generator, slopes, zero, out_rows)


def _observed_rows(obs: Observation) -> torch.Tensor | None:
    """Indices of the observed outputs for a selection operator (identity or mask); None otherwise."""
    return obs.operator.selection()


def _apply_operator(obs: Observation, a: torch.Tensor) -> torch.Tensor:
    """Apply the measurement operator to the columns of a (B, n, k) stack: (B, m, k)."""
    rows = obs.operator.selection()
    if rows is not None:
        return a[:, rows.to(a.device)]
    return obs.operator.forward(a.transpose(1, 2)).transpose(1, 2)


def _output(generator: Generator, pre: torch.Tensor, out_support: torch.Tensor | None):
    """Output and its derivative at the last pre-activation; a relu output may use a fixed support."""
    act = generator.output_activation
    if act.name == "relu" and out_support is not None:
        on = out_support.to(pre.dtype)
        return pre * on, on
    return act(pre), act.derivative(pre)


def _loss(generator: Generator, obs: Observation, z: torch.Tensor) -> torch.Tensor:
    with torch.no_grad():
        resid = obs.operator.forward(generator(z)) - obs.y.to(generator.dtype)
    return 0.5 * resid.pow(2).sum(-1)


_SINGULAR = 1e-10
"""A Gram matrix whose smallest Cholesky pivot^2 is at most this fraction of its largest diagonal entry
(condition above 1e10, e.g. every unit inactive) is too ill-conditioned for the normal equations:
those signals get the minimum-norm SVD-based solution."""


def _normal_equations(at: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The Cholesky factor (float64) of each Gram ``at at^T`` for ``at`` = A^T (B, n, m), the Gram
    formed in ``at``'s dtype; and its smallest pivot^2 over its largest diagonal entry (B,), 0 where
    the factorisation failed."""
    gram = (at @ at.mT).double()
    chol, info = torch.linalg.cholesky_ex(gram)
    scale = torch.diagonal(gram, dim1=-2, dim2=-1).amax(-1).clamp_min(torch.finfo(gram.dtype).tiny)
    ratio = torch.diagonal(chol, dim1=-2, dim2=-1).pow(2).amin(-1) / scale
    return chol, torch.where(info == 0, ratio, torch.zeros_like(ratio))


def _svd_lstsq(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Minimum-norm least squares per signal: (B, m, n), (B, m) -> (B, n) (:func:`lstsq_svd`)."""
    return lstsq_svd(a, b.unsqueeze(-1)).squeeze(-1)


def _lstsq(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Least squares per signal: (B, m, n), (B, m) -> (B, n).

    A well-conditioned system: normal equations and Cholesky in float64 (n is the latent size, so
    the Gram matrix is tiny; 3x faster than an SVD-based solve on CPU), one refinement step with the
    residual computed from ``a``. Otherwise (:data:`_SINGULAR`), the minimum-norm SVD-based solution.
    float32 systems are solved in float64 and the solution rounded back: on an H100, torch's batched
    float32 ``lstsq`` took 34x the float64 time (1.8 s against 0.05 s for 1024 signals at 60%
    missing, when the refit used this solve).
    """
    if a.dtype == torch.float32:
        return _lstsq(a.double(), b.double()).float()
    if a.dtype != torch.float64 or a.shape[-2] < a.shape[-1]:
        return _svd_lstsq(a, b)
    at = a.transpose(-1, -2)
    chol, ratio = _normal_equations(at)
    rhs = (at @ b.unsqueeze(-1)).squeeze(-1)
    x = torch.cholesky_solve(rhs.unsqueeze(-1), chol).squeeze(-1)
    resid = b - (a @ x.unsqueeze(-1)).squeeze(-1)
    x = x + torch.cholesky_solve((at @ resid.unsqueeze(-1)), chol).squeeze(-1)
    bad = torch.nonzero(ratio <= _SINGULAR).flatten()
    if bad.numel():
        x[bad] = _svd_lstsq(a[bad], b[bad])
    return x


def _gauss_newton(
    generator: Generator,
    obs: Observation,
    z: torch.Tensor,
    *,
    pattern: tuple[torch.Tensor, ...] | None,
    out_support: torch.Tensor | None,
    n_iter: int,
    polish: bool = True,
) -> torch.Tensor:
    """:func:`_gauss_newton_chunk` over chunks of signals sized from the memory budget."""
    n_out, n0 = generator.output_dim, generator.latent_dim
    inner = n0 * sum(generator.widths[2:-1])  # the kept Jacobians of the hidden layers (_Jacobians)
    per_signal = (3 * n_out * n0 + inner + 2 * len(_STEPS) * n_out) * generator.weight_of(0).element_size()
    parts = chunks(z.shape[0], per_signal)
    if len(parts) == 1:
        return _gauss_newton_chunk(
            generator, obs, z, pattern=pattern, out_support=out_support, n_iter=n_iter, polish=polish
        )
    out = []
    for part in parts:
        out.append(
            _gauss_newton_chunk(
                generator,
                obs[part],
                z[part],
                pattern=None if pattern is None else tuple(p[part] for p in pattern),
                out_support=None if out_support is None else out_support[part],
                n_iter=n_iter,
                polish=polish,
            )
        )
    return torch.cat(out)


def _measured(x: torch.Tensor, obs: Observation, rows: torch.Tensor | None) -> torch.Tensor:
    """Measurements of outputs already restricted to the observed ``rows`` (a selection), or given
    in full (a dense operator: apply it)."""
    return x if rows is not None else obs.operator.forward(x)


_EXACT_GRAM = 1e-5
"""A float64 signal whose Gauss-Newton Gram (built from a float32 J) has its smallest Cholesky
pivot^2 below this fraction of its largest diagonal entry (condition ~1e5 and worse) gets J in float64:
beyond that the float32 rounding of J would slow each iteration's gain below ~2 digits."""


def _direction(at: torch.Tensor, grad: torch.Tensor, resid: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Gauss-Newton direction ``-(A^T A)^-1 g`` per signal, float64, from ``at`` = A^T (B, n, m) (its
    Gram formed in its own dtype) and the gradient ``g`` (B, n); the minimum-norm least-squares step
    ``A d = -r`` where A is rank-deficient. Also returns each Gram's smallest Cholesky pivot^2 over its
    largest diagonal entry (B,)."""
    chol, ratio = _normal_equations(at)
    delta = -torch.cholesky_solve(grad.unsqueeze(-1), chol).squeeze(-1)
    bad = torch.nonzero(ratio <= _SINGULAR).flatten()
    if bad.numel():
        delta[bad] = -_svd_lstsq(at[bad].mT.double(), resid[bad].double())
    return delta, ratio


def _loss_along(generator, sub, yy, rows, line, za, delta, step: float, which: torch.Tensor) -> torch.Tensor:
    """Data-fit loss at ``za + step * delta`` for the signals ``which``: from the pre-activation and
    its change along delta, ``line = (pre, J delta, output support)``, on a fixed pattern; else
    through the generator."""
    if line is not None:
        pre, jd, sup = line
        x, _ = _output(generator, pre[which] + step * jd[which], None if sup is None else sup[which])
        fitted = _measured(x, sub[which], rows)
    else:
        with torch.no_grad():
            fitted = sub[which].operator.forward(generator(za[which] + step * delta[which]))
    return 0.5 * (fitted - yy[which]).pow(2).sum(-1)


class _Jacobians:
    """``J^T`` per signal for the Gauss-Newton refit, kept while the signal's pattern holds.

    For a float64 generator J is built (and kept) in float32: building it, the n_0 latent directions
    pushed through every layer, is the refit's cost, and float32 halves it and the memory it moves.
    Signals marked :meth:`exact` (an ill-conditioned Gram) get it in float64 from then on.

    Where only a few units of a signal's pattern moved, its J is patched instead (:meth:`_patch`):
    each moved unit is one direction pushed from its layer to the output, against the n_0 directions
    pushed from the first layer that a rebuild costs.
    """

    def __init__(self, generator: Generator, rows: torch.Tensor | None, batch: int) -> None:
        self.generator, self.rows, self.batch = generator, rows, batch
        self.low = torch.float32 if generator.dtype == torch.float64 else generator.dtype
        device = generator.device
        self.precise = torch.zeros(batch, dtype=torch.bool, device=device)
        self.built = torch.zeros_like(self.precise)
        self.jt: torch.Tensor | None = None
        self.inner: list[torch.Tensor] = []  # J^T of the hidden pre-activations 2 .. L-1, (B, n_0, n_i)
        self.held: list[torch.Tensor] = []  # the pattern each signal's J was built on
        self.rebuild_cost, self.unit_cost = patch_costs(generator, rows)
        self._cache: dict = {}  # the first layer's J^T and the layers' matrices, per dtype (_patch)

    def get(self, idx: torch.Tensor, pattern, slopes) -> torch.Tensor:
        """``J^T`` (len(idx), n_0, m) of the signals ``idx`` on their current ``pattern``."""
        whole = idx.numel() == self.batch
        if not self.held:
            self.held = [torch.zeros(self.batch, p.shape[-1], dtype=torch.bool, device=idx.device) for p in pattern]
        moved = [h[idx] != p for h, p in zip(self.held, pattern)]
        stale = ~self.built[idx]
        for m in moved:
            stale |= m.any(-1)
        if moved and self.jt is not None:
            counts = [m.sum(-1) for m in moved]
            cost = sum(c * u for c, u in zip(counts, self.unit_cost))
            # (at most 2 n_0 moved units: the patch's stacks then take at most twice J's memory)
            patch = stale & self.built[idx] & (2 * cost <= self.rebuild_cost)
            patch &= sum(counts) <= 2 * self.generator.latent_dim
            if bool(patch.any()):
                self._patch(idx, torch.nonzero(patch).flatten(), pattern, moved)
                stale &= ~patch
        for precise in (False, True):
            pick = torch.nonzero(stale & (self.precise[idx] == precise)).flatten()
            if not pick.numel():
                continue
            every = pick.numel() == idx.numel()
            dtype = self.generator.dtype if precise else self.low
            sl = slopes if every else [s[pick] for s in slopes]
            inner: list[torch.Tensor] = []
            part = _jacobian_t(self.generator, sl, self.rows, dtype, pick.numel(), keep=inner)
            if self.jt is None:
                self.jt = part.new_empty((self.batch, *part.shape[1:]))
                self.inner = [h.new_empty((self.batch, *h.shape[1:])) for h in inner]
            if whole and every:
                self.jt = part.to(self.jt.dtype)
                self.inner = [h.to(self.jt.dtype) for h in inner]
            else:
                self.jt[idx[pick]] = part.to(self.jt.dtype)
                for kept, h in zip(self.inner, inner):
                    kept[idx[pick]] = h.to(kept.dtype)
            for h, p in zip(self.held, pattern):
                h[idx[pick]] = p if every else p[pick]
            self.built[idx[pick]] = True
        return self.jt if whole else self.jt[idx]

    def _patch(self, idx: torch.Tensor, loc: torch.Tensor, pattern, moved) -> None:
        """Bring J of the signals ``idx[loc]`` from their held pattern to ``pattern``.

        With ``P_k`` the Jacobian of hidden pre-activation k and ``D_k`` its slopes, the product
        ``J = W_L D_L-1 ... W_k D_k P_k`` changes, when the slopes change by ``dD_k``, by the telescoping
        sum over k of ``(W_L D'_L-1 ... W_k) dD_k P_k``: new slopes above layer k, the held ``P_k`` below.
        ``dD_k`` is nonzero only on the moved units, so each moved unit v of layer k adds the outer
        product of ``dD_k[v] P_k[v]`` (n_0) with the unit direction e_v pushed from layer k to the
        output on the new slopes; the hidden ``P_i`` above k change the same way, read off on the way.
        """
        g, sig = self.generator, idx[loc]
        n_layers, dtype = g.n_layers, self.jt.dtype
        # pre-activation k -> (pairs' signals, c, y) per layer of moved units (pairs sorted by signal)
        parts: dict[int, list] = {k: [] for k in range(2, n_layers + 1)}
        for j in range(1, n_layers):
            pairs = torch.nonzero(moved[j - 1][loc])
            if not pairs.numel():
                continue
            who, unit = pairs[:, 0], pairs[:, 1]
            # the slope's change at a moved unit: +-1 for relu, +-(1 - a) for leaky relu
            on = pattern[j - 1][loc[who], unit]
            change = _slope(g, j - 1, on, dtype) - _slope(g, j - 1, ~on, dtype)
            held = self._first(dtype)[:, unit].T if j == 1 else self.inner[j - 2][sig[who], :, unit]
            c = held * change.unsqueeze(-1)
            y = self._columns(j, unit, dtype)  # W e_v
            for k in range(j + 1, n_layers + 1):  # y is the direction's pre-activation k
                parts[k].append((who, c, y))
                if k < n_layers:
                    y = self._forward(k, y * _slope(g, k - 1, pattern[k - 1][loc[who]], dtype))
        for k, items in parts.items():
            for who, c, y in items:
                _add_outer_sums(self.jt if k == n_layers else self.inner[k - 2], sig, who, c, y)
        for h, p in zip(self.held, pattern):
            h[sig] = p[loc]

    def _first(self, dtype: torch.dtype) -> torch.Tensor:
        key = ("first", dtype)
        if key not in self._cache:
            self._cache[key] = _first_jacobian_t(self.generator, self.rows, dtype)
        return self._cache[key]

    def _dense_t(self, i: int, dtype: torch.dtype) -> torch.Tensor | None:
        """Layer ``i``'s matrix transposed (n_i, n_i+1; the last layer's observed rows), contiguous, in
        ``dtype``; None for a layer that is not a stored matrix."""
        key = (i, dtype)
        if key not in self._cache:
            op, _ = self.generator._layer_on(i, self.rows)
            self._cache[key] = op.matrix.T.to(dtype).contiguous() if isinstance(op, Dense) else None
        return self._cache[key]

    def _columns(self, i: int, unit: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
        """Layer ``i``'s operator applied to the unit vectors ``e_unit`` (len(unit), n_i+1)."""
        mat = self._dense_t(i, dtype)
        if mat is not None:
            return mat.index_select(0, unit)
        return self._forward(i, torch.nn.functional.one_hot(unit, self.generator.widths[i]).to(dtype))

    def _forward(self, i: int, h: torch.Tensor) -> torch.Tensor:
        mat = self._dense_t(i, h.dtype)
        if mat is not None:
            return h @ mat
        op, _ = self.generator._layer_on(i, self.rows)
        return op.forward(h)

    def exact(self, which: torch.Tensor) -> None:
        """Build J in the generator's dtype for the signals ``which`` from their next :meth:`get`."""
        if self.low == self.generator.dtype or not which.numel():
            return
        self.precise[which] = True
        self.built[which] = False
        if self.jt is not None:
            self.jt = self.jt.to(self.generator.dtype)  # the cache holds both precisions from now on
            self.inner = [h.to(self.generator.dtype) for h in self.inner]


def patch_costs(generator: Generator, out_rows) -> tuple[int, list[int]]:
    """Multiply-adds per signal of building J (:func:`_jacobian_t` after the first layer), and of
    patching it for one moved unit of each hidden layer (:meth:`_Jacobians._patch`)."""
    n_layers, n0 = generator.n_layers, generator.latent_dim
    outs = [generator.widths[i + 1] for i in range(n_layers)]
    if out_rows is not None:
        outs[-1] = int(out_rows.numel())
    layer = [generator.widths[i] * outs[i] for i in range(n_layers)]
    units = []
    for j in range(1, n_layers):
        first = outs[j] if generator.layer_type(j) == "dense" else layer[j]
        units.append(first + sum(layer[j + 1 :]) + n0 * sum(outs[j:]))
    return n0 * sum(layer[1:]), units


_OUTER_GROUP = 64
"""Signals per batched product of :func:`_add_outer_sums` (their stacks stay in cache)."""


def _add_outer_sums(
    target: torch.Tensor, rows: torch.Tensor, who: torch.Tensor, c: torch.Tensor, y: torch.Tensor
) -> None:
    """``target[rows[s]] += sum_p c_p y_p^T`` over the pairs p with ``who[p] = s`` (``who`` sorted,
    ``c`` (P, a), ``y`` (P, b), ``target`` (B, a, b)): each group of consecutive signals packs its
    pairs into zero-padded stacks (as wide as its largest count) for one batched product."""
    counts = torch.bincount(who, minlength=rows.numel())
    ends = torch.cumsum(counts, 0)
    pos = torch.arange(who.numel(), device=who.device) - (ends - counts)[who]
    ends_list = ends.tolist()
    for lo in range(0, rows.numel(), _OUTER_GROUP):
        hi = min(lo + _OUTER_GROUP, rows.numel())
        first, last = (ends_list[lo - 1] if lo else 0), ends_list[hi - 1]
        if last == first:
            continue
        width = int(counts[lo:hi].max())
        cs = c.new_zeros(hi - lo, width, c.shape[1])
        ys = y.new_zeros(hi - lo, width, y.shape[1])
        local, at = who[first:last] - lo, pos[first:last]
        cs[local, at] = c[first:last]
        ys[local, at] = y[first:last]
        target.index_add_(0, rows[lo:hi], cs.mT @ ys)


def _gauss_newton_chunk(
    generator: Generator,
    obs: Observation,
    z: torch.Tensor,
    *,
    pattern: tuple[torch.Tensor, ...] | None,
    out_support: torch.Tensor | None,
    n_iter: int,
    polish: bool = True,
) -> torch.Tensor:
    """Damped Gauss-Newton on the data-fit loss; with ``pattern`` given, on that fixed pattern.

    Each iteration linearises the residual at z (on the pattern read off z, or the fixed one) on
    the observed outputs, takes the least-squares step and keeps the best of a few step lengths on
    the data-fit loss: the full step first, the shorter ones only where it raises the loss.

    J is rebuilt only for signals whose pattern moved (patched where only a few units moved), in
    float32 for a float64 generator (:class:`_Jacobians`), while the gradient ``J^T r`` stays exact
    (one backward pass): the iteration still converges to the float64 least-squares point, the
    rounded Gram only slowing the last digits by ~cond(J)^2 eps32 per iteration. Signals whose Gram is conditioned too
    poorly for that (:data:`_EXACT_GRAM`) get J in float64. A signal stops when its step falls
    below 10 eps of z (``polish``), or below sqrt(eps) for a start that another refit polishes.
    With pattern updates, the trace at the full step (computed for its loss) serves as the next
    iteration's when every signal took it.
    """
    dtype = generator.dtype
    y = obs.y.to(dtype)
    z = z.detach().to(dtype).clone()
    fixed = pattern is not None
    eps = float(torch.finfo(dtype).eps)
    rows = _observed_rows(obs)
    if rows is not None:
        rows = rows.to(z.device)
    active = torch.ones(z.shape[0], dtype=torch.bool, device=z.device)
    jacobians = _Jacobians(generator, rows, z.shape[0])
    sup_rows = None if out_support is None else (out_support if rows is None else out_support[:, rows])
    ahead = ahead_idx = took_full = None
    stop = 10 * eps if polish else math.sqrt(eps)

    for _ in range(n_iter):
        idx = torch.nonzero(active).flatten()
        if idx.numel() == 0:
            break
        za, sub, yy = z[idx], obs[idx], y[idx]
        sup = None
        if fixed:
            pat = tuple(p[idx] for p in pattern)
            slopes = _slopes(generator, pat, dtype)
            pre = _push(generator, slopes, za, rows)
            sup = None if sup_rows is None else sup_rows[idx]
        else:
            if ahead is not None and bool(took_full[(pos := torch.searchsorted(ahead_idx, idx))].all()):
                trace = ahead[pos]  # every signal took its full step: the trace computed there
            else:
                trace = generator._trace(za, rows)
            pat = trace.supports[:-1]
            slopes = _slopes(generator, pat, dtype)
            pre = trace.pre_activations[-1]  # on the observed rows
        x, d = _output(generator, pre, sup)
        resid = _measured(x, sub, rows) - yy
        now = 0.5 * resid.pow(2).sum(-1)

        at = jacobians.get(idx, pat, slopes)
        if generator.output_activation.name != "identity":
            at = at * d.to(at.dtype).unsqueeze(1)
        if rows is None:
            at = sub.operator.forward(at)
        back = resid if rows is not None else sub.operator.adjoint(resid)
        grad = _pull(generator, slopes, back * d, rows).double()
        delta, ratio = _direction(at, grad, resid)
        delta = delta.to(dtype)
        jacobians.exact(idx[~jacobians.precise[idx] & (ratio < _EXACT_GRAM)])

        # Affine in z on a fixed pattern: the loss along the direction from one more pass.
        line = (pre, _push(generator, slopes, delta, rows, bias=False), sup) if fixed else None
        everyone = torch.arange(idx.numel(), device=z.device)
        losses = torch.full((len(_STEPS), idx.numel()), math.inf, dtype=z.dtype, device=z.device)
        if fixed:
            first = _loss_along(generator, sub, yy, rows, line, za, delta, _STEPS[0], everyone)
        else:  # the full step's trace, kept: it is the next iteration's where the full step is taken
            ahead, ahead_idx = generator._trace(za + delta, rows), idx
            first = 0.5 * (_measured(ahead.activations[-1], sub, rows) - yy).pow(2).sum(-1)
        losses[0] = torch.where(torch.isfinite(first), first, torch.full_like(now, math.inf))
        # (the loss's rounding error: eps ||r|| ||y|| for each residual entry computed from y)
        level = 8 * eps * (torch.sqrt(2 * now.abs()) * torch.linalg.vector_norm(yy, dim=-1) + now.abs())
        # Shorter steps only where the full one raises the loss beyond its rounding: near the minimum
        # (the full step within rounding of the loss) they could not do better.
        short = torch.nonzero(losses[0] > now + level).flatten()
        if short.numel():
            for k, step in enumerate(_STEPS[1:], start=1):
                vals = _loss_along(generator, sub, yy, rows, line, za, delta, step, short)
                losses[k, short] = torch.where(torch.isfinite(vals), vals, torch.full_like(vals, math.inf))
        best, pick = losses.min(0)
        # Near the minimum the loss changes by less than its rounding while z still moves by
        # ~sqrt(eps): there the full Gauss-Newton step is taken as long as the loss does not rise.
        settling = (best >= now - level) & (losses[0] <= now + level)
        pick = torch.where(settling, torch.zeros_like(pick), pick)
        accept = (best < now - level) | settling
        took_full = accept & (pick == 0)
        lengths = torch.tensor(_STEPS, dtype=z.dtype, device=z.device)[pick]
        z_new = za + lengths.unsqueeze(-1) * delta
        z[idx] = torch.where(accept.unsqueeze(-1), z_new, za)
        size = torch.linalg.vector_norm(za, dim=-1).clamp_min(1)
        small = torch.linalg.vector_norm(z_new - za, dim=-1) <= stop * size
        active[idx] = accept & ~small
    return z


def refit(
    generator: Generator,
    obs: Observation,
    z: torch.Tensor,
    *,
    pattern: tuple[torch.Tensor, ...] | None = None,
    n_iter: int = 20,
) -> torch.Tensor:
    """Gauss-Newton with pattern updates from ``z`` (or on the fixed ``pattern``); never raises the loss.

    Each iteration reads the pattern off the current z (unless ``pattern`` is given), linearises the
    residual there, solves a least-squares step and keeps the best of a few step lengths on the
    true data-fit loss; a signal whose loss no longer drops stops.
    """
    return _gauss_newton(generator, obs, z, pattern=pattern, out_support=None, n_iter=n_iter)


def refit_on_pattern(
    generator: Generator,
    obs: Observation,
    z: torch.Tensor,
    pattern: tuple[torch.Tensor, ...],
    *,
    n_iter: int = 20,
    polish: bool = True,
) -> torch.Tensor:
    """Least squares in z on a fixed hidden ``pattern`` (Gauss-Newton for sigmoid / tanh outputs),
    from ``z``; then, per signal, whichever of ``z`` and that solution fits the data better.
    ``polish=False``: to about half the working digits, as the start of a :func:`refit`."""
    z_pat = _gauss_newton(generator, obs, z, pattern=pattern, out_support=None, n_iter=n_iter, polish=polish)
    better = _loss(generator, obs, z_pat) < _loss(generator, obs, z.to(generator.dtype))
    return torch.where(better.unsqueeze(-1), z_pat, z.to(generator.dtype))


def oracle_latent(generator: Generator, obs: Observation, *, n_iter: int = 30) -> torch.Tensor:
    """Least squares on the true activation pattern (needs ``obs.trace_true``): the reference error.

    It knows the true supports of every hidden layer (and of a relu output) and nothing else: the
    estimate starts from a linear solve of the data on that pattern (identity / leaky / relu
    outputs: the exact minimiser; sigmoid / tanh: a slope-weighted solve of the inverse activation
    at clipped observations, then Gauss-Newton on the fixed pattern until the loss stops dropping).
    """
    from geninv.errors import InvalidValueError

    if obs.trace_true is None or obs.z_true is None:
        raise InvalidValueError("The oracle needs the ground truth: build the observation with geninv.observe.")
    pattern = tuple(s for s in obs.trace_true.supports[:-1])
    act = generator.output_activation
    out_support = obs.trace_true.supports[-1] if act.name == "relu" else None
    jac, c = affine_map(generator, pattern)
    y = obs.y.to(generator.dtype)
    if act.name in ("sigmoid", "tanh") and obs.operator.is_selection:
        lo, hi = act.bounds
        tol = 1e-6 + 3 * obs.noise_sigma.to(y).unsqueeze(-1)
        yc = torch.minimum(torch.maximum(y, lo + tol), hi - tol)
        target = act.inverse(yc)
        w = act.derivative(target)
        a = _apply_operator(obs, jac) * w.unsqueeze(-1)
        rhs = (target - _apply_operator(obs, c.unsqueeze(-1)).squeeze(-1)) * w
        z0 = _lstsq(a, rhs)
    elif act.name in ("sigmoid", "tanh"):
        z0 = torch.zeros_like(obs.z_true, dtype=generator.dtype)
    else:
        lin = jac if out_support is None else jac * out_support.to(jac.dtype).unsqueeze(-1)
        c_lin = c if out_support is None else c * out_support.to(c.dtype)
        z0 = _lstsq(_apply_operator(obs, lin), y - _apply_operator(obs, c_lin.unsqueeze(-1)).squeeze(-1))
        # Linear in z: z0 is the minimiser; one more step only polishes rounding.
        return _gauss_newton(generator, obs, z0, pattern=pattern, out_support=out_support, n_iter=2)
    return _gauss_newton(generator, obs, z0, pattern=pattern, out_support=out_support, n_iter=n_iter)
