"""Cluster-wide limits of one provider account, kept in Redis (no Django here).

Benchmark chunks run in several worker processes, possibly on several machines, each with its own
thread pool; the provider's in-process call gate (providers/throttle.py) only sees its own process.
These limits are shared by every process that talks to the same Redis:

- concurrency: at most `max_concurrency` calls in flight. Each call holds a lease in a sorted set
  (member = a random token, score = when the lease expires). A thread of the holding process renews
  the leases it holds every `lease_seconds / 3`, so a long call keeps its slot while a worker killed
  mid-call frees its slots within `lease_seconds` instead of leaking them;
- rate: calls start at least 60 / `rate_limit_per_minute` seconds apart. One key holds the next free
  start time; each caller atomically books the next start and sleeps until it (a shared pacer: fair,
  and no burst can exceed the provider's limit).

Taking a slot and booking a start are one Lua script (one round trip, atomic however many workers
race); releasing is one pipelined round trip that also wakes a waiter.
"""

from __future__ import annotations

import secrets
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

from models_app.providers import TransientProviderError

KEY_PREFIX = "genesis:provider-limits"

# Take a slot (KEYS[1]) if one is free and, in the same step, book the next start time allowed by the
# rate limit (KEYS[2]): one round trip per call instead of two. Returns the seconds to wait before
# starting (>= 0), -1 when no slot is free, or -2 - wait when the rate limit would delay the call more
# than the caller accepts (the slot is then not taken).
_ACQUIRE = """
local now = tonumber(ARGV[1])
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now)
if redis.call('ZCARD', KEYS[1]) >= tonumber(ARGV[3]) then
  return '-1'
end
local wait = 0
local interval = tonumber(ARGV[6])
if interval > 0 then
  local next_start = tonumber(redis.call('GET', KEYS[2]) or '0')
  local start = math.max(now, next_start)
  wait = start - now
  if wait > tonumber(ARGV[7]) then
    return tostring(-2 - wait)
  end
  redis.call('SET', KEYS[2], tostring(start + interval), 'PX', math.ceil((wait + interval) * 1000) + 1000)
end
redis.call('ZADD', KEYS[1], ARGV[2], ARGV[4])
redis.call('PEXPIRE', KEYS[1], ARGV[5])
return tostring(wait)
"""


class ProviderLimiter:
    """No shared limits (no Redis configured): the provider's in-process gate is all there is."""

    @contextmanager
    def slot(self) -> Iterator[None]:
        yield


class RedisProviderLimiter(ProviderLimiter):
    def __init__(
        self,
        client: Any,
        *,
        provider: str,
        max_concurrency: int,
        rate_limit_per_minute: int | None,
        lease_seconds: float,
        wait_limit_seconds: float,
        clock: Callable[[], float] = time.time,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        if max_concurrency < 1:
            raise ValueError(f"max_concurrency must be >= 1, got {max_concurrency}")
        self._client = client
        self._provider = provider
        self._max_concurrency = max_concurrency
        self._interval = 60.0 / rate_limit_per_minute if rate_limit_per_minute else 0.0
        self._lease_seconds = lease_seconds
        # The set itself disappears when nobody has used the provider for a while.
        self._key_ttl_ms = int(max(60.0, lease_seconds * 4) * 1000)
        self._wait_limit = wait_limit_seconds
        self._clock = clock
        self._sleep = sleep
        self._slots_key = f"{KEY_PREFIX}:{provider}:in-flight"
        self._pace_key = f"{KEY_PREFIX}:{provider}:next-start"
        self._wake_key = f"{KEY_PREFIX}:{provider}:released"
        self._acquire = client.register_script(_ACQUIRE)
        self._held: set[str] = set()
        self._held_lock = threading.Lock()
        self._renewer: threading.Thread | None = None

    @contextmanager
    def slot(self) -> Iterator[None]:
        token = self._acquire_slot()
        try:
            yield
        finally:
            self.release(token)

    def release(self, token: str) -> None:
        with self._held_lock:
            self._held.discard(token)
        pipeline = self._client.pipeline()
        pipeline.zrem(self._slots_key, token)
        # Wake one waiter (in any process) instead of letting them all poll; the list is capped so
        # wake-ups nobody waited for do not pile up.
        pipeline.lpush(self._wake_key, 1)
        pipeline.ltrim(self._wake_key, 0, self._max_concurrency - 1)
        pipeline.pexpire(self._wake_key, self._key_ttl_ms)
        pipeline.execute()

    def _hold(self, token: str) -> None:
        with self._held_lock:
            self._held.add(token)
            if self._renewer is None or not self._renewer.is_alive():
                self._renewer = threading.Thread(target=self._renew_forever, name=f"limiter-{self._provider}", daemon=True)
                self._renewer.start()

    def _renew_forever(self) -> None:
        while True:
            self._sleep(self._lease_seconds / 3)
            with self._held_lock:
                tokens = list(self._held)
            if not tokens:
                continue
            expires = self._clock() + self._lease_seconds
            try:
                # XX: renew only leases still there (one expired meanwhile has been given away).
                pipeline = self._client.pipeline()
                pipeline.zadd(self._slots_key, {token: expires for token in tokens}, xx=True)
                pipeline.pexpire(self._slots_key, self._key_ttl_ms)
                pipeline.execute()
            except Exception:  # noqa: BLE001 - a Redis blip: the next round renews, the lease has slack
                continue

    def _acquire_slot(self) -> str:
        """Take a slot and wait for the call's turn under the rate limit; returns the lease token."""
        token = secrets.token_hex(8)
        deadline = self._clock() + self._wait_limit
        pause = 0.02
        while True:
            now = self._clock()
            answer = float(
                self._acquire(
                    keys=[self._slots_key, self._pace_key],
                    args=[now, now + self._lease_seconds, self._max_concurrency, token, self._key_ttl_ms,
                          self._interval, self._wait_limit],
                )
            )
            if answer >= 0:
                self._hold(token)
                if answer > 0:
                    self._sleep(answer)
                return token
            if answer <= -2:
                wait = -2 - answer
                raise TransientProviderError(
                    f"provider '{self._provider}': the shared rate limit would delay this call {wait:.1f}s",
                    provider=self._provider,
                    retry_after=wait,
                )
            if now >= deadline:
                raise TransientProviderError(
                    f"provider '{self._provider}': all {self._max_concurrency} shared call slots stayed busy for "
                    f"{self._wait_limit:g}s",
                    provider=self._provider,
                )
            # Block until a holder releases a slot (a wake-up), or briefly: a slot can also free by
            # a dead holder's lease running out, which sends no wake-up.
            self._client.blpop([self._wake_key], timeout=max(0.001, min(pause, deadline - now)))
            pause = min(pause * 2, 0.1)
