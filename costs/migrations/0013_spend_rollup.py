"""The rollup of spend (costs.models.CostSpendBucket, CostSpendTotal), so a budget's spend is read from a
few rows however long the ledger grows (bench/ledger_scale: a charge took 0.45 s at a million entries,
as each summed the whole ledger under its budgets' locks).

On PostgreSQL a statement-level AFTER INSERT trigger on the ledger adds each statement's inserted
rows (its transition table: a bulk insert's ON CONFLICT DO NOTHING duplicates are not in it) to their
buckets and totals, in the inserting transaction: one place that every path writing the ledger goes
through — cost_record, cost_record_many, reversals, raw SQL. The ledger is append-only (migration 0002
refuses UPDATE and DELETE), so inserts are the only change there is to follow. The rows are upserted
in key order, each (agent, operation)'s total before its quarter hours (see _upserts), so two
statements writing the same keys lock them in the same order. Two transactions that each write
several agents, in different orders and across statements, can still deadlock where no budget covers
those agents — the risk the budgets' own per-agent locks carry; a budget's lock keeps them apart.

Upgrading needs no downtime: charges go on while the rollup is filled from the ledger already there.
The migration runs outside a single transaction (as 0012), in steps each short and each committed:

- The tables, if missing (one transaction).
- Step A (one transaction): lock the ledger against inserts (SHARE ROW EXCLUSIVE: the lock only waits
  for the transactions inserting right now, as an INSERT takes its ids from the sequence under its own
  ROW EXCLUSIVE lock, so every id handed out after this commits is larger), create the trigger, and
  record the watermark, the ledger's largest id, in costs_spend_backfill. From the commit on the
  trigger counts every new entry; those up to the watermark are not yet counted.
- Step B: the entries up to the watermark, a range of ids at a time, each range its own transaction
  that adds its sums to the rollup (the trigger's upserts) and moves backfilled_up_to on with them. A
  crash or Ctrl-C loses at most the range under way; `migrate` again goes on from backfilled_up_to,
  with the first run's watermark (step A keeps an existing one: a new one would count the entries
  inserted since twice, by the trigger and by the backfill).
- Step C: completed_at. Until then costs.selectors.rollup_kept() is False and the reads sum the
  ledger, as on SQLite: right, only slower.

Assumed, and true of the ledger's sequence as Django makes it: CACHE 1, so ids are handed out in
order across sessions (with a cache, a session's lower cached id inserted after step A would be counted
by the trigger and the backfill both). Not supported while the backfill runs: inserting ledger rows
with explicit ids below the watermark (a data-only restore, hand-written SQL) — the trigger and the
backfill would both count them. A process remembers that the backfill completed
(costs.selectors.rollup_kept): restart the processes after reversing 0013 or restoring a database
dumped in the middle of the backfill, as the runbooks do anyway.

costs_spend_backfill is the migration's own bookkeeping (like django_migrations), not a model, so a
test database's flush leaves it as it is. SQLite has neither trigger nor backfill; its reads sum the
ledger (costs/selectors.py)."""

import time

import django.db.models.deletion
from django.db import OperationalError, migrations, models, transaction

# date_bin's origin: quarter hours counted from the Unix epoch, UTC (costs.selectors.spend_bucket_floor).
_BUCKET = "date_bin('15 minutes', occurred_at, TIMESTAMPTZ '1970-01-01 00:00:00+00')"


