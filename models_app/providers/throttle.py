"""In-process limits of one provider account: concurrent calls and calls per minute.

Per process only: several Celery workers each get their own budget. A cluster-wide limit would need
Redis; the provider's own 429s (retried with Retry-After) are the backstop.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager

from .errors import TransientProviderError


class CallGate:
    def __init__(
        self,
        *,
        provider: str,
        max_concurrency: int,
        rate_limit_per_minute: int | None,
        wait_limit_seconds: float,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self._provider = provider
        self._slots = threading.BoundedSemaphore(max_concurrency)
        self._max_concurrency = max_concurrency
        self._interval = 60.0 / rate_limit_per_minute if rate_limit_per_minute else 0.0
        self._wait_limit = wait_limit_seconds
        self._clock = clock
        self._sleep = sleep
        self._lock = threading.Lock()
        self._next_start = 0.0

    @contextmanager
    def admit(self) -> Iterator[None]:
        """Wait for a free slot and the rate limit; a wait longer than the limit is a transient error."""
        if not self._slots.acquire(timeout=self._wait_limit):
            raise TransientProviderError(
                f"provider '{self._provider}': all {self._max_concurrency} concurrent slots stayed busy "
                f"for {self._wait_limit:g}s",
                provider=self._provider,
            )
        try:
            self._wait_for_rate_limit()
            yield
        finally:
            self._slots.release()

    def _wait_for_rate_limit(self) -> None:
        if not self._interval:
            return
        with self._lock:
            now = self._clock()
            start = max(now, self._next_start)
            wait = start - now
            if wait > self._wait_limit:
                raise TransientProviderError(
                    f"provider '{self._provider}': local rate limit would delay this call {wait:.1f}s",
                    provider=self._provider,
                    retry_after=wait,
                )
            self._next_start = start + self._interval
        if wait > 0:
            self._sleep(wait)
