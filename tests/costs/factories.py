"""factory_boy factories for the costs app. Rows that carry business rules (entries, budgets) are
made through the services in tests; these factories cover the plain ones."""

from __future__ import annotations

from datetime import date
from decimal import Decimal

import factory

from costs.models import PriceTable


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
