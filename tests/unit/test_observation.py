import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

import geninv
from geninv import masks
from geninv.observation import GaussianMatrix, Identity, Mask


def test_random_pixels_fraction_and_seed():
    m = masks.random_pixels(784, missing=0.3, seed=2)
    assert m.dtype == bool and m.shape == (784,)
    assert (~m).sum() == round(0.3 * 784)
    assert np.array_equal(m, masks.random_pixels(784, missing=0.3, seed=2))
    assert not np.array_equal(m, masks.random_pixels(784, missing=0.3, seed=3))


def test_box_half_and_center_geometry():
    b = masks.box((28, 28), top=5, left=7, height=4, width=10).reshape(28, 28)
    assert (~b).sum() == 40 and not b[5:9, 7:17].any() and b[4].all()
    h = masks.half((28, 28), hide="bottom").reshape(28, 28)
    assert h[:14].all() and not h[14:].any()
    h = masks.half((28, 28), hide="left").reshape(28, 28)
    assert not h[:, :14].any() and h[:, 14:].all()
    c = masks.center_box(784, 10).reshape(28, 28)
    assert not c[9:19, 9:19].any() and (~c).sum() == 100


def test_png_and_npy_round_trip(tmp_path):
    m = masks.random_pixels(784, 0.4, seed=0)
    data = masks.to_png(m, (28, 28), tmp_path / "m.png")
    assert np.array_equal(masks.from_png(data), m)
    assert np.array_equal(masks.from_png(tmp_path / "m.png"), m)
    assert np.array_equal(masks.from_npy(masks.to_npy(m)), m)


def test_png_rejects_garbage():
    with pytest.raises(geninv.InvalidMaskError, match="readable PNG"):
        masks.from_png(b"not a png at all")


def test_noise_statistics_and_seeding():
    G = geninv.Generator.random([10, 60, 400], seed=0)
    z = G.sample_latent(50, seed=1)
    obs = geninv.observe(G, z, noise_sigma=0.05, seed=3)
    e = obs.y - obs.x_true
    assert abs(e.std().item() - 0.05) < 0.002
    again = geninv.observe(G, z, noise_sigma=0.05, seed=3)
    torch.testing.assert_close(obs.y, again.y)
    other = geninv.observe(G, z, noise_sigma=0.05, seed=4)
    assert not torch.equal(obs.y, other.y)


def test_snr_db_gives_requested_snr():
    G = geninv.Generator.random([10, 60, 400], seed=0)
    z = G.sample_latent(40, seed=1)
    obs = geninv.observe(G, z, snr_db=20, seed=0)
    e = obs.y - obs.x_true
    snr = 10 * torch.log10(obs.x_true.pow(2).mean(-1) / e.pow(2).mean(-1))
    assert abs(snr.mean().item() - 20) < 0.3


def test_observation_keeps_truth_and_masks_y():
    G = geninv.Generator.random([4, 16, 48], seed=0)
    m = masks.random_pixels(48, 0.5, seed=1)
    obs = geninv.observe(G, G.sample_latent(3, seed=0), mask=m)
    assert obs.y.shape == (3, 24) and np.array_equal(obs.mask, m)
    torch.testing.assert_close(obs.y, obs.x_true[:, m])
    assert obs[1].batch_size == 1


@settings(max_examples=25, deadline=None)
@given(
    n=st.integers(2, 40),
    m=st.integers(1, 40),
    seed=st.integers(0, 10_000),
    kind=st.sampled_from(["identity", "mask", "gaussian"]),
)
def test_operator_dot_test(n, m, seed, kind):
    """<A x, y> == <x, A^T y> for every operator (PyLops' dottest)."""
    rng = np.random.default_rng(seed)
    if kind == "identity":
        op = Identity(n)
    elif kind == "mask":
        mask = rng.random(n) < 0.5
        mask[rng.integers(n)] = True
        op = Mask(mask)
    else:
        op = GaussianMatrix(m, n, seed=seed)
    x = torch.from_numpy(rng.normal(size=(3, n)))
    y = torch.from_numpy(rng.normal(size=(3, op.shape[0])))
    lhs = (op.forward(x) * y).sum(-1)
    rhs = (x * op.adjoint(y)).sum(-1)
    torch.testing.assert_close(lhs, rhs, rtol=1e-10, atol=1e-10)


def test_from_measurements_accepts_full_or_observed():
    G = geninv.Generator.random([4, 16, 48], seed=0)
    m = masks.random_pixels(48, 0.5, seed=1)
    x = G.generate(G.sample_latent(2, seed=0))
    a = geninv.Observation.from_measurements(G, x, mask=m)
    b = geninv.Observation.from_measurements(G, x[:, m], mask=m)
    torch.testing.assert_close(a.y, b.y)
    with pytest.raises(geninv.ShapeError, match="'y'"):
        geninv.Observation.from_measurements(G, x[:, :5], mask=m)
