"""The joint Gauss-Newton refit of z: float32 Jacobians for float64 generators, kept while the pattern
holds, must still land on the float64 least-squares point."""

import numpy as np
import pytest
import torch

import geninv
import geninv.inversion.oracle as oracle
from geninv.inversion.oracle import affine_map, refit, refit_on_pattern


def _ls_on_pattern(G, obs, pattern):
    """Least squares in z on ``pattern`` from J in float64 (identity output, mask): the reference."""
    rows = obs.operator.selection()
    jac, c = affine_map(G, pattern, rows)
    return torch.linalg.lstsq(jac, (obs.y - c).unsqueeze(-1), driver="gelsd").solution.squeeze(-1)


def _rel(a, b):
    return float((torch.linalg.vector_norm(a - b, dim=-1) / torch.linalg.vector_norm(b, dim=-1)).max())


def test_refit_on_a_fixed_pattern_reaches_float64_least_squares_with_a_float32_jacobian(monkeypatch):
    G = geninv.Generator.random([20, 128, 392, 784], seed=0, bias=True)
    mask = geninv.masks.random_pixels(784, 0.6, seed=2)
    obs = geninv.observe(G, G.sample_latent(32, seed=1), mask=mask, snr_db=20, seed=3)
    pattern = obs.trace_true.supports[:-1]
    built = []
    real = oracle._jacobian_t
    monkeypatch.setattr(oracle, "_jacobian_t", lambda *a, **k: built.append(a[3]) or real(*a, **k))
    z = refit_on_pattern(G, obs, torch.zeros_like(obs.z_true), pattern)
    assert built == [torch.float32]  # one J, in float32, for the whole batch
    ref = _ls_on_pattern(G, obs, pattern)
    assert _rel(z, ref) < 1e-12  # float64's least squares, not float32's (~1e-6)


def test_the_jacobian_is_rebuilt_only_where_the_pattern_moved(monkeypatch):
    G = geninv.Generator.random([20, 128, 392, 784], seed=0)
    mask = geninv.masks.random_pixels(784, 0.6, seed=2)
    obs = geninv.observe(G, G.sample_latent(64, seed=1), mask=mask)
    rebuilt = []
    real = oracle._jacobian_t
    monkeypatch.setattr(oracle, "_jacobian_t", lambda *a, **k: rebuilt.append(a[4]) or real(*a, **k))
    # From the truth the pattern never moves: one J per signal, then only the polish.
    z = refit(G, obs, obs.z_true)
    assert sum(rebuilt) == 64
    assert _rel(z, obs.z_true) < 1e-13
    # From a start 5% off, the pattern moves for some signals at some iterations, not all at each.
    rebuilt.clear()
    noise = torch.randn(obs.z_true.shape, generator=torch.Generator().manual_seed(7), dtype=torch.float64)
    z0 = obs.z_true + 0.05 * noise * obs.z_true.norm(dim=-1, keepdim=True) / noise.norm(dim=-1, keepdim=True)
    iterations = []
    real_dir = oracle._direction
    monkeypatch.setattr(oracle, "_direction", lambda *a: iterations.append(a[0].shape[0]) or real_dir(*a))
    z = refit(G, obs, z0)
    assert _rel(z, obs.z_true) < 1e-12
    assert 64 <= sum(rebuilt) < sum(iterations)


def _moved(pattern, share, seed):
    rng = torch.Generator().manual_seed(seed)
    return tuple(p ^ (torch.rand(p.shape, generator=rng) < share) for p in pattern)


