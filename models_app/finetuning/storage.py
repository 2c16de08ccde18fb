"""The monthly storage charge of fine-tuned models: the provider keeps every model it trained, and bills
its storage each month until the model is deleted."""

from __future__ import annotations

import hashlib
import logging
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta

from django.utils import timezone

from costs.models import IDEMPOTENCY_KEY_MAX_LENGTH, CostEntry, Operation
from costs.pricing import storage_cost
from costs.selectors import price_first_in_force
from costs.services import cost_record
from genesis.errors import DomainError, NotFound
from models_app.registry.models import ModelKind, ModelStatus, ModelVersion

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class StorageMonth:
    """A run of the storage charges: the month's entry of each model charged (by this run or an earlier
    one); the entries of earlier months this run charged (a month missed); and each model whose charge
    failed — (provider, model id) → why."""

    charged: list[CostEntry]
    failed: dict[tuple[str, str], str]
    back_charged: list[CostEntry] = field(default_factory=list)


# How many months a run looks at: the month charged and the ones before it. A month is missed when beat
# was down all of it, when a model was registered after the month's last daily run, or when its price
# took effect after the run of that month; the next run charges it. Bounded so that a run's work does
# not grow with the age of the registry: a year covers any outage that is noticed.
STORAGE_MONTHS_LOOKED_AT = 12
# Keys per ledger lookup, well below PostgreSQL's 65 535 parameters of a statement.
_KEYS_PER_QUERY = 5_000


class StorageChargesFailed(Exception):
    """Some models' storage could not be charged (the others were): raised by the daily task, after the
    loop, so that the failure is seen where failed tasks are watched and not only in a log line."""


def storage_key(*, provider: str, model_id: str, month_start: date) -> str:
    """The ledger key of one model's storage for one month: `storage:{provider}:{model}:{YYYY-MM}`, or,
    when a model id is too long for that to fit the ledger's key, the provider and id hashed — a long
    id the registry accepts was refused by PostgreSQL every day and never charged. Keys that fit are
    left as they were, so the months already on the ledger still match."""
    key = f"storage:{provider}:{model_id}:{month_start:%Y-%m}"
    if len(key) <= IDEMPOTENCY_KEY_MAX_LENGTH:
        return key
    digest = hashlib.sha256(f"{provider}:{model_id}".encode()).hexdigest()
    return f"storage:sha256:{digest}:{month_start:%Y-%m}"


def storage_charge_month(*, month: date | None = None) -> StorageMonth:
    """Charge storage for every fine-tuned model the provider keeps (every fine-tuned version not
    retired or rejected), for each month from its registration up to `month` (the current one) that
    has no entry yet, looking back STORAGE_MONTHS_LOOKED_AT months: a month is not lost because the
    daily run missed it — but not a month the version spent rejected from its first day to its last (one
    revived by a verdict override was not stored then). Once per provider, model and month (the
    idempotency key), so the daily run charges each model once a month and two runs at once charge it once. Not one transaction: each
    charge commits on its own, and a model that cannot be charged (no price, a refusal, an error) is
    logged and left for the next daily run without holding back the others."""
    now = timezone.localtime()
    last = (month or now.date()).replace(day=1)
    months = [_months_before(last, back) for back in reversed(range(STORAGE_MONTHS_LOOKED_AT))]
    versions = list(
        ModelVersion.objects.filter(kind=ModelKind.FINE_TUNED)
        .exclude(status__in=[ModelStatus.RETIRED, ModelStatus.REJECTED])
        .select_related("agent", "provider")
        .order_by("pk")
    )
    # The provider stores a model once, however many agents registered it, and bills it once a month:
    # an entry under the (provider, model, month) key means the month is paid, whichever version row it
    # names — another agent's, or one since retired or deleted and the model registered again. A month
    # is charged to the first version (by id) registered by then.
    # A month spent rejected all through is not stored: a version rejected and revived months later
    # (a verdict override) was charged every month it had been rejected for.
    unstored = _months_rejected_throughout(versions, months)
    due: dict[str, tuple[ModelVersion, date]] = {}
    for month_start in months:
        for version in versions:
            if _registered_month(version) <= month_start and month_start not in unstored.get(version.pk, ()):
                key = storage_key(provider=version.provider.name, model_id=version.model_id, month_start=month_start)
                due.setdefault(key, (version, month_start))
    recorded = _recorded_entries(list(due))
    run = StorageMonth(charged=[], failed={})
    for key, (version, month_start) in due.items():  # oldest month first
        if key not in recorded:
            outcome = _charge(version=version, key=key, month_start=month_start, now=now)
            if isinstance(outcome, _Refused):
                where = (version.provider.name, version.model_id)
                why = f"{month_start:%Y-%m}: {outcome.why}"
                run.failed[where] = f"{run.failed[where]}; {why}" if where in run.failed else why
            if not isinstance(outcome, CostEntry):
                continue
            recorded[key] = outcome
            if month_start != last:
                run.back_charged.append(outcome)
        if month_start == last and recorded[key] not in run.charged:
            run.charged.append(recorded[key])
    return run


