"""Inversion methods: one entry point, one result type."""

from geninv.inversion.registry import Inverter, invert, make_config, methods, register, spec
from geninv.inversion.result import History, InversionResult, LayerStep, Status

__all__ = [
    "History",
    "InversionResult",
    "Inverter",
    "LayerStep",
    "Status",
    "invert",
    "make_config",
    "methods",
    "register",
    "spec",
]
