"""The shipped MNIST generator: loads from the package, makes digits, is invertible."""

import warnings
from pathlib import Path

import numpy as np
import pytest
import torch

import geninv

DATA = Path(__file__).resolve().parents[2].parent / "shared" / "data" / "mnist"


@pytest.fixture(scope="module")
def mnist():
    return geninv.load_generator("mnist")


def test_loads_with_the_documented_architecture(mnist):
    assert mnist.widths == (20, 128, 392, 784)
    assert mnist.output_activation.name == "sigmoid" and mnist.dtype == torch.float32
    y = mnist.generate(mnist.sample_latent(16, seed=0))
    assert y.shape == (16, 784) and float(y.min()) >= 0 and float(y.max()) <= 1


def test_samples_look_like_digits(mnist):
    y = mnist.generate(mnist.sample_latent(200, seed=0)).numpy()
    ink = (y > 0.5).mean(1)
    assert 0.05 < np.median(ink) < 0.35  # MNIST digits cover ~10-20% of the pixels
    border = y.reshape(-1, 28, 28)[:, :3].mean()
    assert border < 0.02  # dark frame, as in MNIST


@pytest.mark.skipif(not DATA.is_dir(), reason="MNIST data (../shared/data/mnist) not present")
def test_samples_are_closer_to_real_digits_than_a_random_net(mnist):
    from geninv.train import load_mnist

    real, _ = load_mnist(DATA)
    real = torch.from_numpy(real[:2000]).double()
    rand = geninv.Generator.random(list(mnist.widths), seed=0, bias=True, output="sigmoid")

    def nn_dist(x):
        return torch.cdist(x.double(), real).min(1).values.median().item()

    d_trained = nn_dist(mnist.generate(mnist.sample_latent(100, seed=1)))
    d_random = nn_dist(rand.generate(rand.sample_latent(100, seed=1)))
    assert d_trained < 0.5 * d_random


def _success(G, obs, method):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        res = geninv.invert(G, obs, method)
    return geninv.metrics.success_rate(geninv.metrics.latent_error(res.z_hat, obs.z_true), 1e-3)


@pytest.mark.slow
def test_pursuit_beats_gd_on_the_trained_generator(mnist):
    """The paper's headline on real data: exact layer-wise recovery where gd finds local minima."""
    G = mnist.double()
    z = G.sample_latent(10, seed=3)
    assert geninv.certify(G, z).identifiable.mean() >= 0.8
    clean = geninv.observe(G, z)
    assert _success(G, clean, "latent-pursuit") == 1.0
    gd_clean = _success(G, clean, "gd")
    assert gd_clean < 1.0
    half = geninv.observe(G, z, mask=geninv.masks.half((28, 28)))
    assert _success(G, half, "hybrid") >= 0.7 > _success(G, half, "gd")
