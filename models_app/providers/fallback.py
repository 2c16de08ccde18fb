"""Answer with the baseline when a fine-tuned model fails transiently, and say so.

Never silent: the outcome names the model that answered and why, and `on_fallback` lets the caller
count it (Prometheus) and record it.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from .base import ChatMessage, ChatProvider, ChatResult
from .errors import ProviderError, TransientProviderError
from .retry import RetryAttempt, RetryPolicy, call_with_retries


@dataclass(frozen=True)
class ModelRoute:
    provider: ChatProvider
    model: str


@dataclass(frozen=True)
class FallbackEvent:
    """Given to `on_fallback` just before the fallback model is called."""

    primary_provider: str
    primary_model: str
    fallback_provider: str
    fallback_model: str
    reason: str
    error: ProviderError


@dataclass(frozen=True)
class ChatOutcome:
    result: ChatResult
    model: str  # the model that answered
    provider: str
    fell_back: bool
    reason: str | None  # why the primary did not answer, when it did not
    primary_error: ProviderError | None = None


DEFAULT_RETRY_POLICY = RetryPolicy()

def chat_with_fallback(
    *,
    primary: ModelRoute,
    fallback: ModelRoute | None,
    messages: Sequence[ChatMessage],
    parameters: Mapping[str, Any] | None = None,
    retry_policy: RetryPolicy = DEFAULT_RETRY_POLICY,
    on_fallback: Callable[[FallbackEvent], None] | None = None,
    on_retry: Callable[[RetryAttempt], None] | None = None,
    sleep: Callable[[float], None] = time.sleep,
) -> ChatOutcome:
    """Ask `primary` (with retries); if it still fails transiently, ask `fallback` (with retries).

    Permanent errors of the primary (bad key, unknown model, invalid request) are raised, not
    papered over: they need a person, and a fallback would hide them.
    """

    def ask(route: ModelRoute) -> ChatResult:
        return call_with_retries(
            lambda: route.provider.chat(model=route.model, messages=messages, parameters=parameters),
            policy=retry_policy,
            sleep=sleep,
            on_retry=on_retry,
        )

    try:
        result = ask(primary)
    except TransientProviderError as error:
        if fallback is None:
            raise
        reason = f"{primary.model} failed transiently: {error}"
        if on_fallback is not None:
            on_fallback(
                FallbackEvent(
                    primary_provider=primary.provider.name,
                    primary_model=primary.model,
                    fallback_provider=fallback.provider.name,
                    fallback_model=fallback.model,
                    reason=reason,
                    error=error,
                )
            )
        try:
            result = ask(fallback)
        except ProviderError as fallback_error:
            fallback_error.add_note(f"after falling back from {primary.model}: {reason}")
            raise
        return ChatOutcome(
            result=result,
            model=fallback.model,
            provider=fallback.provider.name,
            fell_back=True,
            reason=reason,
            primary_error=error,
        )
    return ChatOutcome(result=result, model=primary.model, provider=primary.provider.name, fell_back=False, reason=None)
