"""Liveness and readiness, without authentication.

/healthz answers from the process alone (no I/O), so an orchestrator restarts only a truly stuck
process. /readyz checks the database, Redis and a Celery worker, each bounded to about a second, and
never makes a paid call; a failed check makes it 503 and names what failed.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable

from django.conf import settings
from django.db import connection
from django.http import HttpRequest, JsonResponse
from django.views.decorators.http import require_GET

CHECK_TIMEOUT_SECONDS = 1.0

logger = logging.getLogger(__name__)


@require_GET
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
    from genesis.celery import app

    # limit=1: one live worker is enough to be ready, and the answer comes as soon as it replies.
    replies = app.control.ping(timeout=CHECK_TIMEOUT_SECONDS * 0.8, limit=1)
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
        self.check, self.result = check, None  # type: ignore[assignment]
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
    results: dict[str, tuple[bool, str]] = {}
    for name, thread in threads.items():
        thread.join(timeout=CHECK_TIMEOUT_SECONDS + 0.5)
        if thread.is_alive():
            results[name] = (False, f"failed: no answer within {CHECK_TIMEOUT_SECONDS:.0f} s")
        elif thread.error is not None:
            # The endpoint is public: name the kind of failure, keep hosts and credentials in the log.
            logger.warning("readiness check %s failed: %s", name, thread.error)
            results[name] = (False, f"failed: {type(thread.error).__name__}")
        else:
            results[name] = (True, thread.result)
    return results


@require_GET
def readyz(request: HttpRequest) -> JsonResponse:
    results = run_readiness_checks()
    ready = all(ok for ok, _ in results.values())
    failed = [name for name, (ok, _) in results.items() if not ok]
    body = {
        "status": "ok" if ready else f"unavailable: {', '.join(failed)}",
        "checks": {name: message for name, (_, message) in results.items()},
    }
    return JsonResponse(body, status=200 if ready else 503)
