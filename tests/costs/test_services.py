"""costs/services.py on a real database: the ledger, alerts, the budget check and its overrides, and
prices."""

from __future__ import annotations

import threading
import time
from datetime import date, timedelta
from decimal import Decimal

import pytest
from django.db import IntegrityError, connection, transaction
from django.utils import timezone

from costs.models import Budget, BudgetAlert, BudgetOverride, CostEntry, CostHold, PriceTable
from costs.selectors import budget_status, inference_cost
from costs.services import (
    Charge,
    budget_check,
    budget_upsert,
    cost_entry_reverse,
    cost_hold_release,
    cost_record,
    cost_record_many,
    price_upsert,
)
from genesis.errors import Conflict, InvalidInput, NotFound, PermissionDenied
from tests.costs.factories import PriceTableFactory
from tests.factories import ModelVersionFactory, UserFactory

pytestmark = pytest.mark.django_db

FT_MODEL = "ft:open-mistral-7b:1a2b3c4d:20261101:5e6f7a8b"


def charge(agent, amount, key, **kwargs):
    """A charge of `amount` dollars (operation manual unless given)."""
    return cost_record(agent=agent, operation=kwargs.pop("operation", "manual"), amount_usd=Decimal(amount),
                       idempotency_key=key, **kwargs)


def one_after_the_other(work):
    """Run `work("first")` and `work("second")` in two threads, each in its own transaction: the
    first keeps its transaction open until the second is waiting for a lock (PostgreSQL), then
    commits. Returns each one's result or exception, and whether the second was seen waiting."""
    first_done, release, results = threading.Event(), threading.Event(), {}

    def run(name: str, *, hold_open: bool) -> None:
        try:
            with transaction.atomic():
                results[name] = work(name)
                if hold_open:  # keep the transaction open, as a slow request would
                    first_done.set()
                    release.wait(timeout=30)
        except Exception as exc:  # noqa: BLE001 - the caller's assertions show it
            results[name] = exc
        finally:
            first_done.set()
            connection.close()

    first = threading.Thread(target=run, args=("first",), kwargs={"hold_open": True})
    first.start()
    assert first_done.wait(timeout=30)
    second = threading.Thread(target=run, args=("second",), kwargs={"hold_open": False})
    second.start()
    waited = False
    with connection.cursor() as cursor:
        deadline = time.monotonic() + 30
        while not waited and time.monotonic() < deadline:
            cursor.execute("SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() AND wait_event_type = 'Lock'")
            waited = bool(cursor.fetchone()[0])
            if not waited:
                time.sleep(0.05)
    release.set()
    first.join(timeout=30)
    second.join(timeout=30)
    return results, waited


# --- the ledger ---------------------------------------------------------------------------------------------


def test_same_idempotency_key_charges_once(qa_agent):
    first = charge(qa_agent, "1.25", "benchmark-result:1", operation="benchmark")
    again = charge(qa_agent, "1.25", "benchmark-result:1", operation="benchmark")
    assert again.pk == first.pk
    assert CostEntry.objects.count() == 1


def test_a_key_longer_than_the_ledger_holds_is_refused_the_same_on_every_database(qa_agent):
    """Second review: a 201-character key was a DataError on PostgreSQL and was stored as given on
    SQLite; the service refuses it first, naming the field, on both."""
    from costs.services import Charge, cost_record_many

    assert charge(qa_agent, "1", "k" * 200).idempotency_key == "k" * 200
    with pytest.raises(InvalidInput, match="idempotency_key: 201 characters, more than the ledger's 200"):
        charge(qa_agent, "1", "k" * 201)
    with pytest.raises(InvalidInput, match=r"charges\[0\]\.idempotency_key: 201 characters"):
        cost_record_many(charges=[Charge(agent=qa_agent, operation="manual", amount_usd="1", idempotency_key="l" * 201)])
    assert CostEntry.objects.count() == 1


def test_reusing_a_key_for_another_agent_operation_or_source_is_refused(qa_agent, legal_agent):
    job, other_job = ModelVersionFactory(agent=qa_agent), ModelVersionFactory(agent=qa_agent)
    charge(qa_agent, "1.25", "job:7", source_object=job)
    for different in ({"agent": legal_agent}, {"operation": "benchmark"}, {"source_object": other_job}, {"source_object": None}):
        with pytest.raises(Conflict, match="idempotency key 'job:7' was already used for entry #"):
            charge(**{"agent": qa_agent, "amount": "1.25", "key": "job:7", "source_object": job, **different})
    assert CostEntry.objects.count() == 1


