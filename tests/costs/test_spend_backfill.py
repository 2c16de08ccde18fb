"""Migration 0013 fills the spend rollup from the ledger already there without stopping charges: step A
(lock, trigger, watermark) is one short transaction, step B adds the entries up to the watermark a range
of ids per transaction, step C marks it completed — and until then the reads sum the ledger.

A ledger "from before the rollup" is made by dropping the trigger, the migration's state and the rollup
rows inside the test's transaction (PostgreSQL DDL rolls back with it)."""

from __future__ import annotations

import importlib
from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest
from django.apps import apps
from django.db import connection
from django.test.utils import CaptureQueriesContext

from costs import budgeting, selectors
from costs.metrics import CostMetricsCollector
from costs.models import CostEntry, CostSpendBucket, CostSpendTotal
from costs.services import Charge, budget_upsert, cost_entry_reverse, cost_record_many
from tests.costs.test_spend_rollup import assert_rollup_exact, charge, ledger_spent
from tests.factories import UserFactory

pytestmark = pytest.mark.skipif(connection.vendor != "postgresql", reason="the rollup is kept by a PostgreSQL trigger")

MIGRATION = importlib.import_module("costs.migrations.0013_spend_rollup")


def _state() -> tuple[int, int, bool]:
    with connection.cursor() as cursor:
        cursor.execute("SELECT watermark, backfilled_up_to, completed_at IS NOT NULL FROM costs_spend_backfill")
        return cursor.fetchone()


def _old_ledger(qa_agent, legal_agent) -> None:
    """Entries over a year and a half, both agents, two operations, a reversal — then the state of a
    database that has them but not the rollup."""
    for n in range(40):
        charge((qa_agent, legal_agent)[n % 2], f"old:{n}", f"0.{n:02d}0003", operation=("inference", "benchmark")[n % 3 == 0],
               occurred_at=datetime(2025, 6, 1, tzinfo=UTC) + timedelta(hours=331 * n))
    cost_entry_reverse(entry=CostEntry.objects.get(idempotency_key="old:7"), actor=UserFactory(is_superuser=True), reason="test")
    CostSpendBucket.objects.all().delete()
    CostSpendTotal.objects.all().delete()
    with connection.cursor() as cursor:
        cursor.execute(MIGRATION.DROP)  # the trigger, its function and the migration's state
    selectors._ROLLUP_COMPLETE.clear()


def _new_charges(agent, tag: str) -> None:
    """What outcome ingestion and the services write meanwhile: single charges, a batch, some into the
    quarter hours the backfill is adding to."""
    tag = f"{agent.slug}:{tag}"
    charge(agent, f"{tag}:one", "0.100001", occurred_at=datetime(2025, 6, 1, tzinfo=UTC) + timedelta(hours=331 * 3))
    charge(agent, f"{tag}:now", "0.200002")
    cost_record_many(charges=[Charge(agent=agent, operation="benchmark", idempotency_key=f"{tag}:batch:{k}", amount_usd="0.000301",
                                     occurred_at=datetime(2025, 6, 1, tzinfo=UTC) + timedelta(hours=331 * k)) for k in range(4)])


def test_entries_inserted_while_the_backfill_runs_are_counted_once(qa_agent, legal_agent):
    _old_ledger(qa_agent, legal_agent)
    old_ids = list(CostEntry.objects.order_by("id").values_list("id", flat=True))

    MIGRATION.start(connection)
    assert _state() == (old_ids[-1], old_ids[0] - 1, False)
    _new_charges(qa_agent, "before-b")
    assert MIGRATION.backfill_chunk(connection, ids=9)
    _new_charges(legal_agent, "between")
    while MIGRATION.backfill_chunk(connection, ids=9):
        _new_charges(qa_agent, f"between:{_state()[1]}")
    MIGRATION.complete(connection)

    assert _state() == (old_ids[-1], old_ids[-1], True)
    assert_rollup_exact()
    charge(qa_agent, "after", "1")
    assert_rollup_exact()


def test_a_backfill_stopped_part_way_completes_exactly_when_migrate_runs_again(qa_agent, legal_agent):
    _old_ledger(qa_agent, legal_agent)
    MIGRATION.start(connection)
    watermark = _state()[0]
    assert MIGRATION.backfill_chunk(connection, ids=10)
    assert MIGRATION.backfill_chunk(connection, ids=10)
    # Stopped here (a crash, Ctrl-C): the two ranges are in and recorded; charges go on meanwhile.
    _new_charges(qa_agent, "after-stop")
    _new_charges(legal_agent, "after-stop")

    with connection.schema_editor(atomic=False) as editor:  # `migrate` again: every step of the migration
        MIGRATION.create_tables(apps, editor)
        MIGRATION.fill(apps, editor)

    assert _state() == (watermark, watermark, True)  # the first run's watermark, not today's largest id
    assert_rollup_exact()


def _reads(budgets, now: datetime):
    metrics = {(family.name, tuple(sample.labels.items())): sample.value
               for family in CostMetricsCollector().collect() for sample in family.samples}
    return ([selectors.budget_spent(budget=budget, period=budgeting.period_containing(budget.period, now)) for budget in budgets],
            [selectors.budget_status(budget=budget, now=now) for budget in budgets],
            {b.name: b.spent_usd for b in selectors.with_spent(selectors.Budget.objects.all(), at=now)},
            [selectors.spend_split(budget=budget) for budget in budgets], selectors.spend_split(),
            [selectors.daily_spend(dimension=d, days=800, budget=budgets[0]) for d in ("agent", "operation")],
            metrics)


