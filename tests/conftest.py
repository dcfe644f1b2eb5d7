"""Shared fixtures: explicit seeds, float64 toy generators."""

from __future__ import annotations

import gzip
from pathlib import Path

import numpy as np
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


@pytest.fixture
def tiny_data(tmp_path) -> Path:
    """48 random 28x28 'digits' as MNIST idx files, for the trainers' tests."""
    from geninv import train

    rng = np.random.default_rng(0)
    for name, array in (
        (train.IMAGES, (rng.random((48, 28, 28)) < 0.15) * 255),
        (train.LABELS, rng.integers(0, 10, 48)),
    ):
        header = bytes([0, 0, 0x08, array.ndim]) + b"".join(int(d).to_bytes(4, "big") for d in array.shape)
        with gzip.open(tmp_path / name, "wb") as handle:
            handle.write(header + array.astype(np.uint8).tobytes())
    return tmp_path
