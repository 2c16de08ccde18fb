"""Domain errors raised by services, mapped to HTTP in one place (genesis/api.py) and to exit codes
by the commands. Messages are written for the person who must act on them; `code` is the stable,
machine-readable name of the refusal (Saleor's error_codes), the same in the API, the admin and the
CLI. Every code the API can answer with is listed in ERROR_CODES and in the README."""

from __future__ import annotations

import re

# code → what it means. The API's error bodies are {"detail": str, "code": one of these}.
ERROR_CODES: dict[str, str] = {
    "unauthenticated": "401: missing, malformed, unknown, revoked or expired API key",
    "forbidden": "403: the key may not act for that agent (or the action needs a person)",
    "four_eyes": "403: the four-eyes rule: who started or requested may not approve",
    "not_found": "404: unknown agent, experiment, budget, run, job, dataset or route",
    "method_not_allowed": "405: the path exists but not with this method",
    "conflict": "409: refused by the current state (no live model, a transition not allowed, …)",
    "budget_exceeded": "409: the estimate does not fit a hard-limit budget",
    "audit_findings": "409: the training data's audit found PII or format errors and no override reason was given",
    "payload_too_large": "413: the request body is larger than the API accepts (the detail says the limit)",
    "malformed_request": "400: the request could not be parsed (a broken multipart body, too many fields) or its Host header is not one this server answers for (ALLOWED_HOSTS)",
    "invalid_field": "422: a field, parameter or body failed validation (the detail and `errors` name it)",
    "invalid_input": "422: the service refused a value (the detail and `errors` name the field)",
    "provider_unavailable": "503: the model provider did not answer even after retries; try again later",
    "service_unavailable": "503: the database or another service needed for this request is unreachable; retry after Retry-After seconds",
    "internal_error": "500: a bug; it has been logged",
}


# A refusal's message begins with the field it refuses, "agent: sent more than once" (the convention of
# every InvalidInput); a message that names no field is about the request body as a whole.
_FIELD_PREFIX = re.compile(r"(?P<field>[A-Za-z_]\w*(?:\[\d+\])?(?:\.[A-Za-z_]\w*(?:\[\d+\])?)*): (?P<message>.+)", re.DOTALL)
WHOLE_BODY = "body"


def field_errors(detail: str) -> list[dict[str, str]]:
    """The `errors` list of a 422 built from its human message: one entry naming the field the message
    begins with ("estimate_usd: cannot be negative"), or the body when the message names none."""
    named = _FIELD_PREFIX.fullmatch(detail)
    if named is None:
        return [{"field": WHOLE_BODY, "message": detail}]
    return [{"field": named["field"], "message": named["message"]}]


class DomainError(Exception):
    """A request the domain refuses. `status_code` is the HTTP status the API answers with, `code`
    the stable name of the refusal (a class default, or a more specific one given when raised).
    `api_message`, when given, is what the API says instead of `message`: the same refusal, for a
    caller that cannot take the remedy a person can (an API key cannot override a budget)."""

    status_code = 400
    code = "malformed_request"

    def __init__(self, message: str, *, code: str | None = None, api_message: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.api_message = api_message or message
        if code is not None:
            if code not in ERROR_CODES:
                raise ValueError(f"unknown error code {code!r}: add it to genesis.errors.ERROR_CODES and the README")
            self.code = code


class NotFound(DomainError):
    status_code = 404
    code = "not_found"


class Unauthenticated(DomainError):
    """The caller's credential is refused for a reason worth telling them (an expired key: they can
    rotate it); an unknown key is refused without one, as ninja's AuthenticationError."""

    status_code = 401
    code = "unauthenticated"


class PermissionDenied(DomainError):
    status_code = 403
    code = "forbidden"


class InvalidInput(DomainError):
    status_code = 422
    code = "invalid_input"


class Conflict(DomainError):
    """Refused by the current state: an illegal transition, an exhausted budget, an open hold."""

    status_code = 409
    code = "conflict"


class AlreadyDone(Conflict):
    """What was asked is already done — by this person a moment ago (a form sent twice) or by someone
    else. Nothing was refused and nothing is done again: callers say so as information, and the audit
    trails record no refusal for it."""


class ServiceUnavailable(DomainError):
    """A service this request needs (the database) cannot be reached; worth retrying shortly."""

    status_code = 503
    code = "service_unavailable"
