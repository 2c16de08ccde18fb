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
race); releasing is another (it also wakes a waiter). Each round trip costs the caller about a tenth
of a provider call's CPU (redis-py and the socket, ~0.25 ms on a small VM) and one more wait to get
the interpreter lock back among the process's threads, so:

- when the slots are all taken, the threads of one process queue on a local lock and only the first
  of them polls Redis, instead of every thread polling on its own;
- inside `keeping_slot()` (a benchmark chunk's threads, which make call after call) a thread keeps
  its slot from one call to its next, for at most `keep_seconds`, instead of giving it back and
  asking again: only the start is booked for each call (no round trip at all without a rate limit).
  A kept slot is still a lease in the set, renewed like any. Then the thread gives it back, waking a
  waiter, and pauses a moment before asking again, so that a waiter in another process gets it:
  threads take turns and the processes' shares even out. A call that fails gives its slot back at
  once (a backoff wait never holds one).
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
# How long a thread that gave back a slot it kept waits before asking again (see keeping_slot).
TURN_PAUSE_SECONDS = 0.002

# Take a slot (KEYS[1]) if one is free and, in the same step, book the next start time allowed by the
# rate limit (KEYS[2]): one round trip per call instead of two. With ARGV[8] = '1' the caller already
# holds the slot ARGV[4] (kept from its previous call) and only books a start, unless that lease ran
# out meanwhile. Returns {answer, slots left}: answer is the seconds to wait before starting (>= 0), -1
# when no slot is free, or -2 - wait when the rate limit would delay the call more than the caller
# accepts (no slot is then taken).
_ACQUIRE = """
local now = tonumber(ARGV[1])
local holding = ARGV[8] == '1' and redis.call('ZSCORE', KEYS[1], ARGV[4])
local taken = 0
if not holding then
  redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now)
  taken = redis.call('ZCARD', KEYS[1])
  if taken >= tonumber(ARGV[3]) then
    return {'-1', 0}
  end
end
local wait = 0
local interval = tonumber(ARGV[6])
if interval > 0 then
  local next_start = tonumber(redis.call('GET', KEYS[2]) or '0')
  local start = math.max(now, next_start)
  wait = start - now
  if wait > tonumber(ARGV[7]) then
    return {tostring(-2 - wait), 1}
  end
  redis.call('SET', KEYS[2], tostring(start + interval), 'PX', math.ceil((wait + interval) * 1000) + 1000)
end
if holding then
  return {tostring(wait), 1}
end
redis.call('ZADD', KEYS[1], ARGV[2], ARGV[4])
redis.call('PEXPIRE', KEYS[1], ARGV[5])
return {tostring(wait), tonumber(ARGV[3]) - taken - 1}
"""

# Give back a slot (KEYS[1]) and wake one waiter (KEYS[2], in any process) instead of letting them all
# poll; the wake-up list is capped so wake-ups nobody waited for do not pile up.
_RELEASE = """
redis.call('ZREM', KEYS[1], ARGV[1])
redis.call('LPUSH', KEYS[2], 1)
redis.call('LTRIM', KEYS[2], 0, tonumber(ARGV[2]) - 1)
redis.call('PEXPIRE', KEYS[2], ARGV[3])
return 1
"""


class ProviderLimiter:
    """No shared limits (no Redis configured): the provider's in-process gate is all there is."""

    @contextmanager
    def slot(self) -> Iterator[None]:
        yield

    @contextmanager
    def keeping_slot(self) -> Iterator[None]:
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
        keep_seconds: float = 0.5,
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
        self._keep_seconds = keep_seconds
        self._clock = clock
        self._sleep = sleep
        self._slots_key = f"{KEY_PREFIX}:{provider}:in-flight"
        self._pace_key = f"{KEY_PREFIX}:{provider}:next-start"
        self._wake_key = f"{KEY_PREFIX}:{provider}:released"
        self._acquire = client.register_script(_ACQUIRE)
        self._release = client.register_script(_RELEASE)
        # Held by the one thread of this process that is asking Redis for a slot (see the docstring).
        self._asking = threading.Lock()
        # Whether the last slot this process took was the last free one: the next thread then waits
        # for a release before asking, instead of asking once in vain first.
        self._none_left = False
        # Per thread: whether it is inside keeping_slot(), and the slot it kept (token, taken at).
        self._local = threading.local()
        self._held: set[str] = set()
        self._held_lock = threading.Lock()
        self._renewer: threading.Thread | None = None

    @contextmanager
    def slot(self) -> Iterator[None]:
        kept = self._reuse_kept_slot()
        token, taken_at = kept if kept is not None else (self._acquire_slot(), self._clock())
        succeeded = False
        try:
            yield
            succeeded = True
        finally:
            if succeeded and getattr(self._local, "keeping", False):
                self._local.kept = (token, taken_at)
            else:
                self.release(token)

    @contextmanager
    def keeping_slot(self) -> Iterator[None]:
        """Within this block the calling thread keeps its slot between calls (see the module
        docstring); the slot is given back when the block ends."""
        self._local.keeping = True
        try:
            yield
        finally:
            self._local.keeping = False
            kept, self._local.kept = getattr(self._local, "kept", None), None
            if kept is not None:
                self.release(kept[0])

    def release(self, token: str) -> None:
        with self._held_lock:
            self._held.discard(token)
        self._release(keys=[self._slots_key, self._wake_key], args=[token, self._max_concurrency, self._key_ttl_ms])

    def _reuse_kept_slot(self) -> tuple[str, float] | None:
        """The slot this thread kept from its previous call, with this call's start booked; None when
        there is none, or it has been kept for `keep_seconds` (then it is given back)."""
        kept, self._local.kept = getattr(self._local, "kept", None), None
        if kept is None:
            return None
        token, taken_at = kept
        now = self._clock()
        if now - taken_at >= self._keep_seconds:
            self.release(token)
            self._sleep(TURN_PAUSE_SECONDS)  # the waiter woken by the release asks meanwhile
            return None
        if not self._interval:
            return kept
        try:
            reply, _ = self._acquire(
                keys=[self._slots_key, self._pace_key],
                args=[now, now + self._lease_seconds, self._max_concurrency, token, self._key_ttl_ms,
                      self._interval, self._wait_limit, "1"],
            )
            answer = self._checked(float(reply))
        except BaseException:
            self.release(token)
            raise
        if answer < 0:  # the lease ran out meanwhile and the slot went to someone else
            with self._held_lock:
                self._held.discard(token)
            return None
        if answer > 0:
            self._sleep(answer)
        return kept

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
        deadline = self._clock() + self._wait_limit
        if not self._asking.acquire(timeout=max(0.0, self._wait_limit)):
            raise self._busy_error()
        try:
            token, wait = self._take_slot(deadline)
        finally:
            self._asking.release()
        if wait > 0:
            self._sleep(wait)  # after letting the next thread ask: the start is booked already
        return token

    def _checked(self, answer: float) -> float:
        """The script's answer, or the error when the rate limit would delay the call too long."""
        if answer <= -2:
            wait = -2 - answer
            raise TransientProviderError(
                f"provider '{self._provider}': the shared rate limit would delay this call {wait:.1f}s",
                provider=self._provider,
                retry_after=wait,
            )
        return answer

    def _busy_error(self) -> TransientProviderError:
        return TransientProviderError(
            f"provider '{self._provider}': all {self._max_concurrency} shared call slots stayed busy for "
            f"{self._wait_limit:g}s",
            provider=self._provider,
        )

    def _take_slot(self, deadline: float) -> tuple[str, float]:
        """Poll until a slot is ours; returns its token and the seconds to wait before starting."""
        token = secrets.token_hex(8)
        pause = 0.02
        if self._none_left:
            self._client.blpop([self._wake_key], timeout=max(0.001, min(pause, deadline - self._clock())))
        while True:
            now = self._clock()
            reply, left = self._acquire(
                keys=[self._slots_key, self._pace_key],
                args=[now, now + self._lease_seconds, self._max_concurrency, token, self._key_ttl_ms,
                      self._interval, self._wait_limit, "0"],
            )
            answer = self._checked(float(reply))
            self._none_left = int(left) <= 0
            if answer >= 0:
                self._hold(token)
                return token, answer
            if now >= deadline:
                raise self._busy_error()
            # Block until a holder releases a slot (a wake-up), or briefly: a slot can also free by
            # a dead holder's lease running out, which sends no wake-up.
            self._client.blpop([self._wake_key], timeout=max(0.001, min(pause, deadline - now)))
            pause = min(pause * 2, 0.1)
