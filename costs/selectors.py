"""Reads of the costs app: prices in force, spend per budget period, burn rate and projection, the
summary the API serves, the series the dashboard draws and the data a report is made of.

Money is summed in SQL (genesis.aggregates.DecimalTotal: exact on PostgreSQL and SQLite alike) and stays Decimal.
A budget's spend is read from the rollup of the ledger (`spend_by_key`), not summed over the ledger."""

from __future__ import annotations

import operator
from collections import defaultdict
from collections.abc import Callable, Collection
from dataclasses import dataclass, field, fields
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from functools import reduce
from typing import Any

from django.contrib.contenttypes.models import ContentType
from django.contrib.contenttypes.prefetch import GenericPrefetch
from django.db import connection
from django.db.models import Count, DecimalField, F, Func, Min, Model, OuterRef, Q, QuerySet, Subquery, Sum, Value
from django.db.models.functions import Coalesce, TruncDate
from django.db.models.lookups import Exact
from django.utils import timezone

from costs import budgeting, pricing
from costs.models import (
    SPEND_BUCKET,
    Budget,
    BudgetAlert,
    CostEntry,
    CostHold,
    CostReport,
    CostSpendBucket,
    CostSpendTotal,
    PriceTable,
)
from genesis.aggregates import DecimalTotal
from genesis.errors import NotFound
from models_app.registry.models import Agent

ZERO = Decimal(0)
_MONEY_SUM = DecimalField(max_digits=20, decimal_places=6)


def _sum_amount() -> DecimalTotal:
    return DecimalTotal("amount_usd")


# --- prices -----------------------------------------------------------------------------------------


# A PriceTable row's columns that make the pure core's Price: its fields, named alike.
_PRICE_COLUMNS = tuple(price_field.name for price_field in fields(pricing.Price))


def price_in_force(*, model: str, on: date | None = None, base_model: str | None = None) -> pricing.Price:
    """The price that applies to `model` on `on` (today by default); a fine-tuned model without prices
    of its own gets its base model's. Raises NotFound with what to do."""
    on = on or timezone.localdate()
    rows = PriceTable.objects.filter(
        model__in=pricing.price_candidates(model, base_model), effective_from__lte=on
    ).values(*_PRICE_COLUMNS)
    try:
        return pricing.resolve_price(model=model, on=on, prices=[pricing.Price(**row) for row in rows], base_model=base_model)
    except pricing.PriceUnknown as exc:
        raise NotFound(str(exc)) from None


def price_first_in_force(*, model: str, start: date, end: date, base_model: str | None = None) -> pricing.Price:
    """The price in force for `model` on `start`, else the first that takes effect from then to `end`
    (inclusive): what a charge for the period from `start` to `end` is made at — a price added from
    the middle of a month applies to that month, which had no price at its first day. NotFound when
    no price is in force at any time in the period."""
    try:
        return price_in_force(model=model, on=start, base_model=base_model)
    except NotFound:
        candidates = pricing.price_candidates(model, base_model)
        first = PriceTable.objects.filter(
            model__in=candidates, effective_from__gt=start, effective_from__lte=end
        ).aggregate(first=Min("effective_from"))["first"]
        if first is None:
            tried = f" or its base model '{candidates[-1]}'" if len(candidates) > 1 else ""
            raise NotFound(
                f"no price for model '{model}'{tried} in force from {start.isoformat()} to {end.isoformat()}; "
                "add one in the admin (Costs and budgets › Prices)"
            ) from None
    return price_in_force(model=model, on=first, base_model=base_model)


def inference_cost(
    *, model: str, input_tokens: int, output_tokens: int, on: date | None = None, base_model: str | None = None
) -> Decimal:
    """What `input_tokens` + `output_tokens` cost on `model` at the prices in force on `on`."""
    price = price_in_force(model=model, on=on, base_model=base_model)
    return pricing.inference_cost(price=price, input_tokens=input_tokens, output_tokens=output_tokens)