def test_a_retry_returns_the_original_entry_after_a_price_edit_or_on_a_later_day(qa_agent, base_price):
    """A retried task recomputes with a later occurred_at and today's prices; it must get the entry it
    already recorded, not a Conflict (nor a second charge)."""
    job = ModelVersionFactory(agent=qa_agent)
    tokens = {"model": "open-mistral-7b", "input_tokens": 2_000_000, "output_tokens": 0, "source_object": job}
    original = cost_record(agent=qa_agent, operation="inference", idempotency_key="result:1", **tokens)
    assert original.amount_usd == Decimal("0.500000")
    price_upsert(model="open-mistral-7b", effective_from=base_price.effective_from, input_usd_per_million="0.30",
                 output_usd_per_million="0.30", source="corrected", source_date=date(2026, 11, 26))
    tomorrow = timezone.now() + timedelta(days=1)
    price_upsert(model="open-mistral-7b", effective_from=timezone.localdate(tomorrow), input_usd_per_million="9",
                 output_usd_per_million="9", source="new prices", source_date=date(2026, 11, 26))
    after_edit = cost_record(agent=qa_agent, operation="inference", idempotency_key="result:1", **tokens)
    next_day = cost_record(agent=qa_agent, operation="inference", idempotency_key="result:1", occurred_at=tomorrow, **tokens)
    provider_amount = cost_record(agent=qa_agent, operation="inference", idempotency_key="result:1", amount_usd="0.61",
                                  source_object=job)
    assert {e.pk for e in (after_edit, next_day, provider_amount)} == {original.pk}
    assert (next_day.amount_usd, next_day.occurred_at) == (Decimal("0.500000"), original.occurred_at)
    assert CostEntry.objects.count() == 1


def test_amounts_that_do_not_fit_their_columns_are_refused_naming_the_limit(qa_agent, base_price):
    with pytest.raises(InvalidInput, match=r"^amount_usd: 99999999999 is too large; it can be at most 9,999,999,999\.999999 "):
        charge(qa_agent, "99999999999", "big")
    with pytest.raises(InvalidInput, match=r"^amount_usd \(computed from the tokens\): .* is too large"):
        cost_record(agent=qa_agent, operation="inference", model="open-mistral-7b", input_tokens=10**18,
                    output_tokens=10**18, idempotency_key="many-tokens")
    with pytest.raises(InvalidInput, match=r"^tokens: 9223372036854775808 is too large"):
        cost_record(agent=qa_agent, operation="manual", amount_usd="1", tokens=2**63, idempotency_key="t")
    # Money review: each count fits its column, their sum (the entry's tokens) did not — a DataError, 500.
    with pytest.raises(InvalidInput, match=r"^tokens: input_tokens \+ output_tokens = 9223372036854775808 is too large; "
                                           r"it can be at most 9,223,372,036,854,775,807"):
        cost_record(agent=qa_agent, operation="inference", amount_usd="1", input_tokens=2**63 - 1, output_tokens=1,
                    idempotency_key="sum")
    with pytest.raises(InvalidInput, match=r"^charges\[0\]\.tokens: input_tokens \+ output_tokens = 9223372036854775808"):
        cost_record_many(charges=[Charge(agent=qa_agent, operation="inference", amount_usd="1", input_tokens=2**63 - 1,
                                         output_tokens=1, idempotency_key="sum")])
    with pytest.raises(InvalidInput, match=r"^input_usd_per_million: 1000000 is too large; it can be at most 999,999\.999999"):
        price_upsert(model="m", effective_from=date(2026, 1, 1), input_usd_per_million="1000000", output_usd_per_million="1",
                     source="typo", source_date=date(2026, 1, 1))
    with pytest.raises(InvalidInput, match=r"^amount_usd: 1E\+40 is too large; it can be at most 9,999,999,999\.99 "):
        budget_upsert(name="huge", amount_usd="1E+40")
    assert (CostEntry.objects.count(), PriceTable.objects.filter(model="m").count(), Budget.objects.count()) == (0, 0, 0)
    assert charge(qa_agent, "0.0000004", "rounds-down").amount_usd == Decimal("0")  # micro-dollars, half up
    assert charge(qa_agent, "9999999999.999999", "largest").amount_usd == Decimal("9999999999.999999")


