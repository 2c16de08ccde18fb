"""`seed_demo` builds the demo world and is idempotent."""

from __future__ import annotations

import io

import pytest
from django.contrib.auth import get_user_model
from django.core.management import call_command

from models_app.registry.demo import DEMO_AGENTS
from models_app.registry.models import Agent, ModelVersion, ProviderAccount

pytestmark = pytest.mark.django_db


def snapshot() -> dict[str, object]:
    return {
        "agents": sorted(Agent.objects.values_list("slug", flat=True)),
        "versions": sorted(ModelVersion.objects.values_list("agent__slug", "model_id", "kind", "status")),
        "providers": list(ProviderAccount.objects.values_list("name", "kind", "base_url")),
        "users": list(get_user_model().objects.values_list("username", "is_superuser")),
    }


def test_seed_demo_builds_the_world_and_is_idempotent(monkeypatch):
    monkeypatch.setenv("GENESIS_ADMIN_PASSWORD", "demo-password-123")
    first_out = io.StringIO()
    call_command("seed_demo", stdout=first_out)
    first = snapshot()
    call_command("seed_demo", stdout=io.StringIO())
    assert snapshot() == first

    assert first["agents"] == sorted(DEMO_AGENTS) == sorted(
        ["qa_agent", "content_agent", "legal_agent", "support_agent", "analyst_agent"]
    )
    for slug in DEMO_AGENTS:
        versions = ModelVersion.objects.filter(agent__slug=slug)
        assert versions.get(kind="baseline").status == "live"
        fine_tuned = versions.get(kind="fine_tuned")
        assert fine_tuned.status == "registered"
        assert fine_tuned.model_id.startswith("ft:open-mistral-7b:")
        assert fine_tuned.provider.name == "simulator"
    admin = get_user_model().objects.get(username="admin")
    assert admin.is_superuser and admin.check_password("demo-password-123")
    assert "demo-password-123" not in first_out.getvalue()


def test_generated_password_is_printed_once(monkeypatch):
    monkeypatch.delenv("GENESIS_ADMIN_PASSWORD", raising=False)
    first, second = io.StringIO(), io.StringIO()
    call_command("seed_demo", stdout=first)
    call_command("seed_demo", stdout=second)
    line = next(line for line in first.getvalue().splitlines() if "password:" in line)
    password = line.split("password: ")[1].split()[0]
    assert get_user_model().objects.get(username="admin").check_password(password)
    assert password not in second.getvalue()


def test_seed_demo_keeps_what_people_changed():
    from models_app.registry.services import agent_upsert, model_version_transition

    call_command("seed_demo", stdout=io.StringIO())
    agent_upsert(slug="qa_agent", name="QA agent", purpose="edited by a person", system_prompt="Be terse.")
    baseline = ModelVersion.objects.get(agent__slug="qa_agent", kind="baseline")
    # The fine-tune replaced the baseline, as a completed rollout does (a live version is retired only
    # then: it cannot be retired by hand).
    fine_tune = ModelVersion.objects.get(agent__slug="qa_agent", kind="fine_tuned")
    for status in ("benchmarking", "approved_for_rollout", "rolling_out", "live"):
        model_version_transition(version=fine_tune, to_status=status, reason="rolled out elsewhere")
    call_command("seed_demo", stdout=io.StringIO())  # must neither fail nor undo the edits
    agent = Agent.objects.get(slug="qa_agent")
    assert (agent.purpose, agent.system_prompt) == ("edited by a person", "Be terse.")
    assert ModelVersion.objects.get(pk=baseline.pk).status == "retired"
    assert ModelVersion.objects.get(pk=fine_tune.pk).status == "live"
