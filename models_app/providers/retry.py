"""The one retry layer: exponential backoff with jitter, a cap, and the provider's Retry-After.

Providers make exactly one attempt per call (the mistralai SDK's own retries are switched off), so
retries happen here and nowhere else. Only TransientProviderError is retried.
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TypeVar

from .errors import TransientProviderError

T = TypeVar("T")


@dataclass(frozen=True)
class RetryPolicy:
    max_attempts: int = 4  # the first try included
    base_delay_seconds: float = 0.5
    max_delay_seconds: float = 20.0  # cap of one wait; a longer Retry-After is not waited for
    multiplier: float = 2.0

    def __post_init__(self) -> None:
        if self.max_attempts < 1:
            raise ValueError(f"max_attempts must be >= 1, got {self.max_attempts}")
        if self.base_delay_seconds < 0 or self.max_delay_seconds < 0 or self.multiplier < 1:
            raise ValueError("delays must be >= 0 and multiplier >= 1")

    def backoff_seconds(self, *, retry_number: int, draw: random.Random) -> float:
        """Wait before retry `retry_number` (1 for the first retry): "equal jitter", i.e. half the
        exponential step fixed and half random, so clients that failed together spread out."""
        step = min(self.max_delay_seconds, self.base_delay_seconds * self.multiplier ** (retry_number - 1))
        return step / 2 + draw.uniform(0, step / 2)


NO_RETRY = RetryPolicy(max_attempts=1)
# Background batch work (benchmark chunks, WaltzRL builds): each call retries transient errors (429,
# 5xx, timeouts) a few times with backoff before its task decides what to do with the pair.
BATCH_CALL_RETRY = RetryPolicy(max_attempts=4, base_delay_seconds=0.5, max_delay_seconds=10.0)


@dataclass(frozen=True)
class RetryAttempt:
    """Told to `on_retry` before each wait."""

    retry_number: int
    delay_seconds: float
    error: TransientProviderError


def call_with_retries(
    operation: Callable[[], T],
    *,
    policy: RetryPolicy = RetryPolicy(),
    sleep: Callable[[float], None] = time.sleep,
    draw: random.Random | None = None,
    on_retry: Callable[[RetryAttempt], None] | None = None,
) -> T:
    """Run `operation`, retrying transient errors per `policy`; the last error propagates.

    A Retry-After is honoured as a minimum wait. If the provider asks for longer than
    `policy.max_delay_seconds`, the error is raised at once with its `retry_after`, so a Celery task
    can reschedule itself instead of blocking a worker. The error raised carries in `attempts` how
    many calls were made (1 when a long Retry-After stopped the retries at once).
    """
    draw = draw or random.Random()
    retry_number = 0
    while True:
        try:
            return operation()
        except TransientProviderError as error:
            retry_number += 1
            error.attempts = retry_number
            if retry_number >= policy.max_attempts:
                raise
            if error.retry_after is not None and error.retry_after > policy.max_delay_seconds:
                raise
            delay = policy.backoff_seconds(retry_number=retry_number, draw=draw)
            if error.retry_after is not None:
                delay = max(delay, error.retry_after)
            if on_retry is not None:
                on_retry(RetryAttempt(retry_number=retry_number, delay_seconds=delay, error=error))
            sleep(delay)
