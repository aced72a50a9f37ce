"""The package's version, recorded in every result's provenance."""

from __future__ import annotations

from functools import cache
from importlib.metadata import PackageNotFoundError, version


@cache
def package_version() -> str:
    """The installed version of hycas-certify, or ``0+unknown`` when run from a bare checkout."""
    try:
        return version("hycas-certify")
    except PackageNotFoundError:
        return "0+unknown"
