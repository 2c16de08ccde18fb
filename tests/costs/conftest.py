"""Fixtures of the costs tests: agents, the demo base model's price, budgets made by the service."""

from __future__ import annotations

from decimal import Decimal

import pytest

from costs.services import budget_upsert
from tests.costs.factories import PriceTableFactory
from tests.factories import AgentFactory, UserFactory


@pytest.fixture
def qa_agent(db):
    return AgentFactory(slug="qa_agent")


@pytest.fixture
def legal_agent(db):
    return AgentFactory(slug="legal_agent")


@pytest.fixture
def base_price(db):
    return PriceTableFactory()


@pytest.fixture
def default_budget(db):
    """$30, all agents, all time, 25/50/83 %, hard limit on — what seed_demo makes."""
    return budget_upsert(name="default", amount_usd=Decimal("30"), period="total", hard_limit=True)


@pytest.fixture
def overrider(db):
    """A staff user holding costs.override_budget (and nothing else)."""
    from django.contrib.auth.models import Permission

    user = UserFactory(username="finance_lead")
    user.user_permissions.add(Permission.objects.get(codename="override_budget", content_type__app_label="costs"))
    return user


@pytest.fixture
def alert_channels(settings, webhook):
    """In this process, alerts go to the log, email (Django's test outbox) and the `webhook` fixture's receiver."""
    settings.GENESIS = settings.GENESIS.model_copy(
        update={"alerting": settings.GENESIS.alerting.model_copy(update={"slack_webhook": webhook.url, "email_to": ["finance@example.com"]})}
    )
    return webhook
