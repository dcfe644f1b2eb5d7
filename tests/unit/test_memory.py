"""The memory budget: chunked solves give the same answers as one batch."""

import warnings

import pytest
import torch

import geninv
from geninv import _memory


@pytest.fixture
def tiny_budget():
    _memory.set_budget("1MiB")
    yield
    _memory.set_budget(None)


def _run(G, obs, method):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return geninv.invert(G, obs, method)


@pytest.mark.parametrize("method", ["latent-pursuit", "lbp"])
def test_chunked_and_unchunked_results_agree(method, tiny_budget):
    G = geninv.Generator.random([10, 60, 200], seed=0, bias=True, output="sigmoid")
    obs = geninv.observe(G, G.sample_latent(24, seed=1), snr_db=30, seed=2)
    # one signal's Gram of the output step is 3 * (200 * 60 + 60**2) * 8 bytes = 374 kB: chunks of 2
    assert _memory.chunk_size(24, 3 * (200 * 60 + 60 * 60) * 8) == 2
    chunked = _run(G, obs, method)
    _memory.set_budget(None)
    whole = _run(G, obs, method)
    torch.testing.assert_close(chunked.z_hat, whole.z_hat, rtol=1e-10, atol=1e-12)
    assert list(chunked.statuses) == list(whole.statuses)


def test_budget_parsing_and_errors(monkeypatch):
    assert _memory.parse_bytes("2GiB") == 2 << 30 and _memory.parse_bytes("1048576") == 1 << 20
    monkeypatch.setenv("GENINV_MEMORY_BUDGET", "512MiB")
    assert _memory.budget() == 512 << 20
    with pytest.raises(geninv.InvalidValueError, match="GENINV_MEMORY_BUDGET"):
        _memory.parse_bytes("lots")
    with pytest.raises(geninv.InvalidValueError, match="at least 1MiB"):
        _memory.parse_bytes("10")
    assert [s.stop - s.start for s in _memory.chunks(10, _memory.budget() // 3)] == [3, 3, 3, 1]