def fine_tuning_cost(*, model: str, training_tokens: int, on: date | None = None, base_model: str | None = None) -> Decimal:
    """A fine-tuning job on base `model` over `training_tokens`, never below the minimum fee."""
    price = price_in_force(model=model, on=on, base_model=base_model)
    try:
        return pricing.fine_tuning_cost(price=price, training_tokens=training_tokens)
    except pricing.PriceUnknown as exc:
        raise NotFound(str(exc)) from None


# --- budgets ------------------------------------------------------------------------------------------


def budgets_covering(*, agent_ids: Collection[int]) -> QuerySet[Budget]:
    """Active budgets that count the spend of any of `agent_ids`: the all-agents ones and the agents'
    own, in a fixed order so that services locking several of them never deadlock."""
    return Budget.objects.filter(active=True).filter(Q(agent__isnull=True) | Q(agent_id__in=agent_ids)).order_by("pk")


def entries_in_scope(*, budget: Budget, period: budgeting.Period) -> QuerySet[CostEntry]:
    return _entries_between(agent_id=budget.agent_id, start=period.start, end=period.end)


def budget_spent(*, budget: Budget, period: budgeting.Period) -> Decimal:
    """What the budget's agents spent in `period`: read from the rollup (`spend_by_key`)."""
    return sum(spend_by_key(agent_id=budget.agent_id, start=period.start, end=period.end).values(), ZERO)


# --- the rollup of spend ---------------------------------------------------------------------------------
# The ledger's spend by agent, operation and quarter hour (costs.models.CostSpendBucket) and in all
# (CostSpendTotal), kept by the ledger's trigger on PostgreSQL (migration 0013): what a budget has
# spent is read from a few of their rows, not summed over the ledger — each charge reads it under its
# budgets' locks, and a sum over a million entries took 0.45 s (bench/ledger_scale).

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)  # the buckets' origin, as the trigger's date_bin counts them


# The databases (aliases) whose rollup this process has seen complete: once migration 0013's backfill
# has completed it stays so, and the reads ask no more.
_ROLLUP_COMPLETE: set[str] = set()


def rollup_kept() -> bool:
    """Whether the rollup holds the whole ledger: on PostgreSQL once migration 0013's backfill has
    completed (the trigger counts new entries from its start; until it completes, the older ones are
    not all in — a budget check during the upgrade sums the ledger, slower but right). SQLite has no
    trigger: its reads always sum the ledger."""
    if connection.vendor != "postgresql":
        return False
    if connection.alias not in _ROLLUP_COMPLETE:
        with connection.cursor() as cursor:
            # The table is missing before migration 0013's step A (new code started before `migrate`, or
            # during it): the ledger's sum then. A query on a missing table would abort the caller's
            # transaction, a charge's included.
            cursor.execute("SELECT to_regclass('costs_spend_backfill') IS NOT NULL")
            if not cursor.fetchone()[0]:
                return False
            cursor.execute("SELECT completed_at IS NOT NULL FROM costs_spend_backfill WHERE id = 1")
            row = cursor.fetchone()
        if row is None or not row[0]:
            return False
        _ROLLUP_COMPLETE.add(connection.alias)
    return True


def spend_bucket_floor(at: datetime) -> datetime:
    """The start (UTC) of the quarter hour that holds `at`."""
    return _EPOCH + (at - _EPOCH) // SPEND_BUCKET * SPEND_BUCKET


def _bucket_ceil(at: datetime) -> datetime:
    floor = spend_bucket_floor(at)
    return floor if floor == at else floor + SPEND_BUCKET


def _whole_buckets(*moments: datetime | None) -> bool:
    return all(moment is None or spend_bucket_floor(moment) == moment for moment in moments)


SpendByKey = dict[tuple[int, str], Decimal]  # (agent id, operation) → spend


def _ledger_spend(entries: QuerySet[CostEntry], into: SpendByKey) -> SpendByKey:
    for row in entries.values("agent_id", "operation").annotate(total=_sum_amount()).order_by():
        key = (row["agent_id"], row["operation"])
        into[key] = into.get(key, ZERO) + row["total"]
    return into


