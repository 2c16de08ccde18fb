"""The ledger is append-only in the database too: on PostgreSQL a trigger refuses every UPDATE and
DELETE of a cost entry, whoever sends it (a shell, a bug, a raw SQL fix). A correction is a reversing
entry (costs.services.cost_entry_reverse). TRUNCATE — used only to empty a test database — is a
statement, not a row change, and is not refused. SQLite (the embedded dev default) relies on the
services and the admin alone."""

from django.db import migrations

CREATE = """
CREATE OR REPLACE FUNCTION costs_costentry_append_only() RETURNS trigger AS $$
BEGIN
    RAISE EXCEPTION 'costs_costentry is append-only: % refused; correct an entry with a reversing entry', TG_OP
        USING ERRCODE = 'restrict_violation';
END;
$$ LANGUAGE plpgsql;
DROP TRIGGER IF EXISTS costs_costentry_append_only ON costs_costentry;
CREATE TRIGGER costs_costentry_append_only BEFORE UPDATE OR DELETE ON costs_costentry
    FOR EACH ROW EXECUTE FUNCTION costs_costentry_append_only();
"""

DROP = """
DROP TRIGGER IF EXISTS costs_costentry_append_only ON costs_costentry;
DROP FUNCTION IF EXISTS costs_costentry_append_only();
"""


def create_trigger(apps, schema_editor):  # type: ignore[no-untyped-def]
    if schema_editor.connection.vendor == "postgresql":
        schema_editor.execute(CREATE, params=None)


def drop_trigger(apps, schema_editor):  # type: ignore[no-untyped-def]
    if schema_editor.connection.vendor == "postgresql":
        schema_editor.execute(DROP, params=None)


class Migration(migrations.Migration):

    dependencies = [
        ("costs", "0001_ledger_budgets_reports"),
    ]

    operations = [
        migrations.RunPython(create_trigger, drop_trigger),
    ]
