"""`POST/GET /api/v1/benchmarks/runs…`: auth, validation, refusals and what a finished run shows."""

from __future__ import annotations

import io

import pytest
from django.core.management import call_command
from django.core.management.base import CommandError

from costs.services import budget_upsert
from models_app.benchmarks.models import BenchmarkChunk, BenchmarkRun
from models_app.benchmarks.runner import benchmark_chunk_execute
from models_app.benchmarks.services import benchmark_run_create
from models_app.registry.models import Agent
from models_app.registry.services import model_version_register, provider_account_upsert

pytestmark = pytest.mark.django_db
URL = "/api/v1/benchmarks/runs"


def bearer(key: str) -> dict[str, str]:
    return {"HTTP_AUTHORIZATION": f"Bearer {key}"}


def test_starting_a_run_answers_202_with_the_queued_run(client, demo_simulator, api_key_for):
    response = client.post(URL, {"agent": "qa_agent"}, content_type="application/json", **bearer(api_key_for("qa_agent")))

    assert response.status_code == 202, response.json()
    body = response.json()
    assert body["status"] == "queued" and body["verdict"] is None and body["agent"] == "qa_agent"
    assert body["suite"] == {"slug": "core", "version": 1}
    assert body["baseline"]["model"] == "open-mistral-7b" and body["candidate"]["model"].startswith("ft:")
    assert body["progress"] == {"done": 0, "total": 96, "percent": 0.0}
    assert body["cost_usd"] == "0.000000" and float(body["estimated_cost_usd"]) > 0
    run = BenchmarkRun.objects.get(pk=body["run"])
    assert run.requested_via.startswith("api: test qa_agent")


def test_auth_and_scope(client, demo_simulator, api_key_for):
    assert client.post(URL, {"agent": "qa_agent"}, content_type="application/json").status_code == 401
    other = bearer(api_key_for("legal_agent"))
    forbidden = client.post(URL, {"agent": "qa_agent"}, content_type="application/json", **other)
    assert forbidden.status_code == 403 and "may not act for agent 'qa_agent'" in forbidden.json()["detail"]
    unknown = client.post(URL, {"agent": "nobody"}, content_type="application/json", **other)
    assert unknown.status_code == 404  # to every key (CONTRACT)
    everyone = bearer(api_key_for(all_agents=True))
    assert client.post(URL, {"agent": "nobody"}, content_type="application/json", **everyone).status_code == 404

    run = benchmark_run_create(agent=Agent.objects.get(slug="qa_agent"))
    assert client.get(f"{URL}/{run.pk}", **other).status_code == 403
    assert client.get(f"{URL}/999999", **other).status_code == 404
    assert client.get(URL, **other).json() == []  # only the runs of the key's agents
    assert [r["run"] for r in client.get(URL, **bearer(api_key_for("qa_agent"))).json()] == [run.pk]


def test_invalid_bodies_and_unknown_names(client, demo_simulator, api_key_for):
    key = bearer(api_key_for("qa_agent"))
    missing = client.post(URL, {}, content_type="application/json", **key)
    assert missing.status_code == 422 and missing.json()["errors"][0]["field"] == "agent"
    suite = client.post(URL, {"agent": "qa_agent", "suite": "nope"}, content_type="application/json", **key)
    assert suite.status_code == 404 and "no benchmark suite 'nope'" in suite.json()["detail"]
    model = client.post(URL, {"agent": "qa_agent", "candidate": "ft:nope"}, content_type="application/json", **key)
    assert model.status_code == 404
    assert model.json()["detail"].startswith("candidate: agent 'qa_agent' has no model 'ft:nope'; its models: ")
    same = client.post(URL, {"agent": "qa_agent", "candidate": "open-mistral-7b"}, content_type="application/json", **key)
    assert same.status_code == 422 and "same version" in same.json()["detail"]


def test_a_model_id_two_providers_serve_is_refused_not_guessed(client, demo_simulator, api_key_for):
    """The API and `benchmark_finetuned` resolve a model id through the same selector: both refuse it."""
    agent = Agent.objects.get(slug="qa_agent")
    served = agent.versions.get(status="live")
    other = provider_account_upsert(name="second-host", kind="simulator", base_url="http://127.0.0.1:9/v1", api_key_env="")
    model_version_register(agent=agent, provider=other, model_id=served.model_id, base_model=served.base_model, kind="baseline")
    body = {"agent": "qa_agent", "baseline": served.model_id}

    refused = client.post(URL, body, content_type="application/json", **bearer(api_key_for("qa_agent")))

    assert refused.status_code == 409, refused.json()
    assert refused.json()["detail"] == (
        f"baseline: '{served.model_id}' is served by several providers for 'qa_agent' "
        f"({', '.join(sorted([served.provider.name, 'second-host']))}); choose in the admin"
    )
    with pytest.raises(CommandError) as usage:
        call_command("benchmark_finetuned", "--agent", "qa_agent", "--baseline", served.model_id, stdout=io.StringIO())
    assert usage.value.returncode == 2 and str(usage.value).startswith(f"--baseline: '{served.model_id}' is served by several")
    assert not BenchmarkRun.objects.exists()


def test_refusals_are_409_with_the_reason(client, demo_simulator, api_key_for):
    key = bearer(api_key_for("qa_agent"))
    first = client.post(URL, {"agent": "qa_agent"}, content_type="application/json", **key).json()
    again = {"agent": "qa_agent", "candidate": first["candidate"]["model"]}
    busy = client.post(URL, again, content_type="application/json", **key)
    assert busy.status_code == 409 and f"already being benchmarked by run #{first['run']}" in busy.json()["detail"]
    # Without a candidate the default is still the newest fine-tune, the one in the run.
    default = client.post(URL, {"agent": "qa_agent"}, content_type="application/json", **key)
    assert default.status_code == 409 and default.json()["detail"] == busy.json()["detail"]

    budget_upsert(name="default", amount_usd="0.0001")
    broke = client.post(URL, {"agent": "legal_agent"}, content_type="application/json", **bearer(api_key_for("legal_agent")))
    assert broke.status_code == 409 and "budget 'default'" in broke.json()["detail"]
    assert "an API key cannot override a budget" in broke.json()["detail"]
    assert "pass an override reason" not in broke.json()["detail"]


def test_a_finished_run_shows_verdict_interval_tags_and_regressions(client, demo_simulator, api_key_for):
    run = benchmark_run_create(agent=Agent.objects.get(slug="content_agent"))
    for chunk in BenchmarkChunk.objects.filter(run=run):
        benchmark_chunk_execute(chunk_id=chunk.pk, worker="inline@test")

    body = client.get(f"{URL}/{run.pk}", **bearer(api_key_for("content_agent"))).json()

    run.refresh_from_db()
    assert body["status"] == "completed" and body["verdict"] == run.verdict == "PASS"
    assert body["ci95"] == [run.comparison["ci_low"], run.comparison["ci_high"]]
    assert body["progress"]["percent"] == 100.0 and body["cost_usd"] == f"{run.cost_usd:.6f}"
    assert body["reasons"] and {row["tag"] for row in body["per_tag"]} >= {"tagline", "difficulty:easy"}
    assert isinstance(body["regressions"], list) and body["finished_at"] is not None
    assert body["baseline"]["n"] == body["candidate"]["n"] == 48