@pytest.mark.parametrize(
    "make, rows",
    [
        (lambda dt: geninv.Generator.random([20, 128, 392, 784], seed=0, dtype=dt), 314),
        (lambda dt: geninv.Generator.random([8, 30, 50, 70, 90], seed=0, dtype=dt, hidden="leaky_relu"), None),
        (lambda dt: geninv.Generator.random_conv(4, [4, 3, 1], size=2, seed=0, dtype=dt), 40),
    ],
    ids=["relu-3-layers", "leaky-4-layers", "conv"],
)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_a_patched_jacobian_equals_a_rebuilt_one(monkeypatch, make, rows, dtype):
    """Where a few units of a signal's pattern moved, J (and the kept hidden Jacobians) are patched
    by the moved units' directions instead of rebuilt: the same matrices to the rounding of J's dtype,
    without a rebuild; a float64 J (an ill-conditioned signal) to float64's."""
    G = make(dtype)
    batch = 24
    out = None if rows is None else torch.randperm(G.output_dim, generator=torch.Generator().manual_seed(0))[:rows]
    out = None if out is None else out.sort().values
    z = G.sample_latent(batch, seed=1)
    pattern = G.trace(z).supports[:-1]
    moved = _moved(pattern, 0.03, seed=2)
    idx = torch.arange(batch)
    real, builds = oracle._jacobian_t, []
    for exact in (False, True):
        jac = oracle._Jacobians(G, out, batch)
        jac.get(idx, pattern, oracle._slopes(G, pattern, dtype))
        if exact:
            jac.exact(idx)
            jac.get(idx, pattern, oracle._slopes(G, pattern, dtype))
        builds.clear()
        monkeypatch.setattr(oracle, "_jacobian_t", lambda *a, **k: builds.append(a[4]) or real(*a, **k))
        patched = jac.get(idx, moved, oracle._slopes(G, moved, dtype)).clone()
        monkeypatch.setattr(oracle, "_jacobian_t", real)
        assert sum(builds) < batch // 2  # most signals were patched, not rebuilt
        inner = []
        ref = real(G, oracle._slopes(G, moved, jac.jt.dtype), out, jac.jt.dtype, batch, keep=inner)
        tol = 1e-13 if jac.jt.dtype == torch.float64 else 2e-6
        assert float((patched - ref).abs().max()) <= tol * float(ref.abs().max())
        assert len(jac.inner) == len(inner) == G.n_layers - 2
        for kept, fresh in zip(jac.inner, inner):
            assert float((kept - fresh).abs().max()) <= tol * float(fresh.abs().max())
        assert all(bool((h == p).all()) for h, p in zip(jac.held, moved))


def test_the_refit_patches_the_jacobian_where_few_units_moved(monkeypatch):
    """At 60% missing the refit walks through several patterns; after the first iterations most
    signals move a few units, and their J is patched: fewer rebuilt signals, the same exact answer."""
    G = geninv.Generator.random([20, 128, 392, 784], seed=0)
    mask = geninv.masks.random_pixels(784, 0.6, seed=2)
    obs = geninv.observe(G, G.sample_latent(64, seed=1), mask=mask)
    built, patched = [], []
    real, real_patch = oracle._jacobian_t, oracle._Jacobians._patch
    monkeypatch.setattr(oracle, "_jacobian_t", lambda *a, **k: built.append(a[4]) or real(*a, **k))

    def spy(self, idx, loc, *rest):
        patched.append(loc.numel())
        real_patch(self, idx, loc, *rest)

    monkeypatch.setattr(oracle._Jacobians, "_patch", spy)
    res = geninv.invert(G, obs, "hybrid")
    assert _rel(res.z_hat, obs.z_true) < 1e-12
    assert set(res.statuses) == {"converged"}
    assert sum(patched) >= 64 and sum(built) < 3 * 64
    monkeypatch.setattr(oracle._Jacobians, "_patch", lambda *a: None)
    monkeypatch.setattr(oracle, "patch_costs", lambda *a: (0, [1] * 8))  # never patch: rebuild
    built.clear()
    again = geninv.invert(G, obs, "hybrid")
    assert sum(built) > 4 * 64
    assert _rel(again.z_hat, obs.z_true) < 1e-12


