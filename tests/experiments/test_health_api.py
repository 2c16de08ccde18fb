"""GET /agents/{agent}/health: status from the outcomes recorded in the last 5 and 15 minutes (ok,
degraded, failing, idle), the live model and the experiment; the same agent scoping as every agent
endpoint; and the Agent admin list's health column."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.utils import timezone

from experiments.health import WindowStats, health_status
from experiments.outcomes import outcomes_ingest
from experiments.services import experiment_start
from tests.experiments.factories import agent_with_candidate, draft_experiment, rollout_team

pytestmark = pytest.mark.django_db


def bearer(key: str) -> dict[str, str]:
    return {"HTTP_AUTHORIZATION": f"Bearer {key}"}


def record(agent: str, model: str, *, n: int, failures: int, latency_ms: float, minutes_ago: float = 0, prefix: str = "e") -> None:
    events = [{"event_id": f"{prefix}-{i}", "agent": agent, "user_id": f"u{i}", "model": model, "success": i >= failures,
               "latency_ms": latency_ms} for i in range(n)]
    outcomes_ingest(principal=None, events=events, received_at=timezone.now() - timedelta(minutes=minutes_ago))


def test_an_agent_without_recent_outcomes_is_idle(client, api_key_for):
    _, baseline, _ = agent_with_candidate("qa_agent")
    record("qa_agent", baseline.model_id, n=50, failures=50, latency_ms=100, minutes_ago=20)  # too old to count
    response = client.get("/api/v1/agents/qa_agent/health", **bearer(api_key_for("qa_agent")))
    assert response.status_code == 200
    assert response.json() == {
        "agent": "qa_agent", "status": "idle",
        "window_5m": {"requests": 0, "error_ratio": None, "latency_p95_ms": None},
        "window_15m": {"requests": 0, "error_ratio": None, "latency_p95_ms": None},
        "live_model": baseline.model_id, "experiment": None,
    }


def test_errors_and_latency_of_the_last_minutes_make_the_status(client, api_key_for):
    experiment = experiment_start(experiment=draft_experiment(actor=rollout_team()["starter"]), actor=None,
                                  override_reason="test")
    key = api_key_for("qa_agent")
    control = experiment.control.model_id
    record("qa_agent", control, n=40, failures=0, latency_ms=300, minutes_ago=10, prefix="older")
    record("qa_agent", control, n=40, failures=2, latency_ms=300, prefix="now")
    body = client.get("/api/v1/agents/qa_agent/health", **bearer(key)).json()
    assert body["status"] == "ok"
    assert body["window_5m"] == {"requests": 40, "error_ratio": 0.05, "latency_p95_ms": 300.0}
    assert body["window_15m"] == {"requests": 80, "error_ratio": 0.025, "latency_p95_ms": 300.0}
    assert body["experiment"] == {"key": experiment.key, "status": "running", "stage_percent": 10}

    record("qa_agent", control, n=20, failures=2, latency_ms=300, prefix="worse")  # 4 of 60: 6.7 %
    assert client.get("/api/v1/agents/qa_agent/health", **bearer(key)).json()["status"] == "degraded"
    record("qa_agent", control, n=40, failures=30, latency_ms=300, prefix="failing")  # 34 of 100
    body = client.get("/api/v1/agents/qa_agent/health", **bearer(key)).json()
    assert body["status"] == "failing" and body["window_5m"]["error_ratio"] == 0.34


def test_slow_answers_alone_degrade_then_fail():
    fast = WindowStats(requests=100, errors=0, latency_p95_ms=800)
    assert health_status(window_5m=fast, window_15m=fast) == "ok"
    assert health_status(window_5m=WindowStats(100, 0, 6_000), window_15m=fast) == "degraded"
    assert health_status(window_5m=WindowStats(100, 0, 12_000), window_15m=fast) == "failing"
    # Too few requests in 5 minutes to judge: the 15-minute window decides.
    assert health_status(window_5m=WindowStats(3, 3, 12_000), window_15m=fast) == "ok"
    assert health_status(window_5m=WindowStats(0, 0, None), window_15m=WindowStats(0, 0, None)) == "idle"


def test_health_is_scoped_like_every_agent_endpoint(client, api_key_for):
    agent_with_candidate("qa_agent")
    agent_with_candidate("legal_agent")
    key = api_key_for("qa_agent")
    assert client.get("/api/v1/agents/legal_agent/health", **bearer(key)).status_code == 403
    assert client.get("/api/v1/agents/nobody/health", **bearer(key)).status_code == 404
    assert client.get("/api/v1/agents/nobody/health", **bearer(api_key_for(all_agents=True))).status_code == 404
    assert client.get("/api/v1/agents/qa_agent/health").status_code == 401


def test_health_makes_no_provider_call(client, api_key_for, django_assert_max_num_queries):
    from models_app.registry.metrics import PROVIDER_CALLS

    _, baseline, _ = agent_with_candidate("qa_agent")
    record("qa_agent", baseline.model_id, n=20, failures=1, latency_ms=500)
    key = api_key_for("qa_agent")
    client.get("/api/v1/agents/qa_agent/health", **bearer(key))  # the key is cached from here on
    before = sum(sample.value for metric in PROVIDER_CALLS.collect() for sample in metric.samples if sample.name.endswith("_total"))
    with django_assert_max_num_queries(6):  # access check, agent, two windows, live model, experiment
        assert client.get("/api/v1/agents/qa_agent/health", **bearer(key)).status_code == 200
    after = sum(sample.value for metric in PROVIDER_CALLS.collect() for sample in metric.samples if sample.name.endswith("_total"))
    assert after == before


def test_the_agent_admin_list_shows_each_agents_health(admin_client):
    _, qa_live, _ = agent_with_candidate("qa_agent")
    agent_with_candidate("legal_agent")
    record("qa_agent", qa_live.model_id, n=20, failures=10, latency_ms=500)
    html = admin_client.get("/admin/models_app/agent/").content.decode()
    assert 'data-status="failing"' in html and ">failing<" in html
    assert 'data-status="idle"' in html
