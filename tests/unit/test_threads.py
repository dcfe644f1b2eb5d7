"""The thread policy: applied to one call, restored afterwards (also when the call raises)."""

from __future__ import annotations

import itertools

import pytest
import torch

import geninv
from geninv import _threads
from geninv.errors import ShapeError


@pytest.fixture
def two_threads():
    before = torch.get_num_threads()
    torch.set_num_threads(2)
    yield
    torch.set_num_threads(before)


def test_certify_restores_the_thread_count(two_threads):
    G = geninv.Generator.random([20, 128, 392, 784], seed=0)
    geninv.certify(G, G.sample_latent(3, seed=0))
    assert torch.get_num_threads() == 2
    with pytest.raises(ShapeError):
        geninv.certify(G, torch.zeros(3, 7, dtype=torch.float64))  # raises inside the thread context
    assert torch.get_num_threads() == 2


@pytest.mark.parametrize("method", ["gd", "latent-pursuit", "hybrid"])
def test_invert_restores_the_thread_count(two_threads, method):
    G = geninv.Generator.random([4, 16, 48], seed=0)
    obs = geninv.observe(G, G.sample_latent(2, seed=1))
    geninv.invert(G, obs, method)
    assert torch.get_num_threads() == 2
    seen = []

    def progress(fraction, message):
        seen.append(torch.get_num_threads())
        raise RuntimeError("stop here")

    with pytest.raises(RuntimeError, match="stop here"):
        geninv.invert(G, obs, "gd", n_iter=5, progress=progress)
    assert seen == [1]  # small work runs on one thread
    assert torch.get_num_threads() == 2


def test_num_threads_restores_after_an_error(two_threads):
    with pytest.raises(ValueError), _threads.num_threads(1):
        assert torch.get_num_threads() == 1
        raise ValueError
    assert torch.get_num_threads() == 2


@pytest.mark.parametrize(
    ("work", "current", "idle", "expected"),
    [
        (1e3, 8, 8.0, 1),  # small work: one thread
        (1.9 * _threads.SMALL_WORK, 8, 8.0, 1),
        (2 * _threads.SMALL_WORK, 8, 8.0, 2),  # one thread per SMALL_WORK: grows with the work
        (5 * _threads.SMALL_WORK, 8, 8.0, 5),
        (1e12, 8, 8.0, 8),  # never above torch's own setting
        (1e12, 1, 8.0, 1),
        (1e12, 2, 0.7, 1),  # another process on the other core of a 2-core machine: one thread
        (1e12, 16, 3.5, 3),  # only whole idle cores
    ],
)
def test_policy(work, current, idle, expected):
    assert _threads.policy_threads(work, current=current, idle=idle) == expected


def test_policy_adds_at_most_one_thread_per_added_signal():
    G = geninv.load_generator("mnist")
    counts = [_threads.policy_threads(_threads.forward_macs(G, b), current=16, idle=16.0) for b in range(1, 2000)]
    assert all(0 <= b - a <= 1 for a, b in itertools.pairwise(counts))
