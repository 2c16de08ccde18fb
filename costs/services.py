"""Every write of the costs app: prices, ledger entries and their reversals, budgets, the budget check
that guards paid work, alert delivery, storage charges and reports.

Exactly-once alerts: `cost_record` locks (SELECT … FOR UPDATE) every budget that covers the entry's
agent, in primary-key order, before inserting the entry, and evaluates the thresholds in the same
transaction. Entries counted by one budget are therefore added one at a time, each sees the total
including all earlier ones, and the unique constraint on (budget, period, threshold) among the alerts
still armed backs it up. An alert fires when spend crosses its threshold upward: one whose threshold
the spend no longer reaches (the budget was raised, a charge reversed) is re-armed, not deleted.
(LiteLLM's max_budget was bypassed by concurrent requests, #34732: its check read a cached total.)
"""

# Long: the ledger, the budget check, the holds and the alerts take the same budget locks in the same
# order (above); they stay in one module so that protocol is read and changed in one place.

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from decimal import ROUND_HALF_UP, Decimal, InvalidOperation
from functools import partial
from typing import Any

from django.conf import settings
from django.contrib.contenttypes.models import ContentType
from django.db import IntegrityError, models, transaction
from django.utils import timezone

from costs import budgeting, pricing, reports, selectors
from costs.models import (
    IDEMPOTENCY_KEY_MAX_LENGTH,
    REPORT_TRANSITIONS,
    Budget,
    BudgetAlert,
    BudgetOverride,
    CostEntry,
    CostHold,
    CostReport,
    Operation,
    PriceTable,
)
from genesis import notifications
from genesis.errors import Conflict, InvalidInput, NotFound, PermissionDenied
from genesis.history import record_history
from genesis.integrity import UniqueKey, is_unique_violation
from genesis.jobs import advance, check_move
from genesis.permissions import Actor, require_permission
from genesis.tasks import send_task

logger = logging.getLogger(__name__)

OVERRIDE_PERMISSION = "costs.override_budget"
# Budget alerts are redelivered as every notice is (genesis.notifications: attempts, lease).
MAX_ALERT_DELIVERY_ATTEMPTS = notifications.MAX_DELIVERY_ATTEMPTS
ALERT_DELIVERY_LEASE = notifications.DELIVERY_LEASE
# Token counts are BigIntegerField columns.
MAX_TOKENS = 2**63 - 1

# The unique constraints whose refusal these services expect (any other integrity error, another
# unique constraint's included, surfaces as itself): a charge's key recorded by a concurrent writer, a
# reversal written or its key taken meanwhile, an alert raised already.
ENTRY_KEY_TAKEN = UniqueKey.field(CostEntry, "idempotency_key")
ENTRY_REVERSED_ALREADY = UniqueKey.field(CostEntry, "reverses")
ALERT_RAISED_ALREADY = UniqueKey.constraint(BudgetAlert, "one_armed_alert_per_budget_period_threshold")


def _decimal(value: Any, *, name: str, column: models.Field | models.ForeignObjectRel | None = None) -> Decimal:
    """`value` as a finite Decimal, or InvalidInput naming `name`. With `column` (the model field it
    will be stored in) it is rounded half-up to the column's decimal places, and refused when it has
    more whole digits than the column holds — the one place amounts are checked against the schema."""
    try:
        amount = value if isinstance(value, Decimal) else Decimal(str(value).strip())
    except (InvalidOperation, ValueError):
        raise InvalidInput(f"{name}: '{value}' is not a number of dollars, e.g. 2.50") from None
    if not amount.is_finite():
        raise InvalidInput(f"{name}: '{value}' is not a number of dollars, e.g. 2.50")
    if not isinstance(column, models.DecimalField):
        return amount
    quantum = Decimal(1).scaleb(-column.decimal_places)
    bound = Decimal(10) ** (column.max_digits - column.decimal_places)
    # The exponent is compared first, without arithmetic: abs(), a comparison or quantize on 1E+1000000
    # would raise decimal.Overflow, and rounding 1E+40 to micro-dollars would exceed the precision.
    whole_digits = column.max_digits - column.decimal_places
    if amount.adjusted() >= whole_digits or abs(amount := amount.quantize(quantum, rounding=ROUND_HALF_UP)) >= bound:
        raise InvalidInput(
            f"{name}: {value} is too large; it can be at most {bound - quantum:,f} "
            f"({column.max_digits - column.decimal_places} digits before the decimal point)"
        )
    return amount


def _ledger_amount(value: Any, *, name: str = "amount_usd") -> Decimal:
    return _decimal(value, name=name, column=CostEntry._meta.get_field("amount_usd"))


def _check_tokens(**counts: int | None) -> None:
    for name, count in counts.items():
        if count is None:
            continue
        if count < 0:
            raise InvalidInput(f"{name}: cannot be negative")
        if count > MAX_TOKENS:
            raise InvalidInput(f"{name}: {count} is too large; it can be at most {MAX_TOKENS:,}")


# --- prices ---------------------------------------------------------------------------------------------


