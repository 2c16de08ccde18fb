"""GET /experiments/{key}/results: per-arm aggregates computed in SQL agree with the same numbers
computed independently in Python; lift, interval, p-value, SRM and guardrail states."""

from __future__ import annotations

from decimal import Decimal

import numpy as np
import pytest
from scipy import stats as scipy_stats

from experiments.models import OutcomeEvent
from experiments.selectors import experiment_results, get_experiment
from experiments.services import experiment_start, outcomes_ingest
from tests.experiments.factories import draft_experiment, outcome_events, rollout_team

pytestmark = pytest.mark.django_db


def bearer(key: str) -> dict[str, str]:
    return {"HTTP_AUTHORIZATION": f"Bearer {key}"}


@pytest.fixture
def experiment_with_data():  # type: ignore[no-untyped-def]
    team = rollout_team()
    experiment = experiment_start(experiment=draft_experiment(actor=team["starter"], stage_plan=[20, 100]), actor=team["starter"])
    control = outcome_events(experiment, arm="control", n=400, success_rate=0.85, latency_ms=400, quality=0.70, seed=1)
    treatment = outcome_events(experiment, arm="treatment", n=100, success_rate=0.92, latency_ms=300, quality=0.75, seed=2)
    for start in range(0, 500, 250):
        outcomes_ingest(principal=None, events=(control + treatment)[start : start + 250])
    # Costs as the costs app would price them (the pricing itself is tested there).
    stored = list(OutcomeEvent.objects.order_by("event_id"))
    for index, row in enumerate(stored):
        row.cost_usd = Decimal("0.00012") if row.variant == "control" else Decimal("0.00030") + Decimal(index % 3) / 100000
    OutcomeEvent.objects.bulk_update(stored, ["cost_usd"])
    return experiment, control, treatment


def test_per_arm_numbers_match_an_independent_python_computation(experiment_with_data, django_assert_max_num_queries):
    experiment, control, treatment = experiment_with_data
    experiment = get_experiment(key=experiment.key)
    from django.db import connection

    # One aggregate query, no loop over events; SQLite has no percentile_cont, so its documented
    # fallback reads each arm's sorted latencies (one more query per arm).
    with django_assert_max_num_queries(1 if connection.vendor == "postgresql" else 3):
        results = experiment_results(experiment=experiment)
    for arm, events in (("control", control), ("treatment", treatment)):
        got = results["variants"][arm]
        latencies = np.array([e["latency_ms"] for e in events])
        assert got["n"] == len(events)
        assert got["success_rate"] == pytest.approx(np.mean([e["success"] for e in events]))
        assert got["mean_quality"] == pytest.approx(np.mean([e["quality"] for e in events]))
        assert got["latency_p50_ms"] == pytest.approx(np.percentile(latencies, 50))  # linear, as percentile_cont
        assert got["latency_p95_ms"] == pytest.approx(np.percentile(latencies, 95))
        costs = [c for c in OutcomeEvent.objects.filter(variant=arm).values_list("cost_usd", flat=True)]
        assert got["cost_usd"] == str((sum(costs)).quantize(Decimal("0.00000001")))
        assert Decimal(got["cost_per_request_usd"]) == (sum(costs) / len(costs)).quantize(Decimal("0.00000001"))


def test_lift_interval_and_p_value_of_the_success_rate(experiment_with_data):
    experiment, control, treatment = experiment_with_data
    results = experiment_results(experiment=experiment)
    c_success = sum(e["success"] for e in control)
    t_success = sum(e["success"] for e in treatment)
    table = [[c_success, len(control) - c_success], [t_success, len(treatment) - t_success]]
    chi2_p = scipy_stats.chi2_contingency(table, correction=False).pvalue
    assert results["p_value"] == pytest.approx(chi2_p, rel=1e-6)
    assert results["relative_lift"] == pytest.approx((t_success / len(treatment)) / (c_success / len(control)) - 1)
    low, high = results["ci95"]
    assert low < results["relative_lift"] < high
    assert results["comparisons"]["latency_ms"]["relative_lift"] < 0  # treatment is faster
    assert results["comparisons"]["quality"]["p_value"] < 0.05


def test_srm_and_guardrail_states(experiment_with_data):
    experiment, _, _ = experiment_with_data
    results = experiment_results(experiment=experiment)
    # 400 / 100 users against a planned 80 / 20 split: exactly as planned.
    assert results["srm_p"] == pytest.approx(1.0) and results["srm_flagged"] is False
    states = {g["metric"]: g["state"] for g in results["guardrails"]}
    assert states["success_rate"] == "healthy" and states["latency_ms"] == "healthy"
    assert set(states) == {"success_rate", "latency_ms", "quality", "cost_per_request"}
    # Treatment costs 2.5x control: beyond the +50 % warning.
    assert states["cost_per_request"] == "warning"


def test_the_endpoint_serves_the_results_to_keys_of_that_agent_only(client, experiment_with_data, api_key_for):
    experiment, _, _ = experiment_with_data
    response = client.get(f"/api/v1/experiments/{experiment.key}/results", **bearer(api_key_for("qa_agent")))
    assert response.status_code == 200
    body = response.json()
    assert body["experiment"] == "qa_agent-exp" and body["stage_percent"] == 20
    assert set(body["variants"]["control"]) >= {"n", "success_rate", "mean_quality", "latency_p50_ms",
                                                 "latency_p95_ms", "cost_per_request_usd"}
    assert {"relative_lift", "ci95", "p_value", "srm_p", "guardrails"} <= set(body)
    from tests.factories import AgentFactory

    AgentFactory(slug="legal_agent")
    assert client.get(f"/api/v1/experiments/{experiment.key}/results", **bearer(api_key_for("legal_agent"))).status_code == 403
    missing = client.get("/api/v1/experiments/nope/results", **bearer(api_key_for("qa_agent")))
    assert missing.status_code == 404 and missing.json()["detail"] == "experiment 'nope' does not exist"


def test_an_experiment_without_outcomes_has_empty_arms_and_no_comparison():
    team = rollout_team()
    experiment = experiment_start(experiment=draft_experiment(actor=team["starter"]), actor=team["starter"])
    results = experiment_results(experiment=experiment)
    assert results["variants"]["control"]["n"] == 0 and results["variants"]["control"]["success_rate"] is None
    assert results["relative_lift"] is None and results["p_value"] is None
    assert {g["state"] for g in results["guardrails"]} == {"no_data", "not_reported"}
