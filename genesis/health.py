"""Liveness and readiness, without authentication.

/healthz answers from the process alone (no I/O), so an orchestrator restarts only a truly stuck
process. /readyz checks the database, Redis and a Celery worker at the same time, under one shared
deadline of about a second for the whole probe (load balancers poll it; a Redis that is down must not
make each probe take seconds), and never makes a paid call; a failed or late check makes it 503 and
names what failed.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable

from django.conf import settings
from django.db import connection
from django.http import HttpRequest, JsonResponse

from genesis.celery import app
from genesis.middleware import get_and_head_only

# The whole probe answers within this, whatever hangs; each check's own network timeouts are shorter
# so that a refused or silent service is reported as such rather than as "no answer".
PROBE_DEADLINE_SECONDS = 1.0
CHECK_TIMEOUT_SECONDS = 0.6

logger = logging.getLogger(__name__)


@get_and_head_only  # probes use either (RFC 9110: HEAD wherever GET); another method is a JSON 405
def healthz(request: HttpRequest) -> JsonResponse:
    return JsonResponse({"status": "ok"})


def check_database() -> str:
    try:
        with connection.cursor() as cursor:
            cursor.execute("SELECT 1")
            cursor.fetchone()
    finally:
        # The check runs in a pool thread; its connection must not outlive the check.
        connection.close()
    return "ok"


def check_redis() -> str:
    if not settings.REDIS_URL:
        return "ok (not configured: embedded broker and local cache)"
    import redis

    client = redis.Redis.from_url(
        settings.REDIS_URL, socket_connect_timeout=CHECK_TIMEOUT_SECONDS, socket_timeout=CHECK_TIMEOUT_SECONDS
    )
    try:
        client.ping()
    finally:
        client.close()
    return "ok"


def check_celery() -> str:
    with app.connection_for_write() as connection:
        # One quick connection attempt: kombu's default would retry a broker that is down for seconds
        # (and leave this thread behind the probe's deadline, retrying).
        connection.ensure_connection(max_retries=1, interval_start=0, interval_step=0, timeout=CHECK_TIMEOUT_SECONDS / 3)
        # limit=1: one live worker is enough to be ready, and the answer comes as soon as it replies.
        # The other workers' answers, pushed after the asker has gone, expire (genesis/broker.py).
        replies = app.control.ping(timeout=CHECK_TIMEOUT_SECONDS * 2 / 3, limit=1, connection=connection)
    if not replies:
        raise NoWorkerAnswered("no Celery worker answered a ping")
    return f"ok ({next(iter(replies[0]))} answered)"


class NoWorkerAnswered(RuntimeError):
    pass


READINESS_CHECKS: dict[str, Callable[[], str]] = {
    "database": check_database,
    "redis": check_redis,
    "celery": check_celery,
}


class _Check(threading.Thread):
    """One check in a thread of its own, so a hung check delays nothing else and no later probe."""

    def __init__(self, name: str, check: Callable[[], str]) -> None:
        super().__init__(name=f"readyz-{name}", daemon=True)
        self.check = check
        self.result = ""  # what the check answered, read only when it raised nothing
        self.error: Exception | None = None

    def run(self) -> None:
        try:
            self.result = self.check()
        except Exception as exc:  # noqa: BLE001 - any failure means not ready
            self.error = exc


class _ReadinessLog:
    """What the log says about the checks, per process: a check that starts failing (or fails
    differently) is a WARNING, one still failing the same way is repeated at most once a minute, and
    its recovery is said once. Load balancers probe every few seconds from several places: during a
    Redis outage each probe logged two warnings and Django an ERROR for its 503 (159 lines in one
    minute from one web machine); an on-call reader needs when it started, that it goes on, and when
    it ended."""

    REPEAT_SECONDS = 60.0

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._failing: dict[str, tuple[str, float, float]] = {}  # check -> (failure, since, last logged)

    def failed(self, name: str, failure: str) -> None:
        now = time.monotonic()
        with self._lock:
            previous = self._failing.get(name)
            if previous is not None and previous[0] == failure and now - previous[2] < self.REPEAT_SECONDS:
                return
            since = previous[1] if previous is not None and previous[0] == failure else now
            self._failing[name] = (failure, since, now)
        if since == now:
            logger.warning("readiness check %s failed: %s; /readyz answers 503 until it passes", name, failure)
        else:
            logger.warning("readiness check %s still failing after %.0f s: %s", name, now - since, failure)

    def passed(self, name: str) -> None:
        with self._lock:
            previous = self._failing.pop(name, None)
        if previous is not None:
            logger.info("readiness check %s passes again after %.0f s failing", name, time.monotonic() - previous[1])


_readiness_log = _ReadinessLog()


def run_readiness_checks() -> dict[str, tuple[bool, str]]:
    threads = {name: _Check(name, check) for name, check in READINESS_CHECKS.items()}
    for thread in threads.values():
        thread.start()
    # One deadline for all: joining each thread with its own timeout would add them up.
    deadline = time.monotonic() + PROBE_DEADLINE_SECONDS
    results: dict[str, tuple[bool, str]] = {}
    for name, thread in threads.items():
        thread.join(timeout=max(0.0, deadline - time.monotonic()))
        if thread.is_alive():
            results[name] = (False, f"failed: no answer within {PROBE_DEADLINE_SECONDS:g} s")
            _readiness_log.failed(name, f"no answer within {PROBE_DEADLINE_SECONDS:g} s")
        elif thread.error is not None:
            # The endpoint is public: name the kind of failure, keep hosts and credentials in the log.
            _readiness_log.failed(name, f"{type(thread.error).__name__}: {thread.error}")
            results[name] = (False, f"failed: {type(thread.error).__name__}")
        else:
            _readiness_log.passed(name)
            results[name] = (True, thread.result)
    return results


@get_and_head_only  # probes use either (RFC 9110: HEAD wherever GET); another method is a JSON 405
def readyz(request: HttpRequest) -> JsonResponse:
    results = run_readiness_checks()
    ready = all(ok for ok, _ in results.values())
    failed = [name for name, (ok, _) in results.items() if not ok]
    body = {
        "status": "ok" if ready else f"unavailable: {', '.join(failed)}",
        "checks": {name: message for name, (_, message) in results.items()},
    }
    response = JsonResponse(body, status=200 if ready else 503)
    # An expected answer, its cause logged above once per change: not Django's ERROR "Service
    # Unavailable: /readyz" with each probe (django.utils.log.log_response skips a response marked so).
    response._has_been_logged = True  # type: ignore[attr-defined]
    return response
