"""Batched least-squares and non-negative least-squares solvers on row-masked stacks.

Problems come as a shared matrix ``W`` of shape (m, n) and a per-signal row mask ``rows`` of shape
(B, m): signal b uses the equations ``W[rows[b]] x = t[b, rows[b]]``. Zeroing the unused rows keeps
everything batched; an optional column mask restricts the unknowns. These solvers know nothing
about generators.
"""

from __future__ import annotations

import functools
import weakref

import numpy as np
import torch

from geninv._memory import chunk_size


def _eps(dtype: torch.dtype) -> float:
    return float(torch.finfo(dtype).eps)


_BLAS = None


def _blas_threads(threads: int = 1):
    """Context that runs scipy's BLAS / LAPACK on ``threads`` threads (threadpoolctl).

    The batched calls below loop over many small matrices; OpenBLAS's own threads inside each one
    only spin: on this project's 2-core machine with the other core busy, potrf and syevr ran 2-3x
    slower with them than without. One large call (:func:`gram`) takes as many as torch's products.
    """
    global _BLAS
    if _BLAS is None:
        from threadpoolctl import ThreadpoolController

        _BLAS = ThreadpoolController()
    return _BLAS.limit(limits=threads, user_api="blas")


GRAM_SYRK_MIN_N = 256
"""Smallest width from which :func:`gram` takes BLAS ``syrk`` on the CPU."""


def gram(a: torch.Tensor) -> torch.Tensor:
    """``a^T a`` of one matrix ``a`` (m, n).

    On the CPU (float32 / float64, n >= ``GRAM_SYRK_MIN_N``), BLAS ``syrk`` computes one triangle
    (half the products of ``a.T @ a``) on as many threads as torch's products, and it is mirrored:
    the Gram of the widest benchmark generator's output layer (16,384 x 4,096, float32, one thread)
    took 3.1 s instead of 5.9 s (``benchmarks/bench_kernels.py``, row ``shared gram``). Elsewhere
    the matrix product.
    """
    cpu_float = a.device.type == "cpu" and a.dtype in (torch.float32, torch.float64) and not a.requires_grad
    if a.ndim != 2 or not cpu_float or a.shape[-1] < GRAM_SYRK_MIN_N or a.shape[0] == 0:
        return a.T @ a
    from scipy.linalg.blas import get_blas_funcs

    arr = a.detach().contiguous().numpy()
    (syrk,) = get_blas_funcs(("syrk",), (arr,))
    with _blas_threads(torch.get_num_threads()):
        # arr.T is a^T Fortran-ordered; syrk's a a^T is the Gram, in the upper triangle of a Fortran
        # array: the lower triangle of its transpose read in C order.
        upper = syrk(1.0, arr.T, trans=0, lower=0)
    low = torch.from_numpy(upper.T).tril()
    return low + low.tril(-1).mT


LAPACK_MIN_N = 96
"""Smallest matrix that :func:`cholesky_ex` factorises one at a time through scipy's LAPACK on the
CPU; below it torch's batched call measured as fast or faster (``benchmarks/bench_kernels.py``)."""


def _lapack_batch(mats: torch.Tensor, routine: str, min_n: int, overwrite: bool = False):
    """For a CPU float batch of n x n matrices with n >= ``min_n``: a C-contiguous copy (N, n, n) as a
    tensor and a numpy view of it, and scipy's LAPACK ``routine`` for its dtype; otherwise None
    (the caller uses torch's batched call). ``arr[i].T`` is the i-th matrix Fortran-ordered, which
    LAPACK overwrites in place. ``overwrite``: a contiguous ``mats`` is used itself, not copied."""
    n = mats.shape[-1]
    if (
        mats.device.type != "cpu"
        or mats.dtype not in (torch.float32, torch.float64)
        or mats.requires_grad
        or n < min_n
        or mats.numel() == 0
    ):
        return None
    from scipy.linalg.lapack import get_lapack_funcs

    flat = mats.detach().reshape(-1, n, n)
    if not (overwrite and flat.is_contiguous()):
        flat = flat.clone(memory_format=torch.contiguous_format)
    arr = flat.numpy()
    (func,) = get_lapack_funcs((routine,), (arr[0],))
    return flat, arr, func


def cholesky_ex(gram: torch.Tensor, overwrite: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
    """``torch.linalg.cholesky_ex`` (lower factor, ``info``) for a batch of symmetric matrices.

    On the CPU, a loop over scipy's LAPACK ``potrf`` (one call per matrix, in place on a copy):
    measured 1.2x to 1.9x faster than torch's batched call on this project's 2-core machine for
    n = 128 and 512 (``benchmarks/bench_kernels.py``, ``benchmarks/results/kernels.json``; about even
    at 256 in float64). Elsewhere, or for gradients, torch's call.
    Only the lower triangle of the factor is meaningful, as for every consumer here. ``overwrite``:
    the caller gives ``gram`` up, and a contiguous one is factorised in place (on the CPU path).
    """
    batch = _lapack_batch(gram, "potrf", LAPACK_MIN_N, overwrite)
    if batch is None:
        return torch.linalg.cholesky_ex(gram)
    flat, arr, potrf = batch
    info = np.zeros(arr.shape[0], dtype=np.int32)
    with _blas_threads():
        for i in range(arr.shape[0]):
            # LAPACK's upper factor U of arr[i].T (U^T U = A) is, read in C order, the lower factor L.
            _, info[i] = potrf(arr[i].T, lower=0, overwrite_a=1, clean=0)
    return flat.tril_().reshape(gram.shape), torch.from_numpy(info).reshape(gram.shape[:-2])


def gram_cholesky(
    a: torch.Tensor,
    counts: torch.Tensor | None = None,
    *,
    rows: torch.Tensor | None = None,
    scale: torch.Tensor | None = None,
    out: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Lower Cholesky factor and ``info`` (as :func:`cholesky_ex`) of each signal's Gram matrix.

    Either ``a`` is a stack (B, k, n) whose signal i uses its first ``counts[i]`` rows (the rest is
    zero padding, which the CPU path skips), or, with ``rows`` (B, k) given, ``a`` is one matrix
    (m, n) and signal i uses its rows ``rows[i, :counts[i]]``, each scaled by ``scale[i]`` where
    given (zero padding after ``counts[i]``). ``out``: where to write the factors on the CPU path, a
    buffer of at least B matrices whose strict upper triangles are zero (zeros, or a buffer this
    function wrote before: it writes only lower triangles).

    On the CPU for n >= ``LAPACK_MIN_N``, one matrix at a time: its rows gathered (where ``rows``
    is given), BLAS ``syrk`` on them (one triangle, no padding: half the flops of a batched
    product) and ``potrf`` in place, all while they are in cache. The Gram and factor of the
    [20, 128, 392, 784] generator's mid layer (1024 signals in chunks of 32, ~200 of 225 rows,
    float32) measured 1.2x-1.3x faster than the batched product and :func:`cholesky_ex`
    (``benchmarks/bench_kernels.py``, ``benchmarks/results/kernels.json``); gathering each signal's
    rows there instead of a stack for the chunk beforehand saved 1.2 s of the 8.5 s mid layer of
    the clean [64, 512, 2048, 8192] batch. Elsewhere, the batched product and :func:`cholesky_ex`.
    """
    n = a.shape[-1]
    if a.device.type != "cpu" or a.dtype not in (torch.float32, torch.float64) or a.requires_grad or n < LAPACK_MIN_N:
        if rows is not None:
            valid = torch.ones(rows.shape, dtype=a.dtype, device=a.device)
            if counts is not None:
                valid *= torch.arange(rows.shape[1], device=a.device) < counts.to(a.device).unsqueeze(-1)
            a = _row_stack(a, rows, valid if scale is None else valid * scale.to(a.dtype))
        return cholesky_ex(a.transpose(-1, -2) @ a, overwrite=True)
    from scipy.linalg.blas import get_blas_funcs
    from scipy.linalg.lapack import get_lapack_funcs

    batch = a.shape[0] if rows is None else rows.shape[0]
    src = a.detach().contiguous().numpy()
    idx = None if rows is None else rows.detach().cpu().numpy()
    factors = None if scale is None else scale.detach().to(a.dtype).cpu().numpy()
    out = torch.zeros(batch, n, n, dtype=a.dtype) if out is None else out[:batch]
    arr = out.numpy()
    (syrk,) = get_blas_funcs(("syrk",), (src,))
    (potrf,) = get_lapack_funcs(("potrf",), (src,))
    k_all = a.shape[1] if rows is None else rows.shape[1]
    used = [k_all] * batch if counts is None else counts.tolist()
    info = np.zeros(batch, dtype=np.int32)
    with _blas_threads():
        for i in range(batch):
            own = src[i, : used[i]] if idx is None else src[idx[i, : used[i]]]
            if factors is not None:
                own = own * factors[i, : used[i], None]
            # arr[i].T is the i-th matrix Fortran-ordered; own.T is a^T (n, k), so syrk's a a^T is the
            # Gram. Both write the upper triangle of arr[i].T: the lower one of arr[i].
            syrk(1.0, own.T, c=arr[i].T, trans=0, lower=0, overwrite_c=1)
            _, info[i] = potrf(arr[i].T, lower=0, overwrite_a=1, clean=0)
    return out, torch.from_numpy(info)


def chol_solve(rhs: torch.Tensor, chol: torch.Tensor) -> torch.Tensor:
    """``torch.cholesky_solve`` for one right-hand side per matrix: ``rhs`` (B, n), lower ``chol``
    (B, n, n). Two triangular solves: about 3x faster than ``cholesky_solve`` on batches here
    (``benchmarks/results/kernels.json``)."""
    y = torch.linalg.solve_triangular(chol, rhs.unsqueeze(-1), upper=False)
    return torch.linalg.solve_triangular(chol.mT, y, upper=True).squeeze(-1)


def smallest_eigenvalues(mats: torch.Tensor) -> torch.Tensor:
    """The smallest eigenvalue of each symmetric matrix of a batch (..., n, n) -> (...).

    On the CPU for n >= 48, LAPACK's ``syevr`` asked for that eigenvalue only (scipy, one matrix at
    a time): measured 1.3x (n = 64) to 2.2x (n = 512) faster than torch's batched ``eigvalsh`` on
    this project's 2-core machine (``benchmarks/results/kernels.json``). Elsewhere ``eigvalsh``.
    """
    batch = _lapack_batch(mats, "syevr", 48)
    if batch is None:
        return torch.linalg.eigvalsh(mats)[..., 0]
    _, arr, syevr = batch
    out = np.empty(arr.shape[0], dtype=arr.dtype)
    with _blas_threads():
        for i in range(arr.shape[0]):
            w, _, _, _, info = syevr(arr[i].T, compute_v=0, range="I", il=1, iu=1, overwrite_a=1)
            out[i] = w[0] if info == 0 else np.nan
    return torch.from_numpy(out).reshape(mats.shape[:-2])


def gram_rank_tol(dtype: torch.dtype, n: int) -> float:
    """Smallest Cholesky pivot^2 (relative to the largest diagonal entry) of a determined Gram matrix.

    A Gram matrix whose condition number exceeds ``1 / (10 n eps)`` is treated as rank-deficient:
    a least-squares answer there can fit the equations and still be wrong. Scaled by the dtype, so
    float32 (condition up to ~6e3 for n = 128) is not pushed into the slow fallbacks that float64
    (up to ~3e12) never needs.
    """
    return 10 * n * _eps(dtype)


def row_factors(rows: torch.Tensor, weights: torch.Tensor | None, dtype: torch.dtype) -> torch.Tensor:
    """Each row's factor in ``min ||diag(r) (W x - t)||``: its weight where used, 0 where unused."""
    return rows.to(dtype) if weights is None else rows.to(dtype) * weights


