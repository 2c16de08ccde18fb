"""costs/pricing.py: versions in force, fine-tuned models priced as their base, fees."""

from __future__ import annotations

from datetime import date
from decimal import Decimal

import pytest
from hypothesis import given
from hypothesis import strategies as st

from costs.pricing import (
    Price,
    PriceUnknown,
    base_model_of,
    fine_tuning_cost,
    inference_cost,
    resolve_price,
    storage_cost,
)

BASE_2024 = Price("open-mistral-7b", date(2024, 6, 1), Decimal("0.25"), Decimal("0.25"), Decimal("2"))
BASE_2026 = Price("open-mistral-7b", date(2026, 1, 1), Decimal("0.10"), Decimal("0.30"), Decimal("1"))
FT_OWN = Price("ft:open-mistral-7b:aaaa1111:20261101:bbbb2222", date(2026, 6, 1), Decimal("0.75"), Decimal("0.75"))


def test_base_model_of_fine_tuned_names():
    assert base_model_of("ft:open-mistral-7b:1a2b3c4d:20261101:5e6f7a8b") == "open-mistral-7b"
    assert base_model_of("open-mistral-7b") is None
    assert base_model_of("ft:") is None


def test_the_newest_version_in_force_on_the_date_applies():
    prices = [BASE_2024, BASE_2026]
    assert resolve_price(model="open-mistral-7b", on=date(2025, 12, 31), prices=prices) == BASE_2024
    assert resolve_price(model="open-mistral-7b", on=date(2026, 1, 1), prices=prices) == BASE_2026
    with pytest.raises(PriceUnknown, match="no price for model 'open-mistral-7b' in force on 2024-05-31"):
        resolve_price(model="open-mistral-7b", on=date(2024, 5, 31), prices=prices)


def test_fine_tuned_model_inherits_base_prices_unless_it_has_its_own():
    other_ft = "ft:open-mistral-7b:cccc3333:20261101:dddd4444"
    prices = [BASE_2024, BASE_2026, FT_OWN]
    assert resolve_price(model=other_ft, on=date(2026, 7, 1), prices=prices) == BASE_2026
    assert resolve_price(model=FT_OWN.model, on=date(2026, 7, 1), prices=prices) == FT_OWN
    # Before its own version starts, the fine-tuned model is priced as its base.
    assert resolve_price(model=FT_OWN.model, on=date(2026, 5, 1), prices=prices) == BASE_2026
    # A model id without the ft: prefix can still name its base explicitly.
    assert resolve_price(model="my-tune", base_model="open-mistral-7b", on=date(2026, 7, 1), prices=prices) == BASE_2026
    with pytest.raises(PriceUnknown, match="or its base model 'mistral-tiny'"):
        resolve_price(model="ft:mistral-tiny:x:y:z", on=date(2026, 7, 1), prices=prices)


def test_inference_cost_per_million_tokens_in_micro_dollars():
    assert inference_cost(price=BASE_2026, input_tokens=1_000_000, output_tokens=1_000_000) == Decimal("0.400000")
    assert inference_cost(price=BASE_2024, input_tokens=100, output_tokens=20) == Decimal("0.000030")
    # 1 token at $0.25 / 1M = $0.00000025, rounded half-up to the ledger's micro-dollar.
    assert inference_cost(price=BASE_2024, input_tokens=1, output_tokens=1) == Decimal("0.000001")
    # A cost summed with others before it is one ledger entry (an outcome's) is kept finer, and rounded once later.
    assert inference_cost(price=BASE_2024, input_tokens=1, output_tokens=0, quantum=Decimal("0.00000001")) == Decimal("0.00000025")


def test_fine_tuning_costs_at_least_the_minimum_fee():
    assert fine_tuning_cost(price=BASE_2024, training_tokens=1_000_000) == Decimal("4.000000")  # $2 < $4 minimum
    assert fine_tuning_cost(price=BASE_2024, training_tokens=3_000_000) == Decimal("6.000000")
    with pytest.raises(PriceUnknown, match="has no training price"):
        fine_tuning_cost(price=FT_OWN, training_tokens=10)


def test_storage_is_two_dollars_a_month_by_default():
    assert storage_cost(price=BASE_2024) == Decimal("2.000000")
    assert storage_cost(price=BASE_2024, months=3) == Decimal("6.000000")


@given(
    input_tokens=st.integers(min_value=0, max_value=10**9),
    output_tokens=st.integers(min_value=0, max_value=10**9),
    extra=st.integers(min_value=0, max_value=10**6),
)
def test_inference_cost_is_monotonic_and_exact_to_the_micro_dollar(input_tokens, output_tokens, extra):
    cost = inference_cost(price=BASE_2026, input_tokens=input_tokens, output_tokens=output_tokens)
    exact = (Decimal(input_tokens) * BASE_2026.input_usd_per_million + Decimal(output_tokens) * BASE_2026.output_usd_per_million) / 10**6
    assert abs(cost - exact) <= Decimal("0.0000005")
    assert inference_cost(price=BASE_2026, input_tokens=input_tokens + extra, output_tokens=output_tokens) >= cost
