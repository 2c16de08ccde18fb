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
        elif thread.error is not None:
            # The endpoint is public: name the kind of failure, keep hosts and credentials in the log.
            logger.warning("readiness check %s failed: %s", name, thread.error)
            results[name] = (False, f"failed: {type(thread.error).__name__}")
        else:
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
    return JsonResponse(body, status=200 if ready else 503)
