"""Deleting agents, model versions and provider accounts in the admin (data-lifecycle review, findings
2 and 3). Django's delete page learns what a deletion touches by collecting it: with 500 000 outcomes
the agent's page read every one into memory (18.9 s, 1.7 GB) to say "Cannot delete", and "Delete
selected" did the same. Whether a row is in use is now decided by EXISTS queries before the collector
runs; an unused row (a typo just added) still goes. A model version the ledger names (its storage
charges) is refused too: the collector does not see generic foreign keys, so the entries were left
naming a deleted version."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from datetime import timedelta

import pytest
from django.contrib.messages import get_messages
from django.db.models.signals import post_init
from django.urls import reverse
from django.utils import timezone

from experiments.models import OutcomeEvent
from models_app.finetuning.storage import storage_charge_month
from models_app.registry.models import Agent, ModelVersion, ProviderAccount
from tests.costs.factories import PriceTableFactory
from tests.factories import AgentFactory, ModelVersionFactory

pytestmark = pytest.mark.django_db

OUTCOMES = 3000


@contextmanager
def outcomes_loaded() -> Iterator[list[int]]:
    """How many outcome rows Django turns into objects meanwhile (the collector materialises each one)."""
    loaded = [0]

    def count(**_: object) -> None:
        loaded[0] += 1

    post_init.connect(count, sender=OutcomeEvent, weak=False)
    try:
        yield loaded
    finally:
        post_init.disconnect(count, sender=OutcomeEvent)


def agent_with_outcomes() -> Agent:
    agent = AgentFactory(slug="busy_agent")
    now = timezone.now()
    OutcomeEvent.objects.bulk_create(
        OutcomeEvent(event_id=f"e{i}", agent=agent, variant="live", user_id=f"u{i % 97}", model="open-mistral-7b",
                     success=True, latency_ms=100.0, occurred_at=now - timedelta(seconds=i), received_at=now)
        for i in range(OUTCOMES)
    )
    return agent


def refusal(response) -> str:
    [message] = [str(m) for m in get_messages(response.wsgi_request)]
    return message


def test_an_agent_with_outcomes_is_refused_without_reading_them(admin_client, django_assert_max_num_queries):
    agent = agent_with_outcomes()
    change_url = reverse("admin:models_app_agent_change", args=[agent.pk])
    # A constant number of queries, and no outcome read: the old page read every one, 100 per query.
    with outcomes_loaded() as loaded, django_assert_max_num_queries(30):
        refused = admin_client.get(reverse("admin:models_app_agent_delete", args=[agent.pk]))
    assert loaded == [0]
    assert refused.status_code == 302 and refused["Location"] == change_url
    assert "outcome events (agent)" in refusal(refused) and "revoke its API keys" in refusal(refused)

    with outcomes_loaded() as loaded, django_assert_max_num_queries(30):
        bulk = admin_client.post(reverse("admin:models_app_agent_changelist"),
                                 {"action": "delete_selected", "_selected_action": [agent.pk], "post": "yes"})
    assert loaded == [0]
    assert "Cannot delete" in bulk.content.decode() and "outcome events (agent)" in bulk.content.decode()
    assert Agent.objects.filter(pk=agent.pk).exists() and OutcomeEvent.objects.count() == OUTCOMES
    assert "deletelink" not in admin_client.get(change_url).content.decode()


def test_an_agent_added_by_mistake_is_still_deleted_alone_or_selected(admin_client):
    typo, other_typo = AgentFactory(slug="qa_agnet"), AgentFactory(slug="qa_agnt")
    assert "deletelink" in admin_client.get(reverse("admin:models_app_agent_change", args=[typo.pk])).content.decode()
    assert admin_client.post(reverse("admin:models_app_agent_delete", args=[typo.pk]), {"post": "yes"}).status_code == 302
    admin_client.post(reverse("admin:models_app_agent_changelist"),
                      {"action": "delete_selected", "_selected_action": [other_typo.pk], "post": "yes"})
    assert not Agent.objects.filter(slug__in=["qa_agnet", "qa_agnt"]).exists()


def test_a_version_the_ledger_charged_for_storage_is_refused_saying_to_retire_it(admin_client):
    PriceTableFactory()
    charged = ModelVersionFactory(agent=AgentFactory(slug="qa_agent"))
    unused = ModelVersionFactory(agent=charged.agent, provider=charged.provider, status="retired")  # not charged
    storage_charge_month()

    refused = admin_client.post(reverse("admin:models_app_modelversion_delete", args=[charged.pk]), {"post": "yes"})
    assert refused.status_code == 302 and ModelVersion.objects.filter(pk=charged.pk).exists()
    assert "cost entries (source object)" in refusal(refused) and "Retire it instead" in refusal(refused)
    assert admin_client.post(reverse("admin:models_app_modelversion_delete", args=[unused.pk]), {"post": "yes"}).status_code == 302
    assert not ModelVersion.objects.filter(pk=unused.pk).exists()


def test_a_provider_with_versions_is_refused_saying_to_disable_it(admin_client):
    version = ModelVersionFactory()
    refused = admin_client.post(reverse("admin:models_app_provideraccount_delete", args=[version.provider.pk]), {"post": "yes"})
    assert refused.status_code == 302 and ProviderAccount.objects.filter(pk=version.provider.pk).exists()
    assert "model versions (provider)" in refusal(refused) and "Disable it instead" in refusal(refused)
