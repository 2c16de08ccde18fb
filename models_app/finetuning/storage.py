"""The monthly storage charge of fine-tuned models: the provider keeps every model it trained, and bills
its storage each month until the model is deleted."""

from __future__ import annotations

import hashlib
import logging
from dataclasses import dataclass
from datetime import date, datetime

from django.utils import timezone

from costs.models import IDEMPOTENCY_KEY_MAX_LENGTH, CostEntry, Operation
from costs.pricing import storage_cost
from costs.selectors import price_in_force
from costs.services import cost_record
from genesis.errors import DomainError, NotFound
from models_app.registry.models import ModelKind, ModelStatus, ModelVersion

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class StorageMonth:
    """A run of the month's storage charges: the month's entry of each model charged (by this run or an
    earlier one), and each model whose charge failed — (provider, model id) → why."""

    charged: list[CostEntry]
    failed: dict[tuple[str, str], str]


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
    """Charge one month of storage for every fine-tuned model the provider keeps (every fine-tuned
    version not retired or rejected). Once per provider, model and month, so the daily beat run
    charges each model once a month. Not one transaction: each charge commits on its own, and a model
    that cannot be charged (no price, a refusal, an error) is logged and left for the next daily run
    without holding back the others."""
    now = timezone.localtime()
    month_start = (month or now.date()).replace(day=1)
    in_month = (now.year, now.month) == (month_start.year, month_start.month)
    occurred_at = now if in_month else timezone.make_aware(datetime.combine(month_start, datetime.min.time()))
    versions = list(
        ModelVersion.objects.filter(kind=ModelKind.FINE_TUNED)
        .exclude(status__in=[ModelStatus.RETIRED, ModelStatus.REJECTED])
        .select_related("agent", "provider")
        .order_by("pk")
    )
    # The provider stores a model once, however many agents registered it, and bills it once a month:
    # an entry under the (provider, model, month) key means the month is paid, whichever version row it
    # names — another agent's, or one since retired or deleted and the model registered again.
    keys = {version.pk: storage_key(provider=version.provider.name, model_id=version.model_id, month_start=month_start)
            for version in versions}
    recorded = {entry.idempotency_key: entry for entry in CostEntry.objects.filter(idempotency_key__in=set(keys.values()))}
    charged: list[CostEntry] = []
    failed: dict[tuple[str, str], str] = {}
    for version in versions:
        key = keys[version.pk]
        if key not in recorded:
            outcome = _charge(version=version, key=key, month_start=month_start, occurred_at=occurred_at)
            if isinstance(outcome, _Refused):
                failed[(version.provider.name, version.model_id)] = outcome.why
            if not isinstance(outcome, CostEntry):
                continue
            recorded[key] = outcome
        if recorded[key] not in charged:
            charged.append(recorded[key])
    return StorageMonth(charged=charged, failed=failed)


@dataclass(frozen=True)
class _Refused:
    why: str


def _charge(*, version: ModelVersion, key: str, month_start: date, occurred_at: datetime) -> CostEntry | _Refused | None:
    """The month's storage entry of `version`'s model; why it could not be charged; or None when the
    model has no price (a known gap: warned about, as every charge without a price is)."""
    month = f"{month_start:%Y-%m}"
    try:
        price = price_in_force(model=version.model_id, on=month_start, base_model=version.base_model)
    except NotFound as exc:
        logger.warning("no storage charge for %s in %s: %s", version.model_id, month, exc.message)
        return None
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
