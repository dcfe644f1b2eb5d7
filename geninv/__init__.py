"""geninv: invert deep generative models, and show when and how it is possible."""

from __future__ import annotations

from geninv import masks, operators
from geninv.errors import (
    BudgetError,
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
from geninv.observation import GaussianMatrix, Identity, Mask, Observation, measurement_operator, observe
from geninv.operators import LinearOperator

__version__ = "0.1.0"

# Heavier pieces load on first use, so that ``import geninv`` stays fast.
_LAZY = {
    "certify": "geninv.theory",
    "Certificate": "geninv.theory",
    "LayerCertificate": "geninv.theory",
    "NetworkCertificate": "geninv.theory",
    "mutual_coherence": "geninv.theory",
    "spark": "geninv.theory",
    "metrics": "geninv.metrics",
    "invert": "geninv.inversion",
    "methods": "geninv.inversion",
    "InversionResult": "geninv.inversion",
    "Status": "geninv.inversion",
    "load_generator": "geninv.io",
    "save_generator": "geninv.io",
    "experiments": "geninv.experiments",
    "limits": "geninv.limits",
    "demo": "geninv.demo",
    "lessons": "geninv.lessons",
    "digits": "geninv.digits",
}


def __getattr__(name: str):
    import importlib

    if name in _LAZY:
        module = importlib.import_module(_LAZY[name])
        return module if module.__name__ == f"geninv.{name}" else getattr(module, name)
    raise AttributeError(f"module 'geninv' has no attribute {name!r}")


__all__ = [
    "Activation",
    "BudgetError",
    "Certificate",
    "ConvergenceWarning",
    "GaussianMatrix",
    "Generator",
    "GeninvError",
    "Identity",
    "InvalidMaskError",
    "InvalidValueError",
    "InversionResult",
    "Layer",
    "LayerCertificate",
    "LinearOperator",
    "Mask",
    "ModelFormatError",
    "NetworkCertificate",
    "NotCertifiedWarning",
    "Observation",
    "ShapeError",
    "SolverError",
    "Status",
    "Trace",
    "UnsupportedError",
    "__version__",
    "certify",
    "demo",
    "digits",
    "experiments",
    "invert",
    "lessons",
    "limits",
    "load_generator",
    "masks",
    "measurement_operator",
    "methods",
    "metrics",
    "mutual_coherence",
    "observe",
    "operators",
    "save_generator",
    "spark",
]
