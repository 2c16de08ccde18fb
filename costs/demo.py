"""The costs part of the demo world `seed_demo` builds: the price table and the `default` budget.
Idempotent, and never undoes an edit made in the admin (existing rows are left as they are)."""

from __future__ import annotations

from datetime import date
from decimal import Decimal
from typing import NamedTuple

from django.conf import settings
from django.core.management.base import OutputWrapper

from costs.budgeting import format_usd
from costs.models import Budget
from costs.services import budget_upsert, price_upsert

DEFAULT_BUDGET = "default"

# Mistral's published pay-as-you-go prices in USD per million tokens, as they stood in mid-2024 when
# the prototype ran (open-mistral-7b is the demo agents' base model). Where each number was read:
INFERENCE_SOURCE = (
    "mistral.ai/technology/#pricing (mid-2024 table; read from the copy in Lago's 'Clone Mistral pricing' "
    "template, getlago.com/docs/templates/per-token/mistral)"
)
FINE_TUNING_SOURCE = (
    "docs.mistral.ai/capabilities/finetuning: 'Every fine-tuning job comes with a minimum fee of $4, and "
    "there's a monthly storage fee of $2 for each model'"
)
TRAINING_NOTE = (
    "Training $2 / 1M tokens for Mistral 7B is Mistral's mid-2024 fine-tuning price as remembered by the "
    "engineer who seeded it, not re-read from a page — check it against mistral.ai/pricing before relying on it."
)
PRICES_EFFECTIVE_FROM = date(2024, 6, 1)
PRICES_READ_ON = date(2026, 11, 25)

class DemoRates(NamedTuple):
    """USD per million tokens; `training` None where the model cannot be fine-tuned."""

    input: Decimal
    output: Decimal
    training: Decimal | None


DEMO_PRICES: dict[str, DemoRates] = {
    "open-mistral-7b": DemoRates(input=Decimal("0.25"), output=Decimal("0.25"), training=Decimal("2")),
    "open-mixtral-8x7b": DemoRates(input=Decimal("0.7"), output=Decimal("0.7"), training=None),
    "open-mixtral-8x22b": DemoRates(input=Decimal("2"), output=Decimal("6"), training=None),
    "mistral-small-latest": DemoRates(input=Decimal("1"), output=Decimal("3"), training=None),
    "mistral-medium-latest": DemoRates(input=Decimal("2.7"), output=Decimal("8.1"), training=None),
    "mistral-large-latest": DemoRates(input=Decimal("4"), output=Decimal("12"), training=None),
}


def seed_prices() -> None:
    for model, rates in DEMO_PRICES.items():
        price_upsert(
            model=model,
            effective_from=PRICES_EFFECTIVE_FROM,
            input_usd_per_million=rates.input,
            output_usd_per_million=rates.output,
            training_usd_per_million=rates.training,
            source=f"inference: {INFERENCE_SOURCE}; fine-tuning fees: {FINE_TUNING_SOURCE}",
            source_date=PRICES_READ_ON,
            note=TRAINING_NOTE if rates.training is not None else "",
            overwrite=False,
        )


def seed_costs(*, out: OutputWrapper) -> None:
    seed_prices()
    if Budget.objects.filter(name=DEFAULT_BUDGET).exists():
        out.write(f"costs: {len(DEMO_PRICES)} model prices; budget '{DEFAULT_BUDGET}' already exists (left as it is)")
        return
    budget = budget_upsert(
        name=DEFAULT_BUDGET,
        amount_usd=settings.GENESIS.costs.budget_usd,
        period="total",
        thresholds=settings.BUDGET_THRESHOLDS,
        hard_limit=settings.GENESIS.costs.hard_limit,
        reason="demo: the prototype's $30 budget",
    )
    thresholds = "/".join(str(t["percent"]) for t in budget.thresholds)
    out.write(
        f"costs: {len(DEMO_PRICES)} model prices; budget '{budget.name}' {format_usd(budget.amount_usd)} "
        f"(thresholds {thresholds} %, hard limit {'on' if budget.hard_limit else 'off'})"
    )
