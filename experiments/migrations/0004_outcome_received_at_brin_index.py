"""A BRIN index on outcome_event.received_at (PostgreSQL only): the agent health windows read the
last 5 and 15 minutes of outcomes. Rows arrive in received_at order, so a BRIN index (a few pages,
nearly free to keep up on the hot insert path, unlike a B-tree) narrows the scan to the recent blocks.
SQLite, the embedded mode's database, has no BRIN; there the health query scans."""

from django.db import migrations

INDEX = "outcome_received_at_brin"


def create(apps, schema_editor):
    if schema_editor.connection.vendor == "postgresql":
        table = apps.get_model("experiments", "OutcomeEvent")._meta.db_table
        schema_editor.execute(f'CREATE INDEX IF NOT EXISTS {INDEX} ON "{table}" USING brin (received_at)')


def drop(apps, schema_editor):
    if schema_editor.connection.vendor == "postgresql":
        schema_editor.execute(f"DROP INDEX IF EXISTS {INDEX}")


class Migration(migrations.Migration):
    dependencies = [("experiments", "0003_hot_tables_keys_kept_by_django")]
    operations = [migrations.RunPython(create, drop)]
