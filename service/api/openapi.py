"""Request-body documentation for the routes that read their body themselves.

``/v1/certify`` and ``/v1/batches`` take multipart or JSON and count bytes while reading,
so FastAPI does not parse them; these schemas put both forms into ``/docs``.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel

from service.schemas import CertifyOptions


def _form_schema(file_fields: dict[str, Any]) -> dict[str, Any]:
    options = {
        name: {"type": "string", "description": field.description or name}
        for name, field in CertifyOptions.model_fields.items()
    }
    return {
        "type": "object",
        "required": [*file_fields, "model"],
        "properties": {**file_fields, "model": {"type": "string"}, **options},
    }


def request_body(json_model: type[BaseModel], file_fields: dict[str, Any]) -> dict[str, Any]:
    return {
        "requestBody": {
            "required": True,
            "content": {
                "multipart/form-data": {"schema": _form_schema(file_fields)},
                "application/json": {"schema": json_model.model_json_schema()},
            },
        }
    }


BINARY = {"type": "string", "format": "binary"}
