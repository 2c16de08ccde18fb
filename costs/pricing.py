"""Prices and what things cost: plain data in, Decimal dollars out. No Django.

A price is a version: it applies from `effective_from` until the next version of the same model.
A fine-tuned model (`ft:<base>:…`) is charged at its own prices when it has any, else at its base
model's — Mistral bills a fine-tuned model's inference at the fine-tuned rate of its base, and the
price table names that rate under the base model.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import date
from decimal import ROUND_HALF_UP, Decimal

from models_app.registry.lifecycle import FINE_TUNED_PREFIX  # pure, as this module

# The ledger keeps micro-dollars: one inference call on a small model costs a few of them, and a
# total of many such calls must still agree to the cent with the sum of its parts.
LEDGER_QUANTUM = Decimal("0.000001")
CENT = Decimal("0.01")
MILLION = Decimal(1_000_000)

# Mistral's published fine-tuning terms (docs.mistral.ai/capabilities/finetuning): "Every fine-tuning
# job comes with a minimum fee of $4, and there's a monthly storage fee of $2 for each model."
DEFAULT_FINE_TUNING_MINIMUM_USD = Decimal("4")
DEFAULT_STORAGE_USD_PER_MONTH = Decimal("2")

@dataclass(frozen=True)
class Price:
    model: str
    effective_from: date
    input_usd_per_million: Decimal
    output_usd_per_million: Decimal
    training_usd_per_million: Decimal | None = None
    fine_tuning_minimum_usd: Decimal = DEFAULT_FINE_TUNING_MINIMUM_USD
    storage_usd_per_month: Decimal = DEFAULT_STORAGE_USD_PER_MONTH


class PriceUnknown(LookupError):
    """No price applies; the message says which model and date, and where prices are kept."""


def to_ledger_amount(amount: Decimal) -> Decimal:
    return amount.quantize(LEDGER_QUANTUM, rounding=ROUND_HALF_UP)


def to_cents(amount: Decimal) -> Decimal:
    return amount.quantize(CENT, rounding=ROUND_HALF_UP)


def base_model_of(model: str) -> str | None:
    """`ft:open-mistral-7b:1a2b3c4d:20261101:5e6f7a8b` → `open-mistral-7b`; None for a base model."""
    if not model.startswith(FINE_TUNED_PREFIX):
        return None
    parts = model.split(":")
    return parts[1] if len(parts) >= 2 and parts[1] else None


def price_candidates(model: str, base_model: str | None = None) -> list[str]:
    """The model names whose prices may apply to `model`, most specific first."""
    names = [model]
    base = base_model or base_model_of(model)
    if base and base != model:
        names.append(base)
    return names


def resolve_price(*, model: str, on: date, prices: Iterable[Price], base_model: str | None = None) -> Price:
    """The price in force for `model` on `on`: the model's own newest version effective by then,
    else its base model's. Raises PriceUnknown."""
    by_model: dict[str, list[Price]] = {}
    for price in prices:
        if price.effective_from <= on:
            by_model.setdefault(price.model, []).append(price)
    candidates = price_candidates(model, base_model)
    for name in candidates:
        versions = by_model.get(name)
        if versions:
            return max(versions, key=lambda price: price.effective_from)
    tried = f" or its base model '{candidates[-1]}'" if len(candidates) > 1 else ""
    raise PriceUnknown(
        f"no price for model '{model}'{tried} in force on {on.isoformat()}; "
        "add one in the admin (Costs and budgets › Prices)"
    )


def inference_cost(*, price: Price, input_tokens: int, output_tokens: int, quantum: Decimal = LEDGER_QUANTUM) -> Decimal:
    """What the tokens cost, rounded half-up to `quantum`: the ledger's micro-dollar for a charge that is
    one entry, finer for a cost that is summed with others before it becomes one (an outcome's cost is
    kept to eight places, and its ledger entry is the sum of many, rounded once)."""
    if input_tokens < 0 or output_tokens < 0:
        raise ValueError("token counts cannot be negative")
    raw = (Decimal(input_tokens) * price.input_usd_per_million + Decimal(output_tokens) * price.output_usd_per_million) / MILLION
    return raw.quantize(quantum, rounding=ROUND_HALF_UP)


def fine_tuning_cost(*, price: Price, training_tokens: int) -> Decimal:
    """Training tokens at the training rate, never less than the per-job minimum fee."""
    if training_tokens < 0:
        raise ValueError("token counts cannot be negative")
    if price.training_usd_per_million is None:
        raise PriceUnknown(
            f"model '{price.model}' has no training price (version of {price.effective_from.isoformat()}); "
            "add one in the admin or record the provider's reported cost"
        )
    by_tokens = Decimal(training_tokens) * price.training_usd_per_million / MILLION
    return to_ledger_amount(max(by_tokens, price.fine_tuning_minimum_usd))


def storage_cost(*, price: Price, months: int = 1) -> Decimal:
    return to_ledger_amount(price.storage_usd_per_month * months)
