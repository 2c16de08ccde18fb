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
  and no burst can exceed the provider's limit). A limit the slots cannot reach is not paced: with
  every call lasting at least SHORTEST_CALL_SECONDS, `max_concurrency` slots start at most
  `max_concurrency / SHORTEST_CALL_SECONDS` calls a second, and booking each start under a limit
  above that would cost every call a round trip for nothing.

Taking a slot and booking a start are one Lua script (one round trip, atomic however many workers
race); releasing is another (it also wakes a waiter). Each round trip costs the caller about a tenth
of a provider call's CPU (redis-py and the socket, ~0.25 ms on a small VM) and one more wait to get
the interpreter lock back among the process's threads, so a process hands its slots around locally:

- a slot given back while other threads of the same process wait for one goes to one of them
  directly (no round trip); the slot stays a lease in the set, renewed like any. A slot circulates
  this way for at most `keep_seconds` after it was taken from Redis, then goes back to Redis (waking
  a waiter there, in any process), so that processes take turns and their shares even out;
- of the threads of one process waiting for a slot, only one asks Redis (blocking on the wake-up
  list); the others wait locally for a slot handed on or for their turn to ask.

A thread holds a slot only for the call itself: the time it then spends reading the answer,
scoring it and preparing its next request, another thread of the process calls with that slot (a
chunk runs as many threads as the account has slots, so with chunks in several processes each has
threads to spare). A call that fails gives its slot back at once
(a backoff wait never holds one). Redis unreachable is a transient provider error: the run's
retries (and the chunk's next round) handle it like a provider's own hiccup.
"""

from __future__ import annotations

import logging
import secrets
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

from redis.exceptions import RedisError

from models_app.providers import TransientProviderError

logger = logging.getLogger(__name__)

KEY_PREFIX = "genesis:provider-limits"

# No model call is shorter: even a cached answer from a server on the same machine is an HTTP
# exchange through the SDK, which alone takes longer.
SHORTEST_CALL_SECONDS = 0.001

# Every time in these scripts is Redis's own clock (TIME), never a worker's: workers on several
# machines share the leases and the pacer, and their clocks may disagree.
_NOW = """
local clock = redis.call('TIME')
local now = tonumber(clock[1]) + tonumber(clock[2]) / 1000000
"""

# Take a slot (KEYS[1]) if one is free and, in the same step, book the next start time allowed by the
# rate limit (KEYS[2]): one round trip per call instead of two. ARGV: lease seconds, max concurrency,
# token, key TTL (ms), pacing interval (s), longest acceptable wait (s), holding. With holding = '1'
# the caller already holds the slot ARGV[3] (handed on by a thread of its process) and only books a
# start, unless that lease ran out meanwhile. Returns {answer, slots left}: answer is the seconds to
# wait before starting (>= 0), -1 when no slot is free, or -2 - wait when the rate limit would delay
# the call more than the caller accepts (no slot is then taken).
_ACQUIRE = _NOW + """
local lease = redis.call('ZSCORE', KEYS[1], ARGV[3])
local holding = ARGV[7] == '1' and lease and tonumber(lease) > now
local taken = 0
if not holding then
  redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now)
  taken = redis.call('ZCARD', KEYS[1])
  if taken >= tonumber(ARGV[2]) then
    return {'-1', 0}
  end
end
local wait = 0
local interval = tonumber(ARGV[5])
if interval > 0 then
  local next_start = tonumber(redis.call('GET', KEYS[2]) or '0')
  local start = math.max(now, next_start)
  wait = start - now
  if wait > tonumber(ARGV[6]) then
    return {tostring(-2 - wait), 1}
  end
  redis.call('SET', KEYS[2], tostring(start + interval), 'PX', math.ceil((wait + interval) * 1000) + 1000)
end
if holding then
  return {tostring(wait), 1}
end
redis.call('ZADD', KEYS[1], now + tonumber(ARGV[1]), ARGV[3])
redis.call('PEXPIRE', KEYS[1], ARGV[4])
return {tostring(wait), tonumber(ARGV[2]) - taken - 1}
"""

# Extend the leases ARGV[3..] still in the set KEYS[1] (XX: one that ran out meanwhile has been given
# away) to ARGV[1] seconds from now; ARGV[2] is the set's TTL (ms).
_RENEW = _NOW + """
for i = 3, #ARGV do
  redis.call('ZADD', KEYS[1], 'XX', now + tonumber(ARGV[1]), ARGV[i])
