"""The whole-network certificate: local identifiability of J_S, stability, predicted oracle error."""

from __future__ import annotations

import json
import math
import warnings

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

import geninv
from geninv import theory
from geninv.errors import GeninvError, ShapeError
from geninv.inversion.oracle import affine_map, oracle_latent
from geninv.metrics import latent_error


# ----------------------------------------------------------------------------- stability
@pytest.mark.parametrize(
    ("widths", "output", "missing"),
    [([20, 128, 392, 784], "identity", 0.0), ([20, 128, 392, 784], "identity", 0.6), ([10, 60, 240], "sigmoid", 0.0)],
)
def test_predicted_error_matches_the_oracle_at_20db(widths, output, missing):
    G = geninv.Generator.random(widths, seed=0, output=output, bias=output != "identity")
    mask = geninv.masks.random_pixels(widths[-1], missing, seed=2) if missing else None
    z = G.sample_latent(48, seed=3)
    obs = geninv.observe(G, z, mask=mask, snr_db=20, seed=4)
    measured = latent_error(oracle_latent(G, obs), z).numpy()
    predicted = geninv.certify(G, z, mask=mask).predicted_error(obs.noise_sigma)
    ratio = measured / predicted
    assert 0.75 < float(np.median(ratio)) < 1.33
    assert np.mean((ratio > 0.5) & (ratio < 2)) >= 0.85
    # sigma scales the prediction linearly; a scalar sigma is accepted too
    cert = geninv.certify(G, z[:2], mask=mask)
    np.testing.assert_allclose(cert.predicted_error(0.2), 2 * cert.predicted_error(0.1))


def test_sigmoid_gains_see_the_noise_in_pixel_space():
    G = geninv.Generator.random([6, 30, 90], seed=1, output="sigmoid", bias=True)
    z = G.sample_latent(5, seed=2)
    cert = geninv.certify(G, z)
    trace = G.trace(z)
    jac, _ = affine_map(G, trace.supports[:-1])
    d = G.output_activation.derivative(trace.pre_activations[-1])
    sv = torch.linalg.svdvals(jac * d.unsqueeze(-1))
    np.testing.assert_allclose(cert.noise_gain, 1 / sv[:, -1].numpy(), rtol=1e-8)
    np.testing.assert_allclose(cert.condition_number, (sv[:, 0] / sv[:, -1]).numpy(), rtol=1e-8)
    np.testing.assert_allclose(cert.network.pinv_norm, torch.sqrt((1 / sv**2).sum(-1)).numpy(), rtol=1e-8)
    # the output step's gain is 1/sigma_min of diag(phi') W_2 on the true support, the others plain
    w2 = G.weight(1)
    for b in range(5):
        support = trace.supports[0][b]
        scaled = torch.linalg.svdvals(d[b].unsqueeze(-1) * w2[:, support])[-1]
        plain = torch.linalg.svdvals(w2[:, support])[-1]
        assert math.isclose(cert.layers[0].noise_gain[b], 1 / float(scaled), rel_tol=1e-6)
        assert math.isclose(cert.layers[0].support_sigma_min[b], float(plain), rel_tol=1e-6)
    np.testing.assert_allclose(cert.layers[1].noise_gain, 1 / cert.layers[1].support_sigma_min)
    np.testing.assert_allclose(cert.step_gain_product, cert.layers[0].noise_gain * cert.layers[1].noise_gain)


def test_predicted_error_rejects_bad_sigma():
    G = geninv.Generator.random([4, 16, 48], seed=0)
    cert = geninv.certify(G, G.sample_latent(3, seed=1))
    with pytest.raises(ShapeError, match="'sigma'"):
        cert.predicted_error(np.ones(4))
    with pytest.raises(GeninvError, match="'sigma'"):
        cert.predicted_error(-0.1)
    assert (cert.predicted_error(0.0) == 0).all()