def _entries_between(*, agent_id: int | None, start: datetime | None, end: datetime | None) -> QuerySet[CostEntry]:
    entries = CostEntry.objects.all() if agent_id is None else CostEntry.objects.filter(agent_id=agent_id)
    if start is not None:
        entries = entries.filter(occurred_at__gte=start)
    if end is not None:
        entries = entries.filter(occurred_at__lt=end)
    return entries


def spend_by_key(*, agent_id: int | None, start: datetime | None, end: datetime | None) -> SpendByKey:
    """Spend per (agent id, operation) of the entries of `agent_id` (None: every agent) that occurred in
    [start, end) (None: unbounded), reversals included; keys without entries are left out.

    From the rollup: the totals for the whole ledger, else the whole quarter hours inside the window,
    plus — in one more query — the ledger's own sum over the parts of the window that are not whole
    quarter hours (none for a budget period: it starts and ends at local midnights; at most a quarter
    hour each side for a burn-rate window ending now). On SQLite: the ledger's sum."""
    if not rollup_kept():
        return _ledger_spend(_entries_between(agent_id=agent_id, start=start, end=end), {})
    scope = {} if agent_id is None else {"agent_id": agent_id}
    if start is None and end is None:
        totals = CostSpendTotal.objects.filter(**scope).values_list("agent_id", "operation", "charged_usd", "reversed_usd")
        return {(agent, operation): charged + reversed_ for agent, operation, charged, reversed_ in totals}
    inner_start = None if start is None else _bucket_ceil(start)
    inner_end = None if end is None else spend_bucket_floor(end)
    edges = [(start, inner_start), (inner_end, end)]
    if inner_start is not None and inner_end is not None and inner_start > inner_end:
        # Within one quarter hour: all of it is an edge, and no quarter hour is whole.
        inner_end, edges = inner_start, [(start, end)]
    buckets = CostSpendBucket.objects.filter(**scope)
    if inner_start is not None:
        buckets = buckets.filter(bucket_start__gte=inner_start)
    if inner_end is not None:
        buckets = buckets.filter(bucket_start__lt=inner_end)
    spend: SpendByKey = {
        (row["agent_id"], row["operation"]): row["total"]
        for row in buckets.values("agent_id", "operation").annotate(total=Sum("amount_usd")).order_by()
    }
    parts = [Q(occurred_at__gte=low, occurred_at__lt=high) for low, high in edges if low is not None and high is not None and low < high]
    if parts:
        _ledger_spend(_entries_between(agent_id=agent_id, start=None, end=None).filter(reduce(operator.or_, parts)), spend)
    return spend


def ledger_keys_recorded(*, keys: Collection[str]) -> set[str]:
    """Which of the idempotency `keys` the ledger holds already."""
    return set(CostEntry.objects.filter(idempotency_key__in=list(keys)).values_list("idempotency_key", flat=True))


@dataclass(frozen=True)
class LedgerSelection:
    entries: int
    total: Decimal


def ledger_selection(*, entries: QuerySet[CostEntry]) -> LedgerSelection:
    """How many `entries` there are (e.g. the ledger rows a changelist's filters select) and their sum,
    in one pass over them."""
    totals = entries.order_by().aggregate(entries=Count("pk"), total=_sum_amount())
    return LedgerSelection(entries=totals["entries"], total=totals["total"])


def ledger_search(*, term: str) -> Q:
    """The ledger entries a search for `term` finds: the entry of that idempotency key, the entries of
    that model id, or those of the agent of that slug — each an exact match one of the ledger's indexes
    answers (costs_costentry_idempotency_key_key, costs_entry_model, costs_entry_agent_time), so a
    search reads only the rows it finds. The agent is looked up first: its slug in the same WHERE (a
    join) would make PostgreSQL scan the whole ledger to test each entry's agent."""
    agent_ids = list(Agent.objects.filter(slug=term).values_list("pk", flat=True))
    return Q(idempotency_key=term) | Q(model=term) | Q(agent_id__in=agent_ids)