def _upserts(source: str) -> str:
    """The two statements that add the ledger rows of `source` (a table or transition table) to the rollup.
    The total row of an (agent, operation) is updated before its quarter hours, so it is the first lock
    any transaction takes on that key: one that writes two quarter hours in two statements cannot hold
    one while waiting for the total that another, which wrote the second first, holds (a deadlock the
    second reviewer reproduced with the quarter hours first)."""
    return f"""
    INSERT INTO costs_costspendtotal (agent_id, operation, charged_usd, reversed_usd)
    SELECT agent_id, operation, coalesce(sum(amount_usd) FILTER (WHERE amount_usd > 0), 0),
           coalesce(sum(amount_usd) FILTER (WHERE amount_usd < 0), 0) FROM {source}
    GROUP BY 1, 2 ORDER BY 1, 2
    ON CONFLICT ON CONSTRAINT costs_spend_total_one_per_key
    DO UPDATE SET charged_usd = costs_costspendtotal.charged_usd + EXCLUDED.charged_usd,
                  reversed_usd = costs_costspendtotal.reversed_usd + EXCLUDED.reversed_usd;
    INSERT INTO costs_costspendbucket (agent_id, operation, bucket_start, amount_usd)
    SELECT agent_id, operation, {_BUCKET}, sum(amount_usd) FROM {source}
    GROUP BY 1, 2, 3 ORDER BY 1, 2, 3
    ON CONFLICT ON CONSTRAINT costs_spend_bucket_one_per_key
    DO UPDATE SET amount_usd = costs_costspendbucket.amount_usd + EXCLUDED.amount_usd;
    """


# The migration's state: one row (id 1), made by step A. backfilled_up_to: the ledger's ids up to it are
# in the rollup, by the backfill; those above the watermark are counted by the trigger.
STATE = """
CREATE TABLE IF NOT EXISTS costs_spend_backfill (
    id smallint PRIMARY KEY CHECK (id = 1),
    watermark bigint NOT NULL,
    backfilled_up_to bigint NOT NULL,
    started_at timestamptz NOT NULL,
    completed_at timestamptz
);
"""

START = f"""
LOCK TABLE costs_costentry IN SHARE ROW EXCLUSIVE MODE;
CREATE OR REPLACE FUNCTION costs_costentry_spend_rollup() RETURNS trigger AS $$
BEGIN
    {_upserts("inserted")}
    RETURN NULL;
END;
$$ LANGUAGE plpgsql;
DO $$ BEGIN
    -- Made only where missing (a run stopped part-way made it already; the function above is replaced
    -- in place): dropping an existing trigger takes the ledger's ACCESS EXCLUSIVE lock, which waits for
    -- every reader (pg_dump included) and deadlocked with a charge that had read the ledger first.
    IF NOT EXISTS (SELECT 1 FROM pg_trigger WHERE tgname = 'costs_costentry_spend_rollup'
                   AND tgrelid = 'costs_costentry'::regclass) THEN
        CREATE TRIGGER costs_costentry_spend_rollup AFTER INSERT ON costs_costentry
            REFERENCING NEW TABLE AS inserted FOR EACH STATEMENT EXECUTE FUNCTION costs_costentry_spend_rollup();
    END IF;
END $$;
INSERT INTO costs_spend_backfill (id, watermark, backfilled_up_to, started_at)
SELECT 1, coalesce(max(id), 0), coalesce(min(id) - 1, 0), now() FROM costs_costentry
ON CONFLICT (id) DO NOTHING;
"""

DROP = """
DROP TRIGGER IF EXISTS costs_costentry_spend_rollup ON costs_costentry;
DROP FUNCTION IF EXISTS costs_costentry_spend_rollup();
DROP TABLE IF EXISTS costs_spend_backfill;
"""

CHUNK_IDS = 200_000  # ledger ids per backfill transaction: 2-3 s each on 2 cores (README "Upgrading")

ROLLUP = ("CostSpendBucket", "CostSpendTotal")


def create_tables(apps, schema_editor):  # type: ignore[no-untyped-def]
    """The rollup's tables, those not made by an earlier run that stopped part-way, with their indexes
    and foreign keys in the same transaction (not deferred to the end of a migration that may not reach it)."""
    connection = schema_editor.connection
    existing = set(connection.introspection.table_names())
    with connection.schema_editor(atomic=True) as editor:
        for name in ROLLUP:
            model = apps.get_model("costs", name)
            if model._meta.db_table not in existing:
                editor.create_model(model)
            elif "costs_spend_backfill" not in existing:
                # No state, so no trigger and no backfill yet (they are made together in step A): what the
                # table holds is left from a reverse stopped part-way, and the backfill would add it twice.
                editor.execute(f"TRUNCATE {editor.quote_name(model._meta.db_table)}")


def drop_tables(apps, schema_editor):  # type: ignore[no-untyped-def]
    for name in reversed(ROLLUP):
        schema_editor.delete_model(apps.get_model("costs", name))