# ----------------------------------------------------------------------------- identifiability
@pytest.mark.parametrize(
    ("widths", "missing", "n"),
    [([20, 128, 392, 784], 0.0, 8), ([20, 128, 392, 784], 0.6, 8), ([20, 40, 80, 160], 0.0, 24)],
)
@pytest.mark.parametrize("method", ["latent-pursuit", "hybrid"])
def test_identifiable_network_wherever_a_method_recovers_z(widths, missing, n, method):
    G = geninv.Generator.random(widths, seed=0)
    mask = geninv.masks.random_pixels(widths[-1], missing, seed=2) if missing else None
    z = G.sample_latent(n, seed=11)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        options = {"gd_iter": 200, "gd_restarts": 1} if method == "hybrid" else {}  # fast: exactness is the pursuit's
        res = geninv.invert(G, geninv.observe(G, z, mask=mask), method, **options)
    exact = latent_error(res.z_hat, z).numpy() <= 1e-6
    assert exact.sum() >= max(2, n // 3)  # the check is not vacuous (expansion 2 recovers about 40%)
    cert = geninv.certify(G, z, mask=mask)
    assert cert.identifiable_network[exact].all()
    assert not any(v.startswith("not identifiable") for v in cert.verdict[exact])


def test_layerwise_test_fails_but_the_network_is_identifiable():
    # z in R^1 feeds two identical hidden units, read out by their sum: the hidden step has one equation
    # for two unknowns (not identifiable on its own), yet y = 2 z pins z down.
    G = geninv.Generator.from_weights([[[1.0], [1.0]], [[1.0, 1.0]]], dtype=torch.float64)
    cert = geninv.certify(G, torch.tensor([[1.5], [-1.0]], dtype=torch.float64))
    assert not cert.layers[0].identifiable[0] and not cert.identifiable[0]
    assert cert.identifiable_network[0]
    assert cert.verdict[0] == "identifiable (network) and stable; layer-by-layer test inconclusive"
    assert cert.noise_gain[0] == pytest.approx(0.5) and cert.condition_number[0] == pytest.approx(1.0)
    assert cert.step_gain_product[0] == math.inf  # a layer-by-layer pass cannot do it
    # z < 0 switches both units off: y = 0 whatever z, truly not identifiable
    assert not cert.identifiable_network[1]
    assert cert.verdict[1] == "not identifiable on this pattern"
    assert cert.predicted_error(0.1)[1] == math.inf and cert.noise_gain[1] == math.inf


def test_contracting_generator_is_not_identifiable():
    G = geninv.Generator.random([20, 10, 40], seed=0)
    cert = geninv.certify(G, G.sample_latent(20, seed=1))
    assert not cert.identifiable_network.any()
    assert (cert.network.rank <= 10).all()
    assert set(cert.verdict) == {"not identifiable on this pattern"}
    assert np.isinf(cert.predicted_error(0.01)).all()
    assert cert.summary()[-1]["identifiable_network"] == 0.0


def test_unstable_wording_names_the_condition_number():
    G = geninv.Generator.random([20, 40, 80, 160], seed=0)
    z = G.sample_latent(40, seed=5)
    cert = geninv.certify(G, z, stable_condition=10.0)
    unstable = cert.identifiable_network & ~cert.stable
    assert unstable.any()
    b = int(np.flatnonzero(unstable)[0])
    assert f"but unstable: noise x{cert.condition_number[b]:,.0f}" in cert.verdict[b]
    loose = geninv.certify(G, z, stable_condition=1e12)
    assert (loose.stable == loose.identifiable_network).all()


@pytest.mark.slow
def test_mnist_ninety_percent_missing_is_identifiable_through_the_network():
    G = geninv.load_generator("mnist").double()
    mask = geninv.masks.random_pixels(784, 0.9, seed=3)
    z = G.sample_latent(6, seed=1)
    res = geninv.invert(G, geninv.observe(G, z, mask=mask), "hybrid")
    exact = latent_error(res.z_hat, z).numpy() <= 1e-6
    cert = geninv.certify(G, z, mask=mask)
    assert exact.any() and cert.identifiable_network[exact].all()
    assert not cert.identifiable[exact].any()  # the output step alone has fewer rows than unknowns
    assert all("layer-by-layer test inconclusive" in v for v in cert.verdict[exact])


# ----------------------------------------------------------------------------- rank tolerance
@pytest.mark.parametrize(
    ("dtype", "delta", "identifiable"),
    [
        (torch.float64, 1e-10, True),
        (torch.float32, 1e-10, False),
        (torch.float64, 1e-2, True),
        (torch.float32, 1e-2, True),
    ],
)
def test_rank_tolerance_follows_the_generator_precision(dtype, delta, identifiable):
    # Third column of W_2 = first + second + delta * noise: independent in float64 down to delta ~ 1e-13,
    # but below float32's resolution when delta = 1e-10.
    rng = np.random.default_rng(0)
    w1 = np.vstack([np.eye(3), -np.eye(3)])
    w2 = rng.normal(size=(12, 6))
    w2[:, 2] = w2[:, 0] + w2[:, 1] + delta * rng.normal(size=12)
    G = geninv.Generator.from_weights([w1, w2], dtype=dtype)
    cert = geninv.certify(G, torch.tensor([[1.0, 2.0, 3.0]]))  # units 0, 1, 2 active
    assert bool(cert.layers[0].identifiable[0]) is identifiable
    stored = G.weight(1)[:, :3]  # the matrix as the generator stores it
    assert (theory.matrix_rank(stored) == 3) is identifiable
    assert (theory.matrix_rank(stored.numpy()) == 3) is identifiable


@settings(max_examples=40, deadline=None)
@given(rows=st.integers(2, 8), cols=st.integers(2, 6), seed=st.integers(0, 10_000), log_delta=st.integers(-14, -1))
def test_matrix_rank_uses_the_tolerance_of_the_given_precision(rows, cols, seed, log_delta):
    rng = np.random.default_rng(seed)
    m = rng.normal(size=(rows, cols))
    m[:, -1] = m[:, 0] + 10.0**log_delta * rng.normal(size=rows)
    s = np.linalg.svd(m, compute_uv=False)
    for dtype in (torch.float32, torch.float64):
        eps = torch.finfo(dtype).eps
        expected = int((s > s.max() * max(rows, cols) * eps).sum())
        assert theory.matrix_rank(m, dtype=dtype) == expected


# ----------------------------------------------------------------------------- the fast path is exact
def _reference_step(weight: np.ndarray, rows: np.ndarray, support: np.ndarray, eps: float) -> tuple[int, int, float]:
    """rank, support rank and sigma_min by a plain SVD of the zero-padded matrices (the original method)."""
    masked = weight * rows[:, None]
    s = np.linalg.svd(masked, compute_uv=False)
    tol = lambda v: v.max(initial=0.0) * max(weight.shape) * eps  # noqa: E731
    s_sup = np.linalg.svd(masked * support[None, :], compute_uv=False)
    k = int(support.sum())
    smin = float(s_sup[k - 1]) if 0 < k <= len(s_sup) else 0.0
    return int((s > tol(s)).sum()), int((s_sup > tol(s_sup)).sum()), smin


@pytest.mark.parametrize(
    ("widths", "missing", "hidden", "output"),
    [
        ([8, 40, 120], 0.5, "relu", "identity"),
        ([10, 20, 40], 0.0, "relu", "identity"),  # many rank-deficient steps: the SVD fallback
        ([6, 24, 60], 0.3, "leaky_relu", "sigmoid"),
        ([6, 24, 60], 0.0, "relu", "relu"),
    ],
)
def test_certificate_steps_match_a_plain_svd(widths, missing, hidden, output):
    G = geninv.Generator.random(widths, seed=3, hidden=hidden, output=output, bias=True)
    mask = geninv.masks.random_pixels(widths[-1], missing, seed=1) if missing else None
    z = G.sample_latent(30, seed=4)
    cert = geninv.certify(G, z, mask=mask)
    trace = G.trace(z)
    observed = torch.from_numpy(np.ones(widths[-1], bool) if mask is None else np.asarray(mask))
    for lc in cert.layers:
        rows = theory.equation_rows(G, trace, lc.layer, observed).numpy()
        if lc.layer == 0:
            support = np.ones((30, widths[0]), bool)
        else:
            support = (
                trace.supports[lc.layer - 1].numpy() if hidden == "relu" else np.ones((30, widths[lc.layer]), bool)
            )
        w = G.weight(lc.layer).numpy()
        for b in range(30):
            rank, srank, smin = _reference_step(w, rows[b], support[b], np.finfo(np.float64).eps)
            assert (lc.rank[b], lc.support_rank[b]) == (rank, srank)
            assert lc.support_sigma_min[b] == pytest.approx(smin, rel=1e-6, abs=1e-12)


def test_chunked_and_unchunked_certificates_agree():
    G = geninv.Generator.random([10, 40, 120], seed=0, output="sigmoid", bias=True)
    z = G.sample_latent(25, seed=1)
    mask = geninv.masks.random_pixels(120, 0.3, seed=0)
    whole, pieces = geninv.certify(G, z, mask=mask), geninv.certify(G, z, mask=mask, memory_mb=0.01)
    for a, b in zip(whole.to_records(), pieces.to_records(), strict=True):
        assert a.keys() == b.keys()
        for key in a:
            if isinstance(a[key], float):
                assert a[key] == pytest.approx(b[key], rel=1e-10, abs=1e-14, nan_ok=True)
            else:
                assert a[key] == b[key]
    assert (whole.verdict == pieces.verdict).all()
    np.testing.assert_allclose(whole.noise_gain, pieces.noise_gain, rtol=1e-10)


@pytest.mark.parametrize("hidden", ["relu", "leaky_relu"])
def test_jacobian_is_the_oracle_affine_map(hidden):
    G = geninv.Generator.random([5, 20, 40, 30], seed=2, hidden=hidden, bias=True)
    trace = G.trace(G.sample_latent(7, seed=0))
    jac, c = affine_map(G, trace.supports[:-1])
    torch.testing.assert_close(theory._jacobian(G, trace.supports[:-1]), jac)
    torch.testing.assert_close((jac @ trace.latent.unsqueeze(-1)).squeeze(-1) + c, trace.pre_activations[-1])


def test_float32_generator_is_certified_in_float64_without_being_changed():
    G32 = geninv.Generator.random([20, 80, 320], seed=0, dtype=torch.float32)
    z = G32.sample_latent(10, seed=1)
    cert32 = geninv.certify(G32, z)
    assert G32.dtype == torch.float32
    G64 = geninv.Generator.from_weights([G32.weight(0), G32.weight(1)], dtype=torch.float64)
    cert64 = geninv.certify(G64, z.double())
    assert (cert32.identifiable_network == cert64.identifiable_network).all()
    np.testing.assert_allclose(cert32.noise_gain, cert64.noise_gain, rtol=1e-4)


# ----------------------------------------------------------------------------- records
def test_records_keep_the_old_keys_and_add_the_network_ones():
    G = geninv.Generator.random([20, 128, 392, 784], seed=0)
    cert = geninv.certify(G, G.sample_latent(3, seed=1), noise_sigma=0.05)
    old = {"layer", "cardinality", "rows", "expansion", "coherence", "spark_bound", "spark", "support_rank"}
    old |= {"support_sigma_min", "paper_unique", "lbp_guaranteed", "identifiable"}
    records = cert.to_records()
    assert old | {"noise_gain"} <= set(records[0]) and len(records) == 3 * 3
    net = cert.network_records()
    assert len(net) == 3
    assert {
        "verdict",
        "identifiable_network",
        "noise_gain",
        "condition",
        "step_gain_product",
        "predicted_error",
    } <= set(net[0])
    assert net[0]["predicted_error"] == pytest.approx(cert.predicted_error(0.05)[0])
    summary = cert.summary()
    assert {"identifiable_network", "stable", "noise_gain_median", "condition_median"} <= set(summary[-1])
    assert "noise_gain_median" in summary[0]
    json.dumps(records)
    json.dumps(net)
    json.dumps(summary)