@transaction.atomic
def price_upsert(
    *,
    model: str,
    effective_from: date,
    input_usd_per_million: Decimal | str,
    output_usd_per_million: Decimal | str,
    source: str,
    source_date: date,
    training_usd_per_million: Decimal | str | None = None,
    fine_tuning_minimum_usd: Decimal | str = pricing.DEFAULT_FINE_TUNING_MINIMUM_USD,
    storage_usd_per_month: Decimal | str = pricing.DEFAULT_STORAGE_USD_PER_MONTH,
    note: str = "",
    actor: Actor = None,
    overwrite: bool = True,
) -> PriceTable:
    """Create or change the price version of `model` from `effective_from`. A price change is a new
    version with a later date; editing a version is kept in its history. With `overwrite=False` an
    existing version is left as it is (so re-seeding never undoes an edit made in the admin)."""
    require_permission(actor=actor, permission="costs.change_pricetable", action="edit prices")
    model = model.strip()
    if not model:
        raise InvalidInput("model: must not be empty")
    if not source.strip():
        raise InvalidInput("source: say where the prices come from (a URL or document)")
    given = {
        "input_usd_per_million": input_usd_per_million,
        "output_usd_per_million": output_usd_per_million,
        "training_usd_per_million": None if training_usd_per_million == "" else training_usd_per_million,
        "fine_tuning_minimum_usd": fine_tuning_minimum_usd,
        "storage_usd_per_month": storage_usd_per_month,
    }
    values = {
        name: None if value is None else _decimal(value, name=name, column=PriceTable._meta.get_field(name))
        for name, value in given.items()
    }
    for name, value in values.items():
        if value is not None and value < 0:
            raise InvalidInput(f"{name}: a price cannot be negative")
    price = PriceTable.objects.select_for_update().filter(model=model, effective_from=effective_from).first()
    if price is None:
        price = PriceTable(model=model, effective_from=effective_from, created_by=actor)
        reason = "created"
    elif not overwrite:
        return price
    else:
        reason = "updated"
    fields: dict[str, object] = {**values, "source": source.strip(), "source_date": source_date, "note": note}
    for name, field_value in fields.items():
        setattr(price, name, field_value)
    record_history(price, actor=actor, reason=reason)
    price.save()
    return price


# --- the ledger -------------------------------------------------------------------------------------------

# Operations priced from input and output tokens.
_TOKEN_PRICED = (Operation.INFERENCE, Operation.BENCHMARK, Operation.DATA_PREP)


def _amount_for(
    *, operation: str, amount_usd: Any, model: str, base_model: str | None, tokens: int | None,
    input_tokens: int | None, output_tokens: int | None, on: date,
) -> Decimal:
    if amount_usd is not None:
        amount = _ledger_amount(amount_usd)
        if amount < 0:
            raise InvalidInput(
                f"amount_usd: {amount} is negative; the ledger is append-only — correct an entry by reversing it"
            )
        return amount
    if not model:
        raise InvalidInput("give amount_usd, or a model and its tokens to price")
    if operation in _TOKEN_PRICED:
        if input_tokens is None or output_tokens is None:
            raise InvalidInput(f"{operation}: give input_tokens and output_tokens (input and output are priced differently)")
        cost = selectors.inference_cost(model=model, input_tokens=input_tokens, output_tokens=output_tokens, on=on, base_model=base_model)
    elif operation == Operation.FINE_TUNING:
        if tokens is None:
            raise InvalidInput("fine_tuning: give the training tokens (tokens) or the provider's reported cost (amount_usd)")
        cost = selectors.fine_tuning_cost(model=model, training_tokens=tokens, on=on, base_model=base_model)
    elif operation == Operation.STORAGE:
        cost = pricing.storage_cost(price=selectors.price_in_force(model=model, on=on, base_model=base_model))
    else:
        raise InvalidInput(f"{operation}: give amount_usd")
    return _ledger_amount(cost, name="amount_usd (computed from the tokens)")


@dataclass(frozen=True)
class _ChargeIdentity:
    """What makes a retry the same charge: who, what kind, and the row that caused it. Not the amount,
    which a retry recomputes at a later time or after a price edit, nor the free-text `source` label."""

    agent_id: int
    operation: str
    source_type_id: int | None
    source_id: str

    @classmethod
    def of_entry(cls, entry: CostEntry) -> _ChargeIdentity:
        return cls(entry.agent_id, entry.operation, entry.source_type_id, entry.source_id)

    @classmethod
    def of_request(cls, *, agent: Any, operation: str, source_object: models.Model | None) -> _ChargeIdentity:
        if source_object is None:
            return cls(agent.pk, operation, None, "")
        return cls(agent.pk, operation, ContentType.objects.get_for_model(source_object).pk, str(source_object.pk))


def _original_entry(entry: CostEntry, *, key: str, identity: _ChargeIdentity) -> CostEntry:
    """The entry already recorded under `key` when `identity` is the same charge (a retry), else Conflict."""
    if _ChargeIdentity.of_entry(entry) != identity:
        raise Conflict(
            f"idempotency key '{key}' was already used for entry #{entry.pk} ({entry.amount_usd} USD "
            f"{entry.operation} for agent #{entry.agent_id}); use a new key for a different charge"
        )
    return entry


def _same_values(
    entry: CostEntry, *, key: str, amount_usd: Any, model: str, tokens: int | None, note: str
) -> CostEntry:
    """`entry`, recorded under `key` before, when the values given now are those it was recorded with
    (an exact repeat); Conflict naming the entry and its values otherwise."""
    given = {
        "amount": None if amount_usd is None else _ledger_amount(amount_usd),
        "model": model, "tokens": tokens, "note": note,
    }
    recorded = {"amount": entry.amount_usd, "model": entry.model, "tokens": entry.tokens, "note": entry.note}
    different = [name for name, value in given.items() if value is not None and value != recorded[name]]
    if different:
        values = ", ".join(
            [budgeting.format_usd(entry.amount_usd), entry.operation, f"agent {entry.agent.slug}"]
            + [f"{name} {recorded[name]!r}" for name in ("model", "tokens", "note") if recorded[name] not in (None, "")]
        )
        raise Conflict(
            f"idempotency_key: '{key}' was already used for entry #{entry.pk} ({values}), recorded with a different "
            f"{' and '.join(different)}; repeat it exactly to get that entry back, or use a new key for a new charge"
        )
    return entry


def _recorded(*, key: str, identity: _ChargeIdentity, exact_values: dict[str, Any] | None) -> CostEntry | None:
    """The entry already recorded under `key`, as a repeat gets it back (`_original_entry`; with
    `exact_values`, `_same_values` too), or None when the key is new."""
    existing = CostEntry.objects.select_related("agent").filter(idempotency_key=key).first()
    if existing is None:
        return None
    entry = _original_entry(existing, key=key, identity=identity)
    return entry if exact_values is None else _same_values(entry, key=key, **exact_values)