def holds_with_work(holds: QuerySet[CostHold]) -> QuerySet[CostHold]:
    """`holds` with each one's work (its source object) read with the rows the work's name follows —
    its own foreign keys ("run #4 qa_agent: ft:… vs open-mistral-7b") —, one query per kind of work
    instead of a few per hold. The kinds are read from the holds: costs knows none of the apps that
    place them (they sit above it)."""
    kinds = ContentType.objects.filter(pk__in=CostHold.objects.order_by().values("source_type_id").distinct())
    works = [_with_foreign_keys(model) for model in (kind.model_class() for kind in kinds) if model is not None]
    return holds.prefetch_related(GenericPrefetch("source_object", works))


def _with_foreign_keys(model: type[Model]) -> QuerySet[Any]:
    return model._default_manager.select_related(*(f.name for f in model._meta.concrete_fields if f.many_to_one))


def open_holds(*, now: datetime | None = None) -> QuerySet[CostHold]:
    """Holds of paid work still running: not released and not expired."""
    return CostHold.objects.filter(released_at__isnull=True, expires_at__gt=now or timezone.now())


def budget_held(*, budget: Budget, now: datetime | None = None) -> Decimal:
    """Money set aside by running work of the budget's agents (whatever the period: it lands now):
    the one rule of `with_held`, for one budget. Rounded to the micro-dollar every hold has, as
    SQLite (the embedded mode) hands a sum back as a float."""
    one = with_held(Budget.objects.filter(pk=budget.pk), now=now)
    held = one.values_list("held_usd", flat=True).get()  # type: ignore[misc]  # django-stubs: an annotation
    return pricing.to_ledger_amount(held)


def with_held(budgets: QuerySet[Budget], *, now: datetime | None = None) -> QuerySet[Budget]:
    """`budgets` annotated with `held_usd`: open holds of the budget's agent, or of every agent for an
    all-agents budget — in the same query (a list of budgets costs no query more per row)."""
    # An all-agents budget (agent NULL) counts every hold: the hold's agent compared with itself.
    holds = open_holds(now=now).filter(agent_id=Coalesce(OuterRef("agent_id"), F("agent_id")))
    # Open holds all have released_at NULL: grouping by it sums them in one row.
    total = holds.order_by().values("released_at").annotate(total=Sum("amount_usd")).values("total")
    return budgets.annotate(held_usd=Coalesce(Subquery(total, output_field=_MONEY_SUM), Value(ZERO), output_field=_MONEY_SUM))


class _LedgerSum(Coalesce):
    """COALESCE(a summing subquery, 0), read back exact to the ledger's micro-dollar: SQLite (the
    embedded mode) sums decimals as floats, and a budget at 30.0000000001 % would read as past 30 %."""

    def __init__(self, subquery: Subquery) -> None:
        super().__init__(subquery, Value(ZERO), output_field=_MONEY_SUM)

    def get_db_converters(self, connection: Any) -> list[Any]:
        return [*super().get_db_converters(connection), self._exact]

    def _exact(self, value: Any, expression: Any, connection: Any) -> Decimal:
        return Decimal(value).quantize(pricing.LEDGER_QUANTUM)


def with_spent(budgets: QuerySet[Budget], *, at: datetime | None = None) -> QuerySet[Budget]:
    """`budgets` annotated with `spent_usd`: what `budget_spent` gives for the period of each budget
    that contains `at` (now) — in the same query, so a list of budgets costs no query more per row.
    From the rollup (a total budget from the totals, the others from the quarter hours of their
    period), unless there is none (SQLite) or a period is not whole quarter hours."""
    at = at or timezone.localtime()
    periods = [budgeting.period_containing(name, at) for name in budgeting.PERIODS]
    if not rollup_kept() or not _whole_buckets(*(moment for period in periods for moment in (period.start, period.end))):
        return _with_spent_from_ledger(budgets, at=at)
    scope = Coalesce(OuterRef("agent_id"), F("agent_id"))  # NULL: every agent
    totals = CostSpendTotal.objects.filter(Exact(OuterRef("period"), Value(budgeting.PERIOD_TOTAL)), agent_id=scope)
    total = totals.order_by().annotate(
        total=Func(F("charged_usd") + F("reversed_usd"), function="SUM", output_field=_MONEY_SUM)
    ).values("total")
    in_period = Q(pk__in=[])  # a total budget: no quarter hours (the totals above)
    for name, period in zip(budgeting.PERIODS, periods, strict=True):
        if period.start is not None and period.end is not None:
            in_period |= Q(Exact(OuterRef("period"), Value(name)), bucket_start__gte=period.start, bucket_start__lt=period.end)
    buckets = CostSpendBucket.objects.filter(in_period, agent_id=scope).order_by().annotate(
        total=Func(F("amount_usd"), function="SUM", output_field=_MONEY_SUM)
    ).values("total")
    return budgets.annotate(spent_usd=_LedgerSum(Subquery(total)) + _LedgerSum(Subquery(buckets)))