end
redis.call('PEXPIRE', KEYS[1], ARGV[2])
return 1
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
        interval = 60.0 / rate_limit_per_minute if rate_limit_per_minute else 0.0
        # Pacing only where the limit can be reached (see the module docstring).
        self._interval = interval if interval * max_concurrency > SHORTEST_CALL_SECONDS else 0.0
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
        self._renew = client.register_script(_RENEW)
        self._release = client.register_script(_RELEASE)
        # The local hand-off (see the module docstring), all under `_turns`: slots given back for a
        # waiting thread of this process (token, taken from Redis at), how many threads wait here,
        # and whether one of them is asking Redis.
        self._turns = threading.Condition()
        self._handed_on: deque[tuple[str, float]] = deque()
        self._waiting = 0
        self._asking = False
        # Whether the last slot this process took was the last free one: the next asker then waits
        # for a release before asking, instead of asking once in vain first.
        self._none_left = False
        self._held: set[str] = set()
        self._held_lock = threading.Lock()
        self._renewer: threading.Thread | None = None

    @contextmanager
    def slot(self) -> Iterator[None]:
        token, taken_at = self._take()
        succeeded = False
        try:
            yield
            succeeded = True
        finally:
            if succeeded:
                self._give_back(token, taken_at)
            else:
                self.release(token)

    def release(self, token: str) -> None:
        """Give a slot back to Redis (best effort: if Redis cannot be reached, the lease, no longer
        renewed, runs out by itself within `lease_seconds`)."""
        with self._held_lock:
            self._held.discard(token)
        try:
            self._release(keys=[self._slots_key, self._wake_key], args=[token, self._max_concurrency, self._key_ttl_ms])
        except RedisError as exc:
            logger.warning("provider '%s': could not give a call slot back (%s); its lease runs out by itself",
                           self._provider, type(exc).__name__)

    def _take(self) -> tuple[str, float]:
        """A slot for one call, its start booked under the rate limit: one handed on by a thread of
        this process, or else one from Redis. Returns (token, when it was taken from Redis)."""
        deadline = self._clock() + self._wait_limit
        while True:
            with self._turns:
                self._waiting += 1
                try:
                    while not self._handed_on and self._asking:
                        left = deadline - self._clock()
                        if left <= 0:
                            raise self._busy_error()
                        self._turns.wait(left)
                    handed = self._handed_on.popleft() if self._handed_on else None
                    if handed is None:
                        self._asking = True
                finally:
                    self._waiting -= 1
            if handed is None:
                break
            if self._clock() - handed[1] >= self._keep_seconds:
                self.release(handed[0])  # it has circulated here long enough: another process's turn
                continue
            if self._book_start(handed[0]):
                return handed
            # Its lease ran out meanwhile (the slot went to someone else): wait for another.
        try:
            token, wait = self._take_slot(deadline)
        finally:
            with self._turns:
                self._asking = False
                self._turns.notify()  # the next waiter asks now (or takes a slot handed on)
        if wait > 0:
            self._sleep(wait)  # after letting the next thread ask: the start is booked already
        return token, self._clock()

    def _give_back(self, token: str, taken_at: float) -> None:
        """After a call: hand the slot to a thread of this process that waits for one, while it has
        circulated here for less than `keep_seconds`; otherwise give it back to Redis."""
        with self._turns:
            # One slot per waiting thread at most: a waiter is counted until it has taken one, so
            # two calls ending together must not both hand on to a single waiter (the second slot
            # would sit here, renewed, held from every other process).
            if len(self._handed_on) < self._waiting and self._clock() - taken_at < self._keep_seconds:
                self._handed_on.append((token, taken_at))
                self._turns.notify()
                return
        self.release(token)

    def _book_start(self, token: str) -> bool:
        """Book the next call's start on a slot handed on (and wait for it); False when the slot's
        lease ran out meanwhile. Without a rate limit there is nothing to book."""
        if not self._interval:
            return True
        try:
            reply, _ = self._script(self._acquire, keys=[self._slots_key, self._pace_key],
                                    args=[self._lease_seconds, self._max_concurrency, token, self._key_ttl_ms,
                                          self._interval, self._wait_limit, "1"])
            answer = self._checked(float(reply))
        except BaseException:
            self.release(token)
            raise
        if answer < 0:
            with self._held_lock:
                self._held.discard(token)
            return False
        if answer > 0:
            self._sleep(answer)
        return True

    def _script(self, script: Any, *, keys: list[str], args: list[Any]) -> Any:
        try:
            return script(keys=keys, args=args)
        except RedisError as exc:
            raise self._unreachable(exc) from None

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
            try:
                self._renew(keys=[self._slots_key], args=[self._lease_seconds, self._key_ttl_ms, *tokens])
            except Exception:  # noqa: BLE001 - a Redis blip: the next round renews, the lease has slack
                continue

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
            self._wait_for_release(timeout=min(pause, deadline - self._clock()))
        while True:
            now = self._clock()
            reply, left = self._script(
                self._acquire, keys=[self._slots_key, self._pace_key],
                args=[self._lease_seconds, self._max_concurrency, token, self._key_ttl_ms, self._interval, self._wait_limit, "0"],
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
            self._wait_for_release(timeout=min(pause, deadline - now))
            pause = min(pause * 2, 0.1)

    def _wait_for_release(self, *, timeout: float) -> None:
        try:
            self._client.blpop([self._wake_key], timeout=max(0.001, timeout))
        except RedisError as exc:
            raise self._unreachable(exc) from None

    def _unreachable(self, exc: RedisError) -> TransientProviderError:
        return TransientProviderError(
            f"provider '{self._provider}': the shared limits in Redis cannot be reached ({type(exc).__name__})",
            provider=self._provider,
        )
