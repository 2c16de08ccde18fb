"""GET /api/v1/costs/summary and POST /api/v1/costs/budget-check (409 when the estimate does not fit)."""

from __future__ import annotations

from decimal import Decimal

import pytest

from costs.services import budget_upsert, cost_entry_reverse, cost_record
from tests.factories import AgentFactory

pytestmark = pytest.mark.django_db


def bearer(key: str) -> dict[str, str]:
    return {"HTTP_AUTHORIZATION": f"Bearer {key}"}


def charge(agent, amount, key, operation="benchmark"):
    return cost_record(agent=agent, operation=operation, amount_usd=Decimal(amount), idempotency_key=key)


def test_summary_has_the_contract_shape_with_decimal_strings(client, qa_agent, legal_agent, default_budget, api_key_for):
    charge(qa_agent, "7.25", "a")
    charge(legal_agent, "8.000125", "b", operation="inference")
    response = client.get("/api/v1/costs/summary", **bearer(api_key_for(all_agents=True)))
    assert response.status_code == 200
    assert response.json() == {
        "budget_usd": "30.00",
        "spent_usd": "15.250125",
        "percent": 50.83,
        "thresholds_crossed": [25, 50],
        "by_agent": {"legal_agent": "8.000125", "qa_agent": "7.25"},
        "by_operation": {"benchmark": "7.25", "inference": "8.000125"},
    }


def test_zero_spend_is_a_plain_decimal_string(client, qa_agent, default_budget, api_key_for):
    # A reversal brings an operation's sum back to zero: "0.00", never "0E-6" (str of a zero Decimal).
    entry = charge(qa_agent, "0.000001", "tiny", operation="inference")
    cost_entry_reverse(entry=entry, actor=None, reason="test")
    body = client.get("/api/v1/costs/summary", **bearer(api_key_for("qa_agent"))).json()
    assert (body["spent_usd"], body["by_agent"], body["by_operation"]) == ("0.00", {"qa_agent": "0.00"}, {"inference": "0.00"})


def test_summary_by_agent_names_only_the_agents_the_key_may_act_for(client, qa_agent, legal_agent, default_budget, api_key_for):
    content_agent = AgentFactory(slug="content_agent")
    # The shared `default` budget covers every agent; a one-agent key must not learn the others' spend.
    charge(qa_agent, "7.25", "a")
    charge(legal_agent, "8.000125", "b", operation="inference")
    charge(content_agent, "1", "c")
    body = client.get("/api/v1/costs/summary", **bearer(api_key_for("qa_agent"))).json()
    assert body["by_agent"] == {"qa_agent": "7.25"}
    assert body["spent_usd"] == "16.250125"  # the budget's total stays the total
    two = client.get("/api/v1/costs/summary", **bearer(api_key_for("qa_agent", "content_agent"))).json()
    assert two["by_agent"] == {"content_agent": "1.00", "qa_agent": "7.25"}


def test_summary_of_another_budget_unknown_budget_and_missing_key(client, qa_agent, legal_agent, default_budget, api_key_for):
    budget_upsert(name="legal", amount_usd="10", agent=legal_agent)
    charge(legal_agent, "3", "l")
    qa_key = api_key_for("qa_agent")
    assert client.get("/api/v1/costs/summary?budget=legal", **bearer(api_key_for("legal_agent"))).json()["spent_usd"] == "3.00"
    refused = client.get("/api/v1/costs/summary?budget=legal", **bearer(qa_key))
    assert (refused.status_code, refused.json()["detail"]) == (
        403, "API key 'test qa_agent' may not read budget 'legal': it belongs to an agent this key may not act for")
    unknown = client.get("/api/v1/costs/summary?budget=nope", **bearer(qa_key))
    assert unknown.status_code == 404
    # Says only that it does not exist: no list of the budgets, which would name other agents' budgets to this key.
    assert unknown.json()["detail"] == "budget 'nope' does not exist"
    assert client.get("/api/v1/costs/summary").status_code == 401


def test_budget_check_answers_409_with_the_message_when_one_dollar_is_left(client, qa_agent, legal_agent, default_budget, api_key_for):
    charge(qa_agent, "29", "spent")
    key = api_key_for("qa_agent")
    refused = client.post("/api/v1/costs/budget-check", {"agent": "qa_agent", "estimate_usd": "2.00"},
                          content_type="application/json", **bearer(key))
    assert refused.status_code == 409
    # An API key cannot override: the refusal says who can, and where (not "pass an override reason").
    assert refused.json() == {"detail": (
        "budget 'default' is at 96.6 % of $30.00 ($29.00 spent); this run needs an estimated $2.00 but only $1.00 is "
        "left — raise the budget or have a person with costs.override_budget override it with a reason in the "
        "admin or the command line (an API key cannot override a budget)"),
        "code": "budget_exceeded"}
    fits = client.post("/api/v1/costs/budget-check", {"agent": "qa_agent", "estimate_usd": "0.75"},
                       content_type="application/json", **bearer(key))
    assert (fits.status_code, fits.json()) == (200, {"allowed": True, "estimate_usd": "0.75", "budgets_checked": ["default"]})
    other = client.post("/api/v1/costs/budget-check", {"agent": "legal_agent", "estimate_usd": "1"},
                        content_type="application/json", **bearer(key))
    assert other.status_code == 403
    negative = client.post("/api/v1/costs/budget-check", {"agent": "qa_agent", "estimate_usd": "-1"},
                           content_type="application/json", **bearer(key))
    assert negative.status_code == 422 and negative.json()["errors"][0]["field"] == "estimate_usd"


def test_a_tiny_charge_leaves_the_summary_answering(client, qa_agent, default_budget, api_key_for):
    """Money review: one $0.00001 charge on the $30 budget projected exhaustion three million days on,
    past the year 9999: building that date raised OverflowError and the summary answered 500."""
    charge(qa_agent, "0.00001", "tiny", operation="inference")
    response = client.get("/api/v1/costs/summary", **bearer(api_key_for("qa_agent")))
    assert response.status_code == 200, response.content
    assert (response.json()["spent_usd"], response.json()["percent"]) == ("0.00001", 0.0)


def test_percent_is_rounded_down_so_it_never_reads_a_threshold_not_crossed(client, qa_agent, default_budget, api_key_for):
    """Money review: $7.4985 of $30 is 24.995 %; round() (half-even) answered 25.0 beside
    "thresholds_crossed": [] — the admin's rule is to round down, and the API now follows it."""
    charge(qa_agent, "7.4985", "just-under")
    body = client.get("/api/v1/costs/summary", **bearer(api_key_for("qa_agent"))).json()
    assert (body["percent"], body["thresholds_crossed"]) == (24.99, [])
    charge(qa_agent, "0.0015", "at-25")
    body = client.get("/api/v1/costs/summary", **bearer(api_key_for("qa_agent"))).json()
    assert (body["percent"], body["thresholds_crossed"]) == (25.0, [25])