def _months_before(month_start: date, count: int) -> date:
    index = month_start.year * 12 + month_start.month - 1 - count
    return date(index // 12, index % 12 + 1, 1)


def _registered_month(version: ModelVersion) -> date:
    return timezone.localtime(version.created_at).date().replace(day=1)


def _months_rejected_throughout(versions: list[ModelVersion], months: list[date]) -> dict[int, set[date]]:
    """Version pk → the `months` it spent rejected from their first day to their last, read from the
    versions' history (every status change is saved with one: model_version_transition). One query, for
    the versions stored now that were ever rejected — a rejected version leaves it only by a revival
    (REJECTED → APPROVED_FOR_ROLLOUT), and a retired one never comes back."""
    if not versions or not months:
        return {}
    by_pk = {version.pk: version for version in versions}
    ever_rejected = ModelVersion.history.filter(status=ModelStatus.REJECTED, kind=ModelKind.FINE_TUNED).values("id")
    rows = (ModelVersion.history.filter(id__in=ever_rejected, kind=ModelKind.FINE_TUNED)
            .order_by("id", "history_date", "history_id").values_list("id", "history_date", "status"))
    windows: dict[int, list[tuple[datetime, datetime | None]]] = {}
    for pk, at, status in rows:
        if pk not in by_pk:
            continue  # rejected or retired now: not charged at all
        spans = windows.setdefault(pk, [])
        if status == ModelStatus.REJECTED:
            if not spans or spans[-1][1] is not None:
                spans.append((at, None))
        elif spans and spans[-1][1] is None:
            spans[-1] = (spans[-1][0], at)
    unstored: dict[int, set[date]] = {}
    for pk, spans in windows.items():
        for entered, left in spans:
            # A revival the history did not see (a row changed without a save) ended by the last status change.
            left = left or max(by_pk[pk].status_changed_at, entered)
            unstored.setdefault(pk, set()).update(
                month for month in months
                if entered <= _local_midnight(month) and left >= _local_midnight(_months_before(month, -1))
            )
    return unstored


def _local_midnight(day: date) -> datetime:
    return timezone.make_aware(datetime.combine(day, datetime.min.time()))


def _recorded_entries(keys: list[str]) -> dict[str, CostEntry]:
    recorded: dict[str, CostEntry] = {}
    for offset in range(0, len(keys), _KEYS_PER_QUERY):
        chunk = keys[offset:offset + _KEYS_PER_QUERY]
        recorded.update((entry.idempotency_key, entry) for entry in CostEntry.objects.filter(idempotency_key__in=chunk))
    return recorded


@dataclass(frozen=True)
class _Refused:
    why: str


def _charge(*, version: ModelVersion, key: str, month_start: date, now: datetime) -> CostEntry | _Refused | None:
    """The month's storage entry of `version`'s model; why it could not be charged; or None when the
    model has no price at any time in the month (a known gap: warned about, as every charge without a
    price is). The price is the one in force on the month's first day, or the first to take effect in
    it (up to today): a price added from the 15th charges that month, it does not skip it."""
    month = f"{month_start:%Y-%m}"
    next_month = _months_before(month_start, -1)
    month_end = min(next_month - timedelta(days=1), now.date())
    try:
        price = price_first_in_force(model=version.model_id, start=month_start, end=month_end, base_model=version.base_model)
    except NotFound as exc:
        logger.warning("no storage charge for %s in %s: %s", version.model_id, month, exc.message)
        return None
    if (now.year, now.month) == (month_start.year, month_start.month):
        occurred_at = now
    else:  # a month gone by: dated within it, from the model's registration if that came later
        occurred_at = max(timezone.make_aware(datetime.combine(month_start, datetime.min.time())), version.created_at)
    try:
        return cost_record(
            agent=version.agent, operation=Operation.STORAGE, amount_usd=storage_cost(price=price),
            model=version.model_id, source_object=version, source=f"storage {month}",
            idempotency_key=key,
            occurred_at=occurred_at, note=f"monthly storage of a fine-tuned model ({price.model} price of {price.effective_from})",
        )
    except Exception as exc:  # noqa: BLE001 - any failure of one model's charge: the others still go on the ledger
        logger.exception("storage of %s (version #%s) in %s not charged", version.model_id, version.pk, month)
        return _Refused(exc.message if isinstance(exc, DomainError) else f"{type(exc).__name__}: {exc}")