def _with_spent_from_ledger(budgets: QuerySet[Budget], *, at: datetime) -> QuerySet[Budget]:
    entries = CostEntry.objects.filter(agent_id=Coalesce(OuterRef("agent_id"), F("agent_id")))  # NULL: every agent
    in_period = Q()
    for name in budgeting.PERIODS:  # the budget's own period, as period_containing gives it for `at`
        period = budgeting.period_containing(name, at)
        window = Q(Exact(OuterRef("period"), Value(name)))
        if period.start is not None:
            window &= Q(occurred_at__gte=period.start)
        if period.end is not None:
            window &= Q(occurred_at__lt=period.end)
        in_period |= window
    entries = entries.filter(in_period)
    # SUM as a plain function: one row over the whole scope, no GROUP BY to add.
    total = entries.order_by().annotate(total=Func(F("amount_usd"), function="SUM", output_field=_MONEY_SUM)).values("total")
    return budgets.annotate(spent_usd=_LedgerSum(Subquery(total)))


@dataclass(frozen=True)
class BudgetStatus:
    budget: Budget
    period: budgeting.Period
    spent: Decimal
    held: Decimal  # set aside by work still running
    percent: Decimal
    thresholds: list[budgeting.Threshold]
    reached: list[budgeting.Threshold]
    projection: budgeting.Projection

    @property
    def limit(self) -> Decimal:
        return self.budget.amount_usd

    @property
    def remaining(self) -> Decimal:
        """What is left for new work: the limit less the spend and the holds (as budget_check counts it)."""
        return max(self.limit - self.spent - self.held, ZERO)


def budget_status(*, budget: Budget, now: datetime | None = None) -> BudgetStatus:
    """Spend in the budget's current period, the thresholds it has reached, burn rate and projection."""
    now = timezone.localtime(now or timezone.now())
    period = budgeting.period_containing(budget.period, now)
    spent = budget_spent(budget=budget, period=period)
    # The first entry's time: an index answers it (costs_entry_agent_time, or occurred_at's own).
    first = entries_in_scope(budget=budget, period=period).aggregate(first=Min("occurred_at"))["first"]
    thresholds = budgeting.parse_thresholds(budget.thresholds)
    window_start = budgeting.burn_window_start(now=now, period_start=period.start, first_entry_at=first)
    # The window [window_start, now] within the period; a microsecond (the ledger's resolution) makes `now` count.
    window_end = now + timedelta(microseconds=1) if period.end is None else min(now + timedelta(microseconds=1), period.end)
    window_spend = sum(spend_by_key(agent_id=budget.agent_id, start=max(filter(None, (window_start, period.start))),
                                    end=window_end).values(), ZERO)
    projection = budgeting.project_exhaustion(
        spent=spent, limit=budget.amount_usd, window_spend=window_spend, window_start=window_start, now=now,
        period_end=period.end,
    )
    return BudgetStatus(
        budget=budget,
        period=period,
        spent=spent,
        held=budget_held(budget=budget, now=now),
        percent=budgeting.percent_used(spent=spent, limit=budget.amount_usd),
        thresholds=thresholds,
        reached=budgeting.thresholds_reached(spent=spent, limit=budget.amount_usd, thresholds=thresholds),
        projection=projection,
    )


def budget_by_name(*, name: str) -> Budget:
    budget = Budget.objects.select_related("agent").filter(name=name).first()
    if budget is None:
        # Not the list of budgets: a caller (an agent's API key) may only see the budgets it may read.
        raise NotFound(f"budget '{name}' does not exist")
    return budget


