"""models_app/finetuning/storage.py on a real database: the monthly storage charge of fine-tuned models."""

from __future__ import annotations

import hashlib
from datetime import date, datetime, time, timedelta
from decimal import Decimal
from typing import Any

import pytest
from django.utils import timezone

from costs.models import CostEntry
from models_app.finetuning.storage import (
    STORAGE_MONTHS_LOOKED_AT,
    StorageChargesFailed,
    storage_charge_month,
    storage_key,
)
from models_app.finetuning.tasks import charge_monthly_storage
from models_app.registry.models import ModelStatus, ModelVersion
from models_app.registry.services import model_version_transition
from tests.costs.factories import PriceTableFactory
from tests.factories import AgentFactory, ModelVersionFactory, ProviderAccountFactory

pytestmark = pytest.mark.django_db

FT_MODEL = "ft:open-mistral-7b:1a2b3c4d:20261101:5e6f7a8b"


def registered(day: date, hour: int = 12) -> datetime:
    """A version's registration time (created_at) on `day`, local time."""
    return timezone.make_aware(datetime.combine(day, time(hour)))


def month_start(back: int) -> date:
    """The first day of the month `back` months before this one."""
    index = timezone.localdate().year * 12 + timezone.localdate().month - 1 - back
    return date(index // 12, index % 12 + 1, 1)


def storage_months(model_id: str = FT_MODEL) -> list[str]:
    return sorted(key.rsplit(":", 1)[1] for key in CostEntry.objects.filter(model=model_id).values_list("idempotency_key", flat=True))


def test_monthly_storage_charges_each_stored_fine_tuned_model_once_a_month():
    qa_agent = AgentFactory(slug="qa_agent")
    PriceTableFactory()
    stored = ModelVersionFactory(agent=qa_agent, model_id=FT_MODEL)
    ModelVersionFactory(agent=qa_agent, model_id="ft:open-mistral-7b:00000000:20260101:11111111", status="retired")
    ModelVersionFactory(agent=qa_agent, model_id="open-mistral-7b", kind="baseline", base_model="open-mistral-7b")
    first = storage_charge_month()
    again = storage_charge_month()
    assert [e.pk for e in first.charged] == [e.pk for e in again.charged] and not again.failed
    entry = CostEntry.objects.get()
    assert (entry.operation, entry.amount_usd, entry.model, entry.source_object) == ("storage", Decimal("2.000000"), FT_MODEL, stored)
    assert entry.idempotency_key == f"storage:simulator:{FT_MODEL}:{timezone.localdate():%Y-%m}"
    previous_month = timezone.localdate().replace(day=1) - timedelta(days=1)
    storage_charge_month(month=previous_month)
    assert CostEntry.objects.count() == 1  # registered this month: nothing to pay for the one before
    ModelVersion.objects.filter(pk=stored.pk).update(created_at=registered(previous_month))
    storage_charge_month(month=previous_month)
    assert CostEntry.objects.count() == 2


def test_a_model_two_agents_registered_is_charged_once_and_does_not_stop_the_others():
    """Race review: the second agent's version of the same stored model made the ledger refuse its key
    (another source row), which stopped the month's charges of every model after it."""
    PriceTableFactory()
    first = ModelVersionFactory(agent=AgentFactory(slug="qa_agent"), model_id=FT_MODEL)
    ModelVersionFactory(agent=AgentFactory(slug="support_agent"), model_id=FT_MODEL, provider=first.provider)
    later = ModelVersionFactory(agent=first.agent, model_id="ft:open-mistral-7b:22222222:20261101:33333333", provider=first.provider)

    storage_charge_month()

    assert sorted(CostEntry.objects.values_list("source_id", flat=True)) == sorted([str(first.pk), str(later.pk)])


def test_a_model_paid_for_the_month_under_another_version_row_is_not_charged_again_and_later_ones_are():
    """Data-lifecycle review: the month's entry named a version since retired (or deleted); the model,
    registered again, made the ledger refuse the key (another source row) — every daily run failed for
    the rest of the month, and a model fine-tuned later was never charged."""
    PriceTableFactory()
    first = ModelVersionFactory(agent=AgentFactory(slug="legal_agent"), model_id=FT_MODEL)
    storage_charge_month()
    ModelVersion.objects.filter(pk=first.pk).update(status="retired")
    again = ModelVersionFactory(agent=AgentFactory(slug="content_agent"), model_id=FT_MODEL, provider=first.provider)
    later = ModelVersionFactory(agent=again.agent, model_id="ft:open-mistral-7b:1a7e0000:20261206:1a7e0000", provider=first.provider)

    month = storage_charge_month()

    assert not month.failed
    assert [e.source_id for e in month.charged] == [str(first.pk), str(later.pk)]  # paid once, by the first row
    assert CostEntry.objects.filter(model=FT_MODEL).count() == 1 and CostEntry.objects.filter(model=later.model_id).count() == 1


def test_a_model_that_cannot_be_charged_does_not_stop_the_others_and_fails_the_daily_task():
    """A charge the ledger refuses (here: a storage price below zero) is named by provider and model —
    the same id at two providers is two failures, not one (they were keyed by the id alone)."""
    PriceTableFactory()
    agent = AgentFactory(slug="qa_agent")
    unchargeable = ModelVersionFactory(agent=agent, model_id="ft:open-mistral-7b:0badc0de:20261101:0badc0de")
    PriceTableFactory(model=unchargeable.model_id, storage_usd_per_month=Decimal("-1"))
    elsewhere = ModelVersionFactory(agent=agent, model_id=unchargeable.model_id, provider=ProviderAccountFactory(name="mistral"))
    chargeable = ModelVersionFactory(agent=agent, model_id=FT_MODEL, provider=unchargeable.provider)

    month = storage_charge_month()

    assert sorted(month.failed) == [("mistral", elsewhere.model_id), ("simulator", unchargeable.model_id)]
    assert all("amount_usd: -1.000000 is negative" in why for why in month.failed.values())
    assert [e.source_id for e in month.charged] == [str(chargeable.pk)]
    with pytest.raises(StorageChargesFailed, match="2 model\\(s\\) not charged for storage: ft:open-mistral-7b:0badc0de"):
        charge_monthly_storage()
    assert CostEntry.objects.count() == 1


def test_a_model_id_too_long_for_the_plain_key_is_charged_under_a_hashed_one_on_every_database():
    """Second review: `storage:{provider}:{model}:{month}` for an id as long as the registry allows (200)
    is longer than the ledger's key: PostgreSQL refused it (never charged, the daily task failing every
    day) and SQLite stored it. Such a key is now the provider and id hashed; short keys are unchanged."""
    PriceTableFactory()
    long_id = "ft:open-mistral-7b:" + "f" * 181
    version = ModelVersionFactory(agent=AgentFactory(slug="qa_agent"), model_id=long_id)
    assert len(long_id) == ModelVersion._meta.get_field("model_id").max_length

    first, again = storage_charge_month(), storage_charge_month()

    assert not first.failed and [e.pk for e in first.charged] == [e.pk for e in again.charged]
    entry = CostEntry.objects.get()
    assert (entry.model, entry.source_object) == (long_id, version)
    month = f"{timezone.localdate():%Y-%m}"
    digest = hashlib.sha256(f"simulator:{long_id}".encode()).hexdigest()
    assert entry.idempotency_key == storage_key(provider="simulator", model_id=long_id, month_start=timezone.localdate().replace(day=1)) \
        == f"storage:sha256:{digest}:{month}"
    assert storage_key(provider="simulator", model_id=FT_MODEL, month_start=timezone.localdate()) == f"storage:simulator:{FT_MODEL}:{month}"


def test_months_the_daily_run_missed_are_charged_by_the_next_run():
    """Money review: a month missed whole (beat down from the 2nd of one month to the 3rd of the month
    after next) was never charged, and neither was the month of a model registered after that month's
    last daily run: each run charged only the current month. A run now charges every month since the
    model's registration that has no entry, within STORAGE_MONTHS_LOOKED_AT."""
    PriceTableFactory()
    agent = AgentFactory(slug="qa_agent")
    stored = ModelVersionFactory(agent=agent, model_id=FT_MODEL)
    ModelVersion.objects.filter(pk=stored.pk).update(created_at=registered(month_start(2) - timedelta(days=20)))
    late = ModelVersionFactory(agent=agent, model_id="ft:open-mistral-7b:1a7e0000:20261206:1a7e0000", provider=stored.provider)
    # Registered after the previous month's last daily run (23:59 of its last day).
    ModelVersion.objects.filter(pk=late.pk).update(created_at=registered(month_start(0) - timedelta(days=1), hour=23))
    storage_charge_month(month=month_start(2))  # the last run before beat went down: two months ago
    assert storage_months() == [f"{month_start(3):%Y-%m}", f"{month_start(2):%Y-%m}"]  # its registration month too

    run = storage_charge_month()

    assert not run.failed
    assert storage_months() == [f"{month_start(back):%Y-%m}" for back in (3, 2, 1, 0)]
    assert storage_months(late.model_id) == [f"{month_start(back):%Y-%m}" for back in (1, 0)]
    assert sorted(e.model for e in run.charged) == sorted([FT_MODEL, late.model_id])  # this month's
    assert sorted((e.model, f"{timezone.localtime(e.occurred_at):%Y-%m}") for e in run.back_charged) == sorted(
        [(FT_MODEL, f"{month_start(1):%Y-%m}"), (late.model_id, f"{month_start(1):%Y-%m}")])
    late_entry = next(e for e in run.back_charged if e.model == late.model_id)
    assert late_entry.occurred_at == registered(month_start(0) - timedelta(days=1), hour=23)  # within its month, once registered
    again = storage_charge_month()
    assert not again.back_charged and CostEntry.objects.count() == 6


def test_a_month_whose_price_took_effect_after_its_first_day_is_charged_at_that_price():
    """Money review: the price was looked up on the month's first day only, so a price that took effect
    on the 15th sent the month down the "no price" branch — skipped without a failure."""
    model_id = "ft:mistral-small-latest:5ba11000:20261101:5ba11000"
    PriceTableFactory(model="mistral-small-latest", effective_from=month_start(1) + timedelta(days=14),
                      storage_usd_per_month=Decimal("3"))
    version = ModelVersionFactory(agent=AgentFactory(slug="qa_agent"), model_id=model_id, base_model="mistral-small-latest")
    ModelVersion.objects.filter(pk=version.pk).update(created_at=registered(month_start(1) + timedelta(days=1)))

    run = storage_charge_month()

    assert not run.failed
    entry = CostEntry.objects.get(model=model_id, idempotency_key__endswith=f":{month_start(1):%Y-%m}")
    assert entry.amount_usd == Decimal("3.000000")
    assert entry.note == f"monthly storage of a fine-tuned model (mistral-small-latest price of {month_start(1) + timedelta(days=14)})"
    assert storage_months(model_id) == [f"{month_start(back):%Y-%m}" for back in (1, 0)]


def test_a_run_looks_back_a_bounded_number_of_months():
    PriceTableFactory()
    version = ModelVersionFactory(agent=AgentFactory(slug="qa_agent"), model_id=FT_MODEL)
    ModelVersion.objects.filter(pk=version.pk).update(created_at=registered(month_start(STORAGE_MONTHS_LOOKED_AT + 8)))

    storage_charge_month()

    assert storage_months() == sorted(f"{month_start(back):%Y-%m}" for back in range(STORAGE_MONTHS_LOOKED_AT))


def test_months_a_revived_version_spent_rejected_are_not_charged():
    """Third review: a version rejected for months, then approved by a verdict override, was back-charged
    every month it had spent rejected (the run skips rejected versions, so those months had no entry)."""
    PriceTableFactory()
    version = ModelVersionFactory(agent=AgentFactory(slug="qa_agent"), model_id=FT_MODEL)
    ModelVersion.objects.filter(pk=version.pk).update(created_at=registered(month_start(5)))
    ModelVersion.history.filter(id=version.pk).update(history_date=registered(month_start(5)))

    def moved(to_status: str, at: datetime, **how: Any) -> None:
        model_version_transition(version=ModelVersion.objects.get(pk=version.pk), to_status=to_status, **how)
        ModelVersion.history.filter(id=version.pk, history_date__gt=at).update(history_date=at)
        ModelVersion.objects.filter(pk=version.pk).update(status_changed_at=at)

    moved(ModelStatus.REJECTED, registered(month_start(5) + timedelta(days=10)))  # a benchmark FAIL
    for back in (4, 3, 2, 1):
        storage_charge_month(month=month_start(back))  # the daily runs skip a rejected version
    assert storage_months() == []

    moved(ModelStatus.APPROVED_FOR_ROLLOUT, timezone.now(), verdict_overridden=True)  # revived this month
    run = storage_charge_month()

    # Month -5 (stored until the 10th; beat missed it) and this one; not the four it spent rejected.
    assert storage_months() == [f"{month_start(5):%Y-%m}", f"{month_start(0):%Y-%m}"]
    assert [entry.idempotency_key[-7:] for entry in run.back_charged] == [f"{month_start(5):%Y-%m}"]
