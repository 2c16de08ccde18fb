"""factory_boy factories for the costs app. Rows that carry business rules (entries, budgets) are
made through the services in tests; these factories cover the plain ones."""

from __future__ import annotations

from datetime import date
from decimal import Decimal

import factory

from costs.models import BudgetAlert, PriceTable
from tests.factories import AgentFactory, ProviderAccountFactory


class PriceTableFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = PriceTable
        django_get_or_create = ("model", "effective_from")

    model = "open-mistral-7b"
    effective_from = date(2024, 6, 1)
    input_usd_per_million = Decimal("0.25")
    output_usd_per_million = Decimal("0.25")
    training_usd_per_million = Decimal("2")
    fine_tuning_minimum_usd = Decimal("4")
    storage_usd_per_month = Decimal("2")
    source = "test prices"
    source_date = date(2026, 11, 25)


class BudgetAlertFactory(factory.django.DjangoModelFactory):
    """A pending alert as _raise_alerts leaves it, without the on-commit enqueue of its delivery (for
    tests that deliver it themselves on committed rows)."""

    class Meta:
        model = BudgetAlert

    period_key = "total"
    threshold_percent = 25
    severity = "warning"
    budget_usd = factory.LazyAttribute(lambda alert: alert.budget.amount_usd)
    spent_usd = Decimal("8")


class TrainingFileFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = "models_app.TrainingFile"

    agent = factory.SubFactory(AgentFactory)
    provider = factory.SubFactory(ProviderAccountFactory)
    provider_file_id = factory.Sequence(lambda n: f"file-{n:06d}")
    filename = "train.jsonl"
    line_count = 100
    size_bytes = 40_000
    sha256 = factory.Sequence(lambda n: f"{n:064x}")
    estimated_tokens = 10_000


class FineTuningJobFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = "models_app.FineTuningJob"

    agent = factory.SubFactory(AgentFactory)
    provider = factory.SubFactory(ProviderAccountFactory)
    training_file = factory.SubFactory(
        TrainingFileFactory, agent=factory.SelfAttribute("..agent"), provider=factory.SelfAttribute("..provider")
    )
    base_model = "open-mistral-7b"
