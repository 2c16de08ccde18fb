"""Provider errors, sorted by what the caller should do about them.

TransientProviderError: try again later (timeouts, connection errors, 429, 5xx); `retry_after`
    carries the provider's Retry-After in seconds when it sent one.
PermanentProviderError: retrying cannot help (bad key, unknown model, invalid request, a refusal).
"""

from __future__ import annotations

import re
import time
from collections.abc import Iterable
from datetime import UTC
from email.utils import parsedate_to_datetime
from typing import Any

BODY_EXCERPT_CHARS = 500
# Control characters, line breaks included, and the invisible ones that reorder text: an answer is shown in
# the admin, in logs and in terminals as one line of plain text, and must not move the cursor, forge a log
# line or hide what it says.
_CONTROL_CHARACTERS = re.compile("[\x00-\x1f\x7f-\x9f\u200b-\u200f\u2028\u2029\u202a-\u202e\u2066-\u2069]+")


# A bearer credential as a provider may echo it (an Authorization header repeated in an error body).
_BEARER_CREDENTIAL = re.compile(r"\b(bearer)\s+[^\s\"'`,;<>(){}\[\]]+", re.IGNORECASE)
REDACTED = "[redacted]"


def redact_secrets(text: str, secrets: Iterable[str] = ()) -> str:
    """`text` without the given secrets (an account's API key) nor any "Bearer <credential>": what a
    provider answers is kept, logged and shown, and a provider that echoes the request's headers in
    an error must not put the key there."""
    for secret in secrets:
        if secret:
            text = text.replace(secret, REDACTED)
    return _BEARER_CREDENTIAL.sub(rf"\1 {REDACTED}", text)


def body_excerpt(body: str | None, *, secrets: Iterable[str] = ()) -> str:
    """The provider's answer as one line of plain text, short enough for an admin page or a log line,
    any bearer credential and the given `secrets` redacted: never kept whole (what an answer says is
    the provider's choice), and escaped wherever it is shown as HTML."""
    text = redact_secrets(" ".join(_CONTROL_CHARACTERS.sub(" ", redact_secrets(body or "", secrets)).split()), secrets)
    if len(text) > BODY_EXCERPT_CHARS:
        return text[:BODY_EXCERPT_CHARS] + f"… ({len(text) - BODY_EXCERPT_CHARS} more characters)"
    return text


