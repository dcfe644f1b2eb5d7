"""One contract, every registered method (sklearn's parametrize_with_checks idea)."""

import dataclasses
import warnings

import numpy as np
import pytest
import torch

import geninv
from geninv.inversion import InversionResult, Status

METHODS = geninv.methods()
FAST = {"gd": {"n_iter": 4000}, "plugin": {"n_iter": 4000}}


@pytest.fixture(scope="module")
def setup():
    G = geninv.Generator.random([4, 16, 48], seed=0)
    z = G.sample_latent(3, seed=1)
    return G, z, geninv.observe(G, z)


def test_registry_lists_the_contract_names():
    assert set(METHODS) == {"gd", "plugin", "lbp", "latent-pursuit", "lp", "hybrid"}


@pytest.mark.parametrize("method", METHODS)
def test_shapes_and_exact_recovery(setup, method):
    G, z, obs = setup
    res = geninv.invert(G, obs, method, **FAST.get(method, {}))
    assert isinstance(res, InversionResult) and res.method == method
    assert res.z_hat.shape == (3, 4) and res.z_hat.dtype == torch.float64
    assert [t.shape[1] for t in res.layers] == [16, 48]
    assert all(s.dtype == torch.bool for s in res.supports)
    assert res.statuses.shape == (3,)
    torch.testing.assert_close(res.x_hat, G(res.z_hat))
    err = geninv.metrics.latent_error(res.z_hat, z)
    assert float(err.max()) <= 1e-6, err
    assert res.status == Status.CONVERGED  # an exact case must say so
    assert res.seconds > 0 and res.forward_passes > 0


@pytest.mark.parametrize("method", METHODS)
def test_deterministic_and_inputs_unmodified(setup, method):
    G, _, obs = setup
    y0, z0, w0 = obs.y.clone(), obs.z_true.clone(), G.weight(0).clone()
    a = geninv.invert(G, obs, method, seed=7, **FAST.get(method, {}))
    b = geninv.invert(G, obs, method, seed=7, **FAST.get(method, {}))
    torch.testing.assert_close(a.z_hat, b.z_hat, rtol=0, atol=0)
    assert torch.equal(obs.y, y0) and torch.equal(obs.z_true, z0) and torch.equal(G.weight(0), w0)


@pytest.mark.parametrize("method", METHODS)
def test_mask_and_batch_of_one(setup, method):
    G, z, _ = setup
    m = geninv.masks.random_pixels(48, 0.25, seed=3)
    obs = geninv.observe(G, z[:1], mask=m)
    res = geninv.invert(G, obs, method, **FAST.get(method, {}))
    assert res.z_hat.shape == (1, 4)
    assert float(geninv.metrics.latent_error(res.z_hat, z[:1]).max()) <= 1e-6


@pytest.mark.parametrize("method", METHODS)
def test_bad_options_are_named(setup, method):
    G, _, obs = setup
    with pytest.raises(geninv.InvalidValueError, match=f"Unknown option.*'bogus'.*'{method}'"):
        geninv.invert(G, obs, method, bogus=1)


@pytest.mark.parametrize("method", METHODS)
def test_records_carry_metrics(setup, method):
    G, _, obs = setup
    res = geninv.invert(G, obs, method, **FAST.get(method, {}))
    rows = res.to_records(obs)
    assert len(rows) == 3 and rows[0]["method"] == method
    assert rows[0]["latent_error"] <= 1e-6 and rows[0]["success"] == 1.0
    assert 0.0 <= rows[0]["layer1_precision"] <= 1.0


@pytest.mark.parametrize("method", METHODS)
def test_float32(method):
    G = geninv.Generator.random([4, 16, 48], seed=0, dtype=torch.float32)
    z = G.sample_latent(2, seed=1)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        res = geninv.invert(G, geninv.observe(G, z), method, **FAST.get(method, {}))
    assert res.z_hat.dtype == torch.float32
    assert float(geninv.metrics.latent_error(res.z_hat, z).max()) <= 1e-3