def rows_shared(rows: torch.Tensor, weights: torch.Tensor | None = None) -> bool:
    """True when every signal of the batch uses the same rows, unweighted (a fixed mask): then one
    factorisation serves the whole batch."""
    return weights is None and bool((rows == rows[:1]).all())


def _leading(mask: torch.Tensor, k: int | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """For each row of a bool (B, m) mask: the indices of its True entries first, cut to ``k`` (default:
    the largest count), and which of those are True, both (B, k). Gathering with them packs each
    signal's chosen rows or columns into the leading block of a zero-padded stack."""
    if k is None:
        k = int(mask.sum(-1).max()) if mask.numel() else 0
    order = torch.argsort((~mask).to(torch.int8), dim=-1, stable=True)[:, :k]
    return order, torch.gather(mask, 1, order)


def _packed_rows(rows: torch.Tensor, weights: torch.Tensor | None, dtype: torch.dtype):
    """Each signal's rows packed first (:func:`_leading`): their order (B, k) and factors (B, k), the
    row weights where given, zero on the padding. A Gram of the packed rows costs k n^2 instead of
    m n^2 (half, for a relu layer with half its units active)."""
    order, on = _leading(rows)
    valid = on.to(dtype)
    return order, valid if weights is None else valid * torch.gather(weights, 1, order)


def _row_stack(weight: torch.Tensor, order: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
    """Each signal's packed rows of ``weight`` (:func:`_packed_rows`) as a zero-padded (B, k, n) stack in
    ``weight``'s dtype, scaled by ``valid``."""
    batch, k = order.shape
    stack = weight.index_select(0, order.reshape(-1)).view(batch, k, weight.shape[1])
    return stack.mul_(valid.to(weight.dtype).unsqueeze(-1))


def _packed_system(weight: torch.Tensor, order, valid, cols: torch.Tensor):
    """``W`` restricted to each signal's packed rows and its columns ``cols``: a zero-padded (B, k, c)
    stack, with the column order and mask (B, c) to scatter solutions back. A support of half the
    unknowns on 314 of 784 rows is a tenth of the full masked stack's Gram."""
    col_order, free = _leading(cols.bool())
    a = weight[order.unsqueeze(-1), col_order.unsqueeze(-2)]
    a.mul_(valid.unsqueeze(-1)).mul_(free.to(weight.dtype).unsqueeze(-2))
    return a, col_order, free


def lstsq_rows(
    weight: torch.Tensor,
    target: torch.Tensor,
    rows: torch.Tensor,
    cols: torch.Tensor | None = None,
    *,
    weights: torch.Tensor | None = None,
    refine: int = 2,
    mixed: bool = True,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Least squares ``min ||W[rows] x - t[rows]||`` per signal, x zero outside ``cols``.

    Normal equations with a Cholesky factorization (batched), made accurate to working precision by
    ``refine`` steps of iterative refinement. ``mixed``: problems on per-signal rows with many unknowns
    factorise in float32 and refine in the working precision (:func:`_lstsq_mixed`), falling back
    to a factor in the working precision where that does not settle. Returns ``(x, determined)``
    where ``determined`` is True when the restricted matrix has full column rank (the solution is
    unique).
    """
    batch, n = target.shape[0], weight.shape[1]
    if batch > 1 and rows_shared(rows, weights):
        # Every signal uses the same rows (a fixed mask): one factorization (or one Gram matrix, where
        # the columns differ) serves the batch.
        # (the unused rows' targets are never read: no masking product over the batch)
        a, t = (weight, target) if bool(rows[0].all()) else (weight[rows[0]], target[:, rows[0]])
        if cols is not None:
            return _lstsq_cols_shared(a, t, cols, refine)
        x1, det1 = _lstsq_shared(a, t, refine)
        return x1, det1.expand(batch).clone()
    views = _WeightViews(weight)
    pre = _krylov_preconditioner(weight) if cols is None and mixed and krylov_pays(weight, rows) else None
    if pre is not None:
        # Wide layers: conjugate gradients on a shared preconditioner, the direct solve below only for
        # the signals they leave.
        m = weight.shape[0]
        rw = row_factors(rows, weights, weight.dtype)
        size = chunk_size(batch, krylov_bytes(m, n, weight.dtype))
        x, done, det = in_chunks(lambda t, r: _lstsq_krylov(weight, t, r, pre), size, target, rw)
        if bool(done.all()):
            return x, det
        rest = torch.nonzero(~done).flatten()
        target, rows = target[rest], rows[rest]
        weights = None if weights is None else weights[rest]
        batch = rest.numel()
    size = cache_chunk(batch, (weight.shape[0] + 2 * n) * n * weight.element_size(), weight.device)
    solved = in_chunks(
        lambda t, r, c, w: _lstsq_rows_batch(views, t, r, c, w, refine, mixed), size, target, rows, cols, weights
    )
    if pre is None:
        return solved
    x[rest], det[rest] = solved
    return x, det


class _WeightViews:
    """A step's matrix with its float32 copy and its elementwise square, each made once per solve and
    shared by its chunks (on the widest benchmark generator's mid layer, 4096 x 1024, remaking them
    for each chunk of 32 signals streamed 1.3 GB)."""

    def __init__(self, weight: torch.Tensor):
        self.weight = weight
        self._factors: torch.Tensor | None = None

    @functools.cached_property
    def f32(self) -> torch.Tensor:
        return self.weight.float()

    @functools.cached_property
    def squared(self) -> torch.Tensor:
        return self.weight * self.weight

    def factors(self, batch: int) -> torch.Tensor | None:
        """On the CPU, a (batch, n, n) float32 buffer for a chunk's Cholesky factors
        (:func:`gram_cholesky`'s ``out``), zeroed once and reused by the next chunks (zeroing 32 MB
        for each chunk of the [64, 512, 2048, 8192] mid layer took 6% of its time); elsewhere None."""
        if self.weight.device.type != "cpu":
            return None
        n = self.weight.shape[1]
        held = self._factors
        if held is None or held.shape[0] < batch:
            held = self._factors = torch.zeros(batch, n, n, dtype=torch.float32, device=self.weight.device)
        return held[:batch]


def in_chunks(solve, size: int, *per_signal):
    """``solve(*per_signal)`` on consecutive chunks of ``size`` signals, results concatenated.

    Each argument is sliced along its first (signal) dimension; ``None`` passes as it is. ``solve``
    returns a tensor or a tuple of tensors, concatenated element by element.
    """
    batch = next(a.shape[0] for a in per_signal if a is not None)
    if size >= batch:
        return solve(*per_signal)
    parts = [solve(*(None if a is None else a[lo : lo + size] for a in per_signal)) for lo in range(0, batch, size)]
    if isinstance(parts[0], torch.Tensor):
        return torch.cat(parts)
    return tuple(torch.cat(q) for q in zip(*parts))


CACHE_BYTES = 16 << 20
"""Per-signal work on the CPU runs in chunks of about this many bytes of matrices, so that each
chunk's row stacks, Gram matrices and factors stay in cache while they are reused: the mid-layer
least squares of a [20, 128, 392, 784] generator measured 1.4x faster in chunks than in one batch
of 1024 (``benchmarks/results/kernels.json``)."""


def cache_chunk(batch: int, bytes_per_signal: int, device: torch.device) -> int:
    """Signals per chunk of per-signal work: ``CACHE_BYTES`` worth (at least ``MIN_CHUNK``) on the CPU,
    as many as the memory budget holds elsewhere (a GPU wants large batches: on an H100, chunks of 21
    signals instead of 34 made the clean [64, 512, 2048, 8192] batch 1.8x slower). ``bytes_per_signal`` counts a
    signal's row stack, Gram matrix and factor."""
    limit = chunk_size(batch, bytes_per_signal)
    if device.type != "cpu":
        return limit
    return max(1, min(limit, max(MIN_CHUNK, CACHE_BYTES // max(bytes_per_signal, 1))))


MIN_CHUNK = 32
"""Fewest signals per chunk: products with the shared matrix stay matrix-matrix (a chunk of one
signal made the refinement of a [64, 512, 2048, 8192] generator's mid layer memory-bound, 3x slower)."""


def _lstsq_rows_batch(views, target, rows, cols, weights, refine, mixed) -> tuple[torch.Tensor, torch.Tensor]:
    """:func:`lstsq_rows` on one chunk whose rows differ between signals (``views``: its matrix,
    :class:`_WeightViews`)."""
    weight = views.weight
    batch, n = target.shape[0], weight.shape[1]
    order, valid = _packed_rows(rows, weights, weight.dtype)
    if cols is None:
        if mixed and n >= MIXED_MIN_UNKNOWNS:
            # Each signal's rows are gathered from the float32 matrix, just before its Gram matrix is
            # made (gram_cholesky): a float64 gather costs as much as the float64 Gram itself.
            rw = row_factors(rows, weights, weight.dtype)
            x, done, det = _lstsq_mixed(
                weight,
                target * rows,
                rw,
                views,
                order,
                rows.sum(-1),
                row_scale=None if weights is None else valid.float(),
            )
            if bool(done.all()):
                return x, det
            rest = torch.nonzero(~done).flatten()
            sub_weights = None if weights is None else weights[rest]
            x_rest, det_rest = lstsq_rows(
                weight, target[rest], rows[rest], weights=sub_weights, refine=refine, mixed=False
            )
            x[rest], det[rest] = x_rest, det_rest
            return x, det
        a = _row_stack(weight, order, valid)
        tt = torch.gather(target, 1, order) * valid
        gram = a.transpose(-1, -2) @ a
        free = torch.ones(batch, n, dtype=torch.bool, device=weight.device)
    else:
        if not bool(cols.any()):
            return target.new_zeros(batch, n), torch.ones(batch, dtype=torch.bool, device=weight.device)
        a, col_order, free = _packed_system(weight, order, valid, cols)
        tt = torch.gather(target, 1, order) * valid
        gram = a.transpose(-1, -2) @ a
    scale = torch.diagonal(gram, dim1=-2, dim2=-1).amax(-1).clamp_min(torch.finfo(weight.dtype).tiny)
    # Unknowns outside cols get a unit diagonal so the system stays non-singular.
    diag = (~free).to(weight.dtype) * scale.unsqueeze(-1)
    if cols is not None:
        gram = gram + torch.diag_embed(diag)
    chol, info = cholesky_ex(gram)
    determined = info == 0
    # A tiny ridge rescues the rank-deficient ones (they are reported as not determined).
    if not bool(determined.all()):
        ridge = torch.diag_embed(torch.ones_like(diag) * scale.unsqueeze(-1) * 1e3 * _eps(weight.dtype))
        chol2, _ = cholesky_ex(gram + ridge)
        chol = torch.where(determined.view(-1, 1, 1), chol, chol2)
    rhs = (a.transpose(-1, -2) @ tt.unsqueeze(-1)).squeeze(-1)
    x = chol_solve(rhs, chol)
    for _ in range(refine):
        resid = rhs - (gram @ x.unsqueeze(-1)).squeeze(-1)
        x = x + chol_solve(resid, chol)
    x = x * free.to(x.dtype)
    if cols is not None:
        x = torch.zeros(batch, n, dtype=x.dtype, device=x.device).scatter_(1, col_order, x)
    # Cholesky can succeed on numerically rank-deficient Grams: a pivot far below the largest
    # diagonal entry flags near-singularity (a cheap lower bound on the smallest eigenvalue scale).
    pivots = torch.diagonal(chol, dim1=-2, dim2=-1).pow(2)
    determined = determined & (pivots.amin(-1) > scale * gram_rank_tol(weight.dtype, n))
    n_rows = rows.sum(-1)
    n_free = free.sum(-1)
    determined = determined & (n_rows >= n_free)
    return x, determined


MIXED_MIN_UNKNOWNS = 48
"""From this many unknowns, least squares on per-signal rows factorises in float32 and refines in the
working precision (:func:`_lstsq_mixed`)."""


def _lstsq_mixed(
    weight: torch.Tensor,
    target: torch.Tensor,
    rw: torch.Tensor,
    views: _WeightViews,
    order: torch.Tensor,
    counts: torch.Tensor,
    refine: int = 6,
    row_scale: torch.Tensor | None = None,
):
    """Weighted least squares ``min ||diag(rw) (W x - t)||`` per signal, factorised in float32 and
    refined in the working precision (``weight``'s dtype).

    Signal i's rows are ``order[i, :counts[i]]`` of ``views.f32`` (``weight`` in float32), scaled
    by ``row_scale[i]`` where given (``rw`` on them). Their Gram matrix and Cholesky factor are
    computed in float32 (:func:`gram_cholesky`; several times cheaper than float64), then iterative
    refinement with residuals ``W^T diag(rw^2) (t - W x)`` in the working precision (two plain
    matrix products with the shared W, instead of products with each signal's Gram) converges to
    that precision wherever the Gram's condition number is well below 1/eps32.

    Returns ``(x, done, determined)``: ``done`` is False for signals whose refinement did not settle
    (ill-conditioned, or a failed factorisation); the caller re-solves those in the working precision.
    """
    n, dtype = weight.shape[-1], weight.dtype
    rw2 = rw * rw
    chol, info = gram_cholesky(views.f32, counts, rows=order, scale=row_scale, out=views.factors(order.shape[0]))
    # The Gram's diagonal, from the shared matrix: one product instead of a pass over the factors.
    scale = (rw2 @ views.squared).amax(-1).float().clamp_min(torch.finfo(torch.float32).tiny)
    pivots = torch.diagonal(chol, dim1=-2, dim2=-1).pow(2)
    well = (info == 0) & (pivots.amin(-1) > scale * gram_rank_tol(torch.float32, n))

    def solve(r: torch.Tensor) -> torch.Tensor:
        y = torch.linalg.solve_triangular(chol, r.float().unsqueeze(-1), upper=False)
        return torch.linalg.solve_triangular(chol.transpose(-1, -2), y, upper=True).squeeze(-1).to(dtype)

    rhs = (target * rw2) @ weight
    x, settled = _refined(solve(rhs), lambda x, _: solve(rhs - ((x @ weight.T) * rw2) @ weight), well, refine)
    done = well & settled & torch.isfinite(x).all(-1)
    # Well conditioned in float32 is well conditioned in float64: determined when rows suffice.
    n_rows = (rw != 0).sum(-1)
    return torch.where(done.unsqueeze(-1), x, torch.zeros_like(x)), done, done & (n_rows >= n)


KRYLOV_ITERATIONS = 100
"""Conjugate-gradient products per signal that :func:`krylov_pays` counts: three refinement rounds of
~25 iterations each, the first one twice (its rank probe rides along as a second right-hand side);
measured 94 on the wider benchmark generators' mid layers in float64 (22, 25 and 25 iterations), 69 in float32."""

KRYLOV_SPEED = 1.5
"""How many times more multiply-adds per second the batched products of :func:`_lstsq_krylov` run at
than a Gram matrix and factor per signal (measured 1.6x on the [64, 512, 2048, 8192] generator's
mid layer, 2x-4x on the [20, 128, 392, 784] one's, one thread)."""

KRYLOV_ROUND_CAP = 100
"""Iterations at most in one round of :func:`_lstsq_krylov`; a signal that needs more (an ill-conditioned
system) goes to the direct solve."""

KRYLOV_TOL = 3e-6
"""Each round of :func:`_lstsq_krylov` shrinks the normal-equations residual by this factor (about what
conjugate gradients in float32 reach); the working-precision refinement around it does the rest."""

KRYLOV_PROBE_TOL = 3e-5
"""The rank probe of :func:`_lstsq_krylov` must recover its random vector to this relative error:
a null space of dimension d leaves ~sqrt(d / n) of it unrecovered (a d = 1 null space passes unseen
with probability ~0.1% at n = 1024), and one of condition number beyond ~KRYLOV_ROUND_CAP^2
converges too slowly to pass."""


def krylov_pays(weight: torch.Tensor, rows: torch.Tensor) -> bool:
    """Whether :func:`_lstsq_krylov` is expected to be cheaper than a Gram matrix and factor per signal
    (``k n^2 / 2 + n^3 / 3`` multiply-adds for k rows and n unknowns): ``KRYLOV_ITERATIONS`` products
    of ``2 m n`` per signal at ``KRYLOV_SPEED`` times the rate, and the shared preconditioner's
    ``2 m n^2`` once. On the benchmark generators it picks the mid layers of the two wider ones
    (2,048 x 512 and 4,096 x 1,024, about half their rows per signal) and none of the others."""
    m, n = weight.shape
    batch = rows.shape[0]
    if batch < 2 or weight.dtype not in (torch.float32, torch.float64):
        return False
    k = float(rows.sum()) / batch
    direct = batch * (k * n * n / 2 + n**3 / 3)
    krylov = (batch * KRYLOV_ITERATIONS * 2 * m * n + 2 * m * n * n) / KRYLOV_SPEED
    return krylov < direct


def krylov_bytes(m: int, n: int, dtype: torch.dtype) -> int:
    """Peak bytes per signal of :func:`_lstsq_krylov` on an (m, n) matrix: a few float32 vectors of
    each size for the signal and its probe, and the working-precision residual (~350 KB for
    4,096 x 1,024 in float64, against ~130 MB for a Gram matrix, factor and row stack)."""
    return 2 * (6 * m + 5 * n) * 4 + (3 * m + 2 * n) * torch.finfo(dtype).bits // 8


def _krylov_preconditioner(weight: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor] | None:
    """``(R, Q)`` with ``W^T W = R^T R`` (upper R, working precision) and ``Q = W R^-1`` in float32,
    for :func:`_lstsq_krylov`; None where the whole layer's Gram is not well conditioned in float32
    (then no signal's rows are). Made once per matrix and kept while it lives, unchanged: a noisy
    step solves least squares on the same matrix several times (latent-pursuit at 20 dB: 7 times on
    the [64, 512, 2048, 8192] generator's mid layer), a step split into chunks by a small memory
    budget once per chunk, and inverting on the same generator again reuses it; each would
    otherwise pay a Gram matrix and a triangular solve with all the layer's rows (~0.13 s for
    2,048 x 512 in float64)."""
    key = id(weight)
    held = _PRECONDITIONERS.get(key)
    if held is not None and held[0]() is weight and held[1] == weight._version:
        return held[2]
    n = weight.shape[1]
    chol, info = torch.linalg.cholesky_ex(gram(weight.detach()))
    pivots = torch.diagonal(chol).pow(2)
    pre = None
    if int(info) == 0 and bool(pivots.amin() > pivots.amax() * gram_rank_tol(torch.float32, n)):
        upper = chol.mT
        pre = upper, torch.linalg.solve_triangular(upper, weight.detach(), upper=True, left=False).float()
    while len(_PRECONDITIONERS) >= 4:
        _PRECONDITIONERS.pop(next(iter(_PRECONDITIONERS)))
    _PRECONDITIONERS[key] = (weakref.ref(weight), weight._version, pre)
    return pre


_PRECONDITIONERS: dict[int, tuple] = {}
""":func:`_krylov_preconditioner`'s results for the last few matrices, by identity (a weak reference
and the tensor's version guard against a reused id or an in-place change)."""


def _lstsq_krylov(weight: torch.Tensor, target: torch.Tensor, rw: torch.Tensor, pre, seed: int = 0):
    """Weighted least squares ``min ||diag(rw) (W x - t)||`` per signal by preconditioned conjugate
    gradients in float32, refined in the working precision: no per-signal matrix at all.

    The preconditioner ``pre`` (:func:`_krylov_preconditioner`) is shared: with ``W^T W = R^T R`` (the
    whole layer's Gram, one Cholesky factor) the iteration runs on ``Q = W R^-1``, whose rows a
    signal's rows select; half of them leave a condition number of a few (the spectrum of a random
    half of an orthonormal basis' rows), and a round to ``KRYLOV_TOL`` takes ~25 iterations, each two
    products of the batch with ``Q``. Each round solves for the correction that the normal equations'
    residual ``W^T diag(rw^2) (t - W x)``, computed in the working precision, asks for, as
    :func:`_lstsq_mixed`'s refinement does, until the step settles (:func:`_step_settled`; three
    rounds in float64). (A residual in the rows instead, ``rw (t - W x)``, would leave conjugate
    gradients in float32 to find a small normal residual under the rounding of a large one where
    the rows do not fit exactly: with noise.)

    Conjugate gradients started at zero never leave the row space of a signal's system, so they
    cannot see a rank deficiency by themselves: the first round also solves, for each signal, the
    system whose solution is a random vector ``u``, and a signal is done only where that is recovered
    to ``KRYLOV_PROBE_TOL`` (a null space, or a condition number the round cannot handle, leaves part
    of ``u`` unrecovered).

    Returns ``(x, done, determined)`` as :func:`_lstsq_mixed`; signals not done (a round past
    ``KRYLOV_ROUND_CAP``, the probe failed, fewer rows than unknowns) get zeros and are left to the
    caller.
    """
    n, dtype, batch = weight.shape[1], weight.dtype, target.shape[0]
    upper, q = pre
    rw2 = rw * rw
    d = rw2.float()
    gen = torch.Generator(device=weight.device).manual_seed(seed)
    u = torch.randn(batch, n, generator=gen, device=weight.device)
    done = (rw != 0).sum(-1) >= n

    def correction(x: torch.Tensor, round_: int) -> torch.Tensor:
        grad = (rw2 * (target - x @ weight.T)) @ weight
        c = torch.linalg.solve_triangular(upper.mT, grad.T, upper=False).T.float()  # R^-T g
        if round_ == 0:
            y, converged = _cg_normal(q, torch.cat([d, d]), torch.cat([c, _normal_product(q, d, u)]), probe=u)
            y, converged = y[:batch], converged[:batch] & converged[batch:]
        else:
            y, converged = _cg_normal(q, d, c)
        done.logical_and_(converged)  # in place: _refined watches it
        return torch.linalg.solve_triangular(upper, y.to(dtype).T, upper=True).T

    x, settled = _refined(torch.zeros(batch, n, dtype=dtype, device=weight.device), correction, done, 6)
    done &= settled & torch.isfinite(x).all(-1)
    return torch.where(done.unsqueeze(-1), x, torch.zeros_like(x)), done, done


def _normal_product(q: torch.Tensor, d: torch.Tensor, p: torch.Tensor) -> torch.Tensor:
    """``Q^T diag(d) Q p`` for each row of ``p``: two products of the batch with ``q``."""
    return (d * (p @ q.T)) @ q


def _cg_normal(q: torch.Tensor, d: torch.Tensor, c: torch.Tensor, probe: torch.Tensor | None = None):
    """Conjugate gradients on ``Q^T diag(d) Q y = c``, one system per row of ``c``, from y = 0, in
    ``q``'s dtype; each row stops on its own (later iterations leave it as it is). Returns
    ``(y, converged)``: converged where the residual shrank by ``KRYLOV_TOL`` within
    ``KRYLOV_ROUND_CAP`` iterations, and for the last ``len(probe)`` rows (probes, whose solution is
    ``probe``) where y is ``probe`` to ``KRYLOV_PROBE_TOL``; never where y is not finite.

    Unlike the matrix-free CGLS (:func:`geninv.solvers.matrix_free.lstsq_matrix_free`, working
    precision, residuals in the rows) its right-hand side is given in the unknowns' space: a
    refinement round's normal residual, computed in the working precision by the caller."""
    y = torch.zeros_like(c)
    r = c.clone()
    p = c.clone()
    gamma = (r * r).sum(-1)
    goal = gamma * KRYLOV_TOL**2
    data = c.shape[0] - (0 if probe is None else probe.shape[0])
    tiny = torch.finfo(q.dtype).tiny

    def unsettled(new: torch.Tensor) -> torch.Tensor:
        """Rows still short of their goal; NaN (a step along a direction of no curvature) counts as
        short, and the caller stops those rows as failed."""
        short = ~(new <= goal)
        if probe is not None:
            err = probe - y[data:]
            short[data:] = ~((err * err).sum(-1) <= (probe * probe).sum(-1) * KRYLOV_PROBE_TOL**2)
        return short

    failed = ~torch.isfinite(gamma)
    active = unsettled(gamma) & ~failed
    for _ in range(KRYLOV_ROUND_CAP):
        if not bool(active.any()):
            break
        w = _normal_product(q, d, p)
        alpha = torch.where(active, gamma / (p * w).sum(-1).clamp_min(tiny), 0).unsqueeze(-1)
        y.add_(alpha * p)
        r.sub_(alpha * w)
        new = torch.where(active, (r * r).sum(-1), gamma)
        p = torch.where(active.unsqueeze(-1), r + (new / gamma.clamp_min(tiny)).unsqueeze(-1) * p, p)
        gamma = new
        failed |= active & ~torch.isfinite(y).all(-1)
        active = active & unsettled(new) & ~failed
    return y, ~active & ~failed


def _refined(x: torch.Tensor, correction, live: torch.Tensor, passes: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Iterative refinement: ``x += correction(x, k)`` for passes k = 0, 1, ... until every signal
    still ``live`` (a mask the correction may narrow in place) has settled (:func:`_step_settled`),
    at most ``passes`` times. Returns ``(x, settled)``."""
    settled = torch.zeros_like(live)
    last = None
    for k in range(passes):
        step = correction(x, k)
        x = x + step
        size, norm = torch.linalg.vector_norm(step, dim=-1), torch.linalg.vector_norm(x, dim=-1)
        settled = settled | _step_settled(size, norm, last, x.dtype)
        if bool((settled | ~live).all()):
            break
        last = size
    return x, settled


def _step_settled(size: torch.Tensor, norm, last: torch.Tensor | None, dtype: torch.dtype) -> torch.Tensor:
    """Where a refinement step of ``size`` leaves an iterate of ``norm`` at the working precision: the
    step is below 100 eps, or, after a previous step of size ``last``, each pass is a clear
    contraction (rate <= 0.1) and the next step would be below 10 eps: settled one pass early."""
    eps = _eps(dtype)
    small = size <= 100 * eps * norm
    if last is not None:
        rate = size / last.clamp_min(torch.finfo(dtype).tiny)
        small = small | ((rate <= 0.1) & (rate * size <= 10 * eps * norm))
    return small


def _lstsq_cols_shared(a: torch.Tensor, t: torch.Tensor, cols: torch.Tensor, refine: int):
    """Least squares with the rows ``a`` (m, n) shared by every signal, each on its own columns ``cols``
    (B, n), x zero elsewhere: each signal's normal equations are gathered from the one Gram ``a^T a``
    (m n^2 once, instead of m c^2 per signal for c columns) and solved by :func:`_solve_on_sets`.
    latent-pursuit's least squares on the support of its NNLS (314 rows, ~200 columns, 1024 signals,
    one thread) went from 2.6 s to 0.63 s, with the same accuracy. Returns ``(x, determined)`` as
    :func:`lstsq_rows`."""
    m, n = a.shape
    x, regular = _solve_on_sets(a.T @ a, t @ a, cols.bool(), refine=refine, rank_tol=gram_rank_tol(a.dtype, n))
    return x, regular & (cols.sum(-1) <= m)


def _lstsq_shared(a: torch.Tensor, t: torch.Tensor, refine: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Least squares with one matrix ``a`` (m, n) for many right-hand sides ``t`` (B, m)."""
    m, n = a.shape
    if m < n:
        return _min_norm_shared(a, t), torch.tensor(False, device=a.device)
    # Semi-normal equations: a Cholesky factor of the Gram (a matrix product and n^3/3, several
    # times cheaper than a QR for tall matrices: 8192 x 2048 went from 4.8 s to 0.9 s), refined with
    # the residual of ``a`` itself; used where the Gram is conditioned well enough that each
    # refinement gains at least half the working digits (cond(a)^2 eps <= sqrt(eps)).
    # A float64 batch much smaller than the matrix factorises in float32 (half the Gram's cost) and
    # pays with a few more refinement passes (4 m n per signal each; the Gram costs m n^2 / 2 less).
    # For a batch of at least m / 2 signals the factor is applied as the matrix ``a (a^T a)^-1``
    # (n^2 m once): each solve and refinement pass is then one matrix product over the batch instead
    # of a product and two triangular solves (784 x 392, 1024 signals: 46 -> 36 ms).
    low = torch.float32 if a.dtype == torch.float64 and n > 8 * t.shape[0] else a.dtype
    for dtype in dict.fromkeys((low, a.dtype)):
        af = a.to(dtype)
        chol, info = torch.linalg.cholesky_ex(gram(af))
        pivots = torch.diagonal(chol).pow(2)
        if int(info) != 0 or not bool(pivots.amin() > pivots.amax() * _eps(dtype) ** 0.5):
            continue
        if t.shape[0] >= m // 2:
            apply_t = torch.cholesky_solve(af.T, chol).T.to(a.dtype)  # (m, n)

            def solve(resid: torch.Tensor, apply_t: torch.Tensor = apply_t) -> torch.Tensor:
                return resid @ apply_t

        else:

            def solve(resid: torch.Tensor, chol: torch.Tensor = chol) -> torch.Tensor:
                return torch.cholesky_solve((resid @ a).T.to(chol.dtype), chol).T.to(a.dtype)

        x = solve(t)
        # Each pass shrinks the error by ~cond(a)^2 eps of the factor's precision: refine until the
        # step is at the working precision or stops shrinking (one pass for a random tall layer, two
        # for the shipped MNIST decoder's output layer; at most 8).
        # (a float32 factor of the widest benchmark generator's output layer settles in two passes)
        tiny = torch.finfo(a.dtype).tiny
        last = None
        for _ in range(8):
            step = solve(t - x @ a.T)
            x = x + step
            rel = torch.linalg.vector_norm(step, dim=-1) / torch.linalg.vector_norm(x, dim=-1).clamp_min(tiny)
            if bool(_step_settled(rel, 1.0, last, a.dtype).all()):
                break
            if last is not None and float(rel.amax()) > 0.5 * float(last.amax()):
                break
            last = rel
        return x, pivots.amin() > pivots.amax() * gram_rank_tol(dtype, n)
    # Householder QR is backward stable: one refinement pass settles it
    return _qr_solve(a, t, min(refine, 1))


def _qr_solve(a: torch.Tensor, t: torch.Tensor, passes: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Least squares (a tall ``a``) or the minimum-norm solution (a wide one) for many right-hand
    sides ``t`` (B, m), from one Householder QR of ``a`` or of ``a^T``: the pseudo-inverse once, then
    one matrix product per pass over the batch, with ``passes`` refinement passes on the residual.
    Also returns whether ``a`` has full rank (:func:`gram_rank_tol` on R's diagonal).

    Where it has not, the minimum-norm solution from the SVD (:func:`lstsq_svd`, which drops the
    numerically dependent rows and columns): R's diagonal may hold an exact zero (a column that no
    observed row sees, e.g. a unit of the convolutional decoder that only draws hidden pixels), where
    the triangular solve gives inf and NaN. Each signal's own solve gives that answer too (a ridge of
    ~1e3 eps), so a signal's estimate does not depend on whether others share its rows."""
    m, n = a.shape
    tall = m >= n
    q, r = torch.linalg.qr(a if tall else a.T)
    diag = torch.diagonal(r).abs()
    full = diag.amin() ** 2 > diag.amax() ** 2 * gram_rank_tol(a.dtype, n)
    if not bool(full):
        return lstsq_svd(a, t.T).T, full
    p = torch.linalg.solve_triangular(r, q.T, upper=True)  # R^-1 Q^T
    pinv_t = p.T if tall else p  # pinv(a)^T, (m, n): R^-1 Q^T for a = QR, Q R^-T for a^T = QR
    x = t @ pinv_t
    for _ in range(passes):
        x = x + (t - x @ a.T) @ pinv_t
    return x, full


def _min_norm_shared(a: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    """Minimum-norm solutions of ``a x = t`` for a wide ``a`` (m < n) and many right-hand sides (B, m).

    A QR factor of ``a^T`` (``x = Q R^-T t``, one refinement pass on the residual) where ``a`` has
    full row rank to well within the working precision: 11x faster than LAPACK's SVD-based ``gelsd``
    for 314 x 392 and 1024 signals (112 -> 10 ms); otherwise ``gelsd``, which drops the numerically
    dependent rows.
    """
    if a.shape[0] == 0:
        return t.new_zeros(t.shape[0], a.shape[1])
    return _qr_solve(a, t, 1)[0]


def lstsq_svd(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """The minimum-norm least-squares solution of ``a x = b`` (``a`` (..., m, n), ``b`` (..., m, k)),
    SVD-based: LAPACK's ``gelsd`` on the CPU, the pseudo-inverse elsewhere (torch's only ``lstsq``
    driver on a GPU assumes full rank). Both drop numerically dependent rows and columns."""
    if a.device.type == "cpu":
        return torch.linalg.lstsq(a, b, driver="gelsd").solution
    return torch.linalg.pinv(a) @ b


def residual_rows(weight: torch.Tensor, x: torch.Tensor, target: torch.Tensor, rows: torch.Tensor) -> torch.Tensor:
    """``||(W x - t)[rows]||`` per signal."""
    r = (x @ weight.T - target) * rows.to(x.dtype)
    return torch.linalg.vector_norm(r, dim=-1)


def nnls_rows(
    weight: torch.Tensor,
    target: torch.Tensor,
    rows: torch.Tensor,
    *,
    lam: torch.Tensor | float = 0.0,
    weights: torch.Tensor | None = None,
    tol: float | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Non-negative (Lasso) least squares ``min 0.5||W[rows] x - t||^2 + lam * sum(x), x >= 0``.

    The batched block-principal-pivoting solver :func:`nnls_gram`, warm-started from the
    least-squares solution; when ``lam == 0``, the signals it does not solve under the device's plan
    (:func:`_nnls_plan`: its rounds, and on the CPU a singular free-set system) go to scipy's exact
    active-set NNLS. Returns ``(x, kkt_ok)``.

    Rows that differ between signals mean a Gram matrix per signal: those signals go in chunks that
    the memory budget holds (the batched solver's own systems are chunked in :func:`_solve_on_sets`).
    """
    batch, m, n = target.shape[0], weight.shape[0], weight.shape[1]
    size = batch
    if not rows_shared(rows, weights):
        size = chunk_size(batch, (2 * (m * n + n * n) + NNLS_COPIES * n * n) * weight.element_size())
    lam_b = torch.as_tensor(lam, dtype=weight.dtype, device=weight.device).reshape(-1).expand(batch)
    return in_chunks(lambda t, r, lm, w: _nnls_rows_batch(weight, t, r, lm, w, tol), size, target, rows, lam_b, weights)


NNLS_COPIES = 6
"""(n, n) matrices per signal budgeted for :func:`nnls_gram`: an upper bound (the gathered free-set
system and its factor, the same stack on a GPU, where the factor is a new tensor; on the CPU it is
factorised in place; with the per-signal Gram and the products alongside)."""


def _nnls_rows_batch(weight, target, rows, lam, weights, tol) -> tuple[torch.Tensor, torch.Tensor]:
    """:func:`nnls_rows` on one chunk."""
    batch = target.shape[0]
    dtype = weight.dtype
    tol = tol if tol is not None else 0.1 * _eps(dtype) ** 0.5
    r = row_factors(rows, weights, dtype)
    tt = target * r
    lam_t = torch.as_tensor(lam, dtype=dtype, device=weight.device).reshape(-1, 1).expand(batch, 1)
    # One Gram matrix for the whole batch when every signal uses the same rows (a fixed mask):
    # 64 signals at 60% missing went from 6.4 s to well under a second.
    shared = rows_shared(rows, weights)
    if shared:
        a = weight * r[:1].T  # (m, n), zero outside the rows
        gram = a.T @ a
    else:
        a = weight.unsqueeze(0) * r.unsqueeze(-1)  # (B, m, n)
        gram = a.transpose(-1, -2) @ a
    aty = (tt * r) @ weight  # = a^T (r * t), per signal
    exact = float(lam_t.abs().max()) == 0.0  # plain NNLS, which scipy solves too
    # Batched block principal pivoting, warm-started from the least-squares solution's support; for
    # plain NNLS, the signals it does not solve (within the plan's rounds, or with a singular free-set
    # system where the plan says so) go to scipy.
    rounds, give_up_singular = _nnls_plan(weight.device) if exact else (None, False)
    x0, _ = lstsq_rows(weight, target, rows, weights=weights)
    x, kkt = nnls_gram(gram, aty, lam=lam_t, x0=x0, tol=tol, max_iter=rounds, give_up_singular=give_up_singular)
    if bool((~kkt).any()) and exact:
        _scipy_nnls(a, tt, r, shared, x, torch.nonzero(~kkt).flatten().tolist())
        kkt = _nnls_kkt(gram, aty, lam_t, x, tol)
    return x, kkt


def _nnls_plan(device: torch.device) -> tuple[int, bool]:
    """For plain NNLS: the rounds of :func:`nnls_gram` before scipy takes the signals left, and whether
    a signal whose free-set system turns singular goes to scipy at once.

    On a GPU, ``BATCHED_NNLS_ITER`` rounds (scipy means a copy to the CPU). On the CPU, where scipy is
    at hand, ``CPU_NNLS_ITER`` rounds, and a singular system hands the signal over: a singular free set
    is larger than the rows' rank, the regime where block principal pivoting wanders (65% and 70% of
    784 pixels missing: no signal of 128 settled in 64 rounds, 117 ms per signal against scipy's 32
    and 40 alone), while at 60% missing no free-set system was singular and most signals settle
    within 7 rounds."""
    return (CPU_NNLS_ITER, True) if device.type == "cpu" else (BATCHED_NNLS_ITER, False)


BATCHED_NNLS_ITER = 64
"""Iterations of :func:`nnls_gram` on a GPU before the plain-NNLS signals it has not solved go to
scipy. With 60% of 784 pixels missing it needs at most 56 at batch 1024; with 70% missing its
free-set systems are singular (235 rows, 392 unknowns) and it solved none of 64 signals in 400
iterations, where it used to run its full 5 n."""

CPU_NNLS_ITER = 12
"""Iterations of :func:`nnls_gram` on the CPU before scipy takes the plain-NNLS signals left: the last
few signals of a batch go one exchange per round, which costs a round of the whole solver's
overhead each, against ~16 ms per signal in scipy."""


def _scipy_nnls(a, tt, r, shared: bool, x: torch.Tensor, signals: list[int]) -> torch.Tensor:
    """Exact active-set NNLS (scipy, Lawson-Hanson) for ``signals``, written into ``x``; which succeeded."""
    from scipy.optimize import nnls

    a_np = a.detach().cpu().double().numpy()
    t_np = tt.detach().cpu().double().numpy()
    keep_all = r.detach().cpu().numpy() != 0
    solved = torch.zeros(x.shape[0], dtype=torch.bool, device=x.device)
    with _blas_threads():
        for b in signals:
            keep = keep_all[b]
            a_b = a_np if shared else a_np[b]
            try:
                sol_b, _ = nnls(a_b[keep], t_np[b][keep], maxiter=50 * x.shape[1])
            except RuntimeError:
                continue
            x[b] = torch.from_numpy(sol_b).to(dtype=x.dtype, device=x.device)
            solved[b] = True
    return solved


def _nnls_kkt(gram, aty, lam_t, x, tol) -> torch.Tensor:
    grad = (gram @ x.unsqueeze(-1)).squeeze(-1) - aty + lam_t
    scale = aty.abs().amax(-1, keepdim=True).clamp_min(1.0)
    on = x > 0
    ok_on = (grad.abs() * on <= tol * scale).all(-1)
    ok_off = ((grad * ~on) >= -tol * scale).all(-1)
    return ok_on & ok_off


def nnls_numpy(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Reference active-set NNLS (scipy), for tests."""
    from scipy.optimize import nnls

    return nnls(a, b)[0]


def support_gain(
    weight: torch.Tensor,
    rows: torch.Tensor,
    cols: torch.Tensor | None = None,
    weights: torch.Tensor | None = None,
) -> torch.Tensor:
    """Noise gain per unknown: ``sqrt(diag((A^T A)^{-1}))`` with ``A = diag(weights) W[rows][:, cols]``.

    With unit-variance errors on the (weighted) targets, this is the standard deviation of each
    least-squares estimate; zero outside ``cols``. ``cols=None``: every column where that system is
    determined, else the given fallback is not available and the gain is computed per signal on
    all columns with a tiny ridge (undetermined unknowns come out with a very large gain).
    Rows shared by the batch without weights use one factorisation; other signals go in chunks that
    the memory budget holds. Shape (B, n).
    """
    dtype = weight.dtype
    (batch, m), n = rows.shape, weight.shape[1]
    shared = cols is None and rows_shared(rows, weights)
    size = chunk_size(batch, (m * n + 3 * n * n) * weight.element_size())
    if not shared and size < batch:
        return in_chunks(lambda r, c, w: support_gain(weight, r, c, w), size, rows, cols, weights)
    col_order = None
    if shared:
        a = weight[rows[0]]
        gram = (a.T @ a).unsqueeze(0)
        free = torch.ones(1, n, dtype=dtype, device=weight.device)
    else:
        if cols is not None and not bool(cols.any()):
            return torch.zeros(batch, n, dtype=dtype, device=weight.device)
        order, valid = _packed_rows(rows, weights, dtype)
        every = torch.ones(batch, n, dtype=torch.bool, device=weight.device)
        a, col_order, free = _packed_system(weight, order, valid, every if cols is None else cols)
        gram = a.transpose(-1, -2) @ a
        free = free.to(dtype)
    scale = torch.diagonal(gram, dim1=-2, dim2=-1).amax(-1).clamp_min(torch.finfo(dtype).tiny)
    # Unknowns outside cols: unit diagonal (they drop out); a ridge of ~1e3 eps keeps it invertible.
    ridge = scale * 1e3 * _eps(dtype)
    gram = gram + torch.diag_embed((1 - free) * scale.unsqueeze(-1) + ridge.unsqueeze(-1))
    chol, info = cholesky_ex(gram)
    inv_diag = torch.diagonal(torch.cholesky_inverse(chol), dim1=-2, dim2=-1)
    big = (1 / ridge).unsqueeze(-1).expand_as(inv_diag)
    inv_diag = torch.where((info == 0).unsqueeze(-1), inv_diag, big)
    gain = inv_diag.clamp_min(0).sqrt() * free
    if col_order is None:
        return gain.expand(batch, n)
    return torch.zeros(batch, n, dtype=dtype, device=weight.device).scatter_(1, col_order, gain)


def enforce_inequalities(
    solve,
    weight: torch.Tensor,
    target: torch.Tensor,
    rows: torch.Tensor,
    off_rows: torch.Tensor,
    x: torch.Tensor,
    *,
    tol: torch.Tensor,
    rounds: int = 6,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Meet ``W[off] x <= t[off]`` by a primal active-set heuristic, batched.

    Rows whose inequality the current ``x`` violates by more than ``tol`` (B,) join the equations at
    their bound (``W_j x = t_j``) and ``solve(rows) -> x`` re-solves, for at most ``rounds`` rounds.
    Returns ``(x, feasible)``; a signal that stays infeasible keeps its last solution.
    """
    feasible = _violations(weight, target, off_rows, x, tol) == 0
    active = rows.clone()
    for _ in range(rounds):
        if bool(feasible.all()):
            break
        todo = ~feasible
        viol = off_rows & ((x @ weight.T - target) > tol.unsqueeze(-1)) & todo.unsqueeze(-1)
        active = active | viol
        x_new = solve(active)
        x = torch.where(todo.unsqueeze(-1), x_new, x)
        feasible = _violations(weight, target, off_rows, x, tol) == 0
    return x, feasible


def _violations(weight, target, off_rows, x, tol) -> torch.Tensor:
    excess = (x @ weight.T - target) * off_rows.to(x.dtype)
    return (excess > tol.unsqueeze(-1)).sum(-1)


def _workspace(work: dict | None, name: str, numel: int, dtype: torch.dtype, device: torch.device) -> torch.Tensor:
    """A flat tensor of ``numel`` entries, kept in ``work`` (when given) and reused by later calls
    that fit in it. On the CPU a fresh temporary of tens of MB comes as new pages, faulted in one by
    one: a third of the time of the batched NNLS's free-set solves."""
    if work is None:
        return torch.empty(numel, dtype=dtype, device=device)
    buf = work.get(name)
    if buf is None or buf.numel() < numel or buf.dtype != dtype:
        buf = work[name] = torch.empty(numel, dtype=dtype, device=device)
    return buf[:numel]


def _solve_on_sets(
    gram: torch.Tensor,
    rhs: torch.Tensor,
    free: torch.Tensor,
    work: dict | None = None,
    *,
    refine: int = 1,
    rank_tol: float | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Solve ``gram[F, F] x_F = rhs_F`` per signal (x zero outside F), batched on compact systems.

    Each signal's free set is gathered into the leading block of a ``(B, k, k)`` stack (k = the
    largest set), padded with the identity, and factorised by Cholesky. Returns ``(x, ok)``; a
    singular system (a free set larger than the rank) is solved with a tiny ridge and ``ok`` False.
    The stacks go in chunks of signals that the memory budget holds (``NNLS_COPIES`` (k, k) matrices
    per signal): with 60% of 784 pixels missing, one batch of 1024 took 6 GiB of GPU memory.
    ``work``: a dict in which the stack and its gather index are kept for the next call
    (:func:`_workspace`). ``refine``: steps of iterative refinement. ``rank_tol``: ``ok`` also asks
    the smallest pivot^2 to exceed ``rank_tol`` times the largest diagonal entry (as
    :func:`gram_rank_tol`).
    """
    batch, n = rhs.shape
    dtype = rhs.dtype
    k = int(free.sum(-1).max()) if free.numel() else 0
    if k == 0:
        return torch.zeros_like(rhs), torch.ones(batch, dtype=torch.bool, device=rhs.device)
    size = cache_chunk(batch, NNLS_COPIES * k * k * rhs.element_size(), rhs.device)
    if size < batch:
        options = {"refine": refine, "rank_tol": rank_tol}
        if gram.ndim == 2:  # shared by every signal
            return in_chunks(lambda r, f: _solve_on_sets(gram, r, f, work, **options), size, rhs, free)
        return in_chunks(lambda g, r, f: _solve_on_sets(g, r, f, work, **options), size, gram, rhs, free)
    order, valid = _leading(free, k)
    pad = (~valid).to(dtype)

    def stack(rows: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """The free-set systems (of the signals ``rows``), padded with the identity times their largest
        diagonal entry, and that entry (B,); the whole batch's systems in ``work``."""
        o = order if rows is None else order[rows]
        b, keep = o.shape[0], work if rows is None else None
        # One flat index_select: a third of the time of two-dimensional advanced indexing on the CPU.
        g = gram if gram.ndim == 2 or rows is None else gram[rows]
        index_dtype = torch.int32 if g.numel() < 2**31 else torch.int64
        idx = _workspace(keep, "index", b * k * k, index_dtype, o.device).view(b, k, k)
        o = o.to(index_dtype)
        torch.add((o * n).unsqueeze(-1), o.unsqueeze(-2), out=idx)
        if gram.ndim == 3:
            idx += torch.arange(b, device=o.device, dtype=index_dtype).view(-1, 1, 1) * (n * n)
        sub = _workspace(keep, "stack", b * k * k, dtype, o.device)
        torch.index_select(g.reshape(-1), 0, idx.view(-1), out=sub)
        sub = sub.view(b, k, k)
        v = (valid if rows is None else valid[rows]).to(dtype)
        sub.mul_(v.unsqueeze(-1)).mul_(v.unsqueeze(-2))
        scale = torch.diagonal(sub, dim1=-2, dim2=-1).abs().amax(-1).clamp_min(torch.finfo(dtype).tiny)
        sub.diagonal(dim1=-2, dim2=-1).add_((pad if rows is None else pad[rows]) * scale.unsqueeze(-1))
        return sub, scale

    # Factorised in place (the stack is not needed afterwards: the refinement's residual comes from
    # the full Gram, one product), so the CPU's chunks hold one (k, k) copy per signal, not three.
    sub, scale = stack()
    chol, info = cholesky_ex(sub, overwrite=True)
    factored = info == 0
    ok = factored.clone()
    if rank_tol is not None:
        ok &= torch.diagonal(chol, dim1=-2, dim2=-1).pow(2).amin(-1) > scale * rank_tol
    if not bool(factored.all()):
        bad = torch.nonzero(~factored).flatten()
        sub, _ = stack(bad)
        top = torch.diagonal(sub, dim1=-2, dim2=-1).amax(-1)
        sub.diagonal(dim1=-2, dim2=-1).add_((top * 1e3 * _eps(dtype)).unsqueeze(-1))
        chol[bad] = cholesky_ex(sub, overwrite=True)[0]

    def scatter(sol: torch.Tensor) -> torch.Tensor:
        return torch.zeros_like(rhs).scatter_(1, order, sol * valid)

    r = torch.gather(rhs, 1, order) * valid
    sol = chol_solve(r, chol)
    for _ in range(refine):
        gx = scatter(sol) @ gram if gram.ndim == 2 else (gram @ scatter(sol).unsqueeze(-1)).squeeze(-1)
        sol = sol + chol_solve(torch.gather(rhs - gx, 1, order) * valid, chol)
    return scatter(sol), ok


BPP_TRIES = 10
"""Full exchanges :func:`nnls_gram` still tries once the count of infeasible variables stops falling
(Kim & Park use 3). On 60%-missing output steps of [20, 128, 392, 784] generators (314 rows, 392
unknowns: a Gram of rank 314) a batch needed 241 iterations with 3 and 56 with 10 (1024 signals;
364 and 29 for 512 signals of another generator): the last signals went one exchange at a time.
Each iteration is a round of launches for the whole batch on a GPU."""


def nnls_gram(
    gram: torch.Tensor,
    aty: torch.Tensor,
    *,
    lam: torch.Tensor | None = None,
    x0: torch.Tensor | None = None,
    max_iter: int | None = None,
    tol: float | None = None,
    give_up_singular: bool = False,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Batched non-negative least squares by block principal pivoting (Kim & Park 2011).

    Solves ``min 0.5 x^T G x - (A^T t)^T x + lam * sum(x)`` subject to ``x >= 0`` for every signal
    at once, from the Gram matrix ``gram`` (shared (n, n) or per signal (B, n, n)) and ``aty``
    (B, n); no per-signal Python loop, so it runs the same on CPU and GPU. Every iteration solves
    the unconstrained problem on each signal's free set and exchanges all the variables that break
    feasibility; when that stops reducing their number, ``BPP_TRIES`` more tries are allowed, then only
    the largest such index is exchanged (the backup rule that guarantees termination).
    ``x0`` (its positive entries) is the starting free set, e.g. a least-squares solution.
    ``give_up_singular``: a signal whose free-set system is singular stops there (for a caller with
    another solver at hand). Returns ``(x, kkt_ok)``.
    """
    batch, n = aty.shape
    dtype = aty.dtype
    tol = tol if tol is not None else 0.1 * _eps(dtype) ** 0.5
    lam_t = torch.zeros(batch, 1, dtype=dtype, device=aty.device) if lam is None else lam.reshape(-1, 1).to(aty)
    b = aty - lam_t
    max_iter = max_iter or 5 * n
    free = torch.zeros(batch, n, dtype=torch.bool, device=aty.device) if x0 is None else x0 > 0
    best = torch.full((batch,), n + 1, dtype=torch.int64, device=aty.device)
    tries = torch.full((batch,), BPP_TRIES, dtype=torch.int64, device=aty.device)
    x = torch.zeros_like(b)
    done = torch.zeros(batch, dtype=torch.bool, device=aty.device)
    scale = aty.abs().amax(-1, keepdim=True).clamp_min(1.0)
    ar = torch.arange(n, device=aty.device)
    work: dict = {}  # the free-set solves' stacks, reused from one iteration to the next
    for _ in range(max_iter):
        todo = torch.nonzero(~done).flatten()
        if todo.numel() == 0:
            break
        g = gram if gram.ndim == 2 else gram[todo]
        xs, regular = _solve_on_sets(g, b[todo], free[todo], work)
        grad = (xs @ g) if g.ndim == 2 else (g @ xs.unsqueeze(-1)).squeeze(-1)
        y = grad - b[todo]  # the dual: >= 0 where x is held at zero
        f = free[todo]
        bad = (f & (xs < -tol * scale[todo])) | (~f & (y < -tol * scale[todo]))
        nbad = bad.sum(-1)
        x[todo] = xs.clamp_min(0) * f
        finished = nbad == 0
        fewer = nbad < best[todo]
        best[todo] = torch.where(fewer, nbad, best[todo])
        tries[todo] = torch.where(fewer, torch.full_like(tries[todo], BPP_TRIES), tries[todo] - (~fewer).long())
        # Full exchange while it helps (or for BPP_TRIES more tries), else only the largest index.
        full = fewer | (tries[todo] >= 0)
        last = torch.where(bad, ar, torch.full_like(ar, -1)).amax(-1, keepdim=True)
        single = bad & (ar == last)
        flip = torch.where(full.unsqueeze(-1), bad, single) & ~finished.unsqueeze(-1)
        free[todo] = f ^ flip
        done[todo] = finished | (~regular if give_up_singular else False)
    grad_all = (x @ gram) if gram.ndim == 2 else (gram @ x.unsqueeze(-1)).squeeze(-1)
    g = grad_all - b
    on = x > 0
    kkt = ((g.abs() * on) <= tol * scale).all(-1) & (((g * ~on) >= -tol * scale).all(-1))
    return x, kkt
