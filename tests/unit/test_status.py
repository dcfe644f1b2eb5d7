"""One status rule for every method: ``converged`` exactly when the estimate fits the data.

The rule is written out again here, independently of geninv.inversion.status: the residual on the
observed entries is within 3 standard deviations of the noise's chi-square mean, or, clean, at
working precision (1000 eps of the dtype, relative).
"""

import math
import warnings

import numpy as np
import pytest
import torch

import geninv

METHODS = geninv.methods()
FAST = {"gd": {"n_iter": 3000}, "plugin": {"n_iter": 3000}, "hybrid": {"gd_iter": 3000}}
LAYERWISE = ("latent-pursuit", "lbp", "lp", "hybrid")


def _fits(G, obs, z) -> np.ndarray:
    y = obs.y.double()
    r = obs.operator.forward(G(z)).double() - y
    m = y.shape[1]
    noisy = obs.noise_sigma.double() ** 2 * (m + 3 * math.sqrt(2 * m))
    clean = (1000 * torch.finfo(G.dtype).eps * y.norm(dim=-1)) ** 2
    return (r.pow(2).sum(-1) <= torch.maximum(noisy, clean)).numpy()


def _observation(G, kind: str):
    z = G.sample_latent(3, seed=1)
    if kind == "clean":
        return geninv.observe(G, z)
    if kind == "masked":
        return geninv.observe(G, z, mask=geninv.masks.random_pixels(G.output_dim, 0.25, seed=2))
    if kind == "noisy":
        return geninv.observe(G, z, snr_db=20, seed=2)
    # Measurements no latent explains: noise-free random numbers of the output's scale.
    y = torch.randn(3, G.output_dim, generator=torch.Generator().manual_seed(5), dtype=torch.float64)
    return geninv.Observation.from_measurements(G, y * G.generate(z).std())


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=["float32", "float64"])
@pytest.mark.parametrize("kind", ["clean", "masked", "noisy", "out_of_range"])
@pytest.mark.parametrize("method", METHODS)
def test_converged_exactly_when_the_data_fit(method, kind, dtype):
    G = geninv.Generator.random([4, 16, 48], seed=0, dtype=dtype)
    obs = _observation(G, kind)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        res = geninv.invert(G, obs, method, **FAST.get(method, {}))
    fits = _fits(G, obs, res.z_hat)
    np.testing.assert_array_equal(res.statuses == "converged", fits)
    if kind == "out_of_range":
        assert not fits.any()
        assert set(res.statuses) <= {"not_fit", "max_iter", "infeasible", "solver_error"}
    if kind in ("clean", "masked") and method in LAYERWISE:
        assert fits.all(), res.statuses  # solved exactly, float32 included: converged


def test_status_names_why_it_did_not_fit():
    G = geninv.Generator.random([4, 16, 48], seed=0)
    obs = _observation(G, "clean")
    with pytest.warns(geninv.ConvergenceWarning, match="max_iter"):
        res = geninv.invert(G, obs, "gd", n_iter=5, restarts=1)
    assert set(res.statuses) == {"max_iter"}
    obs = _observation(G, "out_of_range")
    with pytest.warns(geninv.ConvergenceWarning, match="do not fit the data"):
        res = geninv.invert(G, obs, "latent-pursuit")
    assert "converged" not in set(res.statuses)


def test_the_fit_from_a_callers_output_is_the_same_rule():
    """``data_fit(..., output=G(z))`` (the sweep passes its trace's output instead of a second forward
    pass) decides exactly as the independent rule, for estimates that fit and that do not."""
    from geninv.inversion.status import data_fit

    G = geninv.Generator.random([6, 30, 60], seed=0)
    z = G.sample_latent(4, seed=1)
    obs = geninv.observe(G, z, mask=geninv.masks.random_pixels(60, 0.3, seed=2))
    z_hat = z.clone()
    z_hat[1:3] += 1e-3 * torch.randn(2, 6, generator=torch.Generator().manual_seed(3), dtype=z.dtype)
    got = data_fit(G, obs, z_hat, output=G._trace(z_hat).activations[-1])
    assert got.tolist() == [True, False, False, True] == _fits(G, obs, z_hat).tolist()
