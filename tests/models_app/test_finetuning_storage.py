"""models_app/finetuning/storage.py on a real database: the monthly storage charge of fine-tuned models."""

from __future__ import annotations

import hashlib
from datetime import timedelta
from decimal import Decimal

import pytest
from django.utils import timezone

from costs.models import CostEntry
from models_app.finetuning.storage import StorageChargesFailed, storage_charge_month, storage_key
from models_app.finetuning.tasks import charge_monthly_storage
from models_app.registry.models import ModelVersion
from tests.costs.factories import PriceTableFactory
from tests.factories import AgentFactory, ModelVersionFactory, ProviderAccountFactory

pytestmark = pytest.mark.django_db

FT_MODEL = "ft:open-mistral-7b:1a2b3c4d:20261101:5e6f7a8b"


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
