"""costs 0012 builds the ledger's model-id index CONCURRENTLY; a build that failed or was cancelled
leaves an INVALID `costs_entry_model`, and `migrate` run again stopped on "relation already exists".
The migration's forward step now drops an invalid one and builds it again, keeps a valid one that is
this index, and replaces one of the name that covers something else."""

from __future__ import annotations

import importlib

import pytest
from django.apps import apps
from django.db import connection

pytestmark = [
    pytest.mark.skipif(connection.vendor != "postgresql", reason="CONCURRENTLY and pg_index are PostgreSQL's"),
    # No transaction around the test: CREATE/DROP INDEX CONCURRENTLY cannot run inside one.
    pytest.mark.django_db(transaction=True),
]

MIGRATION = importlib.import_module("costs.migrations.0012_costentry_model_index")


def _validity() -> list[bool]:
    with connection.cursor() as cursor:
        cursor.execute("SELECT indisvalid FROM pg_index WHERE indexrelid = to_regclass('costs_entry_model')")
        return [row[0] for row in cursor.fetchall()]


def _forward() -> None:
    with connection.schema_editor(atomic=False) as schema_editor:
        MIGRATION.create(apps, schema_editor)


def test_migrating_again_after_a_failed_concurrent_build_replaces_its_invalid_index():
    with connection.cursor() as cursor:
        # What a cancelled CREATE INDEX CONCURRENTLY leaves: the index, marked invalid (the test user is a superuser).
        cursor.execute("UPDATE pg_index SET indisvalid = false WHERE indexrelid = to_regclass('costs_entry_model')")
    assert _validity() == [False]

    _forward()

    assert _validity() == [True]


def test_a_valid_index_of_the_name_is_kept():
    with connection.cursor() as cursor:
        cursor.execute("SELECT to_regclass('costs_entry_model')::oid")
        before = cursor.fetchone()
    _forward()
    with connection.cursor() as cursor:
        cursor.execute("SELECT to_regclass('costs_entry_model')::oid")
        assert cursor.fetchone() == before
    assert _validity() == [True]


@pytest.mark.parametrize("definition", [
    "ON costs_costentry (operation)",  # another column
    "ON costs_costentry (model, agent_id)",  # more columns
    "ON costs_costentry (model) WHERE amount_usd > 0",  # part of the ledger only
    "ON costs_costentry (lower(model))",  # an expression
])
def test_a_valid_index_of_the_name_covering_something_else_is_rebuilt(definition):
    """A valid `costs_entry_model` was once kept whatever it covered: the ledger's reads by model id
    kept scanning."""
    with connection.cursor() as cursor:
        cursor.execute("DROP INDEX costs_entry_model")
        cursor.execute(f"CREATE INDEX costs_entry_model {definition}")
    _forward()
    with connection.cursor() as cursor:
        cursor.execute("SELECT pg_get_indexdef(to_regclass('costs_entry_model'))")
        assert cursor.fetchone()[0].endswith("USING btree (model)")
    assert _validity() == [True]