def test_max_iter_status_warns(setup):
    G, _, obs = setup
    with pytest.warns(geninv.ConvergenceWarning, match="max_iter"):
        res = geninv.invert(G, obs, "gd", n_iter=3, restarts=1)
    assert res.status == Status.MAX_ITER and set(res.statuses) == {"max_iter"}
    assert np.all(res.history.iterations[-1] == 3)


# ----------------------------------------------------------------------------- every operator kind
GENERATORS = {
    "dense": lambda dtype: geninv.Generator.random([3, 12, 32, 64], seed=0, dtype=dtype),
    "conv": lambda dtype: geninv.Generator.random_conv(3, [3, 2, 1], size=2, seed=0, dtype=dtype),
}
MEASUREMENTS = {
    "identity": lambda G: None,
    "mask": lambda G: geninv.masks.random_pixels(G.output_dim, 0.25, seed=3),
    "gaussian": lambda G: geninv.GaussianMatrix(G.output_dim // 2, G.output_dim, seed=1),
}
RECOVERY = {torch.float64: 1e-6, torch.float32: 1e-3}


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32], ids=["float64", "float32"])
@pytest.mark.parametrize("measurement", list(MEASUREMENTS))
@pytest.mark.parametrize("layers", list(GENERATORS))
@pytest.mark.parametrize("method", METHODS)
def test_every_method_over_every_operator_kind(method, layers, measurement, dtype):
    """Dense and transposed-convolution layers, identity / mask / Gaussian measurements, float32 and
    float64, through the operator contract: the layer-wise methods and the hybrid recover z on a clean
    expansive generator; gd and plugin are local methods (they can stop in a local minimum on these
    tiny nets), so for them every signal they call converged is recovered and at least one is."""
    G = GENERATORS[layers](dtype)
    z = G.sample_latent(2, seed=1)
    made = MEASUREMENTS[measurement](G)
    kwargs = {"operator": made} if isinstance(made, geninv.LinearOperator) else {"mask": made}
    obs = geninv.observe(G, z, **kwargs)
    for i in range(G.n_layers):  # the generator's layers and the measurement pass the dot test
        assert geninv.operators.dottest(G.operator(i), dtype=dtype) <= (1e-12 if dtype == torch.float64 else 1e-5)
    assert geninv.operators.dottest(obs.operator, dtype=dtype) <= (1e-12 if dtype == torch.float64 else 1e-5)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        res = geninv.invert(G, obs, method, **FAST.get(method, {}))
    assert res.z_hat.shape == (2, 3) and res.z_hat.dtype == dtype
    assert [t.shape[1] for t in res.layers] == list(G.widths[1:])
    err = geninv.metrics.latent_error(res.z_hat, z)
    converged = torch.from_numpy(res.statuses == Status.CONVERGED.value)
    if method in ("gd", "plugin"):
        assert bool((err[converged] <= RECOVERY[dtype]).all()) and bool((err <= RECOVERY[dtype]).any()), err
        assert bool((~converged[err > RECOVERY[dtype]]).all())  # a miss is never called converged
        return
    assert float(err.max()) <= RECOVERY[dtype], err
    if dtype == torch.float64:
        assert res.status == Status.CONVERGED


def test_every_registered_method_meets_the_inverter_protocol():
    import inspect

    from geninv.inversion import Inverter, spec

    for name in METHODS:
        entry = spec(name)
        assert isinstance(entry.function, Inverter)
        params = inspect.signature(entry.function).parameters
        assert list(params)[:3] == ["generator", "obs", "config"] or list(params)[:3] == [
            "generator",
            "observation",
            "config",
        ]
        assert params["seed"].kind is inspect.Parameter.KEYWORD_ONLY and params["seed"].default == 0
        assert params["progress"].kind is inspect.Parameter.KEYWORD_ONLY and params["progress"].default is None
        assert dataclasses.is_dataclass(entry.config) and entry.config.__dataclass_params__.frozen
