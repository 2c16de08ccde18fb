"""One Celery beat at a time, so a second beat started by mistake (or as a standby) sends nothing twice.

Two beats side by side send every periodic task twice: two daily cost reports, two weekly Go/No-Go
reports. django-celery-beat's scheduler has no guard against that, so `SingleBeatScheduler` (the
`CELERY_BEAT_SCHEDULER` in settings) holds a lock in Redis while it sends:

- A beat that starts while another holds the lock waits, before it reads any schedule, and says which
  beat it waits for; it takes over within `STANDBY_POLL_SECONDS` when that beat stops cleanly (it
  releases the lock), or within `BEAT_LOCK_SECONDS` when it was killed (the lock expires).
- The beat that holds the lock renews it on every tick (every few seconds). While Redis does not answer
  it sends nothing — the broker is the same Redis, so nothing could be sent anyway — and picks up again
  when Redis is back. If another beat took the lock meanwhile, it stops (its process manager restarts
  it as a standby): its schedule in memory is older than the one the other beat now keeps.

Without REDIS_URL (the embedded `make run`) there is one machine and one beat, and no lock.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
import time
import uuid
from typing import Any

import redis
from django.conf import settings
from django_celery_beat.schedulers import DatabaseScheduler
from redis.exceptions import LockError, LockNotOwnedError

from genesis.logging import Throttled

logger = logging.getLogger(__name__)
_renew_warnings = Throttled(60.0)

BEAT_LOCK_KEY = "genesis:beat:lock"
BEAT_LOCK_SECONDS = 60
STANDBY_POLL_SECONDS = 5
# A standby repeats whom it waits for this often, so its log shows it is still alive and why it is idle.
STANDBY_REPEAT_SECONDS = 600


class BeatLockLost(Exception):
    """Another beat holds the lock this beat held."""


class BeatLock:
    """The Redis lock that lets one beat send periodic tasks (redis-py's Lock: SET NX PX, renewed by a
    script that checks the token). The token names the holder, so a waiting beat can say whom it
    waits for."""

    def __init__(self, client: Any, *, key: str = BEAT_LOCK_KEY, seconds: float = BEAT_LOCK_SECONDS) -> None:
        self.client, self.key = client, key
        self.holder = f"{socket.gethostname()} pid {os.getpid()}"
        self._lock = client.lock(key, timeout=seconds, thread_local=False)
        self.held = False

    def acquire(self) -> bool:
        """Take the lock if no beat holds it. Redis errors propagate (the caller waits and tries again)."""
        self.held = bool(self._lock.acquire(blocking=False, token=f"{self.holder} {uuid.uuid4().hex}"))
        return self.held

    def renew(self) -> None:
        """Extend the lock this beat holds. Raises BeatLockLost when another beat holds it now; a lock
        that expired with nobody taking it (Redis restarted, or stalled past the expiry) is taken again.
        Redis errors propagate."""
        try:
            self._lock.reacquire()
            return
        except LockNotOwnedError:
            self.held = False
        if not self.acquire():
            raise BeatLockLost(f"the beat lock {self.key} is now held by {self.current_holder()}")
        logger.warning("beat: the lock %s had expired with no other beat taking it; holding it again", self.key)

    def release(self) -> None:
        if not self.held:
            return
        self.held = False
        try:
            self._lock.release()
        except (LockError, redis.RedisError) as exc:  # it expires by itself
            logger.warning("beat: lock %s not released: %s: %s", self.key, type(exc).__name__, exc)

    def current_holder(self) -> str:
        """The holder named by the lock's token ("host pid N"), or "nobody"."""
        raw = self.client.get(self.key)
        return raw.decode().rsplit(" ", 1)[0] if raw else "nobody"


class SingleBeatScheduler(DatabaseScheduler):
    """django-celery-beat's DatabaseScheduler that sends periodic tasks only while it holds the beat lock."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        # Wait for the lock before the schedule is read: a beat that takes over after hours of waiting
        # must start from the last_run_at the other beat wrote, not from what it read at start.
        # Two schedulers send nothing and take no lock: the lazy one built for beat's start-up banner,
        # and the one beat's SIGTERM handler builds to save a schedule it never got while this process
        # waits (it would otherwise wait for the lock inside the handler; the handler's SystemExit
        # then ends the wait).
        if _standby.is_set():
            kwargs["lazy"] = True
        lazy = bool(kwargs.get("lazy"))
        self.beat_lock = _wait_for_beat_lock() if settings.REDIS_URL and not lazy else None
        super().__init__(*args, **kwargs)

    def tick(self, *args: Any, **kwargs: Any) -> float:
        if self.beat_lock is not None:
            try:
                self.beat_lock.renew()
            except redis.RedisError as exc:
                # Beat ticks every few seconds: once a minute says the outage goes on.
                _renew_warnings.log(logger, logging.WARNING, "renew", "beat: cannot renew the beat lock (%s: %s); sending "
                                    "nothing until Redis answers", type(exc).__name__, exc)
                return STANDBY_POLL_SECONDS
            except BeatLockLost as exc:
                logger.error("beat: %s; stopping so that only one beat sends periodic tasks "
                             "(restarted by its process manager, it waits as a standby)", exc)
                # Not SystemExit: beat's loop takes that for a clean stop and the process would exit 0,
                # which a process manager restarting on failure leaves down. An error exits non-zero.
                raise
        return float(super().tick(*args, **kwargs))

    def close(self) -> None:
        try:
            super().close()
        finally:
            if self.beat_lock is not None:
                self.beat_lock.release()


_standby = threading.Event()  # set while this process waits for the lock


def _wait_for_beat_lock() -> BeatLock:
    client = redis.Redis.from_url(settings.REDIS_URL, socket_connect_timeout=2, socket_timeout=2)
    lock = BeatLock(client)
    said_at: float | None = None
    _standby.set()
    try:
        while True:
            try:
                if lock.acquire():
                    logger.info("beat: holds the beat lock %s; sending periodic tasks", lock.key)
                    return lock
                waiting_for = lock.current_holder()
            except redis.RedisError as exc:
                waiting_for = f"Redis to answer ({type(exc).__name__}: {exc})"
            if said_at is None or time.monotonic() - said_at >= STANDBY_REPEAT_SECONDS:
                logger.warning("beat: waiting as a standby for %s; another beat sends the periodic tasks, and "
                               "this one takes over when it stops", waiting_for)
                said_at = time.monotonic()
            time.sleep(STANDBY_POLL_SECONDS)
    finally:
        _standby.clear()
