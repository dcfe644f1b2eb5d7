"""The memory budget: chunked solves give the same answers as one batch."""

import warnings

import numpy as np
import pytest
import torch

import geninv
from geninv import _memory
from geninv.solvers.linear import lstsq_rows


@pytest.fixture
def tiny_budget():
    _memory.set_budget("1MiB")
    yield
    _memory.set_budget(None)


def _run(G, obs, method):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return geninv.invert(G, obs, method)


@pytest.mark.parametrize("method", ["latent-pursuit", "lbp"])
def test_chunked_and_unchunked_results_agree(method, tiny_budget):
    G = geninv.Generator.random([10, 60, 200], seed=0, bias=True, output="sigmoid")
    obs = geninv.observe(G, G.sample_latent(24, seed=1), snr_db=30, seed=2)
    # one signal's Gram of the output step is 3 * (200 * 60 + 60**2) * 8 bytes = 374 kB: chunks of 2
    assert _memory.chunk_size(24, 3 * (200 * 60 + 60 * 60) * 8) == 2
    chunked = _run(G, obs, method)
    _memory.set_budget(None)
    whole = _run(G, obs, method)
    torch.testing.assert_close(chunked.z_hat, whole.z_hat, rtol=1e-10, atol=1e-12)
    assert list(chunked.statuses) == list(whole.statuses)