def _checked_key(
    idempotency_key: str, operation: str, *, tokens: int | None, input_tokens: int | None, output_tokens: int | None,
    where: str = "",
) -> str:
    """The charge's idempotency key, stripped, once the charge's key, operation and token counts are
    valid; InvalidInput naming the field (after `where`, the charge's place in a batch) otherwise."""
    prefix = f"{where}." if where else ""
    key = (idempotency_key or "").strip()
    if not key:
        raise InvalidInput(f"{prefix}idempotency_key: must not be empty" + ("" if where else " (e.g. 'benchmark-result:42')"))
    if len(key) > IDEMPOTENCY_KEY_MAX_LENGTH:
        raise InvalidInput(f"{prefix}idempotency_key: {len(key)} characters, more than the ledger's {IDEMPOTENCY_KEY_MAX_LENGTH}; "
                           "shorten it (hash its long part: the key only has to be the same on a retry)")
    if operation not in Operation.values:
        raise InvalidInput(f"{prefix}operation: '{operation}' is not one of {', '.join(Operation.values)}")
    try:
        _check_tokens(tokens=tokens, input_tokens=input_tokens, output_tokens=output_tokens)
    except InvalidInput as exc:
        raise InvalidInput(f"{prefix}{exc.message}") from None
    total = _total_tokens(tokens, input_tokens, output_tokens)
    if total is not None and total > MAX_TOKENS:
        # Each fits its column, their sum (the entry's `tokens`) not: PostgreSQL refused the row (a 500).
        raise InvalidInput(
            f"{prefix}tokens: input_tokens + output_tokens = {total} is too large; it can be at most {MAX_TOKENS:,} "
            "(give tokens, or split the charge)"
        )
    return key


def _total_tokens(tokens: int | None, input_tokens: int | None, output_tokens: int | None) -> int | None:
    """The entry's `tokens`: as given, else input + output when both are known."""
    if tokens is None and input_tokens is not None and output_tokens is not None:
        return input_tokens + output_tokens
    return tokens


@transaction.atomic
def cost_record(
    *,
    agent: Any,
    operation: str,
    idempotency_key: str,
    amount_usd: Decimal | str | None = None,
    model: str = "",
    base_model: str | None = None,
    tokens: int | None = None,
    input_tokens: int | None = None,
    output_tokens: int | None = None,
    tokens_estimated: bool = False,
    source: str = "",
    source_object: models.Model | None = None,
    actor: Actor = None,
    note: str = "",
    occurred_at: datetime | None = None,
    exact_replay: bool = False,
) -> CostEntry:
    """Put one charge on the ledger and raise the budget alerts it causes.

    The amount is `amount_usd` (e.g. a provider's reported cost) or is computed from the price table: inference/benchmark
    from input_tokens + output_tokens, fine_tuning from training `tokens` (with the minimum fee), storage as one month.
    Idempotent on `idempotency_key`: a retry — the same key for the same agent, operation and source row — returns the
    entry already recorded, as it was recorded (nothing is priced again); the key reused for a different agent,
    operation or source is refused. With `exact_replay` (a person typed the key: track_costs) the amount, model, tokens
    and note must match the entry's too, else the key is refused naming the entry it would be mistaken for."""
    require_permission(actor=actor, permission="costs.add_costentry", action="record costs")
    key = _checked_key(idempotency_key, operation, tokens=tokens, input_tokens=input_tokens, output_tokens=output_tokens)
    identity = _ChargeIdentity.of_request(agent=agent, operation=operation, source_object=source_object)
    exact_values = {"amount_usd": amount_usd, "model": model, "note": note,
                    "tokens": _total_tokens(tokens, input_tokens, output_tokens)} if exact_replay else None
    if (existing := _recorded(key=key, identity=identity, exact_values=exact_values)) is not None:
        return existing

    occurred_at = occurred_at or timezone.now()
    amount = _amount_for(
        operation=operation, amount_usd=amount_usd, model=model, base_model=base_model, tokens=tokens,
        input_tokens=input_tokens, output_tokens=output_tokens, on=timezone.localdate(occurred_at),
    )

    # The lock that makes threshold checks (and the alerts) exactly-once; see the module docstring.
    budgets = list(selectors.budgets_covering(agent_ids=[agent.pk]).select_for_update())
    try:
        with transaction.atomic():  # a savepoint: a lost race on the key must not abort the caller
            entry = CostEntry.objects.create(
                amount_usd=amount, agent=agent, operation=operation, model=model, input_tokens=input_tokens,
                output_tokens=output_tokens, tokens=_total_tokens(tokens, input_tokens, output_tokens),
                tokens_estimated=tokens_estimated, source_type_id=identity.source_type_id, source_id=identity.source_id,
                source=source[:300], occurred_at=occurred_at, actor=actor, idempotency_key=key, note=note,
            )
    except IntegrityError as exc:
        if is_unique_violation(exc, ENTRY_KEY_TAKEN) and (  # recorded meanwhile; any other refusal is a defect
                existing := _recorded(key=key, identity=identity, exact_values=exact_values)) is not None:
            return existing
        raise

    for budget in budgets:
        _raise_alerts(budget=budget, at=entry.occurred_at, triggered_by=entry)
    return entry


@dataclass(frozen=True)
class Charge:
    """One charge of a batch for `cost_record_many`; fields as in `cost_record`."""

    agent: Any
    operation: str
    idempotency_key: str
    amount_usd: Decimal | str | None = None
    model: str = ""
    base_model: str | None = None
    tokens: int | None = None
    input_tokens: int | None = None
    output_tokens: int | None = None
    tokens_estimated: bool = False  # the provider reported no usage: the tokens, so the amount, are estimates
    source: str = ""
    source_object: models.Model | None = None
    note: str = ""
    occurred_at: datetime | None = None


