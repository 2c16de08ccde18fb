"""The error answers of every operation, added to the OpenAPI document genesis/api.py serves.

Each operation declares the statuses it can answer besides its own: those every request can get
(400 for a Host header not in ALLOWED_HOSTS or a body that cannot be parsed, 401 without a valid key,
403, 404, 409, 422, 500 for a bug, 503 with Retry-After when the database is out of reach) and, for an
operation with a request body, 413 (too large). All of them share the schema of the error body, `{"detail", "code"}`.

405 belongs to no operation — it answers a method that no operation of the path declares — so it is
described once, as the reusable response `components.responses.MethodNotAllowed`, with its `Allow`
header (genesis/middleware.py gives it the same JSON body).
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
    400: "The request could not be parsed (a broken multipart body, too many fields) or names a Host this server does not answer for",
    401: "Missing, malformed, unknown, revoked or expired API key",
    403: "The key may not act for that agent (an existing agent outside the key's scope)",
    404: "Unknown agent (a name no agent has, to every key), experiment, budget or object",
    409: "Refused by the current state (e.g. budget exhausted, no live model)",
    413: "The request body is larger than the API accepts",
    422: "A field, parameter or body is invalid (`errors` names each field)",
    500: "A bug on the server (`internal_error`); it has been logged",
    503: "The database is unreachable; retry after Retry-After seconds",
}
_ALWAYS = (400, 403, 404, 409, 422, 500, 503)
_WITH_BODY = (413,)
_HTTP_METHODS = {"get", "put", "post", "delete", "patch", "head", "options", "trace"}


def _error_response(status: int) -> dict[str, Any]:
    response: dict[str, Any] = {
        "description": _DESCRIPTIONS[status],
        "content": {"application/json": {"schema": {"$ref": f"#/components/schemas/{ERROR_SCHEMA_NAME}"}}},
    }
    if status == 503:
        response["headers"] = {"Retry-After": {"schema": {"type": "integer"}, "description": "Seconds to wait"}}
    return response


METHOD_NOT_ALLOWED_NAME = "MethodNotAllowed"
METHOD_NOT_ALLOWED: dict[str, Any] = {
    "description": "405 (`method_not_allowed`): the path exists but serves no operation for this method",
    "content": {"application/json": {"schema": {"$ref": f"#/components/schemas/{ERROR_SCHEMA_NAME}"}}},
    "headers": {"Allow": {"schema": {"type": "string"}, "description": "The methods the path serves, e.g. GET, POST"}},
}


def declare_schemas(schema: dict[str, Any], schemas: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """List `schemas` (name → JSON schema) among the document's components, in place: types a client
    needs that no operation's own schema names (a router's OPENAPI_SCHEMAS)."""
    components = schema.setdefault("components", {}).setdefault("schemas", {})
    for name, definition in schemas.items():
        if name in components and components[name] != definition:
            raise ValueError(f"two different OpenAPI schemas are named {name!r}")
        components[name] = definition
    return schema


def declare_error_responses(schema: dict[str, Any]) -> dict[str, Any]:
    """Add the error answers to every operation of `schema` (an OpenAPI dict), in place."""
    components = schema.setdefault("components", {})
    components.setdefault("schemas", {})[ERROR_SCHEMA_NAME] = ERROR_SCHEMA
    components.setdefault("responses", {})[METHOD_NOT_ALLOWED_NAME] = METHOD_NOT_ALLOWED
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