def test_amount_is_computed_from_tokens_and_the_base_price_of_a_fine_tuned_model(qa_agent, base_price):
    entry = cost_record(agent=qa_agent, operation="inference", model=FT_MODEL, input_tokens=400_000,
                        output_tokens=200_000, idempotency_key="outcome:evt-1", source="outcome evt-1")
    assert entry.amount_usd == Decimal("0.150000")  # 600k tokens at $0.25 / 1M (open-mistral-7b)
    assert entry.tokens == 600_000
    assert inference_cost(model=FT_MODEL, input_tokens=400_000, output_tokens=200_000) == entry.amount_usd


def test_a_fine_tuned_model_with_its_own_price_uses_it(qa_agent, base_price):
    PriceTableFactory(model=FT_MODEL, effective_from=date(2026, 1, 1), input_usd_per_million=Decimal("0.75"),
                      output_usd_per_million=Decimal("0.75"))
    entry = cost_record(agent=qa_agent, operation="inference", model=FT_MODEL, input_tokens=1_000_000,
                        output_tokens=0, idempotency_key="outcome:evt-2")
    assert entry.amount_usd == Decimal("0.750000")


def test_fine_tuning_cost_from_training_tokens_has_the_minimum_fee(qa_agent, base_price):
    small = cost_record(agent=qa_agent, operation="fine_tuning", model="open-mistral-7b", tokens=100_000,
                        idempotency_key="ft-job:1")
    large = cost_record(agent=qa_agent, operation="fine_tuning", model="open-mistral-7b", tokens=5_000_000,
                        idempotency_key="ft-job:2")
    assert (small.amount_usd, large.amount_usd) == (Decimal("4.000000"), Decimal("10.000000"))


def test_unpriced_model_negative_amounts_and_missing_tokens_are_refused(qa_agent, base_price):
    with pytest.raises(NotFound, match="no price for model 'gpt-unknown' in force on"):
        cost_record(agent=qa_agent, operation="inference", model="gpt-unknown", input_tokens=1, output_tokens=1,
                    idempotency_key="x1")
    with pytest.raises(InvalidInput, match="append-only — correct an entry by reversing it"):
        charge(qa_agent, "-1", "x2")
    with pytest.raises(InvalidInput, match="give input_tokens and output_tokens"):
        cost_record(agent=qa_agent, operation="inference", model="open-mistral-7b", tokens=10, idempotency_key="x3")
    with pytest.raises(InvalidInput, match="operation: 'coffee' is not one of"):
        charge(qa_agent, "1", "x4", operation="coffee")
    assert CostEntry.objects.count() == 0


def test_a_user_needs_the_add_permission_to_record(qa_agent):
    clerk = UserFactory(username="clerk")
    with pytest.raises(PermissionDenied, match="user 'clerk' may not record costs: it needs the permission 'costs.add_costentry'"):
        charge(qa_agent, "1", "x", actor=clerk)


def test_reversal_is_an_opposite_entry_and_happens_once(qa_agent, default_budget):
    admin = UserFactory(username="boss", is_superuser=True)
    entry = charge(qa_agent, "2.50", "manual:1")
    reversal = cost_entry_reverse(entry=entry, actor=admin, reason="typed the wrong agent")
    assert (reversal.amount_usd, reversal.reverses_id, reversal.actor, reversal.occurred_at) == (
        Decimal("-2.500000"), entry.pk, admin, entry.occurred_at)
    assert cost_entry_reverse(entry=entry, actor=admin, reason="again").pk == reversal.pk
    with pytest.raises(Conflict, match="is itself a reversal"):
        cost_entry_reverse(entry=reversal, actor=admin, reason="undo the undo")
    assert budget_status(budget=default_budget).spent == Decimal(0)
    assert CostEntry.objects.count() == 2


