"""bench/scratch.py: a bench builds its world in a database of its own, beside the one DATABASE_URL names,
and drops it — the one named is never written (bench/a11y once seeded it and reset its budget)."""

from __future__ import annotations

import pytest
from django.db import connection

from bench.scratch import scratch_database
from models_app.registry.models import Agent


def _database_exists(name: str) -> bool:
    with connection.creation._nodb_cursor() as cursor:
        cursor.execute("SELECT 1 FROM pg_database WHERE datname = %s", [name])
        return cursor.fetchone() is not None


@pytest.mark.skipif(connection.vendor != "postgresql", reason="the benches run on PostgreSQL only")
@pytest.mark.django_db(transaction=True)  # no transaction around the test: the helper closes the connection
def test_a_bench_writes_into_a_scratch_database_and_drops_it():
    given = connection.settings_dict["NAME"]
    scratch = f"{given}_bench_scratch_test"
    with scratch_database("bench_scratch_test") as url:
        assert connection.settings_dict["NAME"] == scratch and url.endswith(f"/{scratch}")
        Agent.objects.create(slug="only_in_scratch", name="Only in the scratch database")  # migrated
        assert _database_exists(scratch)
    assert connection.settings_dict["NAME"] == given
    assert not _database_exists(scratch)
    assert not Agent.objects.filter(slug="only_in_scratch").exists()