@transaction.atomic
def cost_record_many(*, charges: list[Charge], actor: Actor = None) -> list[CostEntry]:
    """`cost_record` for a batch (e.g. the tokens of up to 1 000 outcome events): all or nothing, one
    lock of the covering budgets, one bulk insert, thresholds evaluated once per budget and period.
    Returns the entries in the order of `charges` (an already recorded key returns its entry)."""
    require_permission(actor=actor, permission="costs.add_costentry", action="record costs")
    if not charges:
        return []
    keys: list[str] = []
    identities: dict[str, _ChargeIdentity] = {}
    for position, charge in enumerate(charges):
        where = f"charges[{position}]"
        key = _checked_key(
            charge.idempotency_key, charge.operation, tokens=charge.tokens, input_tokens=charge.input_tokens,
            output_tokens=charge.output_tokens, where=where,
        )
        identity = _ChargeIdentity.of_request(agent=charge.agent, operation=charge.operation, source_object=charge.source_object)
        if identities.setdefault(key, identity) != identity:
            raise Conflict(f"{where}.idempotency_key: '{key}' appears twice in the batch for different charges")
        keys.append(key)

    # Retries first: a key already on the ledger returns its entry as recorded, without pricing it again.
    stored = {entry.idempotency_key: entry for entry in CostEntry.objects.filter(idempotency_key__in=identities)}
    for key, entry in stored.items():
        _original_entry(entry, key=key, identity=identities[key])
    planned = _planned_entries(charges, keys=keys, identities=identities, skip=set(stored), actor=actor)
    if not planned:
        return [stored[key] for key in keys]

    budgets = list(selectors.budgets_covering(agent_ids={entry.agent_id for entry in planned.values()}).select_for_update())
    # ignore_conflicts: a concurrent batch may have inserted the same key since; it is fetched below.
    CostEntry.objects.bulk_create(list(planned.values()), ignore_conflicts=True)
    inserted = {entry.idempotency_key: entry for entry in CostEntry.objects.filter(idempotency_key__in=list(planned))}
    for key, entry in inserted.items():
        _original_entry(entry, key=key, identity=identities[key])
    stored.update(inserted)
    for budget in budgets:
        _raise_batch_alerts(budget=budget, new_entries=list(inserted.values()))
    return [stored[key] for key in keys]


def _planned_entries(
    charges: list[Charge], *, keys: list[str], identities: dict[str, _ChargeIdentity], skip: set[str], actor: Actor,
) -> dict[str, CostEntry]:
    """The unsaved entries of the batch's charges not already on the ledger (`skip`), one per key."""
    now = timezone.now()
    prices: dict[tuple[str, str | None, date], pricing.Price] = {}  # one price lookup per model and day
    planned: dict[str, CostEntry] = {}
    for position, (key, charge) in enumerate(zip(keys, charges, strict=True)):
        if key in skip or key in planned:
            continue
        occurred_at = charge.occurred_at or now
        try:
            amount = _batch_amount(charge, on=timezone.localdate(occurred_at), prices=prices)
        except InvalidInput as exc:
            raise InvalidInput(f"charges[{position}]: {exc.message}") from None
        identity = identities[key]
        planned[key] = CostEntry(
            amount_usd=amount, agent=charge.agent, operation=charge.operation, model=charge.model,
            tokens=_total_tokens(charge.tokens, charge.input_tokens, charge.output_tokens),
            input_tokens=charge.input_tokens, output_tokens=charge.output_tokens,
            tokens_estimated=charge.tokens_estimated, source_type_id=identity.source_type_id,
            source_id=identity.source_id, source=charge.source[:300], occurred_at=occurred_at, actor=actor,
            idempotency_key=key, note=charge.note,
        )
    return planned


def _batch_amount(charge: Charge, *, on: date, prices: dict[tuple[str, str | None, date], pricing.Price]) -> Decimal:
    """`_amount_for` the charge; token-priced inference reuses the batch's `prices` (filled here)."""
    if charge.amount_usd is None and charge.model and charge.operation in _TOKEN_PRICED \
            and charge.input_tokens is not None and charge.output_tokens is not None:
        price_key = (charge.model, charge.base_model, on)
        if price_key not in prices:
            prices[price_key] = selectors.price_in_force(model=charge.model, on=on, base_model=charge.base_model)
        return _ledger_amount(
            pricing.inference_cost(price=prices[price_key], input_tokens=charge.input_tokens, output_tokens=charge.output_tokens),
            name="amount_usd (computed from the tokens)",
        )
    return _amount_for(
        operation=charge.operation, amount_usd=charge.amount_usd, model=charge.model, base_model=charge.base_model,
        tokens=charge.tokens, input_tokens=charge.input_tokens, output_tokens=charge.output_tokens, on=on,
    )


def _raise_batch_alerts(*, budget: Budget, new_entries: list[CostEntry]) -> None:
    """The batch crossed a threshold together: its newest entry in the budget's scope and period stands for it."""
    newest_by_period: dict[str, CostEntry] = {}
    for entry in new_entries:
        if budget.agent_id is None or budget.agent_id == entry.agent_id:
            period_key = budgeting.period_containing(budget.period, timezone.localtime(entry.occurred_at)).key
            if period_key not in newest_by_period or entry.pk > newest_by_period[period_key].pk:
                newest_by_period[period_key] = entry
    for entry in newest_by_period.values():
        _raise_alerts(budget=budget, at=entry.occurred_at, triggered_by=entry)


