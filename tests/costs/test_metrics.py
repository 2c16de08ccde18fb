"""/metrics exports spend and budget usage, read from the database at scrape time."""

from __future__ import annotations

from decimal import Decimal

import pytest
from prometheus_client.parser import text_string_to_metric_families

from costs.services import budget_upsert, cost_entry_reverse, cost_record
from tests.factories import AgentFactory, UserFactory

pytestmark = pytest.mark.django_db


def scrape(client) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    response = client.get("/metrics")
    assert response.status_code == 200
    samples = {}
    for family in text_string_to_metric_families(response.content.decode()):
        for sample in family.samples:
            samples[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return samples


def test_metrics_follow_the_ledger_and_budgets(client, qa_agent, default_budget):
    entry = cost_record(agent=qa_agent, operation="benchmark", amount_usd=Decimal("9"), idempotency_key="a")
    cost_record(agent=qa_agent, operation="manual", amount_usd=Decimal("1.5"), idempotency_key="b")
    cost_entry_reverse(entry=entry, actor=UserFactory(is_superuser=True), reason="test")
    samples = scrape(client)
    labels = (("agent", "qa_agent"), ("operation", "benchmark"))
    assert samples[("genesis_cost_usd_total", labels)] == 9.0
    assert samples[("genesis_cost_reversed_usd_total", labels)] == 9.0
    assert samples[("genesis_cost_usd_total", (("agent", "qa_agent"), ("operation", "manual")))] == 1.5
    assert samples[("genesis_budget_used_ratio", (("budget", "default"),))] == pytest.approx(0.05)
    assert samples[("genesis_budget_limit_usd", (("budget", "default"),))] == 30.0
    assert samples[("genesis_budget_alerts_total", (("budget", "default"), ("severity", "warning")))] == 1.0
    assert samples[("genesis_cost_metrics_up", ())] == 1.0


def test_budget_figures_are_decimal_arithmetic_converted_once_without_float_noise(client, qa_agent):
    budget_upsert(name="small", amount_usd="1.10", thresholds="83")
    cost_record(agent=qa_agent, operation="manual", amount_usd=Decimal("0.000001"), idempotency_key="a")
    cost_record(agent=qa_agent, operation="manual", amount_usd=Decimal("5.878977"), idempotency_key="b")
    text = client.get("/metrics").content.decode()
    assert 'genesis_budget_threshold_usd{budget="small",threshold="83"} 0.913\n' in text  # not 0.9130000000000001
    assert 'genesis_budget_spent_usd{budget="small"} 5.878978\n' in text


def test_a_tiny_charge_leaves_the_cost_metrics_up(client, qa_agent, default_budget):
    """Money review: one $0.00001 charge made the budget's projection overflow, so the collector
    failed and /metrics read genesis_cost_metrics_up 0 with no cost series."""
    cost_record(agent=qa_agent, operation="inference", amount_usd=Decimal("0.00001"), idempotency_key="tiny")
    samples = scrape(client)
    assert samples[("genesis_cost_metrics_up", ())] == 1.0
    assert samples[("genesis_budget_spent_usd", (("budget", "default"),))] == 0.00001


def test_a_zero_dollar_budget_with_spend_reads_used_up_so_budget_exhausted_fires(client, qa_agent):
    """Money review: genesis_budget_used_ratio read 0 for a $0 budget with spend, so BudgetExhausted
    (ratio >= 1) never fired, while the API, the admin and the reports read it 100 %."""
    budget_upsert(name="frozen", amount_usd="0")
    budget_upsert(name="idle", amount_usd="0", agent=AgentFactory(slug="legal_agent"))
    cost_record(agent=qa_agent, operation="manual", amount_usd=Decimal("0.50"), idempotency_key="any")
    samples = scrape(client)
    assert samples[("genesis_budget_used_ratio", (("budget", "frozen"),))] == 1.0
    assert samples[("genesis_budget_used_ratio", (("budget", "idle"),))] == 0.0  # nothing spent in its scope
