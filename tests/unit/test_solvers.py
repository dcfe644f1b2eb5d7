"""Batched torch solvers against their cvxpy references on small random problems."""

import itertools

import numpy as np
import pytest
import torch

import geninv
from geninv.solvers import reference
from geninv.solvers.linear import lstsq_rows, nnls_rows

TOL = 1e-6  # CLARABEL's accuracy; the torch solvers are exact to ~1e-12


@pytest.mark.parametrize("seed", range(4))
def test_nnls_matches_cvxpy(seed):
    rng = np.random.default_rng(seed)
    w = rng.normal(size=(24, 10))  # overdetermined on the kept rows: a unique minimiser
    rows = torch.from_numpy(rng.random((3, 24)) < 0.8)
    t = torch.from_numpy(rng.normal(size=(3, 24)))
    x, kkt = nnls_rows(torch.from_numpy(w), t, rows)
    assert bool(kkt.all())
    for b in range(3):
        r = rows[b].numpy()
        ref = reference.constrained_lstsq(w[r], t[b].numpy()[r], nonneg=True)
        tb = t[b].numpy()[r]
        assert np.sum((w[r] @ x[b].numpy() - tb) ** 2) <= np.sum((w[r] @ ref - tb) ** 2) + 1e-7
        np.testing.assert_allclose(x[b].numpy(), ref, atol=TOL * 10)


def test_nnls_reference_with_parameters_matches():
    rng = np.random.default_rng(5)
    a = rng.normal(size=(10, 6))
    solve = reference.NNLSReference(a)
    for _ in range(2):
        b = rng.normal(size=10)
        x, _ = nnls_rows(torch.from_numpy(a), torch.from_numpy(b)[None], torch.ones(1, 10, dtype=torch.bool))
        np.testing.assert_allclose(x[0].numpy(), solve(b), atol=1e-5)


def test_nonneg_lasso_matches_cvxpy():
    rng = np.random.default_rng(1)
    w = rng.normal(size=(15, 10))
    t = rng.normal(size=15)
    x, _ = nnls_rows(torch.from_numpy(w), torch.from_numpy(t)[None], torch.ones(1, 15, dtype=torch.bool), lam=0.7)
    ref = reference.constrained_lstsq(w, t, nonneg=True, lam=0.7)
    np.testing.assert_allclose(x[0].numpy(), ref, atol=1e-5)


def test_lstsq_rows_matches_numpy_and_flags_underdetermined():
    rng = np.random.default_rng(2)
    w = rng.normal(size=(20, 6))
    rows = torch.ones(2, 20, dtype=torch.bool)
    rows[1, 4:] = False  # only 4 rows for 6 unknowns
    t = torch.from_numpy(rng.normal(size=(2, 20)))
    x, det = lstsq_rows(torch.from_numpy(w), t, rows)
    np.testing.assert_allclose(x[0].numpy(), np.linalg.lstsq(w, t[0].numpy(), rcond=None)[0], rtol=1e-10)
    assert det.tolist() == [True, False]


def test_shared_rows_factorization_is_exact():
    rng = np.random.default_rng(3)
    w = torch.from_numpy(rng.normal(size=(30, 8)))
    x_true = torch.from_numpy(rng.normal(size=(5, 8)))
    rows = torch.ones(5, 30, dtype=torch.bool)
    x, det = lstsq_rows(w, x_true @ w.T, rows)
    torch.testing.assert_close(x, x_true, rtol=1e-12, atol=1e-12)
    assert bool(det.all())


def test_basis_pursuit_and_lasso_references_run():
    rng = np.random.default_rng(4)
    a = rng.normal(size=(8, 16))
    x0 = np.zeros(16)
    x0[[2, 9]] = [1.0, -2.0]
    np.testing.assert_allclose(reference.basis_pursuit(a, a @ x0), x0, atol=1e-6)
    assert np.abs(reference.lasso(a, a @ x0, 0.01) - x0).max() < 0.05


