"""Request-body documentation for the routes that read their body themselves.

``/v1/certify`` and ``/v1/batches`` take multipart or JSON and count bytes while reading,
so FastAPI does not parse them; these schemas put both forms into ``/docs``.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel

from service.schemas import CertifyOptions


def _without_null(schema: dict[str, Any]) -> dict[str, Any]:
    """An optional field's schema without its ``null`` branch: a form field is sent or not."""
    branches = [b for b in schema.get("anyOf", []) if b.get("type") != "null"]
    if len(branches) != 1:
        return schema
    rest = {k: v for k, v in schema.items() if k not in ("anyOf", "default")}
    return {**branches[0], **rest}


def _form_schema(file_fields: dict[str, Any]) -> dict[str, Any]:
    """The multipart form: the files, ``model`` and each option typed as in JSON (a form
    sends them as text; ``methods`` may repeat or be comma-separated)."""
    options = _inline_definitions(CertifyOptions.model_json_schema())["properties"]
    return {
        "type": "object",
        "required": [*file_fields, "model"],
        "properties": {
            **file_fields,
            "model": {"type": "string", "minLength": 1},
            **{name: _without_null(schema) for name, schema in options.items()},
        },
        "additionalProperties": False,
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