class ProviderError(Exception):
    def __init__(
        self,
        message: str,
        *,
        provider: str,
        status_code: int | None = None,
        provider_answer: str | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.provider = provider
        self.status_code = status_code
        self.provider_answer = body_excerpt(provider_answer) if provider_answer else None

    def __str__(self) -> str:
        return self.message

    def __reduce__(self) -> tuple[object, ...]:
        # Pickled as cls(*args) by default, which these keyword-only fields break: a provider error
        # raised in a multiprocessing pool could not reach the parent (and the pool hung).
        return (_rebuild_error, (type(self), dict(self.__dict__)))


def _rebuild_error(cls: type[ProviderError], fields: dict[str, object]) -> ProviderError:
    error = cls.__new__(cls)
    Exception.__init__(error, fields.get("message", ""))
    error.__dict__.update(fields)
    return error


class TransientProviderError(ProviderError):
    def __init__(self, message: str, *, retry_after: float | None = None, **fields: Any) -> None:
        """`fields`: ProviderError's (provider, status_code, provider_answer). `attempts`: how many
        calls failed so, set by call_with_retries when it gives up (1 for a single call)."""
        super().__init__(message, **fields)
        self.retry_after = retry_after
        self.attempts = 1


class PermanentProviderError(ProviderError):
    pass


class ProviderAuthError(PermanentProviderError):
    """The provider rejected the API key (401/403)."""


class UnknownModelError(PermanentProviderError):
    """The provider does not serve the requested model."""


class ProviderRefused(PermanentProviderError):
    """The provider refused an operation (e.g. a deprecated fine-tuning route answering 404/410, or a
    job that cannot be started in its state). `provider_answer` holds what it said, for the admin."""


class UnsupportedParameterError(PermanentProviderError):
    """A chat parameter this provider kind does not understand."""


class ProviderAnswerTooLarge(PermanentProviderError):
    """The answer held more than `limit_bytes`, the most the call reads (providers/http.py): it was not
    read whole, and asking again brings the same answer."""

    def __init__(self, message: str, *, limit_bytes: int, **fields: Any) -> None:
        super().__init__(message, **fields)
        self.limit_bytes = limit_bytes


class ProviderDestinationRefused(PermanentProviderError):
    """The account's URL is not a destination the environment allows for its key (destinations.py):
    nothing was sent."""


_UNKNOWN_MODEL = re.compile(
    r"invalid[ _]model|unknown model|model\b.{0,120}\b(not found|does not exist|not exist|is not available)"
    r"|no such model|model_not_found",
    re.IGNORECASE | re.DOTALL,
)
# 501 (not implemented) and 505 will not change on retry; every other 5xx may.
TRANSIENT_STATUSES = frozenset({408, 425, 429}) | (frozenset(range(500, 600)) - {501, 505})


def parse_retry_after(value: str | None, *, now: float | None = None) -> float | None:
    """Seconds to wait from a Retry-After header (delta-seconds or an HTTP date), or None."""
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        moment = parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    reference = now if now is not None else time.time()
    return max(0.0, moment.timestamp() - reference)


def _auth_error(
    *, provider: str, status_code: int, body: str | None, api_key_env: str | None, api_key_present: bool
) -> ProviderError:
    if api_key_env and api_key_present:
        source = f"the API key from ${api_key_env}"
        message = f"provider '{provider}' rejected {source} ({status_code})"
    elif api_key_env:
        message = f"provider '{provider}' rejected the request: no API key, ${api_key_env} is unset or empty ({status_code})"
    else:
        message = f"provider '{provider}' rejected its API key ({status_code})"
    return ProviderAuthError(message, provider=provider, status_code=status_code, provider_answer=body)


def _redirect_error(
    *, provider: str, operation: str, status_code: int, body: str | None, location_header: str | None
) -> ProviderError:
    # Providers' clients follow no redirect (providers/http.py): resending the request, with its
    # API key, wherever an answer points is not theirs to decide.
    target = f" to {location_header}" if location_header else ""
    return PermanentProviderError(
        f"provider '{provider}' redirected the {operation} request ({status_code}){target}: set the provider "
        "account's base URL to the address it should use (redirects are not followed)",
        provider=provider,
        status_code=status_code,
        provider_answer=body,
    )


def _transient_error(
    *, provider: str, operation: str, status_code: int, body: str | None, retry_after_header: str | None
) -> TransientProviderError:
    retry_after = parse_retry_after(retry_after_header)
    if status_code == 429:
        wait = f"; retry after {retry_after:g}s" if retry_after is not None else ""
        message = f"provider '{provider}' is rate limiting {operation} (429){wait}"
    else:
        answer = body_excerpt(body)
        message = f"provider '{provider}' failed on {operation} ({status_code})" + (f": {answer}" if answer else "")
    return TransientProviderError(
        message, provider=provider, status_code=status_code, provider_answer=body, retry_after=retry_after
    )


def error_from_response(
    *,
    provider: str,
    operation: str,
    status_code: int,
    body: str | None,
    retry_after_header: str | None,
    api_key_env: str | None,
    api_key_present: bool,
    refusal_is_expected: bool = False,
    model: str | None = None,
    location_header: str | None = None,
    api_key: str = "",
) -> ProviderError:
    """Sort an HTTP error answer into the error the caller can act on.

    `refusal_is_expected` marks management routes (files, fine-tuning) where any other 4xx means the
    provider refuses the operation, e.g. Mistral's deprecated routes answering 404/410. `api_key`, the
    key the request carried, is redacted from the body before any of it is kept.
    """
    if body:
        body = redact_secrets(body, (api_key,))
    answer = body_excerpt(body)
    said = f": {answer}" if answer else ""
    if status_code in (401, 403):
        return _auth_error(provider=provider, status_code=status_code, body=body, api_key_env=api_key_env,
                           api_key_present=api_key_present)
    if 300 <= status_code < 400:
        return _redirect_error(provider=provider, operation=operation, status_code=status_code, body=body,
                               location_header=location_header)
    if status_code == 429 or status_code in TRANSIENT_STATUSES:
        return _transient_error(provider=provider, operation=operation, status_code=status_code, body=body,
                                retry_after_header=retry_after_header)
    if model and status_code in (400, 404, 422) and _UNKNOWN_MODEL.search(body or ""):
        return UnknownModelError(
            f"provider '{provider}' does not serve model '{model}' ({status_code}){said}",
            provider=provider,
            status_code=status_code,
            provider_answer=body,
        )
    if refusal_is_expected:
        return ProviderRefused(
            f"provider '{provider}' refused to {operation} ({status_code}){said}",
            provider=provider,
            status_code=status_code,
            provider_answer=body,
        )
    return PermanentProviderError(
        f"provider '{provider}' rejected the {operation} request ({status_code}){said}",
        provider=provider,
        status_code=status_code,
        provider_answer=body,
    )
