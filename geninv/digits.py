"""A few dozen real MNIST test digits, shipped beside the MNIST generator, and their projection onto its range.

A real digit is not an output of the generator: no latent z gives ``G(z) = x`` exactly. Inverting it
asks for the latent whose output is closest, the **projection** of ``x`` onto the generator's range,
``z_p = argmin_z ||G(z) - x||``. It is a non-convex problem, so :func:`project` returns the best fit it
finds (the lowest loss of a few methods on the whole, clean digit), not a certified minimum.

The digits (``assets/mnist_digits.npz``: images as uint8, labels, and each digit's index in the
test set) are written by ``python -m geninv.train digits`` from the MNIST idx files; MNIST is by
Y. LeCun, C. Cortes and C. Burges, licensed CC BY-SA 3.0.
"""

from __future__ import annotations

import functools
import io
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from geninv._validation import check_int, fail
from geninv.errors import ModelFormatError

FILE = "mnist_digits.npz"
CREDIT = "MNIST test digits by Y. LeCun, C. Cortes and C. Burges, CC BY-SA 3.0"
SIDE = 28
PER_CLASS = 4
"""Digits of each class written by :func:`write_digits` (the first ones of the test set, in file order)."""
PROJECTION_METHODS = ("hybrid", "gd")


@dataclass(frozen=True)
class Digits:
    """The shipped digits: ``images`` (N, 784) float64 in [0, 1], ``labels`` (N,), ``indices`` (N,).

    ``projections`` (N, n_0): each digit's best fit found in the shipped MNIST generator's range
    (:func:`project` with :data:`STORED_OPTIONS`), valid for the weights whose SHA-256 is
    ``generator_sha256`` (:func:`stored_projection` checks it).
    """

    images: np.ndarray
    labels: np.ndarray
    indices: np.ndarray
    projections: np.ndarray
    generator_sha256: str

    def __len__(self) -> int:
        return int(self.labels.shape[0])

    def describe(self, k: int) -> str:
        """E.g. ``'a 7 (MNIST test digit #0)'``."""
        k = check_int("digit", k, low=0, high=len(self) - 1)
        return f"a {int(self.labels[k])} (MNIST test digit #{int(self.indices[k])})"


def _asset() -> Any:
    from geninv._assets import asset

    return asset(FILE)


@functools.lru_cache(maxsize=1)
def load_digits() -> Digits:
    """The shipped digits (read once, through the same package-resource lookup as the generators).

    Examples
    --------
    >>> d = load_digits()
    >>> d.images.shape[1], float(d.images.max()) <= 1.0
    (784, True)
    """
    raw = _asset().read_bytes()
    with np.load(io.BytesIO(raw), allow_pickle=False) as data:
        images, labels, indices = data["images"], data["labels"], data["indices"]
        projections, sha = data["projections"], str(data["generator_sha256"])
    n = labels.shape[0]
    if (
        images.dtype != np.uint8
        or images.shape != (n, SIDE * SIDE)
        or indices.shape != (n,)
        or projections.ndim != 2
        or projections.shape[0] != n
        or n == 0
    ):
        raise ModelFormatError(
            f"{FILE} must hold uint8 images (N, {SIDE * SIDE}), labels (N,), indices (N,) and projections (N, n_0)."
        )
    images = images.astype(np.float64) / 255.0
    projections = projections.astype(np.float64)
    labels, indices = labels.astype(np.int64), indices.astype(np.int64)
    for arr in (images, labels, indices, projections):
        arr.setflags(write=False)
    return Digits(images=images, labels=labels, indices=indices, projections=projections, generator_sha256=sha)


def shipped_sha256(name: str = "mnist") -> str:
    """SHA-256 of a shipped generator's weights file."""
    import hashlib

    from geninv._assets import asset

    return hashlib.sha256(asset(f"{name}.safetensors").read_bytes()).hexdigest()


def stored_projection(k: int, spec: str) -> np.ndarray | None:
    """The stored best fit of digit ``k`` for the generator ``spec``: only for the shipped MNIST
    generator whose weights are the ones it was computed for; None otherwise (compute it)."""
    d = load_digits()
    k = check_int("digit", k, low=0, high=len(d) - 1)
    if spec != "mnist" or d.generator_sha256 != shipped_sha256("mnist"):
        return None
    return d.projections[k]


def count() -> int:
    """How many digits are shipped."""
    return len(load_digits())


def digit(k: int) -> np.ndarray:
    """Digit ``k`` as a (784,) float64 array in [0, 1]."""
    d = load_digits()
    k = check_int("digit", k, low=0, high=len(d) - 1)
    return d.images[k]


STORED_OPTIONS: dict[str, dict[str, Any]] = {"gd": {"restarts": 4}}
"""Options of :func:`project` for the stored projections (more restarts than a page would wait for)."""


def write_digits(data_dir: str | Path, out_dir: str | Path, *, per_class: int = PER_CLASS) -> Path:
    """Write the first ``per_class`` test digits of each class (in file order) to ``out_dir/mnist_digits.npz``,
    with their projections onto the shipped MNIST generator's range (minutes on a CPU)."""
    from geninv.io import load_generator
    from geninv.train import IMAGES, LABELS, read_idx

    per_class = check_int("per_class", per_class, low=1, high=100)
    data_dir = Path(data_dir)
    images = read_idx(data_dir / IMAGES).reshape(-1, SIDE * SIDE)
    labels = read_idx(data_dir / LABELS).astype(np.int64)
    chosen = np.sort(np.concatenate([np.flatnonzero(labels == c)[:per_class] for c in range(10)]))
    chosen_images = images[chosen].astype(np.uint8)
    generator = load_generator("mnist").double()
    z = project(generator, chosen_images.astype(np.float64) / 255.0, options=STORED_OPTIONS)
    out = Path(out_dir) / FILE
    out.parent.mkdir(parents=True, exist_ok=True)
    buffer = io.BytesIO()
    np.savez_compressed(
        buffer,
        images=chosen_images,
        labels=labels[chosen].astype(np.uint8),
        indices=chosen,
        projections=z.detach().cpu().double().numpy(),
        generator_sha256=np.array(shipped_sha256("mnist")),
    )
    out.write_bytes(buffer.getvalue())
    load_digits.cache_clear()
    return out


def project(generator: Any, x: Any, *, seed: int = 0, options: dict[str, dict[str, Any]] | None = None) -> torch.Tensor:
    """The best fit found of ``x`` in the generator's range: a latent of shape (B, n_0).

    Every method of :data:`PROJECTION_METHODS` inverts the whole, clean signal (default settings
    changed by ``options``, ``seed``); per signal the latent with the lowest ``||G(z) - x||`` wins.
    The problem is non-convex: this is the best fit found, not a certified minimum.

    Parameters
    ----------
    generator : Generator
    x : array of shape (B, n) or (n,)
        Signals on the generator's output (e.g. real digits).
    """
    from geninv.inversion import invert
    from geninv.inversion.status import keep_lower
    from geninv.observation import Observation

    obs = Observation.from_measurements(generator, x)
    best, best_loss = None, None
    for method in PROJECTION_METHODS:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # a real digit is never fit exactly: every method warns
            z = invert(generator, obs, method, seed=seed, **(options or {}).get(method, {})).z_hat
        with torch.no_grad():
            loss = (generator(z) - obs.y).pow(2).sum(-1)
        best, best_loss = keep_lower(best, best_loss, z, loss)
    if best is None:  # pragma: no cover - PROJECTION_METHODS is not empty
        fail("methods", "at least one projection method", "none")
    return best
