"""The certificate methods the service offers: one module each, one registration line each.

To add a method, write ``workers/methods/<name>.py`` defining a
:class:`~workers.methods.base.Method` and register it below: the API's ``methods`` values,
the request checks, the planned progress, the CLI's help and the metrics follow from the
registry. Registration order is the order the API lists the methods and the default methods
run in (the first is a result's primary certificate).
"""

from __future__ import annotations

import enum

from workers.methods.attack import ATTACK
from workers.methods.base import (
    REGISTRY,
    AttackOutcome,
    Method,
    MethodCall,
    MethodOutcome,
    register_method,
)
from workers.methods.margin import MARGIN
from workers.methods.radius_test import RADIUS_TEST
from workers.methods.smoothing import SMOOTHING

register_method(SMOOTHING)
register_method(MARGIN)
register_method(RADIUS_TEST)
register_method(ATTACK)

CertificationMethod = enum.StrEnum(  # type: ignore[misc]
    "CertificationMethod", {name.upper(): name for name in REGISTRY}, module=__name__
)
"""The names of the registered methods, as the API validates and documents them."""

DEFAULT_METHODS = tuple(CertificationMethod(m.name) for m in REGISTRY.values() if m.default)
"""What a request that names no methods gets, primary first."""


def method(name: str) -> Method:
    """The registered method ``name`` (a :class:`CertificationMethod` is a ``str``)."""
    return REGISTRY[str(name)]


__all__ = [
    "DEFAULT_METHODS",
    "REGISTRY",
    "AttackOutcome",
    "CertificationMethod",
    "Method",
    "MethodCall",
    "MethodOutcome",
    "method",
    "register_method",
]