def test_reversal_whose_key_is_taken_is_refused_with_a_clear_message(qa_agent):
    admin = UserFactory(username="boss", is_superuser=True)
    entry = charge(qa_agent, "2.50", "manual:1")
    squatter = charge(qa_agent, "1", f"reversal:{entry.pk}", source="track_costs --log")
    with pytest.raises(Conflict, match=(
        rf"entry #{entry.pk} cannot be reversed: the idempotency key its reversal needs, 'reversal:{entry.pk}', is "
        rf"already taken by entry #{squatter.pk} \(track_costs --log\), which is not a reversal of it")):
        cost_entry_reverse(entry=entry, actor=admin, reason="wrong agent")
    assert CostEntry.objects.count() == 2


@pytest.mark.skipif(connection.vendor != "postgresql", reason="row locks and concurrent transactions need PostgreSQL")
def test_two_concurrent_reversals_without_a_budget_make_one_and_both_get_it(transactional_db, qa_agent):
    """No budget covers the agent, so only the entry's own row lock orders the two: the second waits
    for the first to commit, then finds its reversal (before, it failed with IntegrityError → 500)."""
    admin = UserFactory(username="boss", is_superuser=True)
    entry = charge(qa_agent, "2.50", "manual:1")
    results, _ = one_after_the_other(lambda name: cost_entry_reverse(entry=entry, actor=admin, reason=name).pk)
    reversal = CostEntry.objects.get(reverses=entry)
    assert results == {"first": reversal.pk, "second": reversal.pk}


@pytest.mark.skipif(connection.vendor != "postgresql", reason="the append-only trigger exists on PostgreSQL only")
def test_database_refuses_to_update_or_delete_a_ledger_row(qa_agent):
    entry = charge(qa_agent, "1", "manual:trigger")
    for statement in (lambda: CostEntry.objects.filter(pk=entry.pk).update(amount_usd=0),
                      lambda: CostEntry.objects.filter(pk=entry.pk).delete()):
        with pytest.raises(IntegrityError, match="costs_costentry is append-only"), transaction.atomic():
            statement()
    entry.refresh_from_db()
    assert entry.amount_usd == Decimal("1.000000")


# --- alerts ---------------------------------------------------------------------------------------------------


def test_each_threshold_alerts_once_with_its_severity(qa_agent, default_budget):
    charge(qa_agent, "7.49", "e1")
    assert BudgetAlert.objects.count() == 0
    crossing = charge(qa_agent, "0.01", "e2")  # $7.50 = 25 % of $30
    charge(qa_agent, "1", "e3")
    charge(qa_agent, "16.40", "e4")  # $24.90 = 83 %: crosses 50 and 83 at once
    charge(qa_agent, "5", "e5")
    alerts = {a.threshold_percent: a for a in BudgetAlert.objects.all()}
    assert sorted(alerts) == [25, 50, 83]
    assert (alerts[25].severity, alerts[50].severity, alerts[83].severity) == ("warning", "critical", "emergency")
    assert alerts[25].triggered_by == crossing and alerts[25].spent_usd == Decimal("7.50")
    assert alerts[50].triggered_by_id == alerts[83].triggered_by_id
    assert alerts[83].spent_usd == Decimal("24.90")


def test_agent_budget_counts_only_its_agent(qa_agent, legal_agent):
    budget_upsert(name="legal", amount_usd="10", agent=legal_agent, thresholds="50")
    charge(qa_agent, "9", "q1")
    assert not BudgetAlert.objects.exists()
    charge(legal_agent, "5", "l1")
    assert list(BudgetAlert.objects.values_list("budget__name", "threshold_percent")) == [("legal", 50)]


def test_monthly_budget_alerts_again_in_a_new_month(qa_agent):
    budget_upsert(name="monthly", amount_usd="10", period="monthly", thresholds="50")
    now = timezone.now()
    last_month = now.replace(day=1) - timedelta(days=3)
    charge(qa_agent, "6", "old", occurred_at=last_month)
    charge(qa_agent, "6", "new", occurred_at=now)
    keys = sorted(BudgetAlert.objects.values_list("period_key", flat=True))
    assert keys == sorted([f"{last_month:%Y-%m}", f"{now:%Y-%m}"])


def test_budget_amount_is_kept_in_cents_so_an_unchanged_upsert_changes_nothing(db):
    first = budget_upsert(name="team", amount_usd="12.345")
    assert first.amount_usd == Decimal("12.35")
    budget_upsert(name="team", amount_usd="12.345")
    budget = Budget.objects.get(name="team")
    assert (budget.amount_usd, budget.history.count()) == (Decimal("12.35"), 1)


