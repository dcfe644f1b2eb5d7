"""The shipped convolutional MNIST generator: it loads, looks like digits, and is inverted exactly,
layer by layer, wherever its certificate says the latent is identifiable; its trainer is reproducible."""

from __future__ import annotations

import json
import os
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch

import geninv
from geninv import train
from geninv.io import load_generator

DATA = Path(os.environ.get(train.DATA_ENV) or Path(__file__).resolve().parents[2] / "data" / "mnist")  # as test_mnist
HAVE_DATA = (DATA / train.IMAGES).is_file()


@pytest.fixture(scope="module")
def conv() -> geninv.Generator:
    return load_generator("mnist-conv")


def test_shipped_conv_generator_has_its_architecture(conv):
    assert conv.widths == (20, 196, 392, 784) and conv.name == "mnist-conv"
    assert [conv.layer_type(i) for i in range(3)] == ["dense", "conv_transpose2d", "conv_transpose2d"]
    assert conv.layer_shape(1) == (4, 7, 7) and conv.layer_shape(2) == (2, 14, 14) and conv.image_shape == (28, 28)
    assert conv.output_activation.name == "sigmoid" and conv.dtype == torch.float32
    # each layer at least doubles the units (the expansion the theory needs)
    assert all(b >= 2 * a for a, b in zip(conv.widths[1:], conv.widths[2:]))


def test_conv_samples_have_digit_statistics(conv):
    samples = conv.generate(conv.sample_latent(256, seed=0))
    images = samples.reshape(-1, 28, 28)
    assert 0.08 < float(samples.mean()) < 0.2
    assert 0.05 < float((samples > 0.5).float().mean()) < 0.2
    border = torch.cat([images[:, :3].flatten(1), images[:, -3:].flatten(1), images[:, :, :3].flatten(1)], 1)
    assert float(border.mean()) < 0.05
    assert float(images[:, 8:20, 8:20].mean()) > 0.2
    assert float(torch.cdist(samples[:64], samples[:64]).sum() / (64 * 63)) > 4.0
    # softened targets: hardly any pixel saturates (within 1e-6 of 0 or 1: an inequality, not an equation)
    assert float(((samples < 1e-6) | (samples > 1 - 1e-6)).float().mean()) < 1e-3


@pytest.mark.skipif(not HAVE_DATA, reason=f"MNIST test digits not found in {DATA} (set GENINV_MNIST_DATA)")
def test_conv_samples_are_close_to_real_digits(conv):
    images, _ = train.load_mnist(DATA)
    real = torch.from_numpy(images[:3000])
    samples = conv.generate(conv.sample_latent(256, seed=0))
    random = geninv.Generator.random_conv(
        20, [4, 2, 1], size=7, seed=0, bias=True, output="sigmoid", dtype=torch.float32
    )
    fake = random.generate(random.sample_latent(256, seed=0))
    nn_trained = torch.cdist(samples, real).amin(dim=1).median()
    nn_random = torch.cdist(fake, real).amin(dim=1).median()
    assert float(nn_trained) < 0.5 * float(nn_random)


@pytest.mark.slow
@pytest.mark.parametrize("mask", ["clean", "half"])
def test_hybrid_is_exact_wherever_the_certificate_says_identifiable(conv, mask):
    """100 samples, clean and with the bottom half hidden: the hybrid's latent error is at most 1e-6 on
    every sample whose latent the certificate calls identifiable (the whole-network test), and the
    certificate calls most of them identifiable (so the claim is not vacuous)."""
    G = conv.double()
    z = G.sample_latent(100, seed=7)
    m = None if mask == "clean" else geninv.masks.half((28, 28))
    cert = geninv.certify(G, z, mask=m)
    assert cert.identifiable_network.mean() >= 0.9
    obs = geninv.observe(G, z, mask=m)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        res = geninv.invert(G, obs, "hybrid")
    err = geninv.metrics.latent_error(res.z_hat, z).numpy()
    ident = cert.identifiable_network
    assert (err[ident] <= 1e-6).all(), (np.flatnonzero(ident & (err > 1e-6)), err[ident].max())
    assert set(res.statuses[ident]) == {"converged"}


@pytest.mark.slow
def test_clean_conv_signals_need_no_gradient_descent(conv):
    """Clean: every step of the sweep is determined (the layer-wise certificate holds) and the pursuit alone
    is exact, without the hybrid's gd stage."""
    G = conv.double()
    z = G.sample_latent(30, seed=3)
    assert geninv.certify(G, z).identifiable.all()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        res = geninv.invert(G, geninv.observe(G, z), "latent-pursuit")
    assert float(geninv.metrics.latent_error(res.z_hat, z).max()) < 1e-9


def test_conv_training_is_reproducible_and_converts_to_a_generator(tiny_data):
    kwargs = {"widths": (3,), "channels": (2, 1), "epochs": 1, "batch_size": 16, "log": lambda _: None}
    a, info = train.train_mnist(tiny_data, seed=5, **kwargs)
    b, _ = train.train_mnist(tiny_data, seed=5, **kwargs)
    assert a.widths == (3, 2 * 14 * 14, 784) and a.layer_type(1) == "conv_transpose2d"
    assert torch.equal(a.weight_of(1), b.weight_of(1))
    assert info["channels"] == [2, 1] and info["widths"] == [3, 392, 784]


def test_train_cli_writes_the_conv_generator(tiny_data, tmp_path, monkeypatch):
    monkeypatch.setenv(train.DATA_ENV, str(tiny_data))
    out = tmp_path / "out"
    rc = train.main(["mnist-conv", "--out", str(out), "--epochs", "1", "--widths", "3", "--channels", "2,1"])
    assert rc == 0
    G = load_generator(out / "mnist-conv")
    assert G.widths == (3, 392, 784) and (out / "samples-mnist-conv.png").stat().st_size > 0
    info = json.loads((out / "mnist-conv_training.json").read_text())
    assert (
        info["command"] == f"python -m geninv.train mnist-conv --data ${train.DATA_ENV} --out {out} --epochs 1 "
        "--widths 3 --channels 2,1"
    )