@transaction.atomic
def cost_entry_reverse(*, entry: CostEntry, actor: Actor, reason: str) -> CostEntry:
    """Cancel `entry` with an entry of the opposite amount (the only way to correct the ledger).
    Reversing twice — one after the other or at the same moment — returns the same reversal: the
    entry's row lock makes the second wait for the first and then find its reversal."""
    require_permission(actor=actor, permission="costs.add_costentry", action="reverse cost entries")
    if not reason.strip():
        raise InvalidInput("reason: say why the entry is reversed")
    # The entry's row only, not its agent's; NO KEY so rows referring to it (alerts) are not held up.
    # (The ledger's trigger refuses UPDATE, not a row lock.)
    entry = CostEntry.objects.select_for_update(of=("self",), no_key=True).select_related("agent").get(pk=entry.pk)
    if entry.reverses_id is not None:
        raise Conflict(f"entry #{entry.pk} is itself a reversal of #{entry.reverses_id}; record a new charge instead")
    # Same budgets locked as for a charge, so totals seen by concurrent threshold checks stay exact.
    budgets = list(selectors.budgets_covering(agent_ids=[entry.agent_id]).select_for_update())
    existing = CostEntry.objects.filter(reverses=entry).first()
    if existing is not None:
        return existing
    key = f"reversal:{entry.pk}"
    try:
        with transaction.atomic():  # a savepoint, so the refusal below leaves the caller's transaction usable
            reversal = CostEntry.objects.create(
                amount_usd=-entry.amount_usd, agent=entry.agent, operation=entry.operation, model=entry.model,
                tokens=-entry.tokens if entry.tokens is not None else None, tokens_estimated=entry.tokens_estimated,
                source_type_id=entry.source_type_id, source_id=entry.source_id, source=f"reversal of #{entry.pk}",
                # Backdated to the charge it cancels, so the correction lands in the same day and budget period.
                occurred_at=entry.occurred_at, actor=actor, idempotency_key=key, note=reason, reverses=entry,
            )
    except IntegrityError as exc:
        if not is_unique_violation(exc, ENTRY_REVERSED_ALREADY, ENTRY_KEY_TAKEN):
            raise
        existing = CostEntry.objects.filter(reverses=entry).first()
        if existing is not None:
            return existing
        holder = CostEntry.objects.filter(idempotency_key=key).first()
        if holder is None:
            raise
        raise Conflict(
            f"entry #{entry.pk} cannot be reversed: the idempotency key its reversal needs, '{key}', is already "
            f"taken by entry #{holder.pk} ({holder.source or 'no source'}), which is not a reversal of it; "
            f"check entry #{holder.pk} (keys starting with 'reversal:' are meant for reversals)"
        ) from None
    for budget in budgets:  # spend went down: a threshold it no longer reaches is re-armed
        _raise_alerts(budget=budget, at=reversal.occurred_at, triggered_by=None)
    return reversal


# --- budgets and alerts -------------------------------------------------------------------------------------


def _raise_alerts(*, budget: Budget, at: datetime, triggered_by: CostEntry | None) -> list[BudgetAlert]:
    """Bring the alerts of the budget's period containing `at` in line with its spend under its
    current amount and thresholds: an alert still armed whose threshold the spend no longer reaches
    (the budget was raised, a charge reversed) is re-armed — kept as sent, marked — and every
    threshold reached without an armed alert fires, lowest first, delivered in that order. The
    caller holds the budget's row lock."""
    period = budgeting.period_containing(budget.period, timezone.localtime(at))
    spent = selectors.budget_spent(budget=budget, period=period)
    armed = {
        alert.threshold_percent: alert
        for alert in BudgetAlert.objects.filter(budget=budget, period_key=period.key, rearmed_at__isnull=True)
    }
    still_reached = budgeting.thresholds_reached(
        spent=spent, limit=budget.amount_usd, thresholds=[budgeting.Threshold(percent, "") for percent in armed]
    )
    rearm = set(armed) - {threshold.percent for threshold in still_reached}
    if rearm:
        BudgetAlert.objects.filter(pk__in=[armed[percent].pk for percent in rearm]).update(rearmed_at=timezone.now())
    configured = budgeting.parse_thresholds(budget.thresholds)
    reached = budgeting.thresholds_reached(
        spent=spent, limit=budget.amount_usd, thresholds=budgeting.alert_thresholds(configured)
    )
    created = []
    for threshold in reached:
        if threshold.percent in armed and threshold.percent not in rearm:
            continue
        kind = BudgetAlert.Kind.THRESHOLD if threshold in configured else BudgetAlert.Kind.EXHAUSTED
        try:
            with transaction.atomic():
                alert = BudgetAlert.objects.create(
                    budget=budget, period_key=period.key, period_start=period.start, threshold_percent=threshold.percent,
                    kind=kind, severity=threshold.severity, budget_usd=budget.amount_usd, spent_usd=spent,
                    triggered_by=triggered_by,
                )
        except IntegrityError as exc:
            if not is_unique_violation(exc, ALERT_RAISED_ALREADY):
                raise
            continue  # the constraint is the last line of defence; the lock should make this unreachable
        created.append(alert)
    if created:
        transaction.on_commit(partial(_enqueue_alert_delivery, [alert.pk for alert in created]))
    return created


def _enqueue_alert_delivery(alert_ids: list[int]) -> None:
    # One task for the alerts raised together, so they go out lowest threshold first (separate tasks
    # may run on two workers at once). A message the broker cannot take leaves the alerts undelivered:
    # redeliver_budget_alerts sends them.
    send_task("costs.deliver_budget_alerts", alert_ids, what=f"delivery of budget alerts {alert_ids}")


def _budget_values(*, amount_usd: Any, period: str, thresholds: Any) -> tuple[Decimal, list[budgeting.Threshold]]:
    # Rounded to the column's cents here, so an unchanged budget compares equal to its stored row.
    amount = _decimal(amount_usd, name="amount_usd", column=Budget._meta.get_field("amount_usd"))
    if amount < 0:
        raise InvalidInput("amount_usd: a budget cannot be negative")
    if period not in budgeting.PERIODS:
        raise InvalidInput(f"period: '{period}' is not one of {', '.join(budgeting.PERIODS)}")
    try:
        parsed = budgeting.parse_thresholds(thresholds)
    except ValueError as exc:
        raise InvalidInput(f"thresholds: {exc}") from None
    return amount, parsed


@transaction.atomic
def budget_upsert(
    *,
    name: str,
    amount_usd: Decimal | str,
    period: str = budgeting.PERIOD_TOTAL,
    agent: Any = None,
    thresholds: Any = None,
    hard_limit: bool = True,
    active: bool = True,
    actor: Actor = None,
    reason: str = "",
) -> Budget:
    """Create or change a budget. Thresholds default to settings.BUDGET_THRESHOLDS (25/50/83 →
    warning/critical/emergency). Lowering the amount below what is spent raises the alerts at once;
    raising it re-arms the alerts of thresholds the current period's spend no longer reaches, so they
    fire again when spend gets there (a threshold still reached does not fire twice)."""
    require_permission(actor=actor, permission="costs.change_budget", action="edit budgets")
    if not name.strip():
        raise InvalidInput("name: must not be empty")
    amount, parsed = _budget_values(
        amount_usd=amount_usd, period=period, thresholds=settings.BUDGET_THRESHOLDS if thresholds is None else thresholds
    )
    budget = Budget.objects.select_for_update().filter(name=name).first()
    changes = {
        "amount_usd": amount, "period": period, "agent": agent, "thresholds": [t.as_dict() for t in parsed],
        "hard_limit": hard_limit, "active": active,
    }
    if budget is None:
        budget = Budget(name=name, **changes)
        record_history(budget, actor=actor, reason=reason or "created")
        budget.save()
    elif any(getattr(budget, field_name) != value for field_name, value in changes.items()):
        for field_name, value in changes.items():
            setattr(budget, field_name, value)
        record_history(budget, actor=actor, reason=reason or "updated")
        budget.save()
    if budget.active:
        _raise_alerts(budget=budget, at=timezone.now(), triggered_by=None)
    return budget