def test_lowering_a_budget_below_spend_raises_its_alerts_with_a_trace(qa_agent, default_budget):
    admin = UserFactory(username="cfo", is_superuser=True)
    charge(qa_agent, "10", "m1")  # 33 % of $30
    budget_upsert(name="default", amount_usd="12", actor=admin, reason="quarter cut")  # 83 % of $12
    assert sorted(BudgetAlert.objects.values_list("threshold_percent", flat=True)) == [25, 50, 83]
    latest = Budget.objects.get(name="default").history.first()
    assert (latest.history_user, latest.history_change_reason, latest.amount_usd) == (admin, "quarter cut", Decimal("12.00"))
    assert latest.prev_record.amount_usd == Decimal("30.00")


def test_raising_a_budget_rearms_the_thresholds_it_no_longer_reaches_and_keeps_what_was_sent(qa_agent):
    budget_upsert(name="qa-monthly", amount_usd="1", period="monthly", agent=qa_agent)
    charge(qa_agent, "0.90", "q1")  # 90 % of $1: 25, 50 and 83 fire
    sent = list(BudgetAlert.objects.order_by("threshold_percent"))
    assert [a.threshold_percent for a in sent] == [25, 50, 83]
    budget_upsert(name="qa-monthly", amount_usd="2", period="monthly", agent=qa_agent)  # $0.90 = 45 % of $2
    armed = BudgetAlert.objects.filter(rearmed_at__isnull=True)
    assert sorted(armed.values_list("threshold_percent", flat=True)) == [25]  # still reached: not sent again
    assert BudgetAlert.objects.count() == 3  # the alerts sent stay, marked re-armed
    charge(qa_agent, "0.975", "q2")  # $1.875 = 93.75 % of $2: 50 and 83 are crossed again
    fired_again = list(armed.exclude(pk__in=[a.pk for a in sent]).order_by("threshold_percent"))
    assert [(a.threshold_percent, a.budget_usd, a.spent_usd) for a in fired_again] == [
        (50, Decimal("2.00"), Decimal("1.875")), (83, Decimal("2.00"), Decimal("1.875"))]
    assert BudgetAlert.objects.count() == 5
    budget_upsert(name="qa-monthly", amount_usd="2", period="monthly", agent=qa_agent, thresholds="25, 50, 90")
    charge(qa_agent, "0.01", "q3")  # 94 %: 90 is a new threshold, reached; 83 is no longer configured
    assert sorted(armed.values_list("threshold_percent", flat=True)) == [25, 50, 83, 90]


def test_a_reversal_rearms_a_threshold_the_spend_falls_below(qa_agent, default_budget):
    mistake = charge(qa_agent, "8", "typo")  # 26.7 % of $30: 25 fires
    cost_entry_reverse(entry=mistake, actor=None, reason="typed 8 for 0.8")
    assert BudgetAlert.objects.get().rearmed_at is not None
    charge(qa_agent, "7.50", "real")  # 25 % again: a new upward crossing
    assert BudgetAlert.objects.filter(rearmed_at__isnull=True).get().threshold_percent == 25


def test_an_exhausted_budget_is_announced_once_unless_a_threshold_covers_it(qa_agent, default_budget):
    charge(qa_agent, "31.50", "over")  # 105 % of $30
    charge(qa_agent, "45", "far over")  # 255 %: nothing new
    alerts = list(BudgetAlert.objects.order_by("threshold_percent"))
    assert [(a.threshold_percent, a.kind, a.severity) for a in alerts] == [
        (25, "threshold", "warning"), (50, "threshold", "critical"), (83, "threshold", "emergency"),
        (100, "exhausted", "emergency")]
    budget_upsert(name="own", amount_usd="10", agent=qa_agent, thresholds="50 warning, 120 emergency")
    assert sorted(Budget.objects.get(name="own").alerts.values_list("threshold_percent", "kind")) == [
        (50, "threshold"), (120, "threshold")]


def test_budget_thresholds_default_from_settings_and_bad_ones_are_refused(settings):
    settings.BUDGET_THRESHOLDS = [10, 90]
    budget = budget_upsert(name="b", amount_usd="5")
    assert budget.thresholds == [{"percent": 10, "severity": "warning"}, {"percent": 90, "severity": "critical"}]
    with pytest.raises(InvalidInput, match="thresholds: 'loud': severity is one of"):
        budget_upsert(name="c", amount_usd="5", thresholds="25 loud")
    with pytest.raises(InvalidInput, match="period: 'weekly' is not one of total, monthly, daily"):
        budget_upsert(name="d", amount_usd="5", period="weekly")


