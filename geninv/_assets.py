"""Where the shipped files (generator weights, model cards) are: from a checkout or an installed wheel.

The repository keeps them in the top-level ``assets/`` folder. The build (``pyproject.toml``) installs
that folder inside the package as ``geninv/assets``, so an installed wheel finds them through
:mod:`importlib.resources`; a source checkout (or an editable install) finds ``assets/`` next to
the ``geninv`` package.
"""

from __future__ import annotations

from importlib import resources
from importlib.abc import Traversable
from pathlib import Path

from geninv.errors import ModelFormatError


def assets_dir() -> Traversable:
    """The folder of shipped files: ``geninv/assets`` when installed, ``assets/`` in a checkout."""
    installed = resources.files("geninv") / "assets"
    if installed.is_dir():
        return installed
    checkout = Path(__file__).resolve().parent.parent / "assets"
    if checkout.is_dir():
        return checkout
    raise ModelFormatError(
        "The shipped assets were not found: neither geninv/assets (an installed wheel) nor assets/ next to "
        "the geninv package (a checkout). Reinstall geninv."
    )


def asset(name: str) -> Traversable:
    """One shipped file, e.g. ``asset("mnist.json")``."""
    path = assets_dir() / name
    if not path.is_file():
        raise ModelFormatError(f"The shipped file {name!r} is missing from {assets_dir()}.")
    return path