@dataclass(frozen=True)
class SpendSplit:
    by_agent: dict[str, Decimal]  # agent slug → spend, by slug
    by_operation: dict[str, Decimal]  # operation → spend, by operation


def spend_split(*, budget: Budget | None = None, period: budgeting.Period | None = None) -> SpendSplit:
    """Spend by agent and by operation — within a budget's scope and period (default: its current
    one) if given, else of the whole ledger — from the rollup's rows grouped by agent id and operation
    (`spend_by_key`; the agents named from their table). Summed over the ledger it took 0.3 s at a
    million entries (a total budget's period is the whole ledger)."""
    if budget is None:
        spend = spend_by_key(agent_id=None, start=None, end=None)
    else:
        period = period or budgeting.period_containing(budget.period, timezone.localtime())
        spend = spend_by_key(agent_id=budget.agent_id, start=period.start, end=period.end)
    slugs = dict(Agent.objects.values_list("pk", "slug"))
    by_agent: dict[str, Decimal] = defaultdict(lambda: ZERO)
    by_operation: dict[str, Decimal] = defaultdict(lambda: ZERO)
    for (agent_id, operation), total in spend.items():
        by_agent[slugs[agent_id]] += total
        by_operation[operation] += total
    return SpendSplit(by_agent=dict(sorted(by_agent.items())), by_operation=dict(sorted(by_operation.items())))


def cost_summary(*, budget: Budget, now: datetime | None = None, visible_agents: frozenset[str] | None = None) -> dict[str, Any]:
    """What GET /api/v1/costs/summary answers, exactly the contract's keys: money as exact decimal
    strings, spend within the budget's scope and current period. With `visible_agents` (an API key's
    agents) `by_agent` names only those: one agent's key must not learn another agent's spend; the
    total and the split by operation stay the budget's."""
    status = budget_status(budget=budget, now=now)
    split = spend_split(budget=budget, period=status.period)
    return {
        "budget_usd": budgeting.money_str(budget.amount_usd),
        "spent_usd": budgeting.money_str(status.spent),
        "percent": float(budgeting.percent_shown(status.percent, places=2)),
        "thresholds_crossed": [threshold.percent for threshold in status.reached],
        "by_agent": {k: budgeting.money_str(v) for k, v in split.by_agent.items() if visible_agents is None or k in visible_agents},
        "by_operation": {k: budgeting.money_str(v) for k, v in split.by_operation.items()},
    }


# --- series for the dashboard ----------------------------------------------------------------------


@dataclass(frozen=True)
class DailySeries:
    days: list[date]
    series: dict[str, list[Decimal]]  # name → spend per day, aligned with `days`

    @property
    def total(self) -> Decimal:
        return sum((sum(values, ZERO) for values in self.series.values()), ZERO)


def daily_spend(*, dimension: str, days: int = 30, budget: Budget | None = None, today: date | None = None) -> DailySeries:
    """Spend per day for the last `days` days, one series per agent or operation (within a budget's
    agent scope when given)."""
    field_name = {"agent": "agent__slug", "operation": "operation"}[dimension]
    today = today or timezone.localdate()
    first_day = today - timedelta(days=days - 1)
    start = timezone.make_aware(datetime.combine(first_day, datetime.min.time()))
    # From the rollup's quarter hours when every day of the series starts at one: each lies within a day.
    midnights = [timezone.make_aware(datetime.combine(first_day + timedelta(days=n), datetime.min.time())) for n in range(days + 1)]
    source: QuerySet[Any] = CostEntry.objects.all()
    moment = "occurred_at"
    if rollup_kept() and _whole_buckets(*midnights):
        source, moment = CostSpendBucket.objects.all(), "bucket_start"
    entries = source.filter(**{f"{moment}__gte": start})
    if budget is not None and budget.agent_id is not None:
        entries = entries.filter(agent_id=budget.agent_id)
    rows = entries.annotate(day=TruncDate(moment)).values("day", field_name).annotate(total=DecimalTotal("amount_usd"))
    all_days = [first_day + timedelta(days=offset) for offset in range(days)]
    index = {day: position for position, day in enumerate(all_days)}
    series: dict[str, list[Decimal]] = defaultdict(lambda: [ZERO] * days)
    for row in rows:
        if row["day"] in index:
            series[row[field_name]][index[row["day"]]] += row["total"]
    return DailySeries(days=all_days, series=dict(sorted(series.items())))