# --- the budget check (done-when: $1 left, $2 estimate) ----------------------------------------------------------------


def test_hard_limit_with_one_dollar_left_refuses_a_two_dollar_estimate(qa_agent, default_budget):
    charge(qa_agent, "29", "spent")
    with pytest.raises(Conflict) as refused:
        budget_check(agent=qa_agent, estimate_usd=Decimal("2"), actor=None)
    assert refused.value.message == (
        "budget 'default' is at 96.6 % of $30.00 ($29.00 spent); this run needs an estimated $2.00 but only $1.00 is "
        "left — raise the budget or pass an override reason as a user with costs.override_budget"
    )
    assert refused.value.status_code == 409
    assert budget_check(agent=qa_agent, estimate_usd=Decimal("1"), actor=None).checked == ["default"]
    assert not BudgetOverride.objects.exists()


def test_a_spent_budget_refuses_even_an_estimate_of_zero(qa_agent, default_budget):
    charge(qa_agent, "30", "all-of-it")
    with pytest.raises(Conflict) as refused:
        budget_check(agent=qa_agent, estimate_usd="0", actor=None)
    assert refused.value.message == (
        "budget 'default' is at 100 % of $30.00 ($30.00 spent); nothing is left, so no paid work may start — raise "
        "the budget or pass an override reason as a user with costs.override_budget"
    )
    budget_upsert(name="default", amount_usd="30.01")
    assert budget_check(agent=qa_agent, estimate_usd="0", actor=None).checked == ["default"]


def test_override_with_a_reason_by_a_permitted_user_goes_through_and_is_recorded(qa_agent, default_budget, overrider):
    charge(qa_agent, "29", "spent")
    check = budget_check(agent=qa_agent, estimate_usd="2", actor=overrider, override_reason="release blocker, CFO agreed")
    assert check.overridden
    override = BudgetOverride.objects.get()
    assert (override.budget, override.agent, override.actor, override.reason) == (
        default_budget, qa_agent, overrider, "release blocker, CFO agreed")
    assert (override.estimate_usd, override.spent_usd, override.budget_usd) == (Decimal("2"), Decimal("29"), Decimal("30"))


def test_override_needs_the_permission_a_reason_and_a_person(qa_agent, default_budget):
    charge(qa_agent, "29", "spent")
    intern = UserFactory(username="intern")
    with pytest.raises(PermissionDenied, match="user 'intern' may not start paid work over budget 'default'.*costs.override_budget"):
        budget_check(agent=qa_agent, estimate_usd="2", actor=intern, override_reason="please")
    with pytest.raises(Conflict, match="is at 96.6 %"):
        budget_check(agent=qa_agent, estimate_usd="2", actor=intern, override_reason="   ")
    with pytest.raises(PermissionDenied, match="a budget override needs a person"):
        budget_check(agent=qa_agent, estimate_usd="2", actor=None, override_reason="beat says so")
    assert not BudgetOverride.objects.exists()


def test_soft_budgets_and_other_agents_budgets_do_not_refuse(qa_agent, legal_agent):
    budget_upsert(name="soft", amount_usd="1", hard_limit=False)
    budget_upsert(name="legal-only", amount_usd="1", agent=legal_agent)
    check = budget_check(agent=qa_agent, estimate_usd="50", actor=None)
    assert check.checked == [] and not check.overridden
    with pytest.raises(Conflict, match="budget 'legal-only' is at 0 % of \\$1.00"):
        budget_check(agent=legal_agent, estimate_usd="2", actor=None)


# --- holds: work in progress counts against the limit --------------------------------------------------------------


