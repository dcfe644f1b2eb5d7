import numpy as np
import pytest
import torch

import geninv
from geninv import Activation, Generator


@pytest.mark.parametrize("hidden", ["relu", "leaky_relu"])
@pytest.mark.parametrize("output", ["identity", "tanh", "sigmoid", "relu"])
@pytest.mark.parametrize("bias", [False, True])
def test_trace_agrees_with_forward(hidden, output, bias):
    G = Generator.random([5, 17, 40, 60], seed=3, bias=bias, hidden=hidden, output=output)
    z = G.sample_latent(7, seed=1)
    tr = G.trace(z)
    torch.testing.assert_close(tr.output, G(z), rtol=0, atol=0)
    x = z
    for i in range(G.n_layers):
        pre = x @ G.weight(i).T + (0 if G.bias(i) is None else G.bias(i))
        torch.testing.assert_close(tr.pre_activations[i], pre)
        x = G.activation(i)(pre)
        torch.testing.assert_close(tr.activations[i], x)
    if hidden == "relu":
        assert torch.equal(tr.supports[0], tr.activations[0] > 0)


@pytest.mark.parametrize(
    "make",
    [
        lambda: Generator.random([5, 17, 40, 60], seed=3, bias=True, output="sigmoid"),
        lambda: Generator.random_conv(3, [3, 2, 1], size=2, seed=0, bias=True, output="sigmoid"),
    ],
    ids=["dense", "conv"],
)
def test_trace_on_output_rows(make):
    """The refit's trace on the observed outputs only: hidden layers as in the full trace, the last
    layer's pre-activation and output equal to the full ones on those rows (bias included)."""
    G = make()
    z = G.sample_latent(6, seed=1)
    full = G._trace(z)
    rows = torch.tensor([0, 3, 4, G.output_dim - 1])
    part = G._trace(z, rows)
    for a, b in zip(part.supports[:-1], full.supports[:-1]):
        assert torch.equal(a, b)
    assert part.pre_activations[-1].shape == (6, 4)
    torch.testing.assert_close(part.pre_activations[-1], full.pre_activations[-1][:, rows], rtol=1e-14, atol=1e-14)
    torch.testing.assert_close(part.activations[-1], full.activations[-1][:, rows], rtol=1e-14, atol=1e-14)


def test_single_latent_and_float32():
    G = Generator.random([4, 10, 20], seed=0, dtype=torch.float32)
    z = G.sample_latent(1, seed=0)[0]
    assert G.generate(z).shape == (20,)
    assert G.dtype == torch.float32 and G.trace(z).latent.dtype == torch.float32


def test_random_is_seeded_and_scaled():
    a, b = Generator.random([50, 400], seed=5), Generator.random([50, 400], seed=5)
    assert torch.equal(a.weight(0), b.weight(0))
    assert not torch.equal(a.weight(0), Generator.random([50, 400], seed=6).weight(0))
    assert abs(a.weight(0).var().item() - 1 / 50) < 2e-3  # N(0, 1/fan_in)
    assert a.widths == (50, 400) and a.n_layers == 1


def test_sample_latent_seeding():
    G = Generator.random([6, 12], seed=0)
    torch.testing.assert_close(G.sample_latent(3, seed=4), G.sample_latent(3, seed=4))
    assert not torch.equal(G.sample_latent(3, seed=4), G.sample_latent(3, seed=5))


@pytest.mark.parametrize("name", ["tanh", "sigmoid", "leaky_relu", "identity"])
def test_activation_inverse(name):
    act = Activation(name, 0.1)
    x = torch.linspace(-3, 3, 41, dtype=torch.float64)
    torch.testing.assert_close(act.inverse(act(x)), x)


def test_relu_has_no_inverse():
    with pytest.raises(geninv.UnsupportedError, match="not invertible"):
        Activation("relu").inverse(torch.ones(3))


def test_from_weights_matches_manual_forward():
    rng = np.random.default_rng(0)
    w1, w2 = rng.normal(size=(8, 3)), rng.normal(size=(5, 8))
    G = Generator.from_weights([w1, w2], hidden="relu", output="sigmoid")
    z = rng.normal(size=(4, 3))
    expected = 1 / (1 + np.exp(-(np.maximum(z @ w1.T, 0) @ w2.T)))
    np.testing.assert_allclose(G.generate(z).numpy(), expected, rtol=1e-12)


def test_describe_round_trips_through_constructor_arguments():
    G = Generator.random([3, 9, 27], seed=1, bias=True, hidden="leaky_relu", output="tanh", negative_slope=0.3)
    d = G.describe()
    assert d["widths"] == [3, 9, 27] and d["bias"] == [True, True]
    assert d["hidden"] == {"name": "leaky_relu", "negative_slope": 0.3} and d["output"] == {"name": "tanh"}
