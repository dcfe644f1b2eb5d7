"""Exceptions and warnings raised by geninv.

Every error names the argument, what was expected and what was received, so that a user can
fix the input without reading the source.
"""

from __future__ import annotations


class GeninvError(Exception):
    """Base class of every error geninv raises on purpose."""


class ShapeError(GeninvError, ValueError):
    """An array has the wrong number of dimensions or the wrong size."""


class InvalidValueError(GeninvError, ValueError):
    """A value is out of range, not finite, or not one of the allowed choices."""


class InvalidMaskError(GeninvError, ValueError):
    """A mask is of the wrong size or observes nothing."""


class BudgetError(InvalidValueError):
    """A request from an untrusted source (a link, a widget, an upload) exceeds the server's budget.

    The message names the limit and how a server operator raises it (see :mod:`geninv.limits`).
    """


class ModelFormatError(GeninvError, ValueError):
    """A generator file or description is malformed or unsafe to load."""


class SolverError(GeninvError, RuntimeError):
    """A numerical solver failed in a way that no fallback could repair."""


class UnsupportedError(GeninvError, NotImplementedError):
    """A method cannot handle this generator / operator combination."""


class ConvergenceWarning(RuntimeWarning):
    """An iterative method stopped before meeting its tolerance."""


class RecordsWarning(UserWarning):
    """A sweep's records file had a line that was skipped (a torn last line, a duplicate task)."""


class NotCertifiedWarning(UserWarning):
    """The invertibility certificate does not hold for this sample."""
