"""Error responses in the OpenAPI document: every operation states the errors it can answer.

The exception handlers in distillapp/api.py answer with one shape, `{detail, errors}`; the body
limit middleware (distillapp/projects/limits.py) uses it too. Declaring those answers on every
operation keeps the document honest, so a client generator or schemathesis knows every status.
"""

from __future__ import annotations

from typing import Any

ERROR_SCHEMA: dict[str, Any] = {
    "title": "Error",
    "type": "object",
    "properties": {
        "detail": {"type": "string"},
        "errors": {
            "type": "array",
            "items": {
                "type": "object",
                "properties": {
                    "field": {"type": "string"},
                    "line": {"anyOf": [{"type": "integer"}, {"type": "null"}]},
                    "message": {"type": "string"},
                },
                "required": ["message"],
            },
        },
    },
    "required": ["detail"],
}

_COMMON = {
    "400": "Bad input (a malformed cursor, or a value the database cannot store).",
    "401": "No valid API token or session.",
    "403": "The caller's role in the organisation is too low for this operation.",
    "404": "No such object, or it belongs to another organisation.",
    "422": "Invalid input; `errors` names each field (or line) and what is wrong with it.",
}
_WITH_BODY = {
    "409": "The object is in a state that does not allow this (e.g. still in use).",
    "411": "A chunked body was sent where a Content-Length is required.",
    "413": "The request body is larger than this route allows.",
}
_BODY_METHODS = frozenset({"post", "put", "patch"})
_METHODS = _BODY_METHODS | {"get", "delete", "head", "options"}


def add_error_responses(schema: dict[str, Any]) -> dict[str, Any]:
    """Declare the shared error answers on every operation that does not declare its own."""
    components = schema.setdefault("components", {}).setdefault("schemas", {})
    components.setdefault("Error", ERROR_SCHEMA)
    ref = {"$ref": "#/components/schemas/Error"}
    for path_item in schema.get("paths", {}).values():
        for method, operation in path_item.items():
            if method not in _METHODS or not isinstance(operation, dict):
                continue
            responses = operation.setdefault("responses", {})
            codes = dict(_COMMON)
            if method in _BODY_METHODS or method == "delete":
                codes.update(_WITH_BODY)
            declared = {str(code) for code in responses}  # ninja keys them by int
            for code, description in codes.items():
                if code not in declared:
                    responses[code] = {
                        "description": description,
                        "content": {"application/json": {"schema": ref}},
                    }
    return schema
