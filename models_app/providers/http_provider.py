"""What every provider over HTTP shares — Mistral through its SDK, the OpenAI-compatible servers
directly: the account's settings, its HTTP client (made here unless one is passed in, and closed only
if made here), the call gate that keeps calls within the account's concurrency and rate limit, the
latency measured inside the gate (the provider's time, not our queueing), and the sorting of every
failure into a provider error. A provider adds its requests, the reading of its answers and, where
its client raises errors of its own, how they sort (`_provider_error`).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from typing import TypeVar

import httpx

from .base import ProviderSettings
from .errors import (
    PermanentProviderError,
    ProviderAnswerTooLarge,
    ProviderDestinationRefused,
    ProviderError,
    TransientProviderError,
    error_from_response,
    redact_secrets,
)
from .http import (
    CertificateVerificationError,
    ProviderHttpClient,
    ResponseTooLargeError,
    UnsupportedProxyError,
    new_http_client,
)
from .throttle import CallGate

T = TypeVar("T")


class HttpProvider:
    # How messages name the provider's address when the account gives no base_url.
    default_address = "its default address"

    def __init__(
        self,
        settings: ProviderSettings,
        *,
        http_client: ProviderHttpClient | None = None,
        client_base_url: str | None = None,
        client_headers: Mapping[str, str] | None = None,
        refusal: str | None = None,
    ) -> None:
        """`refusal`: why this account may not be called at all (destinations.py; the factory passes it
        with the key left out): every call raises ProviderDestinationRefused before anything is sent."""
        self.settings = settings
        self.refusal = refusal
        self._owns_http_client = http_client is None
        self._http = http_client or new_http_client(settings, base_url=client_base_url, headers=client_headers)
        self._gate = CallGate(
            provider=settings.name,
            max_concurrency=settings.max_concurrency,
            rate_limit_per_minute=settings.rate_limit_per_minute,
            wait_limit_seconds=settings.timeout_seconds,
        )

    @property
    def name(self) -> str:
        return self.settings.name

    def close(self) -> None:
        if self._owns_http_client:
            self._http.close()

    def _call(
        self, operation: str, request: Callable[[], T], *, model: str | None = None, refusal_is_expected: bool = False
    ) -> T:
        return self._timed_call(operation, request, model=model, refusal_is_expected=refusal_is_expected)[0]

    def _timed_call(
        self, operation: str, request: Callable[[], T], *, model: str | None = None, refusal_is_expected: bool = False
    ) -> tuple[T, float]:
        """`request()` once the call gate admits it, with its latency in milliseconds; any failure
        is raised as the provider error `_provider_error` sorts it into. `refusal_is_expected` marks
        management routes (see errors.error_from_response)."""
        if self.refusal is not None:
            raise ProviderDestinationRefused(
                f"provider '{self.name}' is not called: {self.refusal}", provider=self.name
            )
        try:
            with self._gate.admit():
                started = time.perf_counter()
                return request(), (time.perf_counter() - started) * 1000
        except ProviderError as raised:
            self._redacted(raised)
            raise
        except Exception as error:
            failure = self._provider_error(error, operation=operation, model=model, refusal_is_expected=refusal_is_expected)
            if failure is None:
                raise
            if self._redact(str(error)) != str(error):
                # The client's own error quotes the credential (the SDK's carries the whole body): not
                # chained, so that no traceback prints it.
                raise self._redacted(failure) from None
            raise self._redacted(failure) from error

    def _redact(self, text: str) -> str:
        return redact_secrets(text, (self.settings.api_key,))

    def _redacted(self, failure: ProviderError) -> ProviderError:
        """The error without the account's key or any bearer credential, whatever path its words took
        (an echoed header in an answer, an exception's text): they are logged, kept on rows and shown."""
        failure.message = self._redact(failure.message)
        failure.args = (failure.message, *failure.args[1:])
        if failure.provider_answer:
            failure.provider_answer = self._redact(failure.provider_answer)
        return failure

    def _provider_error(
        self, error: Exception, *, operation: str, model: str | None, refusal_is_expected: bool
    ) -> ProviderError | None:
        """The provider error for a failure of the HTTP client, or None for one that is not the
        provider's (a bug here: raised as it is). Providers extend it for their clients' errors."""
        if isinstance(error, ResponseTooLargeError):
            return ProviderAnswerTooLarge(
                f"provider '{self.name}' answered {operation} with more than {error.limit_bytes} bytes, the HTTP "
                "client's limit (max_response_bytes): a provider answer this large is not one Genesis asked for",
                provider=self.name, limit_bytes=error.limit_bytes,
            )
        if isinstance(error, httpx.DecodingError):
            # The same bytes would come again: not worth a retry.
            return PermanentProviderError(
                f"provider '{self.name}' answered {operation} with a body that cannot be decoded: {error}", provider=self.name
            )
        if isinstance(error, CertificateVerificationError):
            return PermanentProviderError(
                f"provider '{self.name}' at {self.settings.base_url or self.default_address} is not called for {operation}: "
                f"{error}. Retrying cannot help: give the server a certificate for that name from a CA this process "
                "trusts, or point SSL_CERT_FILE at the CA that signed it (and restart the web and worker processes)",
                provider=self.name,
            )
        if isinstance(error, UnsupportedProxyError):
            return PermanentProviderError(f"provider '{self.name}' is not called for {operation}: {error}", provider=self.name)
        if isinstance(error, httpx.ConnectTimeout):
            return TransientProviderError(
                f"provider '{self.name}' at {self.settings.base_url or self.default_address}: connect timed out "
                f"({_connect_timeout(error, default=self.settings.timeout_seconds):g}s) on {operation}",
                provider=self.name,
            )
        if isinstance(error, httpx.TimeoutException):
            return TransientProviderError(
                f"provider '{self.name}' timed out after {self.settings.timeout_seconds:g}s on {operation}",
                provider=self.name,
            )
        if isinstance(error, httpx.TransportError):
            return self._unreachable(operation, error)
        return None

    def _unreachable(self, operation: str, error: Exception) -> TransientProviderError:
        return TransientProviderError(
            f"cannot reach provider '{self.name}' at {self.settings.base_url or self.default_address} "
            f"for {operation}: {error}",
            provider=self.name,
        )

    def _error_from_answer(
        self,
        *,
        operation: str,
        status_code: int,
        body: str | None,
        headers: Mapping[str, str],
        model: str | None,
        refusal_is_expected: bool = False,
    ) -> ProviderError:
        """The provider error for an answer that is not a success (see errors.error_from_response),
        with the account's key named the way the account names it."""
        return error_from_response(
            provider=self.name,
            operation=operation,
            status_code=status_code,
            body=body,
            retry_after_header=headers.get("retry-after"),
            location_header=headers.get("location"),
            api_key_env=self.settings.api_key_env,
            api_key_present=bool(self.settings.api_key),
            refusal_is_expected=refusal_is_expected,
            model=model,
            api_key=self.settings.api_key,
        )

    def _unreadable_answer(self, operation: str, what: str, *, status_code: int, answer: str | None) -> PermanentProviderError:
        """A successful answer whose content cannot be read as what the operation returns."""
        return PermanentProviderError(
            f"provider '{self.name}' answered {operation} with {what}",
            provider=self.name,
            status_code=status_code,
            provider_answer=self._redact(answer) if answer else answer,
        )


def _connect_timeout(error: httpx.ConnectTimeout, *, default: float) -> float:
    """The connect timeout the request was sent with (the client's, at most the account's timeout)."""
    try:
        return float(error.request.extensions["timeout"]["connect"])
    except (RuntimeError, KeyError, TypeError, ValueError):  # no request attached, or no timeout on it
        return default
