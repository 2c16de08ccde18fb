"""The advisory lock that says "a worker is on this row right now" (audits, safety builds)."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from django.db import connection


@contextmanager
def worker_lock(namespace: int, pk: int) -> Iterator[bool]:
    """True when this process may work on the row. On Postgres a session advisory lock, held while
    the work runs: a message delivered twice while the first worker is alive finds it taken and
    leaves; when a worker dies its connection closes and the lock goes with it, so the redelivered
    message takes over. Other databases (the embedded SQLite run) have one worker host: always True."""
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