# Step A's lock waits for every transaction writing the ledger right then, and every new charge waits
# behind it: a transaction left open after a charge (idle in transaction) would hold charges back for
# as long as it stays open. So each try waits at most LOCK_WAIT, and migrate gives up after LOCK_TRIES.
LOCK_WAIT = "2s"
LOCK_TRIES = 15


def start(connection) -> None:  # type: ignore[no-untyped-def]
    """Step A: the trigger, and the watermark unless an earlier run recorded one."""
    for attempt in range(1, LOCK_TRIES + 1):
        try:
            with transaction.atomic(using=connection.alias), connection.cursor() as cursor:
                cursor.execute(f"SET LOCAL lock_timeout = '{LOCK_WAIT}'")
                cursor.execute(STATE)
                cursor.execute(START)
            return
        except OperationalError as exc:
            if getattr(exc.__cause__, "sqlstate", None) != "55P03":  # not lock_not_available
                raise
            if attempt == LOCK_TRIES:
                raise RuntimeError(
                    "costs 0013 could not lock the ledger (costs_costentry) to create its trigger: a transaction "
                    "has been writing it all along (see pg_stat_activity for one 'idle in transaction'); end "
                    "it and run migrate again — nothing was changed"
                ) from exc
            time.sleep(1)


def backfill_chunk(connection, *, ids: int = CHUNK_IDS) -> bool:  # type: ignore[no-untyped-def]
    """Step B, one range: adds the next `ids` ledger ids up to the watermark to the rollup and records
    that it did, in one transaction. False when nothing was left."""
    with transaction.atomic(using=connection.alias), connection.cursor() as cursor:
        # FOR UPDATE: a second `migrate` run at once waits here, rather than adding the same range again.
        cursor.execute("SELECT backfilled_up_to, watermark FROM costs_spend_backfill WHERE id = 1 FOR UPDATE")
        done, watermark = cursor.fetchone()
        if done >= watermark:
            return False
        high = min(done + ids, watermark)
        # The rollup's foreign keys are checked at each statement's end, not at commit: deferred, the
        # ~100 000 checks of a range's new quarter hours ran after the totals' upsert, and charges
        # waited for the totals' rows that long (0.5-2.5 s per range, measured at 1 M entries).
        cursor.execute("SET CONSTRAINTS ALL IMMEDIATE")
        cursor.execute(_upserts(
            f"(SELECT agent_id, operation, occurred_at, amount_usd FROM costs_costentry"
            f" WHERE id > {int(done)} AND id <= {int(high)}) AS chunk"
        ))
        cursor.execute("UPDATE costs_spend_backfill SET backfilled_up_to = %s WHERE id = 1", [high])
        return True


def complete(connection) -> None:  # type: ignore[no-untyped-def]
    """Step C: from now on the reads use the rollup (costs.selectors.rollup_kept)."""
    with connection.cursor() as cursor:
        cursor.execute(
            "UPDATE costs_spend_backfill SET completed_at = now()"
            " WHERE id = 1 AND completed_at IS NULL AND backfilled_up_to >= watermark"
        )


def fill(apps, schema_editor):  # type: ignore[no-untyped-def]
    connection = schema_editor.connection
    if connection.vendor != "postgresql":
        return
    start(connection)
    while backfill_chunk(connection):
        pass
    complete(connection)


def drop_trigger(apps, schema_editor):  # type: ignore[no-untyped-def]
    if schema_editor.connection.vendor == "postgresql":
        schema_editor.execute(DROP, params=None)


class Migration(migrations.Migration):
    atomic = False  # the backfill commits range by range (see above)

    dependencies = [
        ('costs', '0012_costentry_model_index'),
        ('models_app', '0015_api_key_expires_at'),
    ]

    operations = [
        # The tables are made by create_tables, only where missing: `migrate` run again after a stop in
        # the backfill finds them (and RunPython is given the state with the models only after this).
        migrations.SeparateDatabaseAndState(
            state_operations=[
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
            ],
        ),
        migrations.RunPython(create_tables, drop_tables),
        migrations.RunPython(fill, drop_trigger),
    ]
