"""A chat completion's result, for both provider kinds alike: its token counts from the provider's `usage`,
checked, or an estimate where it reported none.

A count the provider gave must be a whole number of tokens, zero or more: anything else ("n/a",
"seventeen", -5) is a malformed answer, a permanent error naming the provider — not a crash in
whatever reads the result, nor a negative cost. A count it left out (no `usage`, a field missing or
null: some llama.cpp builds, a Mistral-compatible server that fills only part of it) is estimated at
about four characters a token, and the result says so (`ChatResult.tokens_estimated`): charging
nothing for it, as taking the missing field as 0 did, would put a paid call on the ledger as free.
"""

from __future__ import annotations

import logging
import math
import threading
from collections.abc import Mapping, Sequence
from typing import Any

from models_app.simulator.responder import message_text

from .base import ChatResult
from .errors import PermanentProviderError

logger = logging.getLogger(__name__)

CHARS_PER_TOKEN_ESTIMATE = 4
_MISSING = object()

# (provider, model, what was missing) already logged by this process: a warning once, not one per call.
_logged: set[tuple[str, str, str]] = set()
_logged_lock = threading.Lock()


def estimate_tokens(text: str) -> int:
    return max(1, math.ceil(len(text) / CHARS_PER_TOKEN_ESTIMATE))


def prompt_text(messages: Sequence[Mapping[str, Any]]) -> str:
    return "".join(message_text(message.get("content")) for message in messages)


def chat_result(
    *,
    provider: str,
    model: str,
    usage: Mapping[str, Any] | None,
    messages: Sequence[Mapping[str, Any]],
    text: str,
    latency_ms: float,
    finish_reason: str,
    answered_by: str,
) -> ChatResult:
    """A chat completion's result, for both provider kinds alike: the prompt and completion tokens
    from `usage` (None: the answer had none), each estimated when absent or null, and the model that
    answered (`answered_by`, else the one asked). PermanentProviderError when a count is there but not
    a whole number ≥ 0."""
    fields = usage or {}
    prompt = _reported(fields.get("prompt_tokens", _MISSING), provider=provider, name="prompt_tokens")
    completed = _reported(fields.get("completion_tokens", _MISSING), provider=provider, name="completion_tokens")
    missing = [name for name, value in (("prompt_tokens", prompt), ("completion_tokens", completed)) if value is None]
    if missing:
        _log_estimate(provider=provider, model=model, missing="usage" if usage is None else ", ".join(missing))
    return ChatResult(
        text=text,
        prompt_tokens=estimate_tokens(prompt_text(messages)) if prompt is None else prompt,
        completion_tokens=estimate_tokens(text) if completed is None else completed,
        latency_ms=round(latency_ms, 2),
        finish_reason=finish_reason,
        model=answered_by or model,
        provider=provider,
        tokens_estimated=bool(missing),
    )


def malformed_usage(*, provider: str, usage: object) -> PermanentProviderError:
    return PermanentProviderError(
        f"provider '{provider}' answered the chat completion with usage {_shown(usage)}, not an object of token counts",
        provider=provider,
    )


def _reported(value: object, *, provider: str, name: str) -> int | None:
    if value is _MISSING or value is None:
        return None
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise PermanentProviderError(
            f"provider '{provider}' answered the chat completion with usage.{name} = {_shown(value)}, not a whole "
            "number of tokens (0 or more)",
            provider=provider,
        )
    return value


def _shown(value: object) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:60] + "…"


def _log_estimate(*, provider: str, model: str, missing: str) -> None:
    key = (provider, model, missing)
    with _logged_lock:
        if key in _logged:
            return
        _logged.add(key)
    logger.warning(
        "provider '%s' reported no %s for model '%s': its token counts (and the costs computed from them) are "
        "estimated at %d characters a token (logged once per process)",
        provider, missing, model, CHARS_PER_TOKEN_ESTIMATE,
    )
