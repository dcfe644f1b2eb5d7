"""Generators of operator layers: convolutional generators compute, differentiate, save and certify
through the linear-operator contract; measurement operators other than masks reach every part."""

from __future__ import annotations

import json
import warnings

import numpy as np
import pytest
import torch
from safetensors.torch import save as st_save
from torch import nn

import geninv
from geninv import io
from geninv import operators as ops
from geninv.errors import ModelFormatError
from geninv.inversion.gradient import _loss_and_grad
from geninv.inversion.oracle import affine_map, oracle_latent


@pytest.fixture
def conv() -> geninv.Generator:
    return geninv.Generator.random_conv(3, [3, 2, 1], size=2, seed=0, bias=True, output="sigmoid")


def test_conv_generator_structure_and_trace(conv):
    assert conv.widths == (3, 12, 32, 64) and not conv.is_dense
    assert [conv.layer_type(i) for i in range(3)] == ["dense", "conv_transpose2d", "conv_transpose2d"]
    assert conv.layer_shape(0) == (3,) and conv.layer_shape(1) == (3, 2, 2) and conv.layer_shape(2) == (2, 4, 4)
    assert conv.layer_shape(3) == (1, 8, 8) and conv.image_shape == (8, 8)
    z = conv.sample_latent(4, seed=1)
    tr = conv.trace(z)
    x = z
    for i in range(conv.n_layers):
        # the materialised matrix computes what the convolution computes
        pre = x @ conv.weight(i).T + conv.bias(i)
        torch.testing.assert_close(tr.pre_activations[i], pre)
        torch.testing.assert_close(conv.layer(i).weight, conv.weight(i))
        x = conv.activation(i)(pre)
    torch.testing.assert_close(tr.output, conv(z), rtol=0, atol=0)
    assert conv.layer(1).kind == "conv_transpose2d" and conv.layer(1).n_out == 32


