"""models_app/finetuning/storage.py on a real database: the monthly storage charge of fine-tuned models."""

from __future__ import annotations

from datetime import timedelta
from decimal import Decimal

import pytest
from django.utils import timezone

from costs.models import CostEntry
from models_app.finetuning.storage import storage_charge_month
from tests.costs.factories import PriceTableFactory
from tests.factories import AgentFactory, ModelVersionFactory

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
    assert [e.pk for e in first] == [e.pk for e in again]
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
