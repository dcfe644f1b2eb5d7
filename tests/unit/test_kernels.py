"""The batched linear-algebra kernels (geninv.solvers.linear) agree with torch's reference calls.

Each kernel has a faster path on the CPU (LAPACK one matrix at a time, cache-sized chunks, the
semi-normal equations); these tests check that it computes the same thing as the plain path, in
float32 and float64, including the cases that must fall back.
"""

import pytest
import torch
from threadpoolctl import threadpool_info

import geninv
from geninv.solvers import linear

DTYPES = [torch.float32, torch.float64]


def _spd(batch: int, n: int, dtype: torch.dtype, seed: int = 0) -> torch.Tensor:
    gen = torch.Generator().manual_seed(seed)
    a = torch.randn(batch, n + n // 2, n, generator=gen, dtype=torch.float64)
    return (a.mT @ a).to(dtype)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("n", [20, 128, 160])
def test_cholesky_matches_torch(n, dtype):
    gram = _spd(6, n, dtype)
    gram[2] = -gram[2]  # not positive definite: info > 0, like torch's
    ours, info = linear.cholesky_ex(gram)
    ref, ref_info = torch.linalg.cholesky_ex(gram)
    assert torch.equal(info.to(ref_info.dtype), ref_info)
    good = ref_info == 0
    tol = 1e-4 if dtype == torch.float32 else 1e-12
    torch.testing.assert_close(ours[good], ref[good], rtol=tol, atol=tol * float(ref.abs().max()))
    assert torch.equal(ours[good], ours[good].tril())  # the factor is lower triangular
    assert ours.dtype == dtype and ours.shape == gram.shape


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("n", [20, 128, 160])
def test_gram_cholesky_uses_each_signals_own_rows(n, dtype):
    """The fused Gram and Cholesky factor (syrk + potrf per matrix on the CPU from LAPACK_MIN_N) equal
    torch's factor of the Gram of each signal's first ``counts`` rows; too few rows give info > 0, as
    in torch. The padding after them is zero by contract; the CPU path never reads it (garbage
    there does not show)."""
    gen = torch.Generator().manual_seed(3)
    k = n + n // 2
    a = torch.randn(5, k, n, generator=gen, dtype=torch.float64)
    counts = torch.tensor([k, n + 7, k - 3, n // 2, 0])
    if n < linear.LAPACK_MIN_N:
        a *= (torch.arange(k) < counts.unsqueeze(-1)).unsqueeze(-1)
    grams = torch.stack([a[i, : int(c)].mT @ a[i, : int(c)] for i, c in enumerate(counts)]).to(dtype)
    ref, ref_info = torch.linalg.cholesky_ex(grams)
    ours, info = linear.gram_cholesky(a.to(dtype), counts)
    assert torch.equal(info.to(ref_info.dtype) > 0, ref_info > 0)
    assert ref_info.tolist()[:3] == [0, 0, 0] and bool((ref_info[3:] > 0).all())
    good = ref_info == 0
    tol = 1e-4 if dtype == torch.float32 else 1e-12
    torch.testing.assert_close(ours[good], ref[good], rtol=tol, atol=tol * float(ref.abs().max()))
    assert torch.equal(ours[good], ours[good].tril()) and ours.dtype == dtype
    # Without counts: every row
    full, full_info = linear.gram_cholesky(a[:2].to(dtype))
    torch.testing.assert_close(full, torch.linalg.cholesky((a[:2].mT @ a[:2]).to(dtype)), rtol=tol, atol=tol * 100)
    assert not bool(full_info.any())


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("n", [20, 128])
def test_gram_cholesky_gathers_each_signals_rows_of_one_matrix(n, dtype):
    """Given one matrix and each signal's row indices (and row scales), the factors are those of the
    stack of its gathered, scaled rows: gathered one signal at a time on the CPU path (n = 128), as
    a stack on torch's (n = 20); a reused output buffer gives the same factors."""
    gen = torch.Generator().manual_seed(5)
    m, k = 3 * n, n + n // 2
    w = torch.randn(m, n, generator=gen, dtype=torch.float64).to(dtype)
    order = torch.stack([torch.randperm(m, generator=gen)[:k] for _ in range(4)])
    counts = torch.tensor([k, n + 3, k - 1, n // 2])
    scale = torch.rand(4, k, generator=gen, dtype=torch.float64).add(0.5).to(dtype)
    valid = (torch.arange(k) < counts.unsqueeze(-1)).to(dtype)
    buffer = torch.zeros(6, n, n, dtype=dtype)
    for s in (None, scale):
        stack = w[order] * (valid if s is None else valid * s).unsqueeze(-1)
        ref, ref_info = linear.gram_cholesky(stack, counts)
        # (the second pass writes into the buffer that the first one filled)
        ours, info = linear.gram_cholesky(w, counts, rows=order, scale=s, out=buffer)
        assert torch.equal(info > 0, ref_info > 0) and info.tolist()[:3] == [0, 0, 0] and int(info[3]) > 0
        tol = 1e-5 if dtype == torch.float32 else 1e-13
        scale_ref = float(ref[:3].abs().max())
        torch.testing.assert_close(ours[:3], ref[:3], rtol=tol, atol=tol * scale_ref)
        assert torch.equal(ours[:3], ours[:3].tril())


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("n", [20, 64, 130])
def test_smallest_eigenvalue_matches_eigvalsh(n, dtype):
    gram = _spd(5, n, dtype, seed=1)
    ref = torch.linalg.eigvalsh(gram.double())[:, 0]
    ours = linear.smallest_eigenvalues(gram)
    assert ours.shape == (5,) and ours.dtype == dtype
    tol = 1e-3 if dtype == torch.float32 else 1e-10
    torch.testing.assert_close(ours.double(), ref, rtol=tol, atol=tol * float(gram.abs().max()))


@pytest.mark.parametrize("dtype", DTYPES)
def test_chol_solve_matches_cholesky_solve(dtype):
    gram = _spd(7, 48, dtype, seed=2)
    chol = torch.linalg.cholesky(gram)
    rhs = torch.randn(7, 48, dtype=dtype)
    ref = torch.cholesky_solve(rhs.unsqueeze(-1), chol).squeeze(-1)
    tol = 1e-4 if dtype == torch.float32 else 1e-10
    torch.testing.assert_close(linear.chol_solve(rhs, chol), ref, rtol=tol, atol=tol)


@pytest.mark.parametrize("dtype", DTYPES)
def test_chunked_and_whole_batch_least_squares_agree(dtype, monkeypatch):
    """Cache-sized chunks (here 3 signals) give the answers of one batch, signal by signal."""
    gen = torch.Generator().manual_seed(3)
    weight = torch.randn(120, 40, generator=gen, dtype=dtype)
    x_true = torch.randn(17, 40, generator=gen, dtype=dtype)
    pre = x_true @ weight.T
    rows = pre > -0.3  # most rows, a different set per signal
    target = pre * rows
    monkeypatch.setattr(linear, "MIN_CHUNK", 1)
    monkeypatch.setattr(linear, "CACHE_BYTES", 3 * (120 + 80) * 40 * weight.element_size())
    assert linear.cache_chunk(17, (120 + 80) * 40 * weight.element_size(), weight.device) == 3
    chunked, det_c = linear.lstsq_rows(weight, target, rows)
    monkeypatch.setattr(linear, "CACHE_BYTES", 1 << 40)
    whole, det_w = linear.lstsq_rows(weight, target, rows)
    assert torch.equal(det_c, det_w) and bool(det_w.all())
    tol = 1e-5 if dtype == torch.float32 else 1e-12
    torch.testing.assert_close(chunked, whole, rtol=tol, atol=tol)
    torch.testing.assert_close(whole, x_true, rtol=10 * tol, atol=10 * tol)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("batch", [2, 64, 256])
def test_shared_rows_semi_normal_and_qr_agree(dtype, batch):
    """Shared rows: the semi-normal equations (well conditioned; a float32 factor for a batch much
    smaller than the matrix, the factor applied as one matrix for a batch of at least half the rows)
    and the QR path (ill conditioned) all reach the least-squares answer."""
    gen = torch.Generator().manual_seed(4)
    well = torch.randn(300, 40, generator=gen, dtype=torch.float64)
    # ill: cond(a)^2 above 1 / sqrt(eps), so the QR path; still determined (float32: cond 100)
    ill = well @ torch.diag(torch.logspace(0, -6 if dtype == torch.float64 else -2, 40, dtype=torch.float64))
    for a, tol in ((well, 1e-4), (ill, 1e-2)) if dtype == torch.float32 else ((well, 1e-10), (ill, 1e-6)):
        a = a.to(dtype)
        x = torch.randn(batch, 40, generator=gen, dtype=torch.float64).to(dtype)
        t = x @ a.T + 1e-3 * torch.randn(batch, 300, generator=gen, dtype=torch.float64).to(dtype)
        rows = torch.ones_like(t, dtype=torch.bool)
        ours, det = linear.lstsq_rows(a, t, rows)
        ref = torch.linalg.lstsq(a.double(), t.double().T).solution.T
        assert bool(det.all())
        scale = float(ref.abs().max())
        torch.testing.assert_close(ours.double(), ref, rtol=tol, atol=tol * scale)


@pytest.mark.parametrize("noise", [0.0, 1e-3])
def test_a_float32_factor_settles_in_two_passes_at_float64_precision(noise, monkeypatch):
    """A float64 batch much smaller than the shared matrix factorises in float32; where the
    refinement clearly contracts (a random 2000 x 256 matrix: ~1e-6 per pass), it stops after the
    pass whose successor would be negligible: three solves (the start and two passes), not four, and
    the answer is the float64 least-squares one to ~1e-14 (clean or not)."""
    gen = torch.Generator().manual_seed(9)
    a = torch.randn(2000, 256, generator=gen, dtype=torch.float64)
    x = torch.randn(4, 256, generator=gen, dtype=torch.float64)
    t = x @ a.T + noise * torch.randn(4, 2000, generator=gen, dtype=torch.float64)
    solves = []
    route = torch.cholesky_solve
    monkeypatch.setattr(torch, "cholesky_solve", lambda b, c, **k: solves.append(c.dtype) or route(b, c, **k))
    ours, det = linear.lstsq_rows(a, t, torch.ones_like(t, dtype=torch.bool))
    assert solves == [torch.float32] * 3 and bool(det.all())
    ref = torch.linalg.lstsq(a, t.T).solution.T
    err = torch.linalg.vector_norm(ours - ref, dim=-1) / torch.linalg.vector_norm(ref, dim=-1)
    assert float(err.max()) < 1e-14


@pytest.mark.parametrize("dtype", DTYPES)
def test_shared_rows_with_a_column_no_row_sees(dtype):
    """Shared rows whose matrix has a zero column (a unit that only feeds hidden pixels, as in the
    convolutional decoder with half the image hidden): finite, the minimum-norm answer (zero on that
    column), reported not determined, and each signal as it is when solved alone (its own Gram with
    a tiny ridge). The QR path's triangular solve used to give NaN for the whole batch."""
    gen = torch.Generator().manual_seed(6)
    a = torch.randn(60, 30, generator=gen, dtype=torch.float64)
    a[:, 11] = 0
    x = torch.randn(5, 30, generator=gen, dtype=torch.float64)
    x[:, 11] = 0
    t = (x @ a.T).to(dtype)
    rows = torch.ones(5, 60, dtype=torch.bool)
    ours, det = linear.lstsq_rows(a.to(dtype), t, rows)
    assert bool(torch.isfinite(ours).all()) and not bool(det.any())
    tol = 1e-10 if dtype == torch.float64 else 1e-3
    torch.testing.assert_close(ours.double(), x, rtol=tol, atol=tol)
    for i in range(5):
        alone, det_alone = linear.lstsq_rows(a.to(dtype), t[i : i + 1], rows[i : i + 1])
        assert not bool(det_alone.any())
        torch.testing.assert_close(alone[0].double(), ours[i].double(), rtol=tol, atol=tol)


@pytest.mark.parametrize("dtype", DTYPES)
def test_shared_rows_too_few_give_the_minimum_norm_solution(dtype):
    """Fewer shared rows than unknowns (60% of the pixels missing): the minimum-norm solution, from a
    QR factor of a^T, equal to LAPACK's SVD-based one; with dependent rows, from the SVD itself."""
    gen = torch.Generator().manual_seed(5)
    a = torch.randn(120, 160, generator=gen, dtype=torch.float64)
    t = torch.randn(300, 120, generator=gen, dtype=torch.float64)
    dependent = a.clone()
    dependent[7] = dependent[3] + dependent[5]
    for mat in (a, dependent):
        rows = torch.ones(300, 120, dtype=torch.bool)
        ours, det = linear.lstsq_rows(mat.to(dtype), t.to(dtype), rows)
        # the pseudo-inverse dropping singular values below the dtype's precision (gelsd's default)
        rtol = torch.finfo(dtype).eps * 160
        ref = t.to(dtype).double() @ torch.linalg.pinv(mat.to(dtype).double(), rtol=rtol).T
        assert not bool(det.any())
        tol = 1e-12 if dtype == torch.float64 else 1e-4
        torch.testing.assert_close(ours.double(), ref, rtol=tol, atol=tol * float(ref.abs().max()))
    # no row at all: zero, the minimum-norm answer
    none = linear.lstsq_rows(a[:0].to(dtype), t[:, :0].to(dtype), torch.ones(300, 0, dtype=torch.bool))[0]
    assert none.shape == (300, 160) and not bool(none.any())


@pytest.mark.parametrize("dtype", DTYPES)
def test_shared_rows_on_each_signals_columns(dtype):
    """Shared rows, each signal on its own columns (latent-pursuit's solve on the support its NNLS
    found): gathered from one Gram matrix, equal to each signal's own least squares, zero outside its
    columns; a signal with more columns than rows, or with two columns equal to 1e-7, is not
    determined."""
    gen = torch.Generator().manual_seed(11)
    m, n, batch = 90, 140, 40
    weight = torch.randn(200, n, generator=gen, dtype=torch.float64)
    weight[:, 9] = weight[:, 4] + 1e-7 * torch.randn(200, generator=gen, dtype=torch.float64)  # nearly equal
    rows = torch.zeros(batch, 200, dtype=torch.bool)
    rows[:, torch.randperm(200, generator=gen)[:m]] = True
    cols = torch.rand(batch, n, generator=gen) < 0.45
    cols[:, 9] = False
    cols[0] = torch.rand(n, generator=gen) < 0.8  # more columns than rows
    cols[1, [4, 9]] = True  # nearly equal columns
    target = torch.randn(batch, 200, generator=gen, dtype=torch.float64)
    x, det = linear.lstsq_rows(weight.to(dtype), target.to(dtype), rows, cols)
    assert linear.rows_shared(rows) and x.dtype == dtype
    assert det.tolist() == [False, False] + [True] * (batch - 2)
    assert not bool((x * ~cols).any())
    a = weight[rows[0]]
    for b in range(2, batch):
        ref = torch.linalg.lstsq(a[:, cols[b]], target[b, rows[0]].unsqueeze(-1)).solution.squeeze(-1)
        tol = 1e-10 if dtype == torch.float64 else 2e-3
        torch.testing.assert_close(x[b, cols[b]].double(), ref, rtol=tol, atol=tol * float(ref.abs().max()))


def test_blas_threads_are_restored_after_every_call():
    """The LAPACK loops run scipy's BLAS on one thread and give the setting back."""
    before = [(lib["filepath"], lib["num_threads"]) for lib in threadpool_info()]
    torch_before = torch.get_num_threads()
    G = geninv.Generator.random([10, 100, 300], seed=0)
    geninv.certify(G, G.sample_latent(4, seed=1))
    linear.cholesky_ex(_spd(3, 128, torch.float64))
    linear.smallest_eigenvalues(_spd(3, 128, torch.float64))
    after = [(lib["filepath"], lib["num_threads"]) for lib in threadpool_info()]
    assert dict(after) | dict(before) == dict(after)  # every library seen before keeps its count
    assert torch.get_num_threads() == torch_before


def test_the_sweep_alone_fits_clean_mnist_signals():
    """The shipped decoder's output layer is ill-conditioned enough that its shared solve needs
    refinement: the layer-wise sweep alone (no refit) must still fit every clean signal to working
    precision (a refinement rule that skipped it left residuals ~100x larger, and the refit had to
    repair them at 5x the cost)."""
    G = geninv.load_generator("mnist", dtype=torch.float64)
    obs = geninv.observe(G, G.sample_latent(50, seed=0))
    result = geninv.invert(G, obs, "latent-pursuit", refit_iter=0)
    assert list(result.statuses) == ["converged"] * 50
    assert all(step.solver == "lstsq" for step in result.steps)
    err = torch.linalg.vector_norm(result.z_hat - obs.z_true, dim=-1) / torch.linalg.vector_norm(obs.z_true, dim=-1)
    assert float(err.max()) < 5e-12


def test_refit_least_squares_in_float32_is_solved_in_float64():
    """The Gauss-Newton step's least squares: float32 in, float32 out, accurate to float32's rounding
    of the float64 answer (not to float32's squared conditioning), rank-deficient systems included."""
    from geninv.inversion.oracle import _lstsq

    gen = torch.Generator().manual_seed(4)
    a = torch.randn(16, 314, 20, generator=gen, dtype=torch.float64)
    a[:, :, 0] *= 1e-3  # condition number ~1e3: float32's own lstsq loses 3 digits here
    a[3, :, 5] = a[3, :, 6]  # rank-deficient: the minimum-norm fallback
    b = torch.randn(16, 314, generator=gen, dtype=torch.float64)
    a32, b32 = a.float(), b.float()
    x32 = _lstsq(a32, b32)
    assert x32.dtype == torch.float32
    ref = torch.linalg.lstsq(a32.double(), b32.double().unsqueeze(-1), driver="gelsd").solution.squeeze(-1)
    good = torch.arange(16) != 3
    # within two float32 roundings of the largest entry (float32's lstsq: ~50 here)
    err = (x32[good].double() - ref[good]).abs().amax(-1)
    assert bool((err <= 2 * torch.finfo(torch.float32).eps * ref[good].abs().amax(-1)).all())
    resid32 = (a32[3] @ x32[3] - b32[3]).double().norm()
    assert float(resid32) <= float((a32[3].double() @ ref[3] - b32[3].double()).norm()) * (1 + 1e-5)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("shape", [(700, 300), (60, 300), (300, 40)], ids=["tall", "wide", "narrow"])
def test_the_shared_gram_is_the_matrix_product_and_keeps_the_thread_counts(dtype, shape):
    """``linear.gram`` (BLAS syrk on one triangle from 256 columns, mirrored: exactly symmetric there)
    equals ``a.T @ a`` to the dtype's rounding, and leaves torch's and the BLAS libraries' thread
    counts as they were."""
    a = torch.randn(*shape, generator=torch.Generator().manual_seed(1), dtype=dtype)
    linear.gram(a.new_ones(2, linear.GRAM_SYRK_MIN_N))  # scipy's BLAS loaded: the same libraries below
    before = (torch.get_num_threads(), [i["num_threads"] for i in threadpool_info()])
    g = linear.gram(a)
    assert (torch.get_num_threads(), [i["num_threads"] for i in threadpool_info()]) == before
    ref = a.double().T @ a.double()
    assert g.dtype == dtype and g.shape == (shape[1], shape[1])
    assert torch.equal(g, g.T) or shape[1] < linear.GRAM_SYRK_MIN_N
    eps = torch.finfo(dtype).eps
    assert float((g.double() - ref).abs().max()) <= 10 * shape[0] * eps * float(ref.diagonal().max())


def _krylov_problem(dtype, *, noise=0.0, weighted=False, batch=12, m=600, n=200, seed=11):
    """Random (m, n) rows, each signal on its own ~55% of them (~330 rows for 200 unknowns)."""
    gen = torch.Generator().manual_seed(seed)
    weight = torch.randn(m, n, generator=gen, dtype=torch.float64)
    x = torch.randn(batch, n, generator=gen, dtype=torch.float64)
    rows = torch.rand(batch, m, generator=gen) < 0.55
    target = x @ weight.T + noise * torch.randn(batch, m, generator=gen, dtype=torch.float64)
    weights = 0.5 + torch.rand(batch, m, generator=gen, dtype=torch.float64) if weighted else None
    return weight.to(dtype), target.to(dtype), rows, None if weights is None else weights.to(dtype)


def _lstsq_reference(weight, target, rows, weights=None):
    """Each signal's weighted least squares on its rows, by float64 QR (torch.linalg.lstsq)."""
    out = []
    for b in range(target.shape[0]):
        r = rows[b]
        w = torch.ones(int(r.sum()), dtype=torch.float64) if weights is None else weights[b, r].double()
        a, t = weight[r].double() * w[:, None], target[b, r].double() * w
        out.append(torch.linalg.lstsq(a, t.unsqueeze(-1)).solution.squeeze(-1))
    return torch.stack(out)


def _spy_krylov(monkeypatch):
    """Force the conjugate-gradient route and record which signals it solved (``done``)."""
    done = []
    route = linear._lstsq_krylov

    def spy(*args, **kwargs):
        out = route(*args, **kwargs)
        done.append(out[1].clone())
        return out

    monkeypatch.setattr(linear, "krylov_pays", lambda weight, rows: True)
    monkeypatch.setattr(linear, "_lstsq_krylov", spy)
    return done


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("case", ["clean", "noisy", "weighted"])
def test_conjugate_gradients_reach_the_least_squares_solution(dtype, case, monkeypatch):
    """Preconditioned conjugate gradients in float32 with working-precision refinement (the route for
    wide layers) give each signal's least-squares solution on its own rows, weighted or not, to the
    working precision: float64 QR's answer to 1e-12 in float64; to float32 precision in float32."""
    weight, target, rows, weights = _krylov_problem(
        dtype, noise=0.0 if case == "clean" else 0.05, weighted=case == "weighted"
    )
    done = _spy_krylov(monkeypatch)
    ours, det = linear.lstsq_rows(weight, target, rows, weights=weights)
    assert len(done) == 1 and bool(done[0].all()), "every signal solved by conjugate gradients"
    assert bool(det.all())
    ref = _lstsq_reference(weight, target, rows, weights)
    err = torch.linalg.vector_norm(ours.double() - ref, dim=-1) / torch.linalg.vector_norm(ref, dim=-1)
    assert float(err.max()) < (1e-12 if dtype == torch.float64 else 1e-5)


@pytest.mark.parametrize("dtype", DTYPES)
def test_conjugate_gradients_in_chunks_give_the_answers_of_one_batch(dtype, monkeypatch):
    """A memory budget that cuts the batch into chunks of 5 signals changes no answer beyond the
    working precision."""
    from geninv import _memory

    weight, target, rows, _ = _krylov_problem(dtype)
    _spy_krylov(monkeypatch)
    whole, _ = linear.lstsq_rows(weight, target, rows)
    monkeypatch.setattr(linear, "chunk_size", lambda batch, per_signal: 5)
    assert _memory.chunk_size(12, 1) == 12  # the budget itself is untouched
    chunked, _ = linear.lstsq_rows(weight, target, rows)
    tol = 1e-5 if dtype == torch.float32 else 1e-13
    torch.testing.assert_close(chunked, whole, rtol=tol, atol=tol)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("defect", ["zero column", "equal columns"])
def test_the_rank_probe_sends_a_signal_with_a_null_space_to_the_direct_solve(dtype, defect, monkeypatch):
    """Signal 0's 300 rows leave a null space (unit 0 unseen, or units 1 and 2 equal on them) although
    the whole layer has full rank. Conjugate gradients on its data converge all the same (they never
    leave the row space); the random probe that rides along in the first round is not recovered,
    so the signal goes to the direct solve, which reports it not determined. The other signals are
    solved by conjugate gradients, exactly."""
    weight, target, rows, _ = _krylov_problem(torch.float64)
    weight = weight.clone()
    if defect == "zero column":
        weight[:300, 0] = 0
    else:
        weight[:300, 2] = weight[:300, 1]
    rows[0] = False
    rows[0, :300] = True
    x = torch.randn(12, 200, generator=torch.Generator().manual_seed(5), dtype=torch.float64)
    target = x @ weight.T
    weight, target = weight.to(dtype), target.to(dtype)
    pre = linear._krylov_preconditioner(weight)
    assert pre is not None, "the layer as a whole is well conditioned"
    grad = (target * rows) @ weight  # the normal equations' right-hand side, W^T t on the rows
    rhs = torch.linalg.solve_triangular(pre[0].mT, grad.T, upper=False).T.float()
    _, data_converged = linear._cg_normal(pre[1], rows.float(), rhs)
    assert bool(data_converged[0]), "the data alone cannot show the null space"
    _, done, _ = linear._lstsq_krylov(weight, target, rows.to(dtype), pre)
    assert not bool(done[0]) and bool(done[1:].all())
    spied = _spy_krylov(monkeypatch)
    ours, det = linear.lstsq_rows(weight, target, rows)
    assert not bool(spied[0][0]) and not bool(det[0]) and bool(det[1:].all())
    tol = 1e-4 if dtype == torch.float32 else 1e-10
    torch.testing.assert_close(ours[1:].double(), x[1:], rtol=tol, atol=tol)


def test_the_krylov_route_is_taken_where_it_pays():
    """The cost rule picks conjugate gradients for the widest benchmark generator's mid layer (4,096 x
    1,024, half the rows per signal, 256 signals) and the middle one's (2,048 x 512), not for the
    [20, 128, 392, 784] generator's (392 x 128, 1024 signals), nor for a batch of 2 (the shared
    preconditioner is not paid back)."""

    def pays(m, n, batch):
        rows = torch.zeros(batch, m, dtype=torch.bool)
        rows[:, : m // 2] = True
        return linear.krylov_pays(torch.zeros(m, n, dtype=torch.float64), rows)

    assert pays(4096, 1024, 256) and pays(2048, 512, 256)
    assert not pays(392, 128, 1024) and not pays(4096, 1024, 2) and not pays(1024, 128, 256)


def test_the_preconditioner_is_made_once_per_matrix():
    """Chunks of one step share the preconditioner; an in-place change of the matrix makes a new one."""
    weight, *_ = _krylov_problem(torch.float64)
    first = linear._krylov_preconditioner(weight)
    assert linear._krylov_preconditioner(weight) is first
    weight.mul_(2)
    second = linear._krylov_preconditioner(weight)
    assert second is not first
    torch.testing.assert_close(second[0], 2 * first[0])


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("method", ["latent-pursuit", "hybrid"])
def test_a_sweep_through_the_krylov_route_recovers_what_the_direct_route_does(dtype, method, monkeypatch):
    """With the mid layer's least squares sent through conjugate gradients (as the cost rule does for
    the wide generators), latent-pursuit and the hybrid recover every clean signal, `converged`, with
    the direct route's latents to the working precision."""
    from geninv.inversion import _layerwise

    G = geninv.Generator.random([10, 64, 256, 512], seed=0, dtype=dtype)
    obs = geninv.observe(G, G.sample_latent(24, seed=1))
    direct = geninv.invert(G, obs, method)
    done = _spy_krylov(monkeypatch)
    wide = lambda weight, rows: weight.shape[1] >= 64  # noqa: E731  (the 256 x 64 mid layer)
    monkeypatch.setattr(linear, "krylov_pays", wide)
    monkeypatch.setattr(_layerwise, "krylov_pays", wide)
    ours = geninv.invert(G, obs, method)
    assert len(done) == 1 and bool(done[0].all())
    assert (ours.statuses == "converged").all() and (direct.statuses == "converged").all()
    tol = 1e-4 if dtype == torch.float32 else 1e-12
    err = geninv.metrics.latent_error(ours.z_hat, obs.z_true)
    assert float(err.max()) < tol
    torch.testing.assert_close(ours.z_hat, direct.z_hat, rtol=tol, atol=tol)