def test_an_ill_conditioned_jacobian_is_rebuilt_in_float64(monkeypatch):
    """Two latent directions 1e-5 apart: J's Gram has condition ~1e11, where a float32 J would make
    each iteration gain almost nothing; those signals get J in float64 and still converge."""
    G = geninv.Generator.random([6, 40, 120], seed=0, bias=True)
    w = G.weight_0.clone()
    w[:, 1] = w[:, 0] + 1e-5 * torch.randn(w.shape[0], generator=torch.Generator().manual_seed(1), dtype=w.dtype)
    G.weight_0.copy_(w)
    obs = geninv.observe(G, G.sample_latent(8, seed=1), snr_db=30, seed=2)
    pattern = obs.trace_true.supports[:-1]
    dtypes = []
    real = oracle._jacobian_t
    monkeypatch.setattr(oracle, "_jacobian_t", lambda *a, **k: dtypes.append(a[3]) or real(*a, **k))
    z = refit_on_pattern(G, obs, torch.zeros_like(obs.z_true), pattern)
    assert dtypes[0] == torch.float32 and torch.float64 in dtypes
    ref = _ls_on_pattern(G, obs, pattern)
    # The residual is what least squares fixes here (z itself is determined only to ~1e-5 cond).
    rows = obs.operator.selection()
    jac, c = affine_map(G, pattern, rows)
    grad = (jac.mT @ ((jac @ z.unsqueeze(-1)).squeeze(-1) + c - obs.y).unsqueeze(-1)).squeeze(-1)
    grad_ref = (jac.mT @ ((jac @ ref.unsqueeze(-1)).squeeze(-1) + c - obs.y).unsqueeze(-1)).squeeze(-1)
    scale = float(torch.linalg.matrix_norm(jac, ord=2).max() * obs.y.norm(dim=-1).max())
    assert float(grad.abs().max()) <= 1e3 * float(grad_ref.abs().max()) + 1e-12 * scale


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_hybrid_at_60_percent_missing_is_exact_in_both_dtypes(dtype):
    G = geninv.Generator.random([20, 128, 392, 784], seed=0, dtype=dtype)
    mask = geninv.masks.random_pixels(784, 0.6, seed=2)
    obs = geninv.observe(G, G.sample_latent(48, seed=1), mask=mask)
    res = geninv.invert(G, obs, "hybrid")
    tol = 1e-12 if dtype == torch.float64 else 1e-4
    assert _rel(res.z_hat.double(), obs.z_true.double()) < tol
    assert set(res.statuses) == {"converged"}


@pytest.mark.parametrize("missing", [0.0, 0.6])
def test_where_the_fast_pass_fits_every_signal_it_is_the_hybrids_answer(monkeypatch, missing):
    """The hybrid's first (fast) pass is latent-pursuit with undetermined steps left to the refit;
    where it fits every signal, the hybrid returns that result as its own, without tracing z again:
    the same estimates, layers, supports and steps, as many traces of the generator, converged."""
    G = geninv.Generator.random([20, 128, 392, 784], seed=0)
    mask = geninv.masks.random_pixels(784, missing, seed=2) if missing else None
    obs = geninv.observe(G, G.sample_latent(16, seed=1), mask=mask)
    traces = []
    real = geninv.Generator._trace
    monkeypatch.setattr(geninv.Generator, "_trace", lambda self, *a, **k: traces.append(1) or real(self, *a, **k))
    fast = geninv.invert(G, obs, "latent-pursuit", undetermined="joint")
    n_fast, traces[:] = len(traces), []
    res = geninv.invert(G, obs, "hybrid")
    assert len(traces) == n_fast
    assert res.method == "hybrid" and res.options["joint_signals"] == 0 and set(res.statuses) == {"converged"}
    assert torch.equal(res.z_hat, fast.z_hat)
    assert all(torch.equal(a, b) for a, b in zip(res.layers + res.supports, fast.layers + fast.supports, strict=True))
    assert [s.solver for s in res.steps] == [s.solver for s in fast.steps]
    assert float(geninv.metrics.latent_error(res.z_hat, obs.z_true).max()) < 1e-12