def test_reads_sum_the_ledger_until_the_backfill_has_completed(qa_agent, legal_agent):
    _old_ledger(qa_agent, legal_agent)
    MIGRATION.start(connection)
    assert MIGRATION.backfill_chunk(connection, ids=15)  # part of the old ledger in the rollup
    _new_charges(qa_agent, "during")
    now = datetime.now(UTC)
    budgets = [budget_upsert(name=f"u-{period}", amount_usd="1000", period=period, agent=qa_agent if period == "monthly" else None)
               for period in budgeting.PERIODS]
    total = budgets[0]
    assert total.period == "total"
    whole = budgeting.period_containing("total", now)
    assert sum(CostSpendTotal.objects.values_list("charged_usd", flat=True), Decimal(0)) < ledger_spent(total, whole)  # not all in yet

    assert not selectors.rollup_kept()
    assert selectors.budget_spent(budget=total, period=whole) == ledger_spent(total, whole)
    during = _reads(budgets, now)

    while MIGRATION.backfill_chunk(connection, ids=15):
        pass
    MIGRATION.complete(connection)
    assert selectors.rollup_kept()
    assert _reads(budgets, now) == during  # the rollup's answers, now whole, are the ledger's sums read before


def test_once_completed_the_reads_use_the_rollup_and_stop_asking(qa_agent, default_budget):
    charge(qa_agent, "one", "1.5")
    period = budgeting.period_containing("total", datetime.now(UTC))
    selectors._ROLLUP_COMPLETE.clear()  # a process that has not read a budget yet

    with CaptureQueriesContext(connection) as first:
        assert selectors.budget_spent(budget=default_budget, period=period) == Decimal("1.5")
    with CaptureQueriesContext(connection) as second:
        assert selectors.budget_spent(budget=default_budget, period=period) == Decimal("1.5")

    assert [q["sql"] for q in first.captured_queries if "costs_spend_backfill" in q["sql"]] != []
    assert [q["sql"] for q in second.captured_queries if "costs_spend_backfill" in q["sql"]] == []  # asked once per process
    assert [q["sql"] for q in first.captured_queries + second.captured_queries if "costs_costentry" in q["sql"]] == []  # no ledger scan


def test_reads_before_step_a_sum_the_ledger_and_leave_the_transaction_usable(qa_agent, monkeypatch):
    """New code started before `migrate` reaches step A: no state table yet. Reading it raised, and
    inside a charge's transaction that aborted the charge (the backfill's second reviewer)."""
    charge(qa_agent, "before", "2")
    monkeypatch.setattr(selectors, "_ROLLUP_COMPLETE", set())
    with connection.cursor() as cursor:
        cursor.execute("DROP TABLE costs_spend_backfill")  # rolled back with the test's transaction
    assert selectors.rollup_kept() is False
    assert CostEntry.objects.filter(agent=qa_agent).count() == 1  # the transaction goes on


def _other_connection():  # type: ignore[no-untyped-def]
    import psycopg  # import here: only these tests hold a second session of their own

    params = connection.get_connection_params()
    return psycopg.connect(**params, autocommit=False)


@pytest.mark.django_db(transaction=True)
def test_running_step_a_again_does_not_wait_for_readers_of_the_ledger():
    """A `migrate` run again after a stop finds the trigger made. Dropping and making it again took the
    ledger's ACCESS EXCLUSIVE lock, which waits for every reader (pg_dump, a budget sum of the release
    before) while every new charge queues behind it — and deadlocked with a reader that then charged."""
    import threading

    reader = _other_connection()
    try:
        reader.execute("SELECT count(*) FROM costs_costentry")  # holds ACCESS SHARE until it ends
        done = threading.Event()

        def step_a() -> None:
            try:
                MIGRATION.start(connection)
            finally:
                connection.close()
                done.set()

        thread = threading.Thread(target=step_a)
        thread.start()
        finished = done.wait(timeout=10)
    finally:
        reader.rollback()
        reader.close()
        thread.join(timeout=60)
    assert finished, "step A waited for a reader of the ledger"


@pytest.mark.django_db(transaction=True)
def test_step_a_gives_up_with_what_to_do_when_a_writer_holds_the_ledger(monkeypatch):
    """A transaction left open after writing the ledger would hold step A's lock wait — and every
    charge queued behind it — for as long as it stays open; step A tries a bounded number of times."""
    monkeypatch.setattr(MIGRATION, "LOCK_WAIT", "100ms")
    monkeypatch.setattr(MIGRATION, "LOCK_TRIES", 2)
    writer = _other_connection()
    try:
        writer.execute("LOCK TABLE costs_costentry IN ROW EXCLUSIVE MODE")  # what an open charge holds
        with pytest.raises(RuntimeError, match="pg_stat_activity"):
            MIGRATION.start(connection)
    finally:
        writer.rollback()
        writer.close()
    MIGRATION.start(connection)  # once it has ended, step A goes through
