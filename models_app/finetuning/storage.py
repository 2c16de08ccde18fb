"""The monthly storage charge of fine-tuned models: the provider keeps every model it trained, and bills
its storage each month until the model is deleted."""

from __future__ import annotations

import logging
from datetime import date, datetime

from django.utils import timezone

from costs.models import CostEntry, Operation
from costs.pricing import storage_cost
from costs.selectors import price_in_force
from costs.services import cost_record
from genesis.errors import NotFound
from models_app.registry.models import ModelKind, ModelStatus, ModelVersion

logger = logging.getLogger(__name__)


def storage_charge_month(*, month: date | None = None) -> list[CostEntry]:
    """Charge one month of storage for every fine-tuned model the provider keeps (every fine-tuned
    version not retired or rejected). Idempotent per provider, model and month, so the daily beat run
    charges each model once a month. Not one transaction: each charge commits on its own, so one
    model without a price does not hold back the others."""
    now = timezone.localtime()
    month_start = (month or now.date()).replace(day=1)
    in_month = (now.year, now.month) == (month_start.year, month_start.month)
    occurred_at = now if in_month else timezone.make_aware(datetime.combine(month_start, datetime.min.time()))
    versions = (
        ModelVersion.objects.filter(kind=ModelKind.FINE_TUNED)
        .exclude(status__in=[ModelStatus.RETIRED, ModelStatus.REJECTED])
        .select_related("agent", "provider")
        .order_by("pk")
    )
    charged = []
    keys: set[str] = set()
    for version in versions:
        # The provider stores a model once, however many agents registered it: the first version (by id)
        # pays, the others are skipped (their key would name another source row, which the ledger refuses).
        key = f"storage:{version.provider.name}:{version.model_id}:{month_start:%Y-%m}"
        if key in keys:
            continue
        keys.add(key)
        try:
            price = price_in_force(model=version.model_id, on=month_start, base_model=version.base_model)
        except NotFound as exc:
            logger.warning("no storage charge for %s in %s: %s", version.model_id, f"{month_start:%Y-%m}", exc.message)
            continue
        charged.append(
            cost_record(
                agent=version.agent, operation=Operation.STORAGE, amount_usd=storage_cost(price=price),
                model=version.model_id, source_object=version, source=f"storage {month_start:%Y-%m}",
                idempotency_key=key,
                occurred_at=occurred_at, note=f"monthly storage of a fine-tuned model ({price.model} price of {price.effective_from})",
            )
        )
    return charged