def test_the_sweeps_refit_goes_through_the_pattern_only_where_it_must(monkeypatch):
    """Clean signals are refitted straight from the sweep's estimate (at 60% missing that fits them
    all: no fixed-pattern stage); noisy signals take the fixed-pattern stage first, every one."""
    G = geninv.Generator.random([20, 128, 392, 784], seed=0)
    mask = geninv.masks.random_pixels(784, 0.6, seed=2)
    on_pattern = []
    real = oracle.refit_on_pattern
    monkeypatch.setattr(
        oracle, "refit_on_pattern", lambda G, obs, *a, **k: on_pattern.append(obs.batch_size) or real(G, obs, *a, **k)
    )
    clean = geninv.observe(G, G.sample_latent(16, seed=1), mask=mask)
    res = geninv.invert(G, clean, "hybrid")
    assert on_pattern == [] and set(res.statuses.tolist()) == {"converged"}
    assert float(geninv.metrics.latent_error(res.z_hat, clean.z_true).max()) < 1e-12
    noisy = geninv.observe(G, G.sample_latent(16, seed=1), mask=mask, snr_db=30, seed=3)
    geninv.invert(G, noisy, "hybrid")
    assert on_pattern and on_pattern[0] == 16


def test_a_signal_is_recovered_alike_alone_and_in_a_batch_when_a_unit_draws_only_hidden_pixels():
    """A unit of the last hidden layer whose weights reach only hidden pixels leaves a zero column in
    the shared output step. Every signal is recovered exactly, alone or with others (the shared
    solve used to return NaN for the whole batch, sending every signal to the slow fallbacks)."""
    G0 = geninv.Generator.random([10, 60, 120, 240], seed=4)
    weights = [G0.weight_of(i).clone() for i in range(3)]
    mask = np.zeros(240, dtype=bool)
    mask[:120] = True  # the first half observed
    weights[2][:120, 5] = 0  # unit 5 of the last hidden layer draws only hidden pixels
    G = geninv.Generator.from_weights(weights, dtype=torch.float64)
    z = G.sample_latent(6, seed=1)
    # the hybrid's fast pass: minimum-norm least squares where a step is not determined, then the refit
    batch = geninv.invert(G, geninv.observe(G, z, mask=mask), "latent-pursuit", undetermined="joint")
    assert all(np.isfinite(step.residual).all() for step in batch.steps)
    for i in range(6):
        alone = geninv.invert(G, geninv.observe(G, z[i : i + 1], mask=mask), "latent-pursuit", undetermined="joint")
        assert alone.statuses[0] == batch.statuses[i] == "converged"
        torch.testing.assert_close(batch.z_hat[i], alone.z_hat[0], rtol=1e-9, atol=1e-9)
    assert float(geninv.metrics.latent_error(batch.z_hat, z).max()) < 1e-9


@pytest.mark.parametrize("masked", [True, False], ids=["half the pixels", "every pixel"])
def test_a_refit_restricts_the_output_layer_at_most_once(masked, monkeypatch):
    """The refit computes the output layer on the observed pixels only, in every iteration: the
    restricted copy of the layer is made once per refit (under a mask), or never (every pixel
    observed, where it would be a copy of the whole layer), and the estimates are those of a
    restriction made afresh for every call, bit for bit. A change of the weights in place makes a
    new copy."""
    from geninv.generator import Generator
    from geninv.operators import Dense

    G = geninv.Generator.random([10, 32, 64, 128], seed=0, bias=True)
    mask = geninv.masks.random_pixels(128, 0.5, seed=2) if masked else None
    obs = geninv.observe(G, G.sample_latent(8, seed=1), mask=mask, snr_db=30, seed=3)
    copies = []
    restrict = Dense.restrict
    monkeypatch.setattr(Dense, "restrict", lambda self, rows: copies.append(len(rows)) or restrict(self, rows))
    ours = geninv.invert(G, obs, "hybrid")
    assert copies == ([64] if masked else [])
    layer_on = Generator._layer_on

    def afresh(self, i, out_rows):
        self._restricted = None
        return layer_on(self, i, out_rows)

    monkeypatch.setattr(Generator, "_layer_on", afresh)
    fresh = geninv.invert(G, obs, "hybrid")
    assert torch.equal(ours.z_hat, fresh.z_hat)
    monkeypatch.setattr(Generator, "_layer_on", layer_on)
    if masked:
        rows = obs.operator.selection()
        op, _ = G._layer_on(G.n_layers - 1, rows)
        assert G._layer_on(G.n_layers - 1, rows)[0] is op
        with torch.no_grad():
            G.weight_2.mul_(2)
        doubled, _ = G._layer_on(G.n_layers - 1, rows)
        torch.testing.assert_close(doubled.dense(), 2 * op.dense())
