"""Every bad input raises a GeninvError subclass naming the argument."""

import numpy as np
import pytest
import torch

import geninv
from geninv import Generator


@pytest.fixture
def G():
    return Generator.random([4, 12, 30], seed=0)


def test_fewer_than_two_widths():
    with pytest.raises(geninv.ShapeError, match="'widths'.*at least two"):
        Generator.random([20], seed=0)


def test_widths_must_be_positive_integers():
    with pytest.raises(geninv.InvalidValueError, match=r"'widths\[1\]'"):
        Generator.random([20, 0], seed=0)
    with pytest.raises(geninv.ShapeError, match="'widths'"):
        Generator.random("20-40", seed=0)


def test_unknown_activation():
    with pytest.raises(geninv.InvalidValueError, match="'activation'.*'softplus'"):
        Generator.random([2, 4], seed=0, output="softplus")
    with pytest.raises(geninv.InvalidValueError, match="'hidden'"):
        Generator.random([2, 4, 8], seed=0, hidden="tanh")


def test_weights_chain_must_connect():
    with pytest.raises(geninv.ShapeError, match=r"'weights\[1\]'.*\(n_out, 5\)"):
        Generator.from_weights([np.ones((5, 3)), np.ones((4, 6))])


def test_nan_weights():
    w = np.ones((5, 3))
    w[0, 0] = np.nan
    with pytest.raises(geninv.InvalidValueError, match=r"'weights\[0\]'.*finite"):
        Generator.from_weights([w])


def test_latent_shape_dtype_and_nan(G):
    with pytest.raises(geninv.ShapeError, match="'z'.*\\(B, 4\\)"):
        G.trace(torch.zeros(2, 5))
    with pytest.raises(geninv.ShapeError, match="'z'"):
        G.trace(torch.zeros(2, 4, 1))
    with pytest.raises(geninv.InvalidValueError, match="'z'.*finite"):
        G.trace(torch.tensor([[np.nan, 0, 0, 0]]))
    with pytest.raises(geninv.InvalidValueError, match="'z'.*real numbers"):
        G.trace(torch.zeros(2, 4, dtype=torch.bool))
    with pytest.raises(ValueError):  # also a ValueError
        G.trace(torch.zeros(2, 5))


def test_masks(G):
    z = G.sample_latent(2, seed=0)
    with pytest.raises(geninv.InvalidMaskError, match="hides every coordinate"):
        geninv.observe(G, z, mask=np.zeros(30, dtype=bool))
    with pytest.raises(geninv.InvalidMaskError, match="of size 30"):
        geninv.observe(G, z, mask=np.ones(31, dtype=bool))
    with pytest.raises(geninv.InvalidMaskError, match="0/1"):
        geninv.masks.from_array(np.full(30, 0.5))
    with pytest.raises(geninv.InvalidValueError, match="'missing'"):
        geninv.masks.random_pixels(30, 1.0)


def test_negative_sigma_and_both_noise_options(G):
    z = G.sample_latent(2, seed=0)
    with pytest.raises(geninv.InvalidValueError, match="'noise_sigma'.*\\[0, inf\\)"):
        geninv.observe(G, z, noise_sigma=-0.1)
    with pytest.raises(geninv.InvalidValueError, match="'snr_db'"):
        geninv.observe(G, z, noise_sigma=0.1, snr_db=10)


def test_invert_bad_method_and_options(G):
    obs = geninv.observe(G, G.sample_latent(2, seed=0))
    with pytest.raises(geninv.InvalidValueError, match="'method'.*'gd'"):
        geninv.invert(G, obs, method="magic")
    with pytest.raises(geninv.InvalidValueError, match="Unknown option.*'learning_rate'.*gd"):
        geninv.invert(G, obs, method="gd", learning_rate=0.1)
    with pytest.raises(geninv.InvalidValueError, match="'lr'.*\\(0, inf\\)"):
        geninv.invert(G, obs, method="gd", lr=-1.0)
    with pytest.raises(geninv.InvalidValueError, match="'observation'"):
        geninv.invert(G, obs.y, method="gd")
