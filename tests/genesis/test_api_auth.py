"""API-key authentication and the JSON error shapes of the contract."""

from __future__ import annotations

import io

import pytest
from django.core.management import call_command

from models_app.registry import api as registry_api
from models_app.registry import services as registry_services
from models_app.registry.models import ApiKey
from models_app.registry.services import api_key_authenticate, api_key_revoke, hash_api_key

pytestmark = pytest.mark.django_db


def bearer(key: str) -> dict[str, str]:
    return {"HTTP_AUTHORIZATION": f"Bearer {key}"}


def create_key_via_command(*args: str) -> str:
    out = io.StringIO()
    call_command("create_api_key", *args, stdout=out, stderr=io.StringIO())
    return out.getvalue().strip().splitlines()[-1]


def test_key_from_command_is_stored_only_as_a_hash(seeded_demo):
    raw = create_key_via_command("--agent", "qa_agent", "--label", "qa service")
    key = ApiKey.objects.get(label="qa service")
    assert key.hashed_key == hash_api_key(raw)
    assert raw not in key.hashed_key and key.prefix == raw[: len(key.prefix)]
    assert not ApiKey.objects.filter(hashed_key=raw).exists()
    assert list(key.agents.values_list("slug", flat=True)) == ["qa_agent"]


def test_agent_key_is_accepted_for_its_agent_and_403_for_another(client, seeded_demo):
    raw = create_key_via_command("--agent", "qa_agent")
    listed = client.get("/api/v1/agents", **bearer(raw))
    assert listed.status_code == 200
    assert [a["agent"] for a in listed.json()] == ["qa_agent"]
    assert listed.json()[0]["live_model"]["model"] == "open-mistral-7b"
    assert client.get("/api/v1/agents/qa_agent", **bearer(raw)).status_code == 200
    refused = client.get("/api/v1/agents/legal_agent", **bearer(raw))
    assert refused.status_code == 403
    assert refused.json()["detail"] == "API key 'qa_agent' may not act for agent 'legal_agent'"
    # An agent that does not exist is 404 to every key (CONTRACT: "404 unknown agent").
    unknown = client.get("/api/v1/agents/nobody_agent", **bearer(raw))
    assert unknown.status_code == 404
    assert unknown.json()["detail"] == "agent 'nobody_agent' does not exist"


def test_wrong_or_missing_key_gets_401_json(client, seeded_demo):
    for headers in ({}, bearer("gk_not-a-real-key"), bearer("something-else"), {"HTTP_AUTHORIZATION": "Basic abc"}):
        response = client.get("/api/v1/agents", **headers)
        assert response.status_code == 401
        assert "missing or invalid API key" in response.json()["detail"]


def test_revoked_key_is_refused(client, seeded_demo):
    raw = create_key_via_command("--all-agents")
    assert client.get("/api/v1/agents", **bearer(raw)).status_code == 200
    api_key_revoke(key=ApiKey.objects.get(hashed_key=hash_api_key(raw)))
    from models_app.registry.services import api_key_cache_clear

    api_key_cache_clear()  # the revocation reaches other processes within API_KEY_CACHE_SECONDS
    assert client.get("/api/v1/agents", **bearer(raw)).status_code == 401


def test_all_agents_key_lists_all_five(client, seeded_demo):
    raw = create_key_via_command("--all-agents")
    agents = [a["agent"] for a in client.get("/api/v1/agents", **bearer(raw)).json()]
    assert agents == ["analyst_agent", "content_agent", "legal_agent", "qa_agent", "support_agent"]


def test_cached_authentication_touches_no_database(seeded_demo, django_assert_num_queries):
    raw = create_key_via_command("--agent", "qa_agent")
    api_key_authenticate(raw_key=raw)
    with django_assert_num_queries(0):
        assert api_key_authenticate(raw_key=raw).agent_slugs == frozenset({"qa_agent"})


def test_last_used_is_recorded(client, seeded_demo):
    raw = create_key_via_command("--agent", "qa_agent")
    client.get("/api/v1/agents", **bearer(raw))
    assert ApiKey.objects.get(hashed_key=hash_api_key(raw)).last_used_at is not None


@pytest.mark.parametrize("args", [["--agent", "nobody_agent"], []])
def test_create_api_key_usage_errors_exit_2(seeded_demo, args):
    import subprocess
    import sys
    from pathlib import Path

    from tests.conftest import child_environment

    result = subprocess.run([sys.executable, "manage.py", "create_api_key", *args], cwd=Path(__file__).resolve().parents[2],
                            env=child_environment(), capture_output=True, text=True, timeout=60)
    assert result.returncode == 2, result.stderr


def test_unknown_api_route_is_json_404(client, seeded_demo):
    raw = create_key_via_command("--all-agents")
    response = client.get("/api/v1/no-such-thing", **bearer(raw))
    assert response.status_code == 404


def test_openapi_and_docs_are_served(client):
    schema = client.get("/api/v1/openapi.json")
    assert schema.status_code == 200
    assert schema.json()["info"]["title"] == "Genesis control plane"
    assert client.get("/api/v1/docs").status_code == 200


def test_unknown_keys_are_not_remembered(seeded_demo):
    for n in range(50):
        assert api_key_authenticate(raw_key=f"gk_made-up-{n}") is None
    assert registry_services._principal_cache == {}


