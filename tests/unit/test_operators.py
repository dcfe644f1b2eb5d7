"""The linear-operator contract: every operator passes the dot test, and dense / restrict / @ agree with it."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn

import geninv
from geninv import operators as ops

DOT_TOL = {torch.float64: 1e-12, torch.float32: 1e-5}
KINDS = (
    "dense",
    "conv_transpose2d",
    "conv2d",
    "identity",
    "mask",
    "subsample",
    "gaussian",
    "blur",
    "dct",
    "composed",
    "restricted",
    "adjoint",
)


def _build(kind: str, data, dtype: torch.dtype) -> ops.LinearOperator:
    """One operator of ``kind`` with shapes, strides and seeds drawn by hypothesis."""
    seed = data.draw(st.integers(0, 10_000), label="seed")
    rng = torch.Generator().manual_seed(seed)
    if kind == "dense":
        m, n = data.draw(st.integers(1, 30)), data.draw(st.integers(1, 30))
        return ops.Dense(torch.randn(m, n, generator=rng, dtype=torch.float64).to(dtype))
    if kind in ("conv_transpose2d", "conv2d"):
        c_in, c_out = data.draw(st.integers(1, 3)), data.draw(st.integers(1, 3))
        k = data.draw(st.integers(1, 4))
        stride = data.draw(st.integers(1, 3))
        padding = data.draw(st.integers(0, k - 1))
        h, w = data.draw(st.integers(k, 8)), data.draw(st.integers(k, 8))
        if kind == "conv2d":
            weight = torch.randn(c_out, c_in, k, k, generator=rng, dtype=torch.float64).to(dtype)
            return ops.Conv2d(weight, (c_in, h, w), stride=stride, padding=padding)
        weight = torch.randn(c_in, c_out, k, k, generator=rng, dtype=torch.float64).to(dtype)
        q = data.draw(st.integers(0, stride - 1))
        return ops.ConvTranspose2d(weight, (c_in, h, w), stride=stride, padding=padding, output_padding=q)
    if kind == "identity":
        return ops.Identity(data.draw(st.integers(1, 30)))
    if kind == "mask":
        n = data.draw(st.integers(1, 30))
        mask = np.random.default_rng(seed).random(n) < 0.5
        mask[seed % n] = True
        return ops.Mask(mask)
    if kind == "subsample":
        n = data.draw(st.integers(1, 30))
        return ops.Subsample(data.draw(st.integers(1, n)), n, seed=seed)
    if kind == "gaussian":
        return ops.GaussianMatrix(data.draw(st.integers(1, 30)), data.draw(st.integers(1, 30)), seed=seed)
    if kind == "blur":
        side = data.draw(st.integers(3, 12))
        return ops.Blur((side, side + 1), sigma=data.draw(st.floats(0.3, 2.0)), stride=data.draw(st.integers(1, 3)))
    if kind == "dct":
        h, w = data.draw(st.integers(1, 8)), data.draw(st.integers(1, 8))
        return ops.SubsampledDCT((h, w), data.draw(st.integers(1, h * w)), seed=seed)
    inner = _build("conv_transpose2d", data, dtype)
    if kind == "composed":
        outer = ops.GaussianMatrix(data.draw(st.integers(1, 20)), inner.shape[0], seed=seed)
        return outer @ inner
    if kind == "restricted":
        rows = np.random.default_rng(seed).random(inner.shape[0]) < 0.5
        rows[seed % inner.shape[0]] = True
        return inner.restrict(torch.from_numpy(rows))
    return inner.T


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
@pytest.mark.parametrize("kind", KINDS)
@settings(max_examples=15, deadline=None)
@given(data=st.data())
def test_dot_test_and_dense_agree_with_forward(kind, dtype, data):
    """<A x, y> = <x, A^T y> (PyLops' dottest) and dense() is the matrix forward applies."""
    op = _build(kind, data, dtype)
    assert ops.dottest(op, dtype=dtype) <= DOT_TOL[dtype]
    m, n = op.shape
    x = torch.randn(4, n, generator=torch.Generator().manual_seed(1), dtype=torch.float64).to(dtype)
    out = op.forward(x)
    assert out.shape == (4, m) and out.dtype == dtype
    matrix = op.dense()
    assert matrix is not None and tuple(matrix.shape) == (m, n)
    torch.testing.assert_close(x @ matrix.to(dtype).T, out, rtol=DOT_TOL[dtype] * 100, atol=DOT_TOL[dtype] * 100)
    # leading dimensions are batch dimensions
    torch.testing.assert_close(op.forward(x.reshape(2, 2, n)).reshape(4, m), out)


@pytest.mark.parametrize("kind", KINDS)
@settings(max_examples=8, deadline=None)
@given(data=st.data())
def test_restrict_and_composition_follow_forward(kind, data):
    op = _build(kind, data, torch.float64)
    m, n = op.shape
    rows = torch.from_numpy(np.random.default_rng(0).permutation(m)[: max(1, m // 2)])
    x = torch.randn(3, n, generator=torch.Generator().manual_seed(2), dtype=torch.float64)
    sub = op.restrict(rows)
    assert sub.shape == (rows.numel(), n)
    torch.testing.assert_close(sub.forward(x), op.forward(x)[:, rows])
    assert ops.dottest(sub) <= 1e-12
    torch.testing.assert_close(sub.dense(), op.dense()[rows])
    outer = ops.GaussianMatrix(5, m, seed=3)
    both = outer @ op
    torch.testing.assert_close(both.forward(x), outer.forward(op.forward(x)))
    torch.testing.assert_close(both.dense(), outer.dense() @ op.dense())
    assert ops.dottest(both) <= 1e-12


def test_convolutions_are_torchs_modules_on_flattened_images():
    rng = torch.Generator().manual_seed(0)
    up = nn.ConvTranspose2d(3, 2, 4, stride=2, padding=1, output_padding=1, bias=False).double()
    down = nn.Conv2d(2, 3, 3, stride=2, padding=1, bias=False).double()
    x = torch.randn(5, 3, 6, 7, generator=rng, dtype=torch.float64)
    op_up = ops.ConvTranspose2d(up.weight.detach(), (3, 6, 7), stride=2, padding=1, output_padding=1)
    assert op_up.out_shape == tuple(up(x).shape[1:])
    torch.testing.assert_close(op_up.forward(x.flatten(1)), up(x).flatten(1).detach())
    img = up(x).detach()
    op_down = ops.Conv2d(down.weight.detach(), tuple(img.shape[1:]), stride=2, padding=1)
    torch.testing.assert_close(op_down.forward(img.flatten(1)), down(img).flatten(1).detach())
    # the adjoint of a transposed convolution is the convolution with the same weight (autograd agrees)
    xg = x.flatten(1).clone().requires_grad_(True)
    y = torch.randn(5, op_up.shape[0], generator=rng, dtype=torch.float64)
    (op_up.forward(xg) * y).sum().backward()
    torch.testing.assert_close(xg.grad, op_up.adjoint(y))


def test_selections_know_their_rows_and_others_do_not():
    mask = np.array([True, False, True, True, False])
    assert ops.Mask(mask).selection().tolist() == [0, 2, 3]
    assert ops.Identity(4).selection().tolist() == [0, 1, 2, 3]
    assert (ops.Mask(mask) @ ops.Identity(5)).selection().tolist() == [0, 2, 3]
    assert ops.Identity(5).restrict([1, 3]).selection().tolist() == [1, 3]
    assert ops.GaussianMatrix(3, 5).selection() is None and not ops.GaussianMatrix(3, 5).is_selection
    assert ops.Subsample(3, 10, seed=1).is_selection and ops.Subsample(3, 10, seed=1).shape == (3, 10)


def test_dense_limit_makes_convolutions_matrix_free():
    conv = ops.ConvTranspose2d(torch.ones(1, 1, 2, 2), (1, 3, 3), stride=2)
    assert conv.dense() is not None
    ops.set_dense_limit(0)
    try:
        assert conv.dense() is None
        assert ops.Dense(torch.ones(2, 3)).dense() is not None  # a stored matrix is always at hand
    finally:
        ops.set_dense_limit(None)
    assert ops.dense_limit() == ops.DENSE_LIMIT_DEFAULT


def test_structured_operators():
    dct = ops.SubsampledDCT((28, 28), 100, seed=1)
    rows = dct.dense()
    torch.testing.assert_close(rows @ rows.T, torch.eye(100, dtype=torch.float64))  # orthonormal rows
    assert int(dct._index[0]) == 0  # the mean is always measured
    c = ops.dct_matrix(8)
    torch.testing.assert_close(c @ c.T, torch.eye(8, dtype=torch.float64))
    blur = ops.Blur((28, 28), sigma=1.0, stride=2)
    assert blur.shape == (196, 784)
    flat = blur.forward(torch.ones(1, 784, dtype=torch.float64))
    assert math.isclose(float(flat.reshape(14, 14)[7, 7]), 1.0, rel_tol=1e-12)  # a normalised kernel


@pytest.mark.parametrize(
    ("spec", "shape", "kind"),
    [
        ("gaussian:300:seed=1", (300, 784), ops.GaussianMatrix),
        ("gaussian:50", (50, 784), ops.GaussianMatrix),
        ("dct:200:seed=3", (200, 784), ops.SubsampledDCT),
        ("subsample:100", (100, 784), ops.Subsample),
        ("blur", (784, 784), ops.Blur),
        ("blur:sigma=1.5:stride=2", (196, 784), ops.Blur),
    ],
)
def test_measurement_specs(spec, shape, kind):
    op = ops.from_spec(spec, 784)
    assert isinstance(op, kind) and op.shape == shape
    assert ops.from_spec(op.describe().get("spec", spec), 784).shape == shape
    G = geninv.Generator.random([4, 16, 784], seed=0)
    assert geninv.measurement_operator(spec, G).shape == shape


@pytest.mark.parametrize(
    ("spec", "match"),
    [
        ("gaussian", "number of measurements"),
        ("gaussian:0", "number of measurements"),
        ("gaussian:-3", "number of measurements"),
        ("gaussian:10:seed=1:seed=2", "unknown or repeated"),
        ("gaussian:10:sigma=2", "unknown or repeated"),
        ("gaussian:1000", "at most 784"),
        ("fourier:10", "unknown kind"),
        ("blur:sigma=big", "sigma a positive number"),
        ("blur:stride=20", "stride <= 8"),
        ("", "non-empty"),
    ],
)
def test_bad_measurement_specs_are_named(spec, match):
    with pytest.raises(geninv.InvalidValueError, match=rf"'measurements'.*{match}|{match}.*'measurements'"):
        ops.from_spec(spec, 784)


def test_image_operators_need_an_image():
    with pytest.raises(geninv.InvalidValueError, match="non-image output"):
        ops.from_spec("dct:10", 50)
    assert ops.from_spec("gaussian:10", 50).shape == (10, 50)