@dataclass(frozen=True)
class BudgetCheck:
    """The outcome of a check that let the work go ahead (a refusal raises Conflict instead)."""

    estimate_usd: Decimal
    checked: list[str] = field(default_factory=list)  # names of the hard-limit budgets looked at
    overrides: list[BudgetOverride] = field(default_factory=list)
    hold: CostHold | None = None

    @property
    def overridden(self) -> bool:
        return bool(self.overrides)


# A hold whose work never released it (the work was lost with its rows) stops counting after this.
DEFAULT_HOLD_LASTS = timedelta(days=1)


@transaction.atomic
def budget_check(
    *,
    agent: Any,
    estimate_usd: Decimal | str,
    actor: Actor,
    override_reason: str | None = None,
    hold_for: models.Model | None = None,
    operation: str = "",
    hold_lasts: timedelta = DEFAULT_HOLD_LASTS,
) -> BudgetCheck:
    """Call before starting paid work (a benchmark run, a fine-tuning job) for `agent`.

    Every active hard-limit budget covering the agent must have `estimate_usd` left in its current
    period, after what is spent and what running work holds (a budget with nothing left refuses even
    an estimate of zero); otherwise Conflict (HTTP 409, command exit 1) with a message saying how to
    go on. A user holding costs.override_budget may go on anyway by giving `override_reason`; each
    override is recorded as a BudgetOverride row.

    Work that starts passes `hold_for` (its saved row, in the transaction that creates it) and its
    ledger `operation`: the estimate is then held (a CostHold) until `cost_hold_release` is called
    for that row, and the budgets are locked while checking, so two starts at the same moment are
    checked one after the other — the second sees the first one's hold (LiteLLM's max_budget was
    bypassed by concurrent requests, #34732). Without `hold_for` it is a question, not a reservation."""
    estimate = _decimal(estimate_usd, name="estimate_usd", column=BudgetOverride._meta.get_field("estimate_usd"))
    if estimate < 0:
        raise InvalidInput("estimate_usd: cannot be negative")
    now = timezone.localtime()
    covering = selectors.budgets_covering(agent_ids=[agent.pk]).filter(hard_limit=True)
    # Locked in primary-key order, as cost_record locks them, so the two never deadlock.
    budgets = list(covering.select_for_update() if hold_for is not None else covering)
    shortfalls: list[tuple[Budget, budgeting.Shortfall]] = []
    for budget in budgets:
        period = budgeting.period_containing(budget.period, now)
        shortfall = budgeting.estimate_shortfall(
            budget=budget.name, limit=budget.amount_usd, spent=selectors.budget_spent(budget=budget, period=period),
            held=selectors.budget_held(budget=budget, now=now), estimate=estimate, period=period,
        )
        if shortfall is not None:
            shortfalls.append((budget, shortfall))
    checked = [budget.name for budget in budgets]
    overrides: list[BudgetOverride] = []
    if shortfalls:
        overrides = _budget_override(agent=agent, estimate=estimate, actor=actor, reason=override_reason, shortfalls=shortfalls)
    hold = None
    if hold_for is not None:
        hold = _hold_place(agent=agent, estimate=estimate, source=hold_for, operation=operation, lasts=hold_lasts)
    return BudgetCheck(estimate_usd=estimate, checked=checked, overrides=overrides, hold=hold)


def _budget_override(
    *, agent: Any, estimate: Decimal, actor: Actor, reason: str | None, shortfalls: list[tuple[Budget, budgeting.Shortfall]]
) -> list[BudgetOverride]:
    """Record a person's override of the `shortfalls`, or refuse (Conflict) when nobody gave a reason."""
    reason = (reason or "").strip()
    if not reason:
        raise Conflict(
            "; ".join(budgeting.refusal_message(s, override_permission=OVERRIDE_PERMISSION) for _, s in shortfalls),
            code="budget_exceeded",
            api_message="; ".join(
                budgeting.refusal_message(s, override_permission=OVERRIDE_PERMISSION, to_api_key=True) for _, s in shortfalls
            ),
        )
    if actor is None:
        raise PermissionDenied(
            f"a budget override needs a person: run it as a user with the permission '{OVERRIDE_PERMISSION}'"
        )
    require_permission(
        actor=actor, permission=OVERRIDE_PERMISSION,
        action=f"start paid work over budget '{shortfalls[0][0].name}' (an override)",
    )
    overrides = [
        BudgetOverride.objects.create(
            budget=budget, agent=agent, actor=actor, reason=reason, estimate_usd=estimate, budget_usd=budget.amount_usd,
            spent_usd=shortfall.spent, period_key=shortfall.period.key,
        )
        for budget, shortfall in shortfalls
    ]
    logger.warning(
        "budget override by %s for %s: %s over %s (%s)", actor, agent, budgeting.format_usd(estimate),
        ", ".join(budget.name for budget, _ in shortfalls), reason,
    )
    return overrides


