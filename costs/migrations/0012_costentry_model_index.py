"""An index on the ledger's model id (costs_entry_model): a model version's lineage, the launch board
and the Go/No-Go report sum a candidate's entries by model id, and the ledger list searches by it;
without the index each read the whole ledger (0.5 s at a million entries).

Built without locking the ledger against writes on PostgreSQL (CREATE INDEX CONCURRENTLY, hence a
migration outside a transaction): on a ledger of millions of rows a plain CREATE INDEX would hold
back every charge while it builds. SQLite, the embedded mode's database, has no CONCURRENTLY and no
concurrent writers to spare: a plain CREATE INDEX there.

A CREATE INDEX CONCURRENTLY that failed or was cancelled (a deadlock, a statement timeout, Ctrl-C)
leaves an INVALID index of the name behind, which no query uses and on which a second `migrate` would
stop ("relation costs_entry_model already exists"): it is dropped first, and the index built again. A
valid one (built by hand ahead of the upgrade) is kept if it is this index — a plain btree on the
ledger's model column alone, without a predicate or expression; one of the name covering anything else
is dropped and built again too."""

from django.db import migrations, models

INDEX = models.Index(fields=["model"], name="costs_entry_model")


def _run(schema_editor, apps, operation):
    method = getattr(schema_editor, operation)  # add_index or remove_index
    model = apps.get_model("costs", "CostEntry")
    if schema_editor.connection.vendor == "postgresql":
        method(model, INDEX, concurrently=True)
    else:
        method(model, INDEX)


# (valid, this index): whether an index of the name is valid, and whether it is a plain btree on the
# table's one column.
EXISTING = """
    SELECT i.indisvalid,
           i.indrelid = to_regclass(%s) AND i.indnkeyatts = 1 AND i.indnatts = 1 AND NOT i.indisunique
           AND i.indpred IS NULL AND i.indexprs IS NULL AND am.amname = 'btree' AND coalesce(a.attname = %s, false)
    FROM pg_index i
    JOIN pg_class c ON c.oid = i.indexrelid
    JOIN pg_am am ON am.oid = c.relam
    LEFT JOIN pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = i.indkey[0]
    WHERE i.indexrelid = to_regclass(%s)
"""


def create(apps, schema_editor):
    if schema_editor.connection.vendor == "postgresql":
        model = apps.get_model("costs", "CostEntry")
        with schema_editor.connection.cursor() as cursor:
            cursor.execute(EXISTING, [model._meta.db_table, model._meta.get_field("model").column, INDEX.name])
            found = cursor.fetchone()
        if found is not None and all(found):
            return  # built already, usable, and this index
        if found is not None:
            schema_editor.execute(f"DROP INDEX CONCURRENTLY IF EXISTS {schema_editor.quote_name(INDEX.name)}")
    _run(schema_editor, apps, "add_index")


def drop(apps, schema_editor):
    _run(schema_editor, apps, "remove_index")


class Migration(migrations.Migration):
    atomic = False  # CREATE INDEX CONCURRENTLY cannot run inside a transaction

    dependencies = [("costs", "0011_costentry_tokens_estimated")]

    operations = [
        migrations.SeparateDatabaseAndState(
            database_operations=[migrations.RunPython(create, drop)],
            state_operations=[migrations.AddIndex(model_name="costentry", index=INDEX)],
        ),
    ]
