"""The worker lock's probe (genesis/locks.py) takes no lock, so it is safe behind PgBouncer in
transaction mode, and still sees a lock another session holds."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import psycopg
import pytest
from django.db import connection, transaction

from genesis.locks import lock_is_free, locks_held, worker_lock

pytestmark = [pytest.mark.django_db, pytest.mark.skipif("connection.vendor != 'postgresql'")]

NAMESPACE = 0x51C0FFEE & 0x7FFFFFFF


@contextmanager
def other_session() -> Iterator[psycopg.Connection]:
    db = connection.settings_dict
    other = psycopg.connect(host=db["HOST"] or "127.0.0.1", port=db["PORT"] or 5432, user=db["USER"], dbname=db["NAME"],
                            autocommit=True)
    try:
        yield other
    finally:
        other.close()


def advisory_locks_of_this_session() -> int:
    with connection.cursor() as cursor:
        cursor.execute("SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND pid = pg_backend_pid()")
        return int(cursor.fetchone()[0])


def test_the_probe_leaves_no_lock_held_and_sees_another_sessions_lock() -> None:
    assert lock_is_free(NAMESPACE, 7) and advisory_locks_of_this_session() == 0
    with other_session() as worker:
        worker.execute("SELECT pg_advisory_lock(%s, %s)", (NAMESPACE, 7))
        assert not lock_is_free(NAMESPACE, 7)
        assert lock_is_free(NAMESPACE, 8) and lock_is_free(NAMESPACE + 1, 7)  # another row, another kind
        assert locks_held(NAMESPACE, [6, 7, 8]) == {7}
        assert advisory_locks_of_this_session() == 0
        # Inside a transaction too (a probe that took a transaction lock would hold it until the commit).
        with transaction.atomic():
            assert not lock_is_free(NAMESPACE, 7) and lock_is_free(NAMESPACE, 8)
            assert advisory_locks_of_this_session() == 0
        # And a worker can take the lock of a row just probed.
        with other_session() as second_worker:
            assert second_worker.execute("SELECT pg_try_advisory_lock(%s, %s)", (NAMESPACE, 8)).fetchone()[0]
        worker.execute("SELECT pg_advisory_unlock(%s, %s)", (NAMESPACE, 7))
    assert lock_is_free(NAMESPACE, 7)


def test_a_row_whose_pk_is_past_the_key_range_is_found_by_its_key() -> None:
    pk = 2**31 + 5  # worker_lock keys a row by pk & 0x7FFFFFFF
    with worker_lock(NAMESPACE, pk) as mine:
        assert mine
        with other_session() as monitor:
            held = monitor.execute(
                "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND classid = %s::bigint::oid"
                " AND objid = %s::bigint::oid", (NAMESPACE, 5)).fetchone()[0]
        assert held == 1
        assert locks_held(NAMESPACE, [pk]) == {pk}
    assert locks_held(NAMESPACE, [pk]) == set()


def test_a_negative_namespace_is_probed_as_postgresql_records_it() -> None:
    # pg_locks shows key 1 as an unsigned oid; the probe cast a negative namespace into invalid SQL.
    namespace = -12345
    assert locks_held(namespace, [7]) == set()
    with other_session() as worker:
        worker.execute("SELECT pg_advisory_lock(%s, %s)", (namespace, 7))
        assert locks_held(namespace, [6, 7]) == {7}
        assert not lock_is_free(namespace, 7) and lock_is_free(-namespace, 7)
        worker.execute("SELECT pg_advisory_unlock(%s, %s)", (namespace, 7))
    assert lock_is_free(namespace, 7)


def test_pks_sharing_a_key_are_all_reported_held() -> None:
    # worker_lock keys 9 and 2**31 + 9 alike: both are held while the lock is, not only the last one listed.
    with other_session() as worker:
        worker.execute("SELECT pg_advisory_lock(%s, %s)", (NAMESPACE, 9))
        assert locks_held(NAMESPACE, [9, 2**31 + 9, 2**32 + 9, 10]) == {9, 2**31 + 9, 2**32 + 9}
        worker.execute("SELECT pg_advisory_unlock(%s, %s)", (NAMESPACE, 9))