@pytest.mark.parametrize(
    ("hidden", "output", "operator"),
    [("relu", "identity", "mask"), ("leaky_relu", "sigmoid", "gaussian"), ("relu", "tanh", None)],
)
def test_gd_hand_written_gradient_equals_autograd(hidden, output, operator):
    from geninv.inversion.gradient import _loss, _loss_and_grad

    G = geninv.Generator.random([5, 20, 60], seed=1, bias=True, hidden=hidden, output=output)
    z = G.sample_latent(4, seed=2)
    if operator == "mask":
        obs = geninv.observe(G, z, mask=geninv.masks.random_pixels(60, 0.4, seed=3))
    elif operator == "gaussian":
        obs = geninv.observe(G, z, operator=geninv.GaussianMatrix(30, 60, seed=4))
    else:
        obs = geninv.observe(G, z)
    start = G.sample_latent(4, seed=5)
    loss, grad = _loss_and_grad(G, obs, start, obs.y, 0.1)
    za = start.clone().requires_grad_(True)
    ref = _loss(G, obs, za, obs.y, 0.1)
    (ref_grad,) = torch.autograd.grad(ref.sum(), za)
    torch.testing.assert_close(loss, ref.detach(), rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(grad, ref_grad, rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("shared", [True, False])
@pytest.mark.parametrize(("m", "n", "k"), [(40, 12, 12), (30, 40, 10)])  # over- and under-determined
def test_batched_nnls_matches_scipy(shared, m, n, k):
    """nnls_gram (batched block principal pivoting, no per-signal loop) reaches scipy's NNLS optimum."""
    from scipy.optimize import nnls

    from geninv.solvers.linear import nnls_gram

    rng = np.random.default_rng(7)
    batch = 6
    a = rng.normal(size=(batch, m, n)) if not shared else np.broadcast_to(rng.normal(size=(m, n)), (batch, m, n))
    x_true = np.abs(rng.normal(size=(batch, n))) * (rng.random((batch, n)) < k / n)
    t = np.einsum("bmn,bn->bm", a, x_true)
    at = torch.from_numpy(np.ascontiguousarray(a))
    gram = at[0].T @ at[0] if shared else at.transpose(1, 2) @ at
    aty = torch.einsum("bmn,bm->bn", at, torch.from_numpy(t))
    x, kkt = nnls_gram(gram, aty)
    assert bool(kkt.all())
    for b in range(batch):
        ref = nnls(a[b], t[b])[0]
        obj = lambda v: np.sum((a[b] @ v - t[b]) ** 2)  # noqa: B023, E731
        assert obj(x[b].numpy()) <= obj(ref) + 1e-10
    np.testing.assert_allclose(x.numpy(), x_true, atol=1e-8)  # unique here: the sparse truth


def test_batched_nonneg_lasso_matches_cvxpy():
    from geninv.solvers.linear import nnls_gram

    rng = np.random.default_rng(8)
    w = rng.normal(size=(20, 8))
    t = rng.normal(size=(3, 20))
    lam = torch.tensor([0.1, 0.5, 2.0], dtype=torch.float64)
    wt = torch.from_numpy(w)
    x, kkt = nnls_gram(wt.T @ wt, torch.from_numpy(t) @ wt, lam=lam)
    assert bool(kkt.all())
    for b in range(3):
        ref = reference.constrained_lstsq(w, t[b], nonneg=True, lam=float(lam[b]))
        np.testing.assert_allclose(x[b].numpy(), ref, atol=1e-5)


def test_mixed_precision_least_squares_is_float64_accurate_and_falls_back():
    """float64 least squares factorises in float32 and refines in float64: same answer as float64;
    an ill-conditioned signal (condition ~1e9, beyond float32) is re-solved in float64."""
    from geninv.solvers import linear

    rng = np.random.default_rng(9)
    n, m, batch = 64, 150, 5
    w = rng.normal(size=(m, n))
    w[:, -1] = w[:, 0] + 1e-9 * rng.normal(size=m)  # nearly dependent columns
    rows = torch.from_numpy(rng.random((batch, m)) < 0.8)
    rows[0] = True
    x_true = rng.normal(size=(batch, n))
    t = torch.from_numpy(x_true @ w.T)
    wt = torch.from_numpy(w)
    mixed, det_m = linear.lstsq_rows(wt, t, rows)
    plain, det_p = linear.lstsq_rows(wt, t, rows, mixed=False)
    torch.testing.assert_close(mixed, plain, rtol=1e-6, atol=1e-6)
    assert det_m.tolist() == det_p.tolist()
    w2 = rng.normal(size=(m, n))
    t2 = torch.from_numpy(x_true @ w2.T)
    x2, det2 = linear.lstsq_rows(torch.from_numpy(w2), t2, rows)
    np.testing.assert_allclose(x2.numpy(), x_true, rtol=0, atol=1e-11)
    assert bool(det2.all())


def test_float32_least_squares_on_per_signal_rows_refines_and_falls_back(monkeypatch):
    """float32 least squares on per-signal rows takes the same route as float64 (float32 factor,
    refinement with the shared matrix): float32-accurate, the same answer and flags as the plain
    float32 path, and an ill-conditioned signal (condition ~1e6 of the rows, beyond float32's
    threshold) re-solved by the plain path and reported not determined, as there."""
    from geninv.solvers import linear

    rng = np.random.default_rng(10)
    n, m, batch = 128, 300, 6
    w = rng.normal(size=(m, n))
    rows = torch.from_numpy(rng.random((batch, m)) < 0.7)
    x_true = rng.normal(size=(batch, n))
    wt = torch.from_numpy(w).float()
    t = torch.from_numpy(x_true @ w.T).float()
    refined = []
    route = linear._lstsq_mixed
    monkeypatch.setattr(linear, "_lstsq_mixed", lambda *a, **k: refined.append(a[0].dtype) or route(*a, **k))
    x, det = linear.lstsq_rows(wt, t, rows)
    assert refined == [torch.float32]
    plain, det_p = linear.lstsq_rows(wt, t, rows, mixed=False)
    assert x.dtype == torch.float32 and bool(det.all()) and det.tolist() == det_p.tolist()
    rel = np.linalg.norm(x.double().numpy() - x_true, axis=1) / np.linalg.norm(x_true, axis=1)
    assert rel.max() < 2e-5, rel
    torch.testing.assert_close(x, plain, rtol=1e-4, atol=1e-4)
    w_bad = w.copy()
    w_bad[:, -1] = w_bad[:, 0] + 1e-6 * rng.normal(size=m)
    wt_bad = torch.from_numpy(w_bad).float()
    t_bad = torch.from_numpy(x_true @ w_bad.T).float()
    x_b, det_b = linear.lstsq_rows(wt_bad, t_bad, rows)
    plain_b, det_pb = linear.lstsq_rows(wt_bad, t_bad, rows, mixed=False)
    assert det_b.tolist() == det_pb.tolist() == [False] * batch
    assert bool(torch.isfinite(x_b).all())
    torch.testing.assert_close(x_b, plain_b)


@pytest.mark.parametrize("method", ["gd", "plugin"])
def test_more_iterations_never_return_a_worse_fit(method):
    """gd and plugin return their lowest-loss iterate: the first N steps of a longer run are the
    same steps, so a bigger budget can only lower the returned loss, even with a step size large
    enough to make Adam oscillate (a last-iterate answer would go up and down)."""
    from geninv.inversion.status import residual_sq

    G = geninv.Generator.random([10, 40, 120], seed=0)
    z = G.sample_latent(6, seed=1)
    obs = geninv.observe(G, z, seed=2)
    chain = G.weight(0).T
    for i in range(1, G.n_layers):
        chain = chain @ G.weight(i).T
    default_eta = 2.0 ** (G.n_layers - 1) / float(torch.linalg.matrix_norm(chain, ord=2)) ** 2
    losses = []
    for n_iter in (25, 50, 100, 200, 400):
        step = {"lr": 0.5} if method == "gd" else {"eta": 4 * default_eta}
        res = geninv.invert(G, obs, method=method, n_iter=n_iter, restarts=1, seed=3, **step)
        losses.append(residual_sq(G, obs, res.z_hat))
    for shorter, longer in itertools.pairwise(losses):
        assert torch.all(longer <= shorter), (shorter, longer)
    assert torch.any(losses[-1] < losses[0])  # and the budget is used


@pytest.mark.parametrize(
    "method, options",
    [
        ("gd", {"lr": 1e20, "patience": 10, "max_decays": 200}),  # steps that overflow, then a fit
        ("gd", {"optimizer": "momentum", "lr": 1e-3}),
        ("plugin", {}),
    ],
)
@pytest.mark.parametrize("shortcut", ["_every_row_moves", "_quiet"])
def test_the_whole_batch_step_of_gd_is_the_per_row_step(method, options, shortcut, monkeypatch):
    """While every row moves, gd and plugin update whole tensors instead of gathering the moving
    rows, and in a step where no row's patience window ends and none is at the floor they skip the
    decay and stopping bookkeeping: the same numbers, bit for bit, as without either shortcut (each
    turned off here), including the rows that go back to their best iterate after a step that
    overflowed (1e20 in float32); with room for enough decays, gd then fits every signal."""
    from geninv.inversion import gradient

    G = geninv.Generator.random([10, 40, 120], seed=0, dtype=torch.float32)
    z = G.sample_latent(4, seed=1)
    obs = geninv.observe(G, z, seed=2)
    run = {"n_iter": 1500 if method == "gd" else 600, "restarts": 2, "seed": 3, **options}
    whole = geninv.invert(G, obs, method=method, **run)
    monkeypatch.setattr(gradient, shortcut, lambda *args: False)
    per_row = geninv.invert(G, obs, method=method, **run)
    assert torch.equal(whole.z_hat, per_row.z_hat)
    assert np.array_equal(whole.history.loss, per_row.history.loss)
    assert list(whole.statuses) == list(per_row.statuses)
    assert whole.forward_passes == per_row.forward_passes
    if "patience" in options:
        assert list(whole.statuses) == ["converged"] * 4