def test_conv_generator_follows_dtype_and_device_moves(conv):
    z = conv.sample_latent(2, seed=0)
    f32 = geninv.Generator.random_conv(3, [3, 2, 1], size=2, seed=0, bias=True, output="sigmoid").float()
    assert f32.dtype == torch.float32 and f32.operator(1).dtype == torch.float32
    assert f32.weight(2).dtype == torch.float32
    torch.testing.assert_close(f32(z.float()).double(), conv(z), rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("measurement", ["identity", "gaussian", "dct"])
def test_hand_written_backprop_equals_autograd_through_convolutions(conv, measurement):
    z = conv.sample_latent(3, seed=2)
    op = None if measurement == "identity" else geninv.measurement_operator(f"{measurement}:20:seed=1", conv)
    obs = geninv.observe(conv, conv.sample_latent(3, seed=5), operator=op)
    loss, grad = _loss_and_grad(conv, obs, z, obs.y, 0.0)
    zg = z.clone().requires_grad_(True)
    auto = 0.5 * (obs.operator.forward(conv(zg)) - obs.y).pow(2).sum()
    auto.backward()
    torch.testing.assert_close(grad, zg.grad)
    torch.testing.assert_close(loss.sum(), auto.detach())


def test_affine_map_is_the_jacobian_on_the_pattern(conv):
    z = conv.sample_latent(2, seed=3)
    tr = conv.trace(z)
    jac, c = affine_map(conv, tr.supports[:-1])
    torch.testing.assert_close((jac @ z.unsqueeze(-1)).squeeze(-1) + c, tr.pre_activations[-1])
    for b in range(2):

        def pre_last(v, b=b):
            x = v
            for i in range(conv.n_layers - 1):
                x = conv.pre_activation(i, x) * tr.supports[i][b]
            return conv.pre_activation(conv.n_layers - 1, x)

        auto = torch.autograd.functional.jacobian(pre_last, z[b : b + 1]).squeeze(0).squeeze(1)
        torch.testing.assert_close(jac[b], auto)
    rows = torch.tensor([0, 5, 9])
    jac_r, c_r = affine_map(conv, tr.supports[:-1], rows)
    torch.testing.assert_close(jac_r, jac[:, rows]) and torch.testing.assert_close(c_r, c[:, rows])


def test_conv_generator_round_trips_through_the_safe_format(conv, tmp_path):
    conv.save(tmp_path / "c")
    spec = json.loads((tmp_path / "c.json").read_text())
    assert spec["version"] == 2 and spec["layers"][1]["type"] == "conv_transpose2d"
    back = io.load_generator(tmp_path / "c")
    z = conv.sample_latent(3, seed=1)
    torch.testing.assert_close(back(z), conv(z), rtol=0, atol=0)
    assert back.describe() == conv.describe()
    # a dense generator saved today still has no 'layers' and reads as before
    dense = geninv.Generator.random([3, 7, 9], seed=1)
    dense.save(tmp_path / "d")
    assert "layers" not in json.loads((tmp_path / "d.json").read_text())


def test_a_version_1_file_still_loads(tmp_path):
    G = geninv.Generator.random([3, 7, 9], seed=1, bias=True)
    spec = G.describe() | {"format": "geninv-generator", "version": 1}
    tensors = {f"weight_{i}": G.weight(i) for i in range(2)} | {f"bias_{i}": G.bias(i) for i in range(2)}
    H = io.load_generator_bytes(json.dumps(spec).encode(), st_save(tensors))
    z = G.sample_latent(2, seed=0)
    torch.testing.assert_close(H(z), G(z), rtol=0, atol=0)


def _conv_files(conv):
    spec = conv.describe() | {"format": "geninv-generator", "version": 2}
    tensors = {f"weight_{i}": conv.weight_of(i).contiguous() for i in range(conv.n_layers)}
    tensors |= {f"bias_{i}": conv.bias(i).contiguous() for i in range(conv.n_layers)}
    return spec, tensors


def _with_layer(spec, i, **change):
    layers = [dict(entry) for entry in spec["layers"]]
    layers[i] |= change
    return spec | {"layers": layers}


@pytest.mark.parametrize(
    ("change", "match"),
    [
        (lambda s: s | {"version": 1}, "'layers' needs format version 2"),
        (lambda s: s | {"layers": s["layers"][:2]}, "'layers' must be a list of 3"),
        (lambda s: s | {"layers": [{"type": "dense"}, "conv", {"type": "dense"}]}, r"'layers\[1\]' must be an object"),
        (lambda s: _with_layer(s, 1, type="conv3d"), r"'layers\[1\]' must be an object with 'type'"),
        (lambda s: _with_layer(s, 0, kernel=3), r"'layers\[0\]' \(dense\) may only have 'type'"),
        (lambda s: _with_layer(s, 1, dilation=2), "unexpected \\['dilation'\\]"),
        (lambda s: _with_layer(s, 1, kernel=10**6), "'kernel' must be from 1 to 32"),
        (lambda s: _with_layer(s, 1, stride=0), "'stride' must be from 1 to 16"),
        (lambda s: _with_layer(s, 1, padding=4), "'padding' must be from 0 to 3"),
        (lambda s: _with_layer(s, 1, output_padding=2), "'output_padding' must be from 0 to 1"),
        (lambda s: _with_layer(s, 1, in_channels=True), "must be a non-negative integer"),
        (lambda s: _with_layer(s, 1, in_height=3), r"reads 3x3x2 = 18 inputs; 'widths\[1\]' is 12"),
        (lambda s: _with_layer(s, 2, out_channels=2), r"gives 128 outputs; 'widths\[3\]' is 64"),
    ],
)
def test_hostile_conv_layers_are_refused_naming_the_problem(conv, change, match):
    spec, tensors = _conv_files(conv)
    with pytest.raises(ModelFormatError, match=match):
        io.load_generator_bytes(json.dumps(change(spec)).encode(), st_save(tensors))


def test_an_upload_with_conv_layers_meets_the_budget_before_its_weights_are_parsed(conv):
    spec, _ = _conv_files(conv)
    big = _with_layer(_with_layer(spec, 1, out_channels=625), 2, in_channels=625, out_channels=625)
    big = big | {"widths": [3, 12, 10000, 40000]}  # 625 channels of 4x4, then 8x8: past max_width
    with pytest.raises(geninv.BudgetError, match="max_width"):
        io.load_generator_bytes(json.dumps(big).encode(), b"not even safetensors", limits=geninv.limits.Budget())


def test_a_kernel_of_the_wrong_shape_is_refused(conv):
    spec, tensors = _conv_files(conv)
    with pytest.raises(ModelFormatError, match=r"'weight_1' has shape \(2, 3, 4, 4\); its conv_transpose2d"):
        io.load_generator_bytes(json.dumps(spec).encode(), st_save(tensors | {"weight_1": torch.zeros(2, 3, 4, 4)}))


def test_from_sequential_converts_a_dcgan_decoder():
    torch.manual_seed(0)
    module = nn.Sequential(
        nn.Linear(5, 24),
        nn.ReLU(),
        nn.Unflatten(1, (6, 2, 2)),
        nn.ConvTranspose2d(6, 4, 3, stride=2, padding=1),
        nn.ReLU(),
        nn.Conv2d(4, 3, 3, padding=1),
        nn.ReLU(),
        nn.ConvTranspose2d(3, 1, 4, stride=2, padding=1),
        nn.Sigmoid(),
        nn.Flatten(),
    ).double()
    G = io.from_sequential(module)
    assert G.widths == (5, 24, 36, 27, 36)
    assert [G.layer_type(i) for i in range(4)] == ["dense", "conv_transpose2d", "conv2d", "conv_transpose2d"]
    z = torch.randn(4, 5, dtype=torch.float64)
    torch.testing.assert_close(G(z), module(z).detach())
    with pytest.raises(ModelFormatError, match="needs its input shape"):
        io.from_sequential(nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.ConvTranspose2d(2, 1, 2)))
    with pytest.raises(ModelFormatError, match="groups=1"):
        io.from_sequential(nn.Sequential(nn.Linear(4, 8), nn.Unflatten(1, (2, 2, 2)), nn.Conv2d(2, 2, 1, groups=2)))


