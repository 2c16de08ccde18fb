"""seed_demo's costs step: the price table and budget `default` $30 with 25/50/83 % and a hard limit."""

from __future__ import annotations

import io
from decimal import Decimal

import pytest
from django.core.management import call_command

from costs.models import Budget, PriceTable
from costs.selectors import price_in_force
from costs.services import budget_upsert
from models_app.registry.demo import demo_fine_tuned_model_id

pytestmark = pytest.mark.django_db


def test_seed_demo_makes_prices_and_the_default_budget_and_keeps_edits():
    out = io.StringIO()
    call_command("seed_demo", stdout=out)
    assert "costs: 6 model prices; budget 'default' $30.00 (thresholds 25/50/83 %, hard limit on)" in out.getvalue()
    budget = Budget.objects.get(name="default")
    assert (budget.amount_usd, budget.period, budget.agent, budget.hard_limit) == (Decimal("30"), "total", None, True)
    assert budget.thresholds == [{"percent": 25, "severity": "warning"}, {"percent": 50, "severity": "critical"},
                                 {"percent": 83, "severity": "emergency"}]
    base = PriceTable.objects.get(model="open-mistral-7b")
    assert "docs.mistral.ai/capabilities/finetuning" in base.source and base.source_date is not None
    # The demo agents' fine-tuned models are priced as their base.
    assert price_in_force(model=demo_fine_tuned_model_id("qa_agent")).model == "open-mistral-7b"

    budget_upsert(name="default", amount_usd="45", reason="raised by finance")
    call_command("seed_demo", stdout=io.StringIO())
    assert Budget.objects.get(name="default").amount_usd == Decimal("45")
    assert PriceTable.objects.count() == 6
