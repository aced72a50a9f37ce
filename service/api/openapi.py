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


def _inline_definitions(schema: dict[str, Any]) -> dict[str, Any]:
    """``schema`` with its ``$defs`` written in place of the ``#/$defs/...`` references.

    Inside the OpenAPI document a ``#/$defs/X`` reference would point at the document's root,
    where nothing is, so the request bodies carry their definitions inline.
    """
    definitions = schema.get("$defs", {})

    def inline(node: Any) -> Any:
        if isinstance(node, list):
            return [inline(item) for item in node]
        if not isinstance(node, dict):
            return node
        reference = node.get("$ref")
        if isinstance(reference, str) and reference.startswith("#/$defs/"):
            target = inline(definitions[reference.removeprefix("#/$defs/")])
            siblings = {k: inline(v) for k, v in node.items() if k != "$ref"}
            return {**target, **siblings}
        return {k: inline(v) for k, v in node.items() if k != "$defs"}

    return inline(schema)


def request_body(json_model: type[BaseModel], file_fields: dict[str, Any]) -> dict[str, Any]:
    return {
        "requestBody": {
            "required": True,
            "content": {
                "multipart/form-data": {"schema": _form_schema(file_fields)},
                "application/json": {"schema": _inline_definitions(json_model.model_json_schema())},
            },
        }
    }


BINARY = {"type": "string", "format": "binary"}