def test_a_hold_counts_against_the_limit_until_its_work_releases_it(qa_agent, default_budget):
    charge(qa_agent, "28", "spent")
    first_run, second_run = ModelVersionFactory(), ModelVersionFactory()
    check = budget_check(agent=qa_agent, estimate_usd="1.50", actor=None, hold_for=first_run, operation="benchmark")
    assert (check.hold.amount_usd, check.hold.operation, check.hold.source_object) == (Decimal("1.5"), "benchmark", first_run)

    with pytest.raises(Conflict) as refused:
        budget_check(agent=qa_agent, estimate_usd="1", actor=None, hold_for=second_run, operation="benchmark")
    assert refused.value.message == (
        "budget 'default' is at 93.3 % of $30.00 ($28.00 spent, $1.50 held by work still running); this run needs an "
        "estimated $1.00 but only $0.50 is left — raise the budget or pass an override reason as a user with "
        "costs.override_budget"
    )
    assert CostHold.objects.count() == 1  # the refused start holds nothing
    with pytest.raises(Conflict, match="already holds budget"):
        budget_check(agent=qa_agent, estimate_usd="0.10", actor=None, hold_for=first_run, operation="benchmark")

    assert cost_hold_release(source=first_run) is True
    assert cost_hold_release(source=first_run) is False  # idempotent
    assert budget_check(agent=qa_agent, estimate_usd="1", actor=None, hold_for=second_run, operation="benchmark").hold
    # Work that ended and starts again holds anew, on the same row.
    cost_hold_release(source=second_run)
    again = budget_check(agent=qa_agent, estimate_usd="0.25", actor=None, hold_for=first_run, operation="benchmark").hold
    assert (again.amount_usd, again.released_at, CostHold.objects.count()) == (Decimal("0.25"), None, 2)


def test_a_hold_whose_work_was_lost_stops_counting_when_it_expires(qa_agent, default_budget):
    charge(qa_agent, "29", "spent")
    lost = ModelVersionFactory()
    budget_check(agent=qa_agent, estimate_usd="1", actor=None, hold_for=lost, operation="fine_tuning",
                 hold_lasts=timedelta(hours=2))
    with pytest.raises(Conflict, match="nothing is left"):
        budget_check(agent=qa_agent, estimate_usd="0.5", actor=None)
    CostHold.objects.update(expires_at=timezone.now() - timedelta(seconds=1))
    assert budget_check(agent=qa_agent, estimate_usd="0.5", actor=None).checked == ["default"]


def test_a_hold_needs_a_saved_row_and_a_ledger_operation(qa_agent, default_budget):
    with pytest.raises(InvalidInput, match="operation: 'training' is not one of"):
        budget_check(agent=qa_agent, estimate_usd="1", actor=None, hold_for=ModelVersionFactory(), operation="training")
    with pytest.raises(InvalidInput, match="hold_for: save the work's row first"):
        budget_check(agent=qa_agent, estimate_usd="1", actor=None, hold_for=PriceTable(), operation="benchmark")


def test_an_override_over_held_money_is_recorded_and_holds_too(qa_agent, default_budget, overrider):
    charge(qa_agent, "29", "spent")
    budget_check(agent=qa_agent, estimate_usd="0.80", actor=None, hold_for=ModelVersionFactory(), operation="benchmark")
    check = budget_check(agent=qa_agent, estimate_usd="0.50", actor=overrider, override_reason="demo for the board",
                         hold_for=ModelVersionFactory(), operation="benchmark")
    assert check.overridden and check.hold is not None
    assert CostHold.objects.filter(released_at__isnull=True).count() == 2


@pytest.mark.skipif(connection.vendor != "postgresql", reason="row locks and concurrent transactions need PostgreSQL")
def test_two_starts_at_once_cannot_together_overspend_what_each_fits_in(transactional_db, qa_agent, default_budget):
    """$1 left, two works of $0.60 started at the same moment: the second waits for the first's
    transaction, then sees its hold and is refused (LiteLLM #34732: concurrent requests passed)."""
    charge(qa_agent, "29", "spent")
    sources = {"first": ModelVersionFactory(), "second": ModelVersionFactory()}

    def start(name: str) -> str:
        budget_check(agent=qa_agent, estimate_usd="0.60", actor=None, hold_for=sources[name], operation="benchmark")
        return "started"

    results, second_waited = one_after_the_other(start)
    assert second_waited, "the second start did not wait for the first's budget lock"
    assert results["first"] == "started"
    assert isinstance(results["second"], Conflict) and "$0.60 held by work still running" in results["second"].message
    assert list(CostHold.objects.values_list("source_id", flat=True)) == [str(sources["first"].pk)]


# --- prices ----------------------------------------------------------------------------------------------


