"""geninv: invert deep generative models, and show when and how it is possible."""

from __future__ import annotations

from geninv import masks
from geninv.errors import (
    ConvergenceWarning,
    GeninvError,
    InvalidMaskError,
    InvalidValueError,
    ModelFormatError,
    NotCertifiedWarning,
    ShapeError,
    SolverError,
    UnsupportedError,
)
from geninv.generator import Activation, Generator, Layer, Trace
from geninv.observation import GaussianMatrix, Identity, Mask, Observation, observe

__version__ = "0.1.0"

__all__ = [
    "Activation",
    "ConvergenceWarning",
    "GaussianMatrix",
    "Generator",
    "GeninvError",
    "Identity",
    "InvalidMaskError",
    "InvalidValueError",
    "Layer",
    "Mask",
    "ModelFormatError",
    "NotCertifiedWarning",
    "Observation",
    "ShapeError",
    "SolverError",
    "Trace",
    "UnsupportedError",
    "__version__",
    "masks",
    "observe",
]