def test_unparsable_json_body_is_422_with_detail(client, seeded_demo):
    raw = create_key_via_command("--all-agents")
    response = client.post("/api/v1/costs/budget-check", data="{not json", content_type="application/json", **bearer(raw))
    assert response.status_code == 422
    assert "detail" in response.json()


def test_an_unexpected_error_is_json_500(client, seeded_demo, monkeypatch):
    raw = create_key_via_command("--all-agents")

    def explode(**kwargs):
        raise RuntimeError("boom")

    monkeypatch.setattr(registry_api, "agents_with_versions", explode)
    response = client.get("/api/v1/agents", **bearer(raw))
    assert response.status_code == 500
    assert response.json() == {"detail": "internal error; it has been logged", "code": "internal_error"}


# --- which agents a key may learn about ------------------------------------------------------------


def _ask_about(client, key: str, agent: str):
    """Every endpoint that takes an agent's name, asking about `agent`."""
    from django.core.files.uploadedfile import SimpleUploadedFile

    headers = bearer(key)
    event = {"event_id": "e1", "agent": agent, "user_id": "u1", "model": "m", "success": True, "latency_ms": 5}
    upload = SimpleUploadedFile("data.jsonl", b'{"messages": []}\n', content_type="application/jsonl")
    return {
        "POST /route": client.post("/api/v1/route", {"agent": agent, "user_id": "u1"}, content_type="application/json", **headers),
        "GET /agents/{agent}": client.get(f"/api/v1/agents/{agent}", **headers),
        "GET /agents/{agent}/config": client.get(f"/api/v1/agents/{agent}/config", **headers),
        "GET /agents/{agent}/health": client.get(f"/api/v1/agents/{agent}/health", **headers),
        "POST /outcomes": client.post("/api/v1/outcomes", {"events": [event]}, content_type="application/json", **headers),
        "POST /costs/budget-check": client.post("/api/v1/costs/budget-check", {"agent": agent, "estimate_usd": "1"},
                                                content_type="application/json", **headers),
        "POST /benchmarks/runs": client.post("/api/v1/benchmarks/runs", {"agent": agent}, content_type="application/json", **headers),
        "GET /benchmarks/runs?agent=": client.get(f"/api/v1/benchmarks/runs?agent={agent}", **headers),
        "GET /fine-tuning/jobs?agent=": client.get(f"/api/v1/fine-tuning/jobs?agent={agent}", **headers),
        "GET /audits/datasets?agent=": client.get(f"/api/v1/audits/datasets?agent={agent}", **headers),
        "POST /audits/datasets": client.post("/api/v1/audits/datasets", {"file": upload, "agent": agent}, **headers),
    }


def test_a_scoped_key_is_refused_for_another_agent_and_told_of_an_unknown_one_on_every_endpoint(client, seeded_demo, settings, tmp_path):
    # One rule for every endpoint that takes an agent's name (models_app.registry.services): 403 for a
    # real agent outside the key's scope, 404 for a name no agent has (CONTRACT), with one wording.
    settings.MEDIA_ROOT = tmp_path / "media"
    qa_key = create_key_via_command("--agent", "qa_agent", "--label", "qa service")
    for endpoint, refused in _ask_about(client, qa_key, "legal_agent").items():
        assert refused.status_code == 403, (endpoint, refused.content)
        assert refused.json() == {"detail": "API key 'qa service' may not act for agent 'legal_agent'", "code": "forbidden"}, endpoint
    _assert_told_the_agent_does_not_exist(_ask_about(client, qa_key, "ghost_agent"))


def test_a_key_for_all_agents_learns_the_agent_does_not_exist(client, seeded_demo, settings, tmp_path):
    settings.MEDIA_ROOT = tmp_path / "media"
    _assert_told_the_agent_does_not_exist(_ask_about(client, create_key_via_command("--all-agents"), "ghost_agent"))


def _assert_told_the_agent_does_not_exist(answers) -> None:
    outcome = answers.pop("POST /outcomes")
    # Each event is checked on its own: an unknown agent rejects that event, not the batch.
    assert outcome.status_code == 202 and outcome.json()["rejected"] == [{"index": 0, "detail": "agent: 'ghost_agent' does not exist"}]
    for endpoint, answer in answers.items():
        assert answer.status_code == 404, (endpoint, answer.content)
        assert answer.json() == {"detail": "agent 'ghost_agent' does not exist", "code": "not_found"}, endpoint


def test_an_object_of_another_agent_is_refused_without_naming_that_agent(client, api_key_for):
    # Objects are named by id or key, and ids are sequential: a 403 naming the owner would list the agents.
    from tests.experiments.factories import draft_experiment, rollout_team
    from tests.factories import AgentFactory

    experiment = draft_experiment(actor=rollout_team()["starter"], key="exp-7")  # qa_agent's
    AgentFactory(slug="legal_agent")
    legal_key = api_key_for("legal_agent")
    for url, what in (
        ("/api/v1/experiments/exp-7/results", "experiment 'exp-7'"),
        (f"/api/v1/models/{experiment.treatment_id}/lineage", f"model version {experiment.treatment_id}"),
    ):
        refused = client.get(url, **bearer(legal_key))
        assert refused.status_code == 403, url
        assert refused.json()["detail"] == (
            f"API key 'test legal_agent' may not read {what}: it belongs to an agent this key may not act for"
        )
