"""The rollup of spend (costs.models.CostSpendBucket, CostSpendTotal; migration 0013's trigger) holds
exactly what the ledger sums to, after every kind of write, and the budget reads built on it answer
what a sum over the ledger answers — at period boundaries in time zones with DST and with half- and
quarter-hour offsets too. The expectation is computed here from the entries themselves (quarter hours
cut in Python), not with the trigger's SQL."""

from __future__ import annotations

import importlib
import threading
import time
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from zoneinfo import ZoneInfo

import pytest
from django.apps import apps
from django.db import connection, transaction

from costs import budgeting, selectors
from costs.models import CostEntry, CostSpendBucket, CostSpendTotal
from costs.services import Charge, budget_upsert, cost_entry_reverse, cost_record, cost_record_many
from tests.factories import AgentFactory, UserFactory

pytestmark = pytest.mark.skipif(connection.vendor != "postgresql", reason="the rollup is kept by a PostgreSQL trigger")

MIGRATION = importlib.import_module("costs.migrations.0013_spend_rollup")


def _quarter_hour(moment: datetime) -> datetime:
    utc = moment.astimezone(UTC)
    return utc.replace(minute=utc.minute // 15 * 15, second=0, microsecond=0)


def assert_rollup_exact() -> None:
    """Every bucket and total equals the sum of its ledger entries, and no bucket or total is extra."""
    buckets: dict[tuple[int, str, datetime], Decimal] = {}
    totals: dict[tuple[int, str], list[Decimal]] = {}
    for agent_id, operation, occurred_at, amount in CostEntry.objects.values_list("agent_id", "operation", "occurred_at", "amount_usd"):
        key = (agent_id, operation, _quarter_hour(occurred_at))
        buckets[key] = buckets.get(key, Decimal(0)) + amount
        charged_reversed = totals.setdefault((agent_id, operation), [Decimal(0), Decimal(0)])
        charged_reversed[0 if amount > 0 else 1] += amount
    kept_buckets = {
        (agent_id, operation, start.astimezone(UTC)): amount
        for agent_id, operation, start, amount in CostSpendBucket.objects.values_list("agent_id", "operation", "bucket_start", "amount_usd")
    }
    kept_totals = {
        (agent_id, operation): [charged, reversed_]
        for agent_id, operation, charged, reversed_ in CostSpendTotal.objects.values_list("agent_id", "operation", "charged_usd", "reversed_usd")
    }
    assert kept_buckets == buckets
    assert kept_totals == totals


def ledger_spent(budget, period) -> Decimal:
    return sum(selectors.entries_in_scope(budget=budget, period=period).values_list("amount_usd", flat=True), Decimal(0))


def charge(agent, key: str, amount: str, **fields) -> CostEntry:
    return cost_record(agent=agent, operation=fields.pop("operation", "inference"), idempotency_key=key, amount_usd=amount, **fields)


def test_single_charges_retries_and_reversals_keep_the_rollup_exact(qa_agent, legal_agent, default_budget):
    first = charge(qa_agent, "one", "1.000001")
    charge(qa_agent, "two", "2.5", operation="benchmark")
    charge(legal_agent, "three", "0.333333")
    assert charge(qa_agent, "one", "1.000001") == first  # an idempotent retry adds nothing
    assert_rollup_exact()

    cost_entry_reverse(entry=first, actor=UserFactory(is_superuser=True), reason="charged twice")
    cost_entry_reverse(entry=first, actor=UserFactory(is_superuser=True), reason="clicked twice")  # returns the same reversal
    assert_rollup_exact()
    assert CostSpendTotal.objects.get(agent=qa_agent, operation="inference").reversed_usd == Decimal("-1.000001")
    period = budgeting.period_containing("total", datetime.now(UTC))
    assert selectors.budget_spent(budget=default_budget, period=period) == Decimal("2.833333") == ledger_spent(default_budget, period)


def test_batches_with_retried_keys_count_only_what_they_insert(qa_agent, legal_agent, default_budget):
    batch = [Charge(agent=agent, operation="inference", idempotency_key=f"batch:{n}", amount_usd=f"0.00{n}1",
                    occurred_at=datetime(2026, 11, 30, 23, 50, tzinfo=UTC) + timedelta(minutes=7 * n))
             for n, agent in enumerate([qa_agent, legal_agent, qa_agent, qa_agent])]
    cost_record_many(charges=batch)
    # The batch again (a retried task) with one new charge, and a key twice within the batch.
    cost_record_many(charges=[*batch, Charge(agent=qa_agent, operation="storage", idempotency_key="batch:new", amount_usd="2"),
                              Charge(agent=qa_agent, operation="storage", idempotency_key="batch:new", amount_usd="2")])
    assert CostEntry.objects.count() == 5
    assert_rollup_exact()


def test_a_bulk_insert_counts_only_the_rows_it_inserted_not_the_conflicting_duplicates(qa_agent):
    """cost_record_many's race: a concurrent batch inserted some keys first; ON CONFLICT DO NOTHING skips them."""
    charge(qa_agent, "taken", "5")
    at = datetime(2026, 12, 1, 12, tzinfo=UTC)
    rows = [CostEntry(amount_usd=Decimal(amount), agent=qa_agent, operation="inference", occurred_at=at, idempotency_key=key)
            for key, amount in (("taken", "7"), ("fresh", "0.25"))]
    CostEntry.objects.bulk_create(rows, ignore_conflicts=True)
    assert CostEntry.objects.count() == 2
    assert_rollup_exact()


def test_raw_sql_inserts_are_counted_too(qa_agent):
    with connection.cursor() as cursor:
        cursor.execute(
            "INSERT INTO costs_costentry (amount_usd, operation, model, source_id, source, occurred_at, recorded_at, idempotency_key,"
            " note, agent_id, tokens_estimated) SELECT 0.000007 * g, 'manual', '', '', 'sql', now() - interval '1 hour' * g, now(),"
            " 'sql:' || g, '', %s, false FROM generate_series(1, 50) AS g", [qa_agent.pk])
    assert_rollup_exact()


ZONES = ["Europe/Paris", "America/New_York", "Asia/Kolkata", "Asia/Kathmandu", "Australia/Lord_Howe"]
# Local midnights that start a month or a day: a DST change's day (Paris 29 March, New York 8 March, Lord
# Howe's half-hour change on 5 April), a month start right after one, and ordinary ones.
MIDNIGHTS = [(2026, 3, 1), (2026, 3, 8), (2026, 3, 29), (2026, 3, 30), (2026, 4, 1), (2026, 4, 5), (2026, 11, 1), (2026, 12, 1)]


@pytest.mark.parametrize("zone", ZONES)
def test_budgets_read_the_ledgers_sum_at_period_boundaries_in_any_time_zone(settings, zone, qa_agent, legal_agent):
    settings.TIME_ZONE = zone
    tz = ZoneInfo(zone)
    agents = [qa_agent, legal_agent]
    # Entries a microsecond either side of each local midnight, and at it.
    for n, (year, month, day) in enumerate(MIDNIGHTS):
        midnight = datetime(year, month, day, tzinfo=tz)
        for m, offset in enumerate((timedelta(microseconds=-1), timedelta(0), timedelta(microseconds=1), timedelta(hours=5))):
            charge(agents[(n + m) % 2], f"edge:{n}:{m}", f"0.{n + 1}0000{m + 1}", occurred_at=midnight + offset)
    assert_rollup_exact()
    budgets = [budget_upsert(name=f"b-{period}-{scope}", amount_usd="1000", period=period, agent=agent)
               for period in budgeting.PERIODS for scope, agent in (("all", None), ("qa", qa_agent))]
    for year, month, day in MIDNIGHTS:
        for at in (datetime(year, month, day, tzinfo=tz), datetime(year, month, day, 23, 59, tzinfo=tz) - timedelta(days=1)):
            for budget in budgets:
                period = budgeting.period_containing(budget.period, at)
                assert selectors.budget_spent(budget=budget, period=period) == ledger_spent(budget, period), (budget.name, at)
            listed = {b.name: b.spent_usd for b in selectors.with_spent(selectors.Budget.objects.all(), at=at)}
            assert listed == {b.name: ledger_spent(b, budgeting.period_containing(b.period, at)) for b in budgets}, at


@pytest.mark.parametrize("zone", ["Asia/Kathmandu", "Europe/Paris"])
def test_dashboard_reads_match_the_ledger(settings, monkeypatch, zone, qa_agent, legal_agent):
    """The burn-rate window (ends now: not whole quarter hours), the split and the daily series: the
    same with the rollup as summed over the ledger."""
    settings.TIME_ZONE = zone
    now = datetime.now(UTC)
    for n in range(40):
        charge((qa_agent, legal_agent)[n % 2], f"recent:{n}", f"0.0{n % 9 + 1}0007", occurred_at=now - timedelta(minutes=37 * n + 3))
    reversed_entry = charge(qa_agent, "recent:big", "3", operation="benchmark", occurred_at=now - timedelta(days=2))
    cost_entry_reverse(entry=reversed_entry, actor=UserFactory(is_superuser=True), reason="test")
    budgets = [budget_upsert(name=f"d-{period}", amount_usd="1000", period=period, agent=qa_agent if period == "daily" else None)
               for period in budgeting.PERIODS]

    def reads():
        return ([selectors.budget_status(budget=budget, now=now) for budget in budgets],
                [selectors.spend_split(budget=budget) for budget in budgets], selectors.spend_split(),
                [selectors.daily_spend(dimension=d, days=10, budget=budgets[2]) for d in ("agent", "operation")])

    from_rollup = reads()
    monkeypatch.setattr(selectors, "rollup_kept", lambda: False)  # the ledger's own sums, as on SQLite
    assert from_rollup == reads()


def test_two_threads_writing_at_once_keep_the_rollup_exact(transactional_db):
    """No budget covers the agent (nothing else serializes the writers); the same agent, operation and
    quarter hour: both add to one bucket row."""
    agent = AgentFactory(slug="busy_agent")
    at = datetime.now(UTC)
    errors: list[Exception] = []
    start = threading.Barrier(2)

    def write(name: str) -> None:
        try:
            start.wait(timeout=30)
            for n in range(50):
                if n % 5 == 0:
                    cost_record_many(charges=[Charge(agent=agent, operation="inference", idempotency_key=f"{name}:{n}:{k}",
                                                     amount_usd="0.000101", occurred_at=at) for k in range(3)])
                else:
                    with transaction.atomic():
                        charge(agent, f"{name}:{n}", "0.010001", occurred_at=at)
        except Exception as exc:  # noqa: BLE001 - asserted below
            errors.append(exc)
        finally:
            connection.close()

    threads = [threading.Thread(target=write, args=(name,)) for name in ("a", "b")]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    assert errors == []
    assert CostEntry.objects.count() == 2 * (40 + 10 * 3)
    assert_rollup_exact()


def test_two_quarter_hours_in_one_transaction_do_not_deadlock_with_a_writer_of_the_second(transactional_db):
    """No budget covers the agent. One transaction charges 10:00 and then 11:00; between its two
    statements another charges 11:00. With the quarter-hour row locked before the (agent, operation)
    total, the second held 11:00 and waited for the total the first held, which then waited for 11:00:
    PostgreSQL's deadlock detector killed one (the second reviewer's reproduction). The total is
    locked first now, so the second waits for the first's commit, and both land."""
    agent = AgentFactory(slug="two_quarters")
    ten, eleven = datetime(2026, 12, 1, 10, tzinfo=UTC), datetime(2026, 12, 1, 11, tzinfo=UTC)
    errors: list[BaseException] = []
    first_written, second_started = threading.Event(), threading.Event()

    def first() -> None:
        try:
            with transaction.atomic():
                charge(agent, "first:10", "1", occurred_at=ten)
                first_written.set()
                second_started.wait(10)
                time.sleep(0.3)  # the second is waiting inside its insert by now
                charge(agent, "first:11", "1", occurred_at=eleven)
        except BaseException as exc:  # noqa: BLE001 - asserted below
            errors.append(exc)
        finally:
            connection.close()

    def second() -> None:
        try:
            first_written.wait(10)
            with transaction.atomic():
                second_started.set()
                charge(agent, "second:11", "1", occurred_at=eleven)
        except BaseException as exc:  # noqa: BLE001 - asserted below
            errors.append(exc)
        finally:
            connection.close()

    threads = [threading.Thread(target=first), threading.Thread(target=second)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    assert errors == []
    assert CostEntry.objects.filter(agent=agent).count() == 3
    assert_rollup_exact()


def test_the_migration_backfills_the_rollup_from_the_ledger_once(qa_agent, legal_agent):
    for n in range(30):
        charge((qa_agent, legal_agent)[n % 2], f"old:{n}", f"0.{n:02d}0003", occurred_at=datetime(2025, 1, 1, tzinfo=UTC) + timedelta(hours=7 * n))
    # A ledger from before the rollup: entries, no rollup rows (and the trigger made anew by the migration).
    CostSpendBucket.objects.all().delete()
    CostSpendTotal.objects.all().delete()
    with connection.schema_editor(atomic=False) as editor:
        MIGRATION.drop_trigger(apps, editor)  # the trigger and the migration's state
        MIGRATION.fill(apps, editor)  # steps A, B (a range at a time) and C
    assert_rollup_exact()
    charge(qa_agent, "after", "1")  # the trigger counts what comes next, once
    assert_rollup_exact()
