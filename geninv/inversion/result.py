"""The one result type every inversion method returns."""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch


class Status(str, enum.Enum):
    """How a method ended for one signal.

    ``converged`` is decided by one rule for every method (:func:`geninv.inversion.status.data_fit`):
    the estimate fits the data, to the noise level or, when clean, to working precision. Every
    other status says why it does not: ``not_fit`` (the method finished at a point that does not fit,
    e.g. a local minimum or a wrong support), ``max_iter`` (stopped by the iteration budget or by the
    user), ``infeasible`` (a step's constraints could not be met) or ``solver_error``.
    """

    CONVERGED = "converged"
    NOT_FIT = "not_fit"
    MAX_ITER = "max_iter"
    INFEASIBLE = "infeasible"
    SOLVER_ERROR = "solver_error"

    @classmethod
    def worst(cls, statuses: Any) -> Status:
        order = [cls.CONVERGED, cls.NOT_FIT, cls.MAX_ITER, cls.INFEASIBLE, cls.SOLVER_ERROR]
        present = {cls(s) for s in statuses}
        return max(present, key=order.index) if present else cls.CONVERGED


@dataclass(frozen=True)
class LayerStep:
    """One step of a layer-wise method: recover ``x_layer`` (0 = the latent z).

    Attributes
    ----------
    layer : int
        Index of the recovered layer (0 = z, L-1 = last hidden layer).
    rows : ndarray of shape (B,)
        Equations used per signal (active and observed rows of the layer above).
    residual : ndarray of shape (B,)
        ``||W[rows] x_hat + b[rows] - target[rows]||`` per signal.
    seconds : float
    solver : str
        Which solver produced the step ("lstsq", "nnls", "admm", "cvxpy", "joint-gd", ...).
    estimate : Tensor of shape (B, n_layer)
        The layer's estimate after this step (the dashboard replays these).
    """

    layer: int
    rows: np.ndarray
    residual: np.ndarray
    seconds: float
    solver: str
    estimate: torch.Tensor


@dataclass(frozen=True)
class History:
    """Per-iteration record of an iterative method.

    Attributes
    ----------
    iterations : ndarray of shape (T,)
        Iteration numbers of the records.
    loss : ndarray of shape (T, B, R)
        Lowest data-fit loss so far per record, signal and restart (iterative methods return
        their lowest-loss iterate, so this is what they would return if stopped there).
    latent_error : ndarray of shape (T, B, R) or None
        Relative latent error of that iterate, when the truth is known.
    iterates : Tensor of shape (T, B, n_0) or None
        That iterate of the restart that ended best, at each record (for replay).
    """

    iterations: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=np.int64))
    loss: np.ndarray = field(default_factory=lambda: np.zeros((0, 0, 0)))
    latent_error: np.ndarray | None = None
    iterates: torch.Tensor | None = None

    @property
    def n_records(self) -> int:
        return int(self.iterations.size)


@dataclass(frozen=True, eq=False)
class InversionResult:
    """What an inversion method found, and how.

    Attributes
    ----------
    z_hat : Tensor of shape (B, n_0)
    layers : tuple of Tensor
        Estimated ``x_1 .. x_L`` (the last entry is the full output ``G(z_hat)``).
    supports : tuple of bool Tensor
        Estimated supports of ``x_1 .. x_L`` (same convention as :class:`geninv.Trace`).
    history : History
    steps : tuple of LayerStep
        Layer-wise steps in the order they ran (empty for purely iterative methods).
    statuses : ndarray of str, shape (B,)
    seconds : float
        Wall time for the whole batch.
    forward_passes : float
        Cost per signal in forward-pass equivalents (one forward pass = sum of the layers'
        multiply-adds; a backward pass counts as two).
    method : str
    options : dict
    """

    z_hat: torch.Tensor
    layers: tuple[torch.Tensor, ...]
    supports: tuple[torch.Tensor, ...]
    history: History
    steps: tuple[LayerStep, ...]
    statuses: np.ndarray
    seconds: float
    forward_passes: float
    method: str
    options: dict[str, Any]

    @property
    def status(self) -> Status:
        """The worst status over the batch."""
        return Status.worst(self.statuses)

    @property
    def x_hat(self) -> torch.Tensor:
        """The full output ``G(z_hat)``."""
        return self.layers[-1]

    @property
    def batch_size(self) -> int:
        return self.z_hat.shape[0]

    def to_records(self, observation: Any = None, *, threshold: float = 1e-3) -> list[dict[str, Any]]:
        """One flat dict per signal: method, status, cost and (with an observation) metrics."""
        from geninv import metrics

        per_signal = metrics.evaluate(self, observation, threshold=threshold) if observation is not None else {}
        out = []
        for b in range(self.batch_size):
            row: dict[str, Any] = {
                "method": self.method,
                "signal": b,
                "status": str(Status(self.statuses[b]).value),
                "seconds_per_signal": self.seconds / self.batch_size,
                "forward_passes": self.forward_passes,
            }
            for key, values in per_signal.items():
                row[key] = float(values[b])
            out.append(row)
        return out
