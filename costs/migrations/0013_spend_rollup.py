"""The rollup of spend (costs.models.CostSpendBucket, CostSpendTotal), so a budget's spend is read from a
few rows however long the ledger grows (bench/ledger_scale: a charge took 0.45 s at a million entries,
as each summed the whole ledger under its budgets' locks).

On PostgreSQL a statement-level AFTER INSERT trigger on the ledger adds each statement's inserted
rows (its transition table: a bulk insert's ON CONFLICT DO NOTHING duplicates are not in it) to their
buckets and totals, in the inserting transaction: one place that every path writing the ledger goes
through — cost_record, cost_record_many, reversals, raw SQL. The ledger is append-only (migration 0002
refuses UPDATE and DELETE), so inserts are the only change there is to follow. The rows are upserted
in key order, so two statements writing the same keys lock them in the same order.

The backfill runs after the trigger exists, with the ledger locked against inserts (SHARE ROW
EXCLUSIVE) for the migration's transaction: no entry is counted twice or missed. SQLite has neither
trigger nor backfill; its reads sum the ledger (costs/selectors.py)."""

import django.db.models.deletion
from django.db import migrations, models

# date_bin's origin: quarter hours counted from the Unix epoch, UTC (costs.selectors.spend_bucket_floor).
_BUCKET = "date_bin('15 minutes', occurred_at, TIMESTAMPTZ '1970-01-01 00:00:00+00')"


def _upserts(source: str) -> str:
    """The two statements that add the ledger rows of `source` (a table or transition table) to the rollup."""
    return f"""
    INSERT INTO costs_costspendbucket (agent_id, operation, bucket_start, amount_usd)
    SELECT agent_id, operation, {_BUCKET}, sum(amount_usd) FROM {source}
    GROUP BY 1, 2, 3 ORDER BY 1, 2, 3
    ON CONFLICT ON CONSTRAINT costs_spend_bucket_one_per_key
    DO UPDATE SET amount_usd = costs_costspendbucket.amount_usd + EXCLUDED.amount_usd;
    INSERT INTO costs_costspendtotal (agent_id, operation, charged_usd, reversed_usd)
    SELECT agent_id, operation, coalesce(sum(amount_usd) FILTER (WHERE amount_usd > 0), 0),
           coalesce(sum(amount_usd) FILTER (WHERE amount_usd < 0), 0) FROM {source}
    GROUP BY 1, 2 ORDER BY 1, 2
    ON CONFLICT ON CONSTRAINT costs_spend_total_one_per_key
    DO UPDATE SET charged_usd = costs_costspendtotal.charged_usd + EXCLUDED.charged_usd,
                  reversed_usd = costs_costspendtotal.reversed_usd + EXCLUDED.reversed_usd;
    """


CREATE = f"""
LOCK TABLE costs_costentry IN SHARE ROW EXCLUSIVE MODE;
CREATE OR REPLACE FUNCTION costs_costentry_spend_rollup() RETURNS trigger AS $$
BEGIN
    {_upserts("inserted")}
    RETURN NULL;
END;
$$ LANGUAGE plpgsql;
DROP TRIGGER IF EXISTS costs_costentry_spend_rollup ON costs_costentry;
CREATE TRIGGER costs_costentry_spend_rollup AFTER INSERT ON costs_costentry
    REFERENCING NEW TABLE AS inserted FOR EACH STATEMENT EXECUTE FUNCTION costs_costentry_spend_rollup();
DELETE FROM costs_costspendbucket;
DELETE FROM costs_costspendtotal;
{_upserts("costs_costentry")}
"""

DROP = """
DROP TRIGGER IF EXISTS costs_costentry_spend_rollup ON costs_costentry;
DROP FUNCTION IF EXISTS costs_costentry_spend_rollup();
"""


def create_trigger(apps, schema_editor):  # type: ignore[no-untyped-def]
    if schema_editor.connection.vendor == "postgresql":
        schema_editor.execute(CREATE, params=None)


def drop_trigger(apps, schema_editor):  # type: ignore[no-untyped-def]
    if schema_editor.connection.vendor == "postgresql":
        schema_editor.execute(DROP, params=None)


class Migration(migrations.Migration):

    dependencies = [
        ('costs', '0012_costentry_model_index'),
        ('models_app', '0015_api_key_expires_at'),
    ]

    operations = [
        migrations.CreateModel(
            name='CostSpendBucket',
            fields=[
                ('id', models.BigAutoField(auto_created=True, primary_key=True, serialize=False, verbose_name='ID')),
                ('operation', models.CharField(choices=[('fine_tuning', 'Fine-tuning'), ('benchmark', 'Benchmark'), ('inference', 'Inference'), ('storage', 'Storage'), ('manual', 'Manual'), ('data_prep', 'Data preparation')], max_length=16)),
                ('bucket_start', models.DateTimeField(help_text="The quarter hour's start (UTC); entries with occurred_at in it.")),
                ('amount_usd', models.DecimalField(decimal_places=6, max_digits=22)),
                ('agent', models.ForeignKey(on_delete=django.db.models.deletion.PROTECT, related_name='+', to='models_app.agent')),
            ],
            options={
                'indexes': [models.Index(fields=['bucket_start'], name='costs_spend_bucket_time')],
                'constraints': [models.UniqueConstraint(fields=('agent', 'operation', 'bucket_start'), name='costs_spend_bucket_one_per_key')],
            },
        ),
        migrations.CreateModel(
            name='CostSpendTotal',
            fields=[
                ('id', models.BigAutoField(auto_created=True, primary_key=True, serialize=False, verbose_name='ID')),
                ('operation', models.CharField(choices=[('fine_tuning', 'Fine-tuning'), ('benchmark', 'Benchmark'), ('inference', 'Inference'), ('storage', 'Storage'), ('manual', 'Manual'), ('data_prep', 'Data preparation')], max_length=16)),
                ('charged_usd', models.DecimalField(decimal_places=6, max_digits=22)),
                ('reversed_usd', models.DecimalField(decimal_places=6, help_text='Negative: what reversals took back.', max_digits=22)),
                ('agent', models.ForeignKey(on_delete=django.db.models.deletion.PROTECT, related_name='+', to='models_app.agent')),
            ],
            options={
                'constraints': [models.UniqueConstraint(fields=('agent', 'operation'), name='costs_spend_total_one_per_key')],
            },
        ),
        migrations.RunPython(create_trigger, drop_trigger),
    ]