def _hold_place(*, agent: Any, estimate: Decimal, source: models.Model, operation: str, lasts: timedelta) -> CostHold:
    if operation not in Operation.values:
        raise InvalidInput(f"operation: '{operation}' is not one of {', '.join(Operation.values)}")
    if source.pk is None:
        raise InvalidInput("hold_for: save the work's row first; the hold points at it")
    source_type = ContentType.objects.get_for_model(source)
    hold = CostHold.objects.select_for_update().filter(source_type=source_type, source_id=str(source.pk)).first()
    if hold is not None and hold.released_at is None:
        raise Conflict(f"{source} already holds budget; release it before checking again")
    # One hold per work: work that ended and starts again (a refused job submitted again) holds anew.
    hold = hold or CostHold(source_type=source_type, source_id=str(source.pk))
    hold.agent, hold.operation, hold.amount_usd, hold.source = agent, operation, estimate, str(source)[:300]
    hold.expires_at, hold.released_at = timezone.now() + lasts, None
    hold.save()
    return hold


def cost_hold_release(*, source: models.Model) -> bool:
    """The work behind `source` has ended (its real costs are on the ledger, or will be by the
    postings it has queued): its hold stops counting. Idempotent; False when nothing was held."""
    released = CostHold.objects.filter(
        source_type=ContentType.objects.get_for_model(source), source_id=str(source.pk), released_at__isnull=True,
    ).update(released_at=timezone.now())
    return bool(released)


def alert_notice(alert: BudgetAlert) -> notifications.Notice:
    budget = alert.budget
    scope = f"agent {budget.agent.slug}" if budget.agent is not None else "all agents"
    period = "all time" if alert.period_key == budgeting.PERIOD_TOTAL else alert.period_key
    exhausted = alert.kind == BudgetAlert.Kind.EXHAUSTED
    reached = "is exhausted (100 %)" if exhausted else f"reached {alert.threshold_percent} %"
    text = (
        f"Budget '{budget.name}' ({scope}, {period}) {reached}: "
        f"{budgeting.format_usd(alert.spent_usd)} of {budgeting.format_usd(alert.budget_usd)} spent."
    )
    entry = alert.triggered_by
    if entry is not None:
        text += f" Crossed by entry #{entry.pk}: {budgeting.format_usd(entry.amount_usd)} {entry.operation} for {entry.agent.slug}."
    if budget.hard_limit:
        text += " Hard limit is on: paid work that does not fit will be refused."
    return notifications.Notice(
        subject=f"[Genesis] {alert.severity.upper()}: budget '{budget.name}' "
        + ("exhausted" if exhausted else f"at {alert.threshold_percent} %"),
        text=text, severity=alert.severity,
    )


def budget_alert_deliver(*, alert_id: int) -> BudgetAlert | None:
    """Send a pending alert through the channels that have not yet taken it; record each result.
    Gives up (delivery = failed) after MAX_ALERT_DELIVERY_ATTEMPTS; the alert row itself stays.

    No lock is held while the mail server and the webhook are called (on embedded SQLite a held lock
    is the whole database's write lock): the alert is claimed in one short transaction, sent outside
    any, and the results recorded in a second. The claim is a lease, so a second worker (the task and
    the sweep) leaves an alert being sent alone, and takes it over only when the lease has run out —
    the first worker died while sending. Returns None when the alert is gone or locked right now."""
    claimed_at = timezone.now()
    with transaction.atomic():
        alert = BudgetAlert.objects.select_for_update(skip_locked=True).filter(pk=alert_id).first()
        if alert is None or alert.delivery != BudgetAlert.Delivery.PENDING:
            return alert
        if alert.delivery_claimed_at is not None and alert.delivery_claimed_at > claimed_at - ALERT_DELIVERY_LEASE:
            return alert  # another worker is sending it
        alert.delivery_claimed_at = claimed_at
        alert.save(update_fields=["delivery_claimed_at"])

    configured = notifications.configured_channels()
    results = notifications.deliver(alert_notice(alert), notifications.undelivered(configured, alert.deliveries))

    with transaction.atomic():
        alert = BudgetAlert.objects.select_for_update().get(pk=alert_id)
        if alert.delivery != BudgetAlert.Delivery.PENDING:
            return alert  # a worker that took over an expired claim finished it
        deliveries = alert.deliveries = notifications.merged(alert.deliveries, results)
        alert.delivery_attempts += 1
        if alert.delivery_claimed_at == claimed_at:
            alert.delivery_claimed_at = None
        if all(deliveries.get(channel.name) == notifications.OK for channel in configured):
            alert.delivery, alert.delivered_at = BudgetAlert.Delivery.DELIVERED, timezone.now()
        elif alert.delivery_attempts >= MAX_ALERT_DELIVERY_ATTEMPTS:
            alert.delivery = BudgetAlert.Delivery.FAILED
            logger.error("gave up delivering budget alert %s after %s attempts: %s", alert.pk, alert.delivery_attempts, deliveries)
        else:
            # What comes after the "could not deliver" line of each failed channel (genesis/notifications.py).
            failed = ", ".join(channel.name for channel in notifications.undelivered(configured, deliveries))
            logger.warning(
                "budget alert %s not delivered through %s (attempt %s of %s); beat's redelivery tries again within %s s",
                alert.pk, failed, alert.delivery_attempts, MAX_ALERT_DELIVERY_ATTEMPTS, notifications.REDELIVERY_EVERY_SECONDS,
            )
        alert.save(update_fields=["deliveries", "delivery_attempts", "delivery", "delivered_at", "delivery_claimed_at"])
        return alert


def budget_alerts_deliver(*, alert_ids: list[int]) -> list[BudgetAlert | None]:
    """`budget_alert_deliver` for alerts raised together, one after the other in the order given."""
    return [budget_alert_deliver(alert_id=alert_id) for alert_id in alert_ids]


def budget_alerts_redeliver(*, older_than_seconds: int = 60) -> int:
    """Retry pending alerts older than a minute (a failed channel, or a process that died between
    commit and enqueue, or while sending), oldest first and, among alerts raised together, lowest
    threshold first. Returns how many were attempted."""
    now = timezone.now()
    pending = list(
        BudgetAlert.objects.filter(delivery=BudgetAlert.Delivery.PENDING, created_at__lt=now - timedelta(seconds=older_than_seconds))
        .filter(models.Q(delivery_claimed_at__isnull=True) | models.Q(delivery_claimed_at__lte=now - ALERT_DELIVERY_LEASE))
        .order_by("pk")
        .values_list("pk", flat=True)[:200]
    )
    budget_alerts_deliver(alert_ids=pending)
    return len(pending)