def test_certify_a_conv_generator_under_gaussian_measurements(conv):
    """The certificate's output step uses the operator's rows: M = A diag(phi'(pre)) W_L per sample, and
    the whole-network test A diag(phi') J."""
    z = conv.sample_latent(3, seed=4)
    a = ops.GaussianMatrix(40, 64, seed=2)
    cert = geninv.certify(conv, z, operator=a)
    out = cert.layers[0]
    assert (out.rows == 40).all() and out.unknowns == 32
    tr = conv.trace(z)
    d = torch.sigmoid(tr.pre_activations[-1]) * (1 - torch.sigmoid(tr.pre_activations[-1]))
    jac, _ = affine_map(conv, tr.supports[:-1])
    for b in range(3):
        m = a.matrix @ (d[b].unsqueeze(-1) * conv.weight(2))
        support = tr.supports[1][b]
        assert int(out.support_rank[b]) == geninv.theory.matrix_rank(m[:, support])
        js = a.matrix @ (d[b].unsqueeze(-1) * jac[b])
        sv = torch.linalg.svdvals(js)
        assert np.isclose(cert.network.sigma_min[b], float(sv[-1]), rtol=1e-8)
    assert cert.identifiable_network.all()
    # 2 measurements cannot pin down 3 latents
    few = geninv.certify(conv, z, operator="gaussian:2:seed=0")
    assert not few.identifiable_network.any() and (few.network.rank <= 2).all()
    with pytest.raises(geninv.InvalidMaskError, match="not both"):
        geninv.certify(conv, z, mask=np.ones(64, bool), operator=a)


def test_certify_and_oracle_agree_on_masks_given_as_operators(conv):
    z = conv.sample_latent(3, seed=4)
    mask = geninv.masks.random_pixels(64, 0.3, seed=1)
    by_mask = geninv.certify(conv, z, mask=mask)
    by_operator = geninv.certify(conv, z, operator=ops.Mask(mask))
    np.testing.assert_array_equal(by_mask.layers[0].rows, by_operator.layers[0].rows)
    np.testing.assert_allclose(by_mask.network.sigma_min, by_operator.network.sigma_min)
    obs = geninv.observe(conv, z, operator="gaussian:48:seed=3", noise_sigma=0.01, seed=2)
    z_or = oracle_latent(conv, obs)
    assert float(geninv.metrics.latent_error(z_or, z).max()) < 0.5


def test_layerwise_steps_fall_back_to_matrix_free_solvers(conv):
    """With the dense limit at 0 no convolution is materialised: the steps run matrix-free (CGLS /
    projected gradient) and the clean inversion is still exact."""
    G = geninv.Generator.random_conv(3, [3, 2, 1], size=2, seed=0)
    z = G.sample_latent(2, seed=1)
    obs = geninv.observe(G, z, mask=geninv.masks.random_pixels(64, 0.25, seed=3))
    ops.set_dense_limit(0)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            res = geninv.invert(G, obs, "latent-pursuit")
    finally:
        ops.set_dense_limit(None)
    assert any("matrix-free" in step.solver for step in res.steps)
    assert float(geninv.metrics.latent_error(res.z_hat, z).max()) < 1e-9


def test_layerwise_methods_invert_sigmoid_outputs_under_gaussian_measurements():
    """No layer-wise output step exists for y = A sigmoid(W x + b): the methods start from the joint
    refit of z, and say so in their steps; with refit_iter=0 they refuse, naming the reason."""
    G = geninv.Generator.random([4, 16, 48], seed=0, output="sigmoid", bias=True)
    z = G.sample_latent(3, seed=1)
    obs = geninv.observe(G, z, operator="gaussian:30:seed=2")
    for method in ("latent-pursuit", "lbp", "lp", "hybrid"):
        res = geninv.invert(G, obs, method)
        assert float(geninv.metrics.latent_error(res.z_hat, z).max()) < 1e-9
        assert "no layer-wise output step" in res.steps[0].solver
    with pytest.raises(geninv.UnsupportedError, match="not linear in x"):
        geninv.invert(G, obs, "latent-pursuit", refit_iter=0)
