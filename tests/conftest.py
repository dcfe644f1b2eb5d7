"""Shared fixtures: explicit seeds, float64 toy generators."""

from __future__ import annotations

import pytest
import torch

import geninv

EXACT_RTOL_F64 = 1e-8


@pytest.fixture
def small_generator() -> geninv.Generator:
    """A tiny well-expanded relu generator (float64)."""
    return geninv.Generator.random([4, 16, 48], seed=0)


@pytest.fixture
def mnist_like_generator() -> geninv.Generator:
    """The random [20, 128, 392, 784] generator of the findings (float64)."""
    return geninv.Generator.random([20, 128, 392, 784], seed=0)


@pytest.fixture(autouse=True)
def _single_thread_determinism():
    torch.use_deterministic_algorithms(False)
    yield