def recent_alerts(*, budget: Budget | None = None, limit: int = 50) -> QuerySet[BudgetAlert]:
    alerts = BudgetAlert.objects.select_related("budget", "triggered_by__agent")
    if budget is not None:
        alerts = alerts.filter(budget=budget)
    return alerts.order_by("-created_at", "-id")[:limit]


# --- reports --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class SpendRow:
    day: date
    agent: str
    operation: str
    model: str
    entries: int
    tokens: int
    amount: Decimal
    # Of `amount`, what entries marked tokens_estimated charged (their provider reported no usage).
    estimated: Decimal = ZERO


@dataclass(frozen=True)
class BudgetLine:
    name: str
    scope: str
    period: str
    limit: Decimal
    spent: Decimal
    percent: Decimal
    thresholds: list[budgeting.Threshold]
    reached: list[int]
    hard_limit: bool
    burn_usd_per_day: Decimal
    exhausted: bool  # nothing left in the period
    exhaustion_at: datetime | None
    within_period: bool


@dataclass(frozen=True)
class AlertLine:
    budget: str
    period: str
    threshold: int
    severity: str
    spent: Decimal
    limit: Decimal
    created_at: datetime
    delivery: str
    # When spend fell back below the threshold (budget raised, charge reversed): the alert stays as sent,
    # and the threshold may fire again — a second line for it is not a duplicate.
    rearmed_at: datetime | None = None


@dataclass(frozen=True)
class FineTuningJobLine:
    job: str
    agent: str
    model: str
    status: str
    created_at: datetime | None
    cost: Decimal


@dataclass(frozen=True)
class ReportData:
    as_of: datetime
    rows: list[SpendRow]
    since: date | None = None  # the first day of the spend listed; None: the whole ledger
    budgets: list[BudgetLine] = field(default_factory=list)
    alerts: list[AlertLine] = field(default_factory=list)
    fine_tuning_jobs: list[FineTuningJobLine] = field(default_factory=list)

    @property
    def total(self) -> Decimal:
        return sum((row.amount for row in self.rows), ZERO)

    @property
    def entry_count(self) -> int:
        return sum(row.entries for row in self.rows)

    @property
    def estimated_total(self) -> Decimal:
        """Of the total, what rests on estimated token counts."""
        return sum((row.estimated for row in self.rows), ZERO)


def charged_by_source(*, model: type[Any], source_ids: Collection[int], as_of: datetime | None = None) -> dict[int, Decimal]:
    """What the ledger had charged each row of `model` among `source_ids` by `as_of` (default: holds
    now) — entries whose source object is that row, reversals included —, in one query; rows with no
    entry are left out."""
    entries = CostEntry.objects.filter(source_type=ContentType.objects.get_for_model(model), source_id__in=[str(pk) for pk in source_ids])
    if as_of is not None:
        entries = entries.filter(recorded_at__lte=as_of)
    rows = entries.values("source_id").annotate(total=_sum_amount())
    return {int(row["source_id"]): row["total"] for row in rows}


# The report lists fine-tuning jobs, which the costs app does not know (it sits below fine-tuning): the
# fine-tuning domain registers how to read them (models_app/apps.py). No source, no section.
FineTuningJobsSource = Callable[..., list[FineTuningJobLine]]
_fine_tuning_jobs_source: FineTuningJobsSource | None = None


def register_fine_tuning_jobs_source(source: FineTuningJobsSource) -> None:
    """`source(*, as_of, limit)` returns the newest jobs created by `as_of`, with their cost by then."""
    global _fine_tuning_jobs_source
    _fine_tuning_jobs_source = source