def test_price_versions_keep_their_history_and_seeding_does_not_overwrite(db):
    admin = UserFactory(username="pricer", is_superuser=True)
    price = price_upsert(model="m", effective_from=date(2026, 1, 1), input_usd_per_million="1", output_usd_per_million="2",
                         source="https://example.com/pricing", source_date=date(2026, 1, 2), actor=admin)
    price_upsert(model="m", effective_from=date(2026, 1, 1), input_usd_per_million="9", output_usd_per_million="9",
                 source="seed", source_date=date(2026, 1, 2), overwrite=False)
    price.refresh_from_db()
    assert price.input_usd_per_million == Decimal("1")
    price_upsert(model="m", effective_from=date(2026, 1, 1), input_usd_per_million="1.5", output_usd_per_million="2",
                 source="https://example.com/pricing", source_date=date(2026, 2, 1), actor=admin)
    history = list(PriceTable.objects.get(pk=price.pk).history.order_by("history_date"))
    assert [(h.history_type, h.input_usd_per_million, h.history_user) for h in history] == [
        ("+", Decimal("1"), admin), ("~", Decimal("1.5"), admin)]
    with pytest.raises(InvalidInput, match="source: say where the prices come from"):
        price_upsert(model="n", effective_from=date(2026, 1, 1), input_usd_per_million="1", output_usd_per_million="1",
                     source=" ", source_date=date(2026, 1, 1))


# --- batches ------------------------------------------------------------------------------------------------------------


def test_a_batch_is_priced_once_per_model_inserted_at_once_and_alerts_once(qa_agent, legal_agent, base_price, default_budget,
                                                                          django_assert_max_num_queries):
    from costs.services import Charge, cost_record_many

    charges = [
        Charge(agent=(qa_agent, legal_agent)[i % 2], operation="inference", model=FT_MODEL, input_tokens=3_000_000,
               output_tokens=1_000_000, idempotency_key=f"outcome:{i}", source=f"outcome {i}")
        for i in range(20)
    ]  # $1 each: $20 = 66.7 % of $30, crossing 25 and 50 together
    with django_assert_max_num_queries(20):
        entries = cost_record_many(charges=charges)
    assert [e.amount_usd for e in entries] == [Decimal("1.000000")] * 20
    assert len({e.pk for e in entries}) == 20
    alerts = list(BudgetAlert.objects.order_by("threshold_percent"))
    assert [(a.threshold_percent, a.spent_usd, a.triggered_by_id) for a in alerts] == [
        (25, Decimal("20"), entries[-1].pk), (50, Decimal("20"), entries[-1].pk)]
    # Retried with two new events: the twenty are not charged again.
    retried = cost_record_many(charges=[*charges, *(Charge(agent=qa_agent, operation="manual", amount_usd="5",
                                                           idempotency_key=f"extra:{i}") for i in range(2))])
    assert [e.pk for e in retried[:20]] == [e.pk for e in entries]
    assert CostEntry.objects.count() == 22
    # $30 = 100 %: 83 and the exhausted notice
    assert sorted(BudgetAlert.objects.values_list("threshold_percent", flat=True)) == [25, 50, 83, 100]
    with pytest.raises(Conflict, match="appears twice in the batch for different charges"):
        cost_record_many(charges=[Charge(agent=qa_agent, operation="manual", amount_usd="1", idempotency_key="dup"),
                                  Charge(agent=qa_agent, operation="storage", amount_usd="1", idempotency_key="dup")])
    with pytest.raises(Conflict, match="idempotency key 'outcome:0' was already used for entry #"):
        cost_record_many(charges=[Charge(agent=legal_agent, operation="inference", amount_usd="1", idempotency_key="outcome:0")])
    # Retried after a price edit: the recorded entries come back as they were, nothing is priced again.
    price_upsert(model="open-mistral-7b", effective_from=base_price.effective_from, input_usd_per_million="1",
                 output_usd_per_million="1", source="corrected", source_date=date(2026, 11, 26))
    assert [e.pk for e in cost_record_many(charges=charges)] == [e.pk for e in entries]
    with pytest.raises(InvalidInput, match=r"charges\[0\]: inference: give input_tokens and output_tokens"):
        cost_record_many(charges=[Charge(agent=qa_agent, operation="inference", model=FT_MODEL, tokens=5, idempotency_key="t")])
    assert CostEntry.objects.count() == 22
