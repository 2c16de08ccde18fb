"""The monthly storage charge of fine-tuned models: the provider keeps every model it trained, and bills
its storage each month until the model is deleted."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import date, datetime

from django.utils import timezone

from costs.models import CostEntry, Operation
from costs.pricing import storage_cost
from costs.selectors import price_in_force
from costs.services import cost_record
from genesis.errors import DomainError, NotFound
from models_app.registry.models import ModelKind, ModelStatus, ModelVersion

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class StorageMonth:
    """A run of the month's storage charges: the month's entry of each model charged (by this run or an
    earlier one), and each model whose charge failed → why."""

    charged: list[CostEntry]
    failed: dict[str, str]


class StorageChargesFailed(Exception):
    """Some models' storage could not be charged (the others were): raised by the daily task, after the
    loop, so that the failure is seen where failed tasks are watched and not only in a log line."""


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
    keys = {version.pk: f"storage:{version.provider.name}:{version.model_id}:{month_start:%Y-%m}" for version in versions}
    recorded = {entry.idempotency_key: entry for entry in CostEntry.objects.filter(idempotency_key__in=set(keys.values()))}
    charged: list[CostEntry] = []
    failed: dict[str, str] = {}
    for version in versions:
        key = keys[version.pk]
        if key in recorded:
            if recorded[key] not in charged:
                charged.append(recorded[key])
            continue
        entry = _charge(version=version, key=key, month_start=month_start, occurred_at=occurred_at, failed=failed)
        if entry is not None:
            recorded[key] = entry
            charged.append(entry)
    return StorageMonth(charged=charged, failed=failed)


def _charge(
    *, version: ModelVersion, key: str, month_start: date, occurred_at: datetime, failed: dict[str, str],
) -> CostEntry | None:
    """The month's storage entry of `version`'s model, or None — noting in `failed` why, unless the
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
        failed[version.model_id] = exc.message if isinstance(exc, DomainError) else f"{type(exc).__name__}: {exc}"
        return None
