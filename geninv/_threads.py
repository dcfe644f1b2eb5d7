"""Run small torch work on one intra-op thread.

On a 2-core machine with anything else running, torch's second thread makes small problems
100x slower (gd on one MNIST signal: 11 s instead of 0.1 s for 200 steps; a one-sample
certificate: 12.7 s instead of 0.09 s), because the threads spin waiting on each other.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import torch

SMALL_WORK = 2e7
"""Multiply-adds of one batched forward pass below which torch runs on one thread."""


def forward_macs(generator, batch: int) -> int:
    """Multiply-adds of one forward pass of ``batch`` signals."""
    return batch * sum(layer.n_in * layer.n_out for layer in generator.layers)


@contextlib.contextmanager
def threads_for(generator, batch: int) -> Iterator[None]:
    """One intra-op thread while the work is small and on the CPU; torch's setting is restored after."""
    before = torch.get_num_threads()
    if generator.device.type != "cpu" or forward_macs(generator, batch) >= SMALL_WORK or before == 1:
        yield
        return
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(before)
