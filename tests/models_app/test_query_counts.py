"""The admin lists of the registry, fine-tuning and benchmarks cost a fixed number of queries,
however many rows they show (a query per row grows with the table; Zulip's query-count tests)."""

from __future__ import annotations

from datetime import timedelta
from itertools import count

import pytest
from django.utils import timezone

from models_app.benchmarks.models import BenchmarkRun, BenchmarkSuite
from models_app.registry.models import ModelStatus
from models_app.registry.services import api_key_create, model_version_transition
from tests.costs.factories import TrainingFileFactory
from tests.factories import AgentFactory, ModelVersionFactory, UserFactory
from tests.query_counts import assert_same_queries_with_more_rows

pytestmark = pytest.mark.django_db

_numbers = count()


@pytest.fixture
def root(client):
    user = UserFactory(username="root", is_superuser=True)
    client.force_login(user)
    return user


def listed(client, url: str):
    def read():
        response = client.get(url)
        assert response.status_code == 200
        return response
    return read


def decided_comparison(*, root) -> BenchmarkRun:
    """A finished PASS whose baseline is not live: its verdict note asks whether the candidate went live since."""
    n = next(_numbers)
    agent = AgentFactory(slug=f"rows_{n}")
    candidate = ModelVersionFactory(agent=agent, model_id=f"ft:cand:{n}", registered_by=root)
    baseline = ModelVersionFactory(agent=agent, model_id=f"ft:older:{n}", registered_by=root)
    suite = BenchmarkSuite.objects.create(agent=agent, slug="suite", version=1, fingerprint=f"f{n}", case_count=30,
                                          created_by=root)
    return BenchmarkRun.objects.create(
        agent=agent, suite=suite, suite_version=1, candidate=candidate, baseline=baseline, status="completed",
        verdict="PASS", comparison={"baseline_live": True}, finished_at=timezone.now() - timedelta(hours=1),
    )


def test_the_benchmark_run_list_reads_no_candidate_history_per_row(client, root):
    decided_comparison(root=root)
    page = assert_same_queries_with_more_rows(listed(client, "/admin/models_app/benchmarkrun/"),
                                              lambda: [decided_comparison(root=root) for _ in range(4)])
    assert page.content.decode().count("PASS (not an approval)") == 5


def test_a_candidate_gone_live_after_its_verdict_still_reads_as_decided_in_the_list(client, root):
    run = decided_comparison(root=root)
    for status in ("benchmarking", "approved_for_rollout", "rolling_out", "live"):
        model_version_transition(version=run.candidate, to_status=status, reason="test")
    page = client.get("/admin/models_app/benchmarkrun/").content.decode()
    assert "a comparison" not in page and "not an approval" not in page


def test_the_suite_list_reads_its_creators_with_the_list(client, root):
    decided_comparison(root=root)
    assert_same_queries_with_more_rows(listed(client, "/admin/models_app/benchmarksuite/"),
                                       lambda: [decided_comparison(root=root) for _ in range(4)])


def test_the_training_file_list_reads_its_uploaders_with_the_list(client, root):
    TrainingFileFactory(uploaded_by=root)
    assert_same_queries_with_more_rows(listed(client, "/admin/models_app/trainingfile/"),
                                       lambda: [TrainingFileFactory(uploaded_by=root) for _ in range(4)])


def test_the_api_key_list_reads_agents_and_creators_with_the_list(client, root):
    def add_key() -> None:
        key, _ = api_key_create(label=f"k{next(_numbers)}", agents=[AgentFactory(), AgentFactory()], actor=root)

    add_key()
    page = assert_same_queries_with_more_rows(listed(client, "/admin/models_app/apikey/"),
                                              lambda: [add_key() for _ in range(4)])
    assert page.content.decode().count(">root<") >= 5


def test_the_model_version_list_reads_who_registered_with_the_list(client, root):
    ModelVersionFactory(registered_by=root)
    assert_same_queries_with_more_rows(listed(client, "/admin/models_app/modelversion/"),
                                       lambda: [ModelVersionFactory(registered_by=root) for _ in range(4)])


def test_the_agent_list_reads_every_agents_health_at_once(client, root):
    def add_agent() -> None:
        agent = AgentFactory()
        live = ModelVersionFactory(agent=agent, model_id="open-mistral-7b", kind="baseline")
        model_version_transition(version=live, to_status=ModelStatus.LIVE, reason="test")
        ModelVersionFactory(agent=agent)

    add_agent()
    page = assert_same_queries_with_more_rows(listed(client, "/admin/models_app/agent/"),
                                              lambda: [add_agent() for _ in range(4)])
    assert page.content.decode().count('class="agent-health" data-status="idle"') == 5


def test_an_agents_page_reads_its_versions_providers_with_them(client, root):
    """Scale review: the page's table of the agent's versions read each version's agent and provider by
    a query of its own (an agent with 120 versions: 264 queries)."""
    agent = AgentFactory(slug="qa_agent")
    ModelVersionFactory(agent=agent)
    page = assert_same_queries_with_more_rows(listed(client, f"/admin/models_app/agent/{agent.pk}/change/"),
                                              lambda: [ModelVersionFactory(agent=agent) for _ in range(4)])
    assert page.content.decode().count("ft:open-mistral-7b:") >= 5