# --- reports ------------------------------------------------------------------------------------------------


@dataclass
class RequestedReport:
    """A report row asked for, and whether the broker took its task: None until the transaction the
    request ran in commits (at once when it ran in none, as from the admin)."""

    report: CostReport
    sent: bool | None = None


def cost_report_request(*, actor: Actor = None) -> RequestedReport:
    """Queue a report (the admin's "Generate now"); a worker makes it. A broker that cannot take the
    task leaves the row pending (`sent` False), for the caller to say so and for beat's sweep
    (costs/report_sweep.py) to send again."""
    require_permission(actor=actor, permission="costs.add_costreport", action="generate cost reports")
    with transaction.atomic():
        requested = RequestedReport(CostReport.objects.create(requested_by=actor))
        pk = requested.report.pk

        def send() -> None:
            requested.sent = send_task("costs.run_cost_report", pk, what=f"cost report #{pk}")

        transaction.on_commit(send)
    return requested


def cost_report_daily_row(*, day: date) -> CostReport:
    """The row of `day`'s beat-made report, made pending if it is not there yet."""
    report, _ = CostReport.objects.get_or_create(
        schedule_key=f"daily:{day.isoformat()}", defaults={"spend_since": (day - timedelta(days=1)).replace(day=1)}
    )
    return report


def cost_report_daily(*, day: date | None = None) -> CostReport:
    """The beat-made report of `day` (today): one per day however often beat fires. It covers the month
    of the day before, from its first day to the moment it is made (nothing recorded or dated later), so
    the report of the 1st is the whole past month and each one is at most a month of rows — the whole
    ledger, every day, grew without end. Then reports
    older than GENESIS_RETAIN_COST_REPORTS_DAYS are deleted: any of them can be made again from the
    append-only ledger (`cost_report_data(as_of=…)`)."""
    report = cost_report_run(report_id=cost_report_daily_row(day=day or timezone.localdate()).pk)
    cost_reports_prune()
    return report


def cost_reports_prune(*, now: datetime | None = None) -> int:
    """Delete the stored reports created more than GENESIS_RETAIN_COST_REPORTS_DAYS ago (0: keep all)."""
    days = settings.GENESIS_RETAIN_COST_REPORTS_DAYS
    if not days:
        return 0
    deleted, _ = CostReport.objects.filter(created_at__lt=(now or timezone.now()) - timedelta(days=days)).delete()
    return deleted


def cost_report_run(*, report_id: int) -> CostReport:
    """Advance a report row: pending → running → succeeded (markdown and CSV stored, sent to the
    channels) or failed (error kept). A report already succeeded is left as it is.

    Made and sent at most once: a report RUNNING since less than the task time limit
    (settings.CELERY_TASK_TIME_LIMIT) is another worker's and is left to it; one RUNNING for longer was
    abandoned (Celery kills a task at that limit) and is claimed again. The claim is the row's
    `started_at`: only the run whose claim still stands when it has built the report stores and sends
    it."""
    with transaction.atomic():
        report = CostReport.objects.select_for_update(skip_locked=True).filter(pk=report_id).first()
        if report is None:
            busy = CostReport.objects.filter(pk=report_id).first()
            if busy is None:
                raise NotFound(f"cost report #{report_id} does not exist")
            return busy  # another worker is claiming it right now
        if report.status == CostReport.Status.SUCCEEDED:
            return report
        claimed_at = timezone.now()
        if report.status == CostReport.Status.RUNNING:
            stale_before = claimed_at - timedelta(seconds=settings.CELERY_TASK_TIME_LIMIT)
            if report.started_at is not None and report.started_at > stale_before:
                return report  # another worker is making it
            logger.warning("cost report %s was left running since %s; making it again", report_id, report.started_at)
        advance(report, CostReport.Status.RUNNING, transitions=REPORT_TRANSITIONS)
        report.started_at, report.error = claimed_at, ""
        report.save(update_fields=["status", "started_at", "error"])
    # The finish is one conditional UPDATE on the claim, so a run whose claim was taken over stores nothing.
    claim = CostReport.objects.filter(pk=report_id, status=CostReport.Status.RUNNING, started_at=claimed_at)
    try:
        data = selectors.cost_report_data(as_of=timezone.now(), since=report.spend_since)
        markdown, csv_text = reports.render_markdown(data), reports.render_csv(data)
    except Exception as exc:
        check_move(REPORT_TRANSITIONS, name=f"cost report #{report_id}", current=CostReport.Status.RUNNING, to=CostReport.Status.FAILED)
        claim.update(status=CostReport.Status.FAILED, finished_at=timezone.now(), error=f"{type(exc).__name__}: {exc}"[:2000])
        logger.exception("cost report %s failed", report_id)
        raise
    check_move(REPORT_TRANSITIONS, name=f"cost report #{report_id}", current=CostReport.Status.RUNNING, to=CostReport.Status.SUCCEEDED)
    stored = claim.update(
        status=CostReport.Status.SUCCEEDED, finished_at=timezone.now(), as_of=data.as_of, entry_count=data.entry_count,
        total_usd=data.total, markdown=markdown, csv=csv_text,
    )
    if not stored:
        logger.warning("cost report %s was claimed by another run while this one made it; that run sends it", report_id)
        return CostReport.objects.get(pk=report_id)
    notice = notifications.Notice(
        subject=f"[Genesis] cost report {data.as_of:%Y-%m-%d}: {budgeting.format_usd(data.total)}",
        text=reports.report_summary_text(data),
        attachments=(
            notifications.Attachment(f"genesis-costs-{data.as_of:%Y-%m-%d}.md", markdown, "text/markdown"),
            notifications.Attachment(f"genesis-costs-{data.as_of:%Y-%m-%d}.csv", csv_text, "text/csv"),
        ),
    )
    deliveries = notifications.deliver(notice, notifications.configured_channels())
    CostReport.objects.filter(pk=report_id).update(deliveries=deliveries)
    return CostReport.objects.get(pk=report_id)
