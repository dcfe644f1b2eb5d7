"""One seeding scheme: an independent random stream per (seed, purpose).

Every random choice geninv makes (weights, latents, masks, noise, measurement matrices, the
initialisations of iterative methods) draws from a stream derived from the user's integer seed
*and* the purpose of the draw, with numpy's :class:`~numpy.random.SeedSequence`. Two purposes
never share a stream, whatever integers the user picks: a latent drawn with seed 3 and a gd start
drawn with seed 3 are independent (with plain ``torch.manual_seed(3)`` they were identical, and
gd's first restart started at the true latent).
"""

from __future__ import annotations

import numpy as np
import torch

from geninv._validation import check_int

PURPOSES = {
    "weights": 1,
    "latent": 2,
    "mask": 3,
    "noise": 4,
    "init": 5,
    "measurement": 6,
    "sweep": 7,
    "phase": 8,
}
"""Stream identifiers; a new purpose gets a new number (never reuse one)."""

MAX_SEED = 2**128 - 1


def _sequence(seed: int, purpose: str, *keys: int) -> np.random.SeedSequence:
    seed = check_int("seed", seed, low=0, high=MAX_SEED)
    return np.random.SeedSequence([seed, PURPOSES[purpose], *(int(k) for k in keys)])


def derive(seed: int, purpose: str, *keys: int) -> int:
    """A 63-bit integer seed for ``purpose`` (and optional sub-keys), independent across purposes."""
    state = _sequence(seed, purpose, *keys).generate_state(2, np.uint32)
    return (int(state[0]) << 31) ^ int(state[1])


def torch_generator(seed: int | None, purpose: str, *keys: int) -> torch.Generator:
    """A CPU ``torch.Generator`` for ``purpose``; ``seed=None`` draws fresh OS entropy."""
    rng = torch.Generator()
    if seed is None:
        rng.seed()
    else:
        rng.manual_seed(derive(seed, purpose, *keys))
    return rng


def numpy_generator(seed: int | None, purpose: str, *keys: int) -> np.random.Generator:
    """A numpy ``Generator`` for ``purpose``; ``seed=None`` draws fresh OS entropy."""
    if seed is None:
        return np.random.default_rng()
    return np.random.default_rng(_sequence(seed, purpose, *keys))
