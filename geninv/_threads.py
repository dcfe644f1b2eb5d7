"""Torch's intra-op thread count: chosen per call, applied to that call only, restored afterwards.

Measured by ``benchmarks/bench_threads.py`` (``benchmarks/results/threads.json``): on a 2-core
machine a second torch thread makes ``certify`` about 1.5x faster while the other core is idle, and
2x to 20x *slower* as soon as anything else runs on it, because the threads spin waiting on each
other (certify on 56 MNIST signals: 22 s with 2 threads against 3 s with 1 under load; on one
signal 0.8 s against 0.02 s). Small work never gains from a second thread. So the policy is:

- one thread per ``SMALL_WORK`` forward multiply-adds of the batch (one thread below it), so the
  count grows with the work instead of jumping;
- never more threads than idle cores: the usable cores minus the 1-minute load average (which
  includes this process's own recent work), at least one;
- never more than torch's own setting (a user's ``torch.set_num_threads(1)`` is respected), and
  nothing changes off the CPU.

The cost per signal is then smooth in the batch size whatever the machine is doing: where the policy
adds a thread, the extra core is idle and the thread pays for itself.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator

import torch

SMALL_WORK = 2e7
"""Forward multiply-adds per torch thread (one MNIST-decoder forward pass is 3.6e5 per signal)."""


def forward_macs(generator, batch: int) -> int:
    """Multiply-adds of one forward pass of ``batch`` signals."""
    return batch * sum(layer.n_in * layer.n_out for layer in generator.layers)


@contextlib.contextmanager
def num_threads(n: int) -> Iterator[None]:
    """Run the block with ``n`` torch intra-op threads; the previous count is restored, also on error."""
    before = torch.get_num_threads()
    if n == before:
        yield
        return
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def idle_cores() -> float:
    """Usable cores minus the 1-minute load average (all usable cores where the load is unknown)."""
    try:
        cores = len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        cores = os.cpu_count() or 1
    try:
        load = os.getloadavg()[0]
    except (AttributeError, OSError):
        load = 0.0
    return max(0.0, cores - load)


def policy_threads(work: float, *, current: int | None = None, idle: float | None = None) -> int:
    """Threads for ``work`` forward multiply-adds: one per ``SMALL_WORK``, capped by idle cores and ``current``.

    Parameters
    ----------
    work : float
        Forward multiply-adds of the batch (:func:`forward_macs`).
    current : int, optional
        Torch's thread setting (default: ``torch.get_num_threads()``).
    idle : float, optional
        Idle cores (default: :func:`idle_cores`).
    """
    current = torch.get_num_threads() if current is None else current
    by_work = int(work // SMALL_WORK)
    if by_work <= 1 or current <= 1:
        return 1
    idle = idle_cores() if idle is None else idle
    return max(1, min(current, by_work, int(idle)))


def threads_for(generator, batch: int) -> contextlib.AbstractContextManager[None]:
    """Apply the policy's thread count for ``batch`` signals of ``generator`` to the block (CPU only)."""
    if generator.device.type != "cpu":
        return contextlib.nullcontext()
    return num_threads(policy_threads(forward_macs(generator, batch)))


def describe() -> dict[str, object]:
    """The policy as plain data (written next to benchmark results)."""
    return {
        "rule": "min(torch threads, forward MACs // SMALL_WORK, floor(usable cores - 1-min load average)), >= 1",
        "small_work": SMALL_WORK,
        "idle_cores_now": idle_cores(),
    }
