"""The common shape of certification results: frozen dataclasses that serialize to JSON."""

from __future__ import annotations

import dataclasses
import enum
from typing import Any


def _plain(value: Any) -> Any:
    if isinstance(value, enum.Enum):
        return value.value
    if isinstance(value, tuple | list):
        return [_plain(item) for item in value]
    return value


class CertificationResult:
    """Base of the result dataclasses: ``to_dict()`` gives JSON-ready fields (lists, strings)."""

    def to_dict(self) -> dict[str, Any]:
        """Every field by name; tuples become lists and enums their string values."""
        return {
            field.name: _plain(getattr(self, field.name))
            for field in dataclasses.fields(self)  # type: ignore[arg-type]
        }
