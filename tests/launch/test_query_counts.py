"""The launch console's per-version and per-agent pages cost a fixed number of queries however many
benchmark runs the version has (each run's verdict note, suite, requester and overrides come with
the runs)."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.utils import timezone

from models_app.benchmarks.models import BenchmarkRun, BenchmarkSuite, BenchmarkVerdictOverride
from tests.experiments.factories import agent_with_candidate
from tests.factories import ModelVersionFactory, UserFactory
from tests.query_counts import assert_same_queries_with_more_rows

pytestmark = pytest.mark.django_db


@pytest.fixture
def versions(client):
    """A candidate, a registered older version its runs compare it with, and a superuser logged in."""
    root = UserFactory(username="root", is_superuser=True)
    client.force_login(root)
    agent, _, candidate = agent_with_candidate("qa_agent")
    older = ModelVersionFactory(agent=agent, model_id="ft:older", status="registered")
    suite = BenchmarkSuite.objects.create(agent=agent, slug="qa", version=1, fingerprint="f", case_count=30, created_by=root)

    def add_runs(n: int) -> None:
        for _ in range(n):
            run = BenchmarkRun.objects.create(
                agent=agent, suite=suite, suite_version=1, candidate=candidate, baseline=older, status="completed",
                verdict="PASS", comparison={"baseline_live": True}, finished_at=timezone.now() - timedelta(hours=1),
                requested_by=root,
            )
            BenchmarkVerdictOverride.objects.create(run=run, actor=root, verdict_before="PASS", reason="checked by hand",
                                                    candidate_status_before="registered",
                                                    candidate_status_after="approved_for_rollout")

    add_runs(1)
    return candidate, add_runs


def test_the_lineage_reads_every_run_of_the_version_at_once(client, versions, api_key_for):
    candidate, add_runs = versions
    headers = {"HTTP_AUTHORIZATION": f"Bearer {api_key_for('qa_agent')}"}

    def read():
        response = client.get(f"/api/v1/models/{candidate.pk}/lineage", **headers)
        assert response.status_code == 200
        return response.json()

    lineage = assert_same_queries_with_more_rows(read, lambda: add_runs(4))
    runs = lineage["benchmark_runs"]
    assert len(runs) == 5 and {run["suite"] for run in runs} == {"qa_agent/qa v1"}
    assert all(run["note"].endswith("not an approval") and run["requested_by"] == "root" for run in runs)
    assert all(run["overrides"][0]["by"] == "root" for run in runs)


def test_the_version_page_and_the_agent_page_read_every_run_at_once(client, versions):
    candidate, add_runs = versions
    for url in (f"/admin/models_app/modelversion/{candidate.pk}/change/", "/admin/launch/agent/qa_agent/"):
        def read(url=url):
            response = client.get(url)
            assert response.status_code == 200
            return response
        page = assert_same_queries_with_more_rows(read, lambda: add_runs(3))
        assert "qa_agent/qa v1" in page.content.decode()
