"""The error answers of every operation, added to the OpenAPI document genesis/api.py serves.

Each operation declares the statuses it can answer besides its own: those every request can get
(401 without a valid key, 403, 404, 409, 422, 503 with Retry-After when the database is out of reach)
and, for an operation with a request body, 413 (too large) and 400 (a multipart body that cannot be
parsed). All of them share the schema of the error body, `{"detail", "code"}`.
"""

from __future__ import annotations

from typing import Any

from genesis.errors import ERROR_CODES

ERROR_SCHEMA_NAME = "Error"
ERROR_SCHEMA: dict[str, Any] = {
    "title": ERROR_SCHEMA_NAME,
    "type": "object",
    "properties": {
        "detail": {"type": "string", "description": "What was refused and why, for a person"},
        "code": {"type": "string", "enum": sorted(ERROR_CODES), "description": "Stable, machine-readable"},
        "errors": {
            "type": "array",
            "description": "422 only: one entry per invalid field",
            "items": {
                "type": "object",
                "properties": {"field": {"type": "string"}, "message": {"type": "string"}},
                "required": ["field", "message"],
            },
        },
    },
    "required": ["detail", "code"],
}

_DESCRIPTIONS = {
    400: "The body could not be parsed (a broken multipart body, too many fields)",
    401: "Missing, malformed, unknown or revoked API key",
    403: "The key may not act for that agent (to a key for some agents, also an agent that does not exist)",
    404: "Unknown agent (said only to a key that may act for every agent), experiment, budget or object",
    409: "Refused by the current state (e.g. budget exhausted, no live model)",
    413: "The request body is larger than the API accepts",
    422: "A field, parameter or body is invalid (`errors` names each field)",
    503: "The database is unreachable; retry after Retry-After seconds",
}
_ALWAYS = (403, 404, 409, 422, 503)
_WITH_BODY = (400, 413)
_HTTP_METHODS = {"get", "put", "post", "delete", "patch", "head", "options", "trace"}


def _error_response(status: int) -> dict[str, Any]:
    response: dict[str, Any] = {
        "description": _DESCRIPTIONS[status],
        "content": {"application/json": {"schema": {"$ref": f"#/components/schemas/{ERROR_SCHEMA_NAME}"}}},
    }
    if status == 503:
        response["headers"] = {"Retry-After": {"schema": {"type": "integer"}, "description": "Seconds to wait"}}
    return response


def declare_error_responses(schema: dict[str, Any]) -> dict[str, Any]:
    """Add the error answers to every operation of `schema` (an OpenAPI dict), in place."""
    schema.setdefault("components", {}).setdefault("schemas", {})[ERROR_SCHEMA_NAME] = ERROR_SCHEMA
    for path_item in schema.get("paths", {}).values():
        for method, operation in path_item.items():
            if method not in _HTTP_METHODS:
                continue
            statuses = list(_ALWAYS)
            if operation.get("security"):
                statuses.append(401)
            if "requestBody" in operation:
                statuses.extend(_WITH_BODY)
            responses = operation.setdefault("responses", {})
            for status in sorted(statuses):
                if status not in responses and str(status) not in responses:
                    responses[status] = _error_response(status)
    return schema