def test_budget_parsing_and_errors(monkeypatch):
    assert _memory.parse_bytes("2GiB") == 2 << 30 and _memory.parse_bytes("1048576") == 1 << 20
    monkeypatch.setenv("GENINV_MEMORY_BUDGET", "512MiB")
    assert _memory.budget() == 512 << 20
    with pytest.raises(geninv.InvalidValueError, match="GENINV_MEMORY_BUDGET"):
        _memory.parse_bytes("lots")
    with pytest.raises(geninv.InvalidValueError, match="at least 1MiB"):
        _memory.parse_bytes("10")
    assert [s.stop - s.start for s in _memory.chunks(10, _memory.budget() // 3)] == [3, 3, 3, 1]


def _rank_deficient_nnls(batch=40, m=60, n=48, seed=3):
    """A shared-row NNLS like a 60%-missing output step: fewer rows than unknowns, sparse truth."""
    g = torch.Generator().manual_seed(seed)
    w = torch.randn(m, n, generator=g, dtype=torch.float64)
    x_true = torch.rand(batch, n, generator=g, dtype=torch.float64) * (torch.rand(batch, n, generator=g) < 0.3)
    rows = (torch.rand(m, generator=g) < 0.7).expand(batch, m).clone()
    return w, x_true @ w.T, rows, x_true


def test_batched_nnls_chunks_its_systems_to_the_budget(monkeypatch):
    """nnls_gram's free-set systems go in budget-sized chunks (a shared mask used to build all of
    them at once: 6 GiB on a GPU at batch 1024) and give the same answer as one batch."""
    from geninv.solvers import linear

    w, t, rows, x_true = _rank_deficient_nnls()
    a = w * rows[0].to(w.dtype).unsqueeze(-1)
    gram, aty = a.T @ a, (t * rows) @ w
    sizes = []  # signals per stack of factorised free-set systems
    factor = linear.cholesky_ex

    def spy(mats, **kw):
        sizes.append(mats.shape)
        return factor(mats, **kw)

    monkeypatch.setattr(linear, "cholesky_ex", spy)
    whole, kkt_whole = linear.nnls_gram(gram, aty)
    assert max(b for b, _, _ in sizes) == 40
    sizes.clear()
    _memory.set_budget("1MiB")  # up to 6 * 48^2 * 8 bytes = 110 kB per signal
    try:
        chunked, kkt_chunked = linear.nnls_gram(gram, aty)
    finally:
        _memory.set_budget(None)
    assert max(b for b, _, _ in sizes) < 40
    assert all(linear.NNLS_COPIES * b * k * k * 8 <= 1 << 20 for b, k, _ in sizes)
    torch.testing.assert_close(chunked, whole, rtol=0, atol=1e-13)
    assert bool(kkt_chunked.all()) and bool(kkt_whole.all())
    torch.testing.assert_close(whole, x_true, rtol=0, atol=1e-10)  # the sparse truth is the unique optimum


@pytest.mark.parametrize("shared", [True, False])
def test_nnls_rows_and_support_gain_agree_chunked_and_whole(shared):
    from geninv.solvers.linear import nnls_rows, support_gain

    w, t, rows, x_true = _rank_deficient_nnls(batch=24)
    if not shared:
        rows = rows & (torch.rand(rows.shape, generator=torch.Generator().manual_seed(5)) < 0.95)
    support = x_true > 0
    # The batched solver (lam > 0 takes it on the CPU too) and the per-signal support gains.
    whole = nnls_rows(w, t, rows, lam=1e-3), support_gain(w, rows, support)
    _memory.set_budget("1MiB")
    try:
        chunked = nnls_rows(w, t, rows, lam=1e-3), support_gain(w, rows, support)
    finally:
        _memory.set_budget(None)
    torch.testing.assert_close(chunked[0][0], whole[0][0], rtol=0, atol=1e-12)
    assert chunked[0][1].tolist() == whole[0][1].tolist()
    torch.testing.assert_close(chunked[1], whole[1], rtol=1e-12, atol=0)


def test_least_squares_on_a_column_support_is_exact_and_compact():
    """lstsq_rows with a column mask (the support polish of the NNLS step) against numpy, with row
    weights and an empty support; only the chosen rows and columns enter each signal's system."""
    rng = np.random.default_rng(11)
    m, n, batch = 50, 30, 6
    w = rng.normal(size=(m, n))
    rows = rng.random((batch, m)) < 0.6
    cols = rng.random((batch, n)) < 0.4
    cols[2] = False
    weights = rng.uniform(0.5, 2.0, size=(batch, m))
    t = rng.normal(size=(batch, m))
    x, det = lstsq_rows(
        torch.from_numpy(w), torch.from_numpy(t), torch.from_numpy(rows), torch.from_numpy(cols),
        weights=torch.from_numpy(weights),
    )  # fmt: skip
    for b in range(batch):
        expected = np.zeros(n)
        if cols[b].any():
            a = w[rows[b]][:, cols[b]] * weights[b][rows[b], None]
            expected[cols[b]] = np.linalg.lstsq(a, t[b][rows[b]] * weights[b][rows[b]], rcond=None)[0]
        np.testing.assert_allclose(x[b].numpy(), expected, rtol=1e-10, atol=1e-12)
    assert det.tolist() == [bool(rows[b].sum() >= cols[b].sum()) for b in range(batch)]


def _gpu_order(monkeypatch):
    """The GPU's plan on the CPU: BATCHED_NNLS_ITER rounds of the batched NNLS, scipy for what it
    leaves; returns the spies' records (batched iterations, signals sent to scipy)."""
    return _spies(monkeypatch, gpu=True)


def _spies(monkeypatch, gpu: bool):
    from geninv.solvers import linear

    seen = {"iterations": 0, "scipy": 0}
    solve, scipy_nnls = linear._solve_on_sets, linear._scipy_nnls

    def count_solve(gram, rhs, free, work=None, **options):
        seen["iterations"] += work is not None  # the batched NNLS's rounds (other solves keep no work)
        return solve(gram, rhs, free, work, **options)

    def count_scipy(a, tt, r, shared, x, signals):
        seen["scipy"] += len(signals)
        return scipy_nnls(a, tt, r, shared, x, signals)

    if gpu:
        monkeypatch.setattr(linear, "_nnls_plan", lambda device: (linear.BATCHED_NNLS_ITER, False))
    monkeypatch.setattr(linear, "_solve_on_sets", count_solve)
    monkeypatch.setattr(linear, "_scipy_nnls", count_scipy)
    return seen


def test_the_batched_nnls_solves_a_60_percent_missing_step_in_few_iterations(monkeypatch):
    """The GPU path of latent-pursuit's output step (314 rows, 392 unknowns, shared): block principal
    pivoting solves every signal itself within BATCHED_NNLS_ITER rounds (Kim & Park's 3 tries took 89
    rounds here, the stragglers one exchange at a time), and the pursuit is exact."""
    from geninv.solvers import linear

    seen = _gpu_order(monkeypatch)
    G = geninv.Generator.random([20, 128, 392, 784], seed=0)
    obs = geninv.observe(G, G.sample_latent(128, seed=1), mask=geninv.masks.random_pixels(784, 0.6, seed=2))
    res = _run(G, obs, "latent-pursuit")
    assert 0 < seen["iterations"] <= linear.BATCHED_NNLS_ITER and seen["scipy"] == 0
    assert set(res.statuses) == {"converged"}
    assert float(geninv.metrics.latent_error(res.z_hat, obs.z_true).max()) < 1e-9


def test_signals_the_batched_nnls_cannot_solve_go_to_scipy(monkeypatch):
    """With 70% of the pixels missing the free-set systems are singular (235 rows, 392 unknowns):
    block principal pivoting stops after BATCHED_NNLS_ITER rounds (it ran 5 n = 1960 before) and
    scipy's exact NNLS takes the signals, so the result is scipy's own."""
    from scipy.optimize import nnls

    from geninv.inversion._layerwise import output_problem
    from geninv.solvers import linear

    seen = _gpu_order(monkeypatch)
    G = geninv.Generator.random([20, 128, 392, 784], seed=3)
    obs = geninv.observe(G, G.sample_latent(6, seed=1), mask=geninv.masks.random_pixels(784, 0.7, seed=2))
    p = output_problem(G, obs)
    x, kkt = linear.nnls_rows(p.weight, p.shifted_target, p.rows)
    assert seen["iterations"] == linear.BATCHED_NNLS_ITER and seen["scipy"] == 6
    assert bool(kkt.all())
    keep = p.rows[0].numpy()
    for b in range(6):
        ref = nnls(p.weight.numpy()[keep], p.shifted_target[b].numpy()[keep], maxiter=50 * 392)[0]
        np.testing.assert_allclose(x[b].numpy(), ref, rtol=0, atol=1e-12)


@pytest.mark.parametrize("missing", [0.6, 0.7])
def test_the_cpu_hands_wandering_signals_to_scipy(monkeypatch, missing):
    """The CPU's plan: at most CPU_NNLS_ITER rounds of block principal pivoting, and a signal whose
    free-set system turns singular (more free variables than the rows' rank: 70% missing, 235 rows)
    goes to scipy at once. At 60% missing the batched solver keeps nearly every signal; at 70% scipy
    takes them all, after fewer rounds than the cap. Either way the result is scipy's NNLS."""
    from scipy.optimize import nnls

    from geninv.inversion._layerwise import output_problem
    from geninv.solvers import linear

    seen = _spies(monkeypatch, gpu=False)
    G = geninv.Generator.random([20, 128, 392, 784], seed=3)
    obs = geninv.observe(G, G.sample_latent(32, seed=1), mask=geninv.masks.random_pixels(784, missing, seed=2))
    p = output_problem(G, obs)
    x, kkt = linear.nnls_rows(p.weight, p.shifted_target, p.rows)
    assert 0 < seen["iterations"] <= linear.CPU_NNLS_ITER
    if missing == 0.6:
        assert seen["scipy"] <= 4
    else:
        assert seen["scipy"] == 32 and seen["iterations"] < linear.CPU_NNLS_ITER
    assert bool(kkt.all())
    keep = p.rows[0].numpy()
    for b in range(32):
        ref = nnls(p.weight.numpy()[keep], p.shifted_target[b].numpy()[keep], maxiter=50 * 392)[0]
        np.testing.assert_allclose(x[b].numpy(), ref, rtol=0, atol=1e-10)
