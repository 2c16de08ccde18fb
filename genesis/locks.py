"""The advisory lock that says "a worker is on this row right now" (audits, safety builds), the one
rule the sweeps use to tell a running job whose worker died from one a worker is on, and the rule for
what they send again (`stranded`), which /metrics counts as stalled."""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from datetime import datetime, timedelta
from typing import Any

from django.conf import settings
from django.db import connection
from django.db.models import QuerySet
from django.utils import timezone


@contextmanager
def worker_lock(namespace: int, pk: int) -> Iterator[bool]:
    """True when this process may work on the row. On Postgres a session advisory lock, held while
    the work runs: a message delivered twice while the first worker is alive finds it taken and
    leaves; when a worker dies its connection closes and the lock goes with it, so the redelivered
    message takes over. Other databases (the embedded SQLite run) have one worker host: always True.

    Only workers take it, and they need a session of their own for the work's length: a direct
    connection or PgBouncer in session mode (in transaction mode the lock and the unlock may reach two
    server connections, and the lock stays on the first). Web processes only read it (`locks_held`)."""
    if connection.vendor != "postgresql":
        yield True
        return
    key = (namespace, pk & 0x7FFFFFFF)
    with connection.cursor() as cursor:
        cursor.execute("SELECT pg_try_advisory_lock(%s, %s)", key)
        acquired = bool(cursor.fetchone()[0])
    try:
        yield acquired
    finally:
        if acquired:
            with connection.cursor() as cursor:
                cursor.execute("SELECT pg_advisory_unlock(%s, %s)", key)


# A job "running" whose lock no worker holds has lost its worker (killed, out of memory, its machine
# gone: the lock went with its connection). A minute after the job started, not at once: a worker whose
# database connection blipped right after it started retries by itself within a minute (the tasks'
# backoff stops at 60 s). A duplicate message is harmless either way: the tasks skip finished work and
# work another worker's lock holds.
WORKER_GONE_AFTER_SECONDS = 60


def locks_held(namespace: int, pks: Iterable[int]) -> set[int]:
    """The `pks` whose worker lock some session holds right now (none off PostgreSQL).

    Read from pg_locks, taking no lock: web processes ask this (/metrics' genesis_jobs_stalled), and
    they may sit behind PgBouncer in transaction mode, where a probe that took the session lock and
    released it in a second statement could reach two server connections — the lock then stayed on the
    first for good, workers skipped that job as "a live worker's", the sweep never sent it again and the
    gauge read 0. It also leaves nothing for a worker that takes the lock at that moment to trip on, and
    is one query for all rows."""
    # Rows whose pks share a key (pk & 0x7FFFFFFF) share the lock: each key stands for all of them.
    wanted: dict[int, list[int]] = {}
    for pk in pks:
        wanted.setdefault(pk & 0x7FFFFFFF, []).append(pk)
    if connection.vendor != "postgresql" or not wanted:
        return set()
    with connection.cursor() as cursor:
        # pg_advisory_lock(int4, int4) shows as classid = key 1, objid = key 2, objsubid = 2.
        cursor.execute(
            "SELECT DISTINCT objid::text::bigint FROM pg_locks WHERE locktype = 'advisory' AND granted"
            " AND database = (SELECT oid FROM pg_database WHERE datname = current_database())"
            " AND objsubid = 2 AND classid = %s::bigint::oid AND objid = ANY(%s::bigint[]::oid[])",
            # PostgreSQL records key 1 as an unsigned oid: a negative namespace is its 32-bit two's complement
            # (and `-5::bigint::oid` would parse as -(5::oid), which has no operator).
            [namespace & 0xFFFFFFFF, list(wanted)],
        )
        return {pk for row in cursor.fetchall() for pk in wanted[row[0]]}


def lock_is_free(namespace: int, pk: int) -> bool:
    """True when no worker holds the row's lock right now (always True off PostgreSQL)."""
    return not locks_held(namespace, [pk])


def running_without_worker(running: QuerySet[Any], namespace: int, *, now: datetime | None = None) -> list[int]:
    """The pks of the `running` rows (a queryset of jobs already filtered to "running", with a
    `started_at`) whose worker is gone: on PostgreSQL, started over WORKER_GONE_AFTER_SECONDS ago and
    their lock free. Elsewhere (embedded SQLite) no lock tells a live worker from a dead one, and a
    second worker would take over under the first: only Celery's hard time limit (plus a minute)
    proves the first one is gone. Audits, dataset copies and WaltzRL builds all go by this one rule."""
    now = now or timezone.now()
    if connection.vendor != "postgresql":
        limit = getattr(settings, "CELERY_TASK_TIME_LIMIT", 1860) + 60
        return list(running.filter(started_at__lt=now - timedelta(seconds=limit)).values_list("pk", flat=True))
    started = list(running.filter(started_at__lt=now - timedelta(seconds=WORKER_GONE_AFTER_SECONDS))
                   .order_by("pk").values_list("pk", flat=True))
    held = locks_held(namespace, started)
    return [pk for pk in started if pk not in held]


def stranded(
    *, queued: QuerySet[Any], running: QuerySet[Any], namespace: int, older_than_seconds: float, now: datetime | None = None
) -> list[int]:
    """The pks a sweep sends again: the `queued` rows (never started; with a `created_at`) created over
    `older_than_seconds` ago — their message was lost (the broker was away when it was sent) or still
    waits behind others (a duplicate is harmless) — then the `running` rows whose worker is gone
    (`running_without_worker`). The audits and WaltzRL sweeps send these, and /metrics counts them as
    stalled (genesis_jobs_stalled): one rule, so the gauge cannot say "stuck" of a job the sweep leaves
    alone, or the reverse."""
    now = now or timezone.now()
    cutoff = now - timedelta(seconds=older_than_seconds)
    lost = list(queued.filter(created_at__lt=cutoff).order_by("pk").values_list("pk", flat=True))
    return lost + running_without_worker(running, namespace, now=now)
