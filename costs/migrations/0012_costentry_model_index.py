"""An index on the ledger's model id (costs_entry_model): a model version's lineage, the launch board
and the Go/No-Go report sum a candidate's entries by model id, and the ledger list searches by it;
without the index each read the whole ledger (0.5 s at a million entries).

Built without locking the ledger against writes on PostgreSQL (CREATE INDEX CONCURRENTLY, hence a
migration outside a transaction): on a ledger of millions of rows a plain CREATE INDEX would hold
back every charge while it builds. SQLite, the embedded mode's database, has no CONCURRENTLY and no
concurrent writers to spare: a plain CREATE INDEX there."""

from django.db import migrations, models

INDEX = models.Index(fields=["model"], name="costs_entry_model")


def create(apps, schema_editor):
    model = apps.get_model("costs", "CostEntry")
    if schema_editor.connection.vendor == "postgresql":
        schema_editor.add_index(model, INDEX, concurrently=True)
    else:
        schema_editor.add_index(model, INDEX)


def drop(apps, schema_editor):
    model = apps.get_model("costs", "CostEntry")
    if schema_editor.connection.vendor == "postgresql":
        schema_editor.remove_index(model, INDEX, concurrently=True)
    else:
        schema_editor.remove_index(model, INDEX)


class Migration(migrations.Migration):
    atomic = False  # CREATE INDEX CONCURRENTLY cannot run inside a transaction

    dependencies = [("costs", "0011_costentry_tokens_estimated")]

    operations = [
        migrations.SeparateDatabaseAndState(
            database_operations=[migrations.RunPython(create, drop)],
            state_operations=[migrations.AddIndex(model_name="costentry", index=INDEX)],
        ),
    ]