def fine_tuning_jobs_for_report(*, as_of: datetime, limit: int = 100) -> list[FineTuningJobLine]:
    return _fine_tuning_jobs_source(as_of=as_of, limit=limit) if _fine_tuning_jobs_source else []


def cost_report_data(*, as_of: datetime | None = None, since: date | None = None) -> ReportData:
    """Everything a cost report holds, for the ledger as it stood at `as_of` (entries recorded by then);
    with `since`, the spend of a period: the entries that occurred from that day on (local time) up to
    `as_of` — one dated later (a provider's clock ahead of ours) belongs to a later period, as one
    recorded later does. Budgets, alerts and jobs are the same either way: each budget's own period,
    the last 100 of the others. `as_of` comes back in local time, as a report names its day by it (the
    report keyed daily:2027-04-01 in Paris was titled 2027-03-31 in UTC)."""
    as_of = timezone.localtime(as_of or timezone.now())
    entries = CostEntry.objects.filter(recorded_at__lte=as_of)
    if since is not None:
        entries = entries.filter(
            occurred_at__gte=timezone.make_aware(datetime.combine(since, datetime.min.time())), occurred_at__lte=as_of
        )
    grouped = (
        entries.annotate(day=TruncDate("occurred_at"))
        .values("day", "agent__slug", "operation", "model")
        .annotate(total=_sum_amount(), n=Count("id"), token_sum=Coalesce(Sum("tokens"), Value(0)),
                  estimated=DecimalTotal("amount_usd", filter=Q(tokens_estimated=True)))
        .order_by("day", "agent__slug", "operation", "model")
    )
    rows = [
        SpendRow(
            day=row["day"], agent=row["agent__slug"], operation=row["operation"], model=row["model"],
            entries=row["n"], tokens=int(row["token_sum"]), amount=row["total"], estimated=row["estimated"],
        )
        for row in grouped
    ]
    budgets = []
    for budget in Budget.objects.filter(active=True).select_related("agent").order_by("name"):
        status = budget_status(budget=budget, now=as_of)
        budgets.append(
            BudgetLine(
                name=budget.name,
                scope=budget.agent.slug if budget.agent else "all agents",
                period=status.period.label,
                limit=budget.amount_usd,
                spent=status.spent,
                percent=status.percent,
                thresholds=status.thresholds,
                reached=[threshold.percent for threshold in status.reached],
                hard_limit=budget.hard_limit,
                burn_usd_per_day=status.projection.burn_usd_per_day,
                exhausted=status.projection.exhausted,
                exhaustion_at=status.projection.exhaustion_at,
                within_period=status.projection.within_period,
            )
        )
    alerts = [
        AlertLine(
            budget=alert.budget.name, period=alert.period_key, threshold=alert.threshold_percent,
            severity=alert.severity, spent=alert.spent_usd, limit=alert.budget_usd, created_at=alert.created_at,
            delivery=alert.delivery, rearmed_at=alert.rearmed_at,
        )
        for alert in BudgetAlert.objects.filter(created_at__lte=as_of).select_related("budget").order_by("-created_at", "-id")[:100]
    ]
    return ReportData(
        as_of=as_of, rows=rows, since=since, budgets=budgets, alerts=alerts, fine_tuning_jobs=fine_tuning_jobs_for_report(as_of=as_of)
    )


def daily_report_missed(*, now: datetime, after: timedelta) -> date | None:
    """The day whose daily cost report beat fired (its enabled schedule's last run, within the last
    day and more than `after` ago) but no report row exists for — its message was lost, or never
    published: beat records the run before it publishes. None when nothing is missing."""
    from django_celery_beat.models import PeriodicTask  # the schedule tables; costs does not own them

    fired = (
        PeriodicTask.objects.filter(
            task="costs.daily_cost_report", enabled=True, last_run_at__gt=now - timedelta(days=1), last_run_at__lt=now - after
        )
        .order_by("-last_run_at")
        .values_list("last_run_at", flat=True)
        .first()
    )
    if fired is None:
        return None
    day = timezone.localdate(fired)
    return None if CostReport.objects.filter(schedule_key=f"daily:{day.isoformat()}").exists() else day
