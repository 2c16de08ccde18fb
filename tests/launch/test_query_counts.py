"""The launch console's pages cost a fixed number of queries however many rows they show: the
per-version and per-agent pages however many benchmark runs the version has (each run's verdict
note, suite, requester and overrides come with the runs), and the board, the agent page, the
approvals queue, the Go/No-Go report and `launch_report` however many agents there are — running
rollouts included: each shows its latest guardrail evaluation, stored on the experiment's row by the
guardrail task (experiments.holds.stored_evaluation), and reads none of its outcomes. (Until
2026-12-07 each running rollout's row read its outcome aggregate on every view: 3 queries more per
running rollout on the board, 4 in the report — and seconds at a million outcomes; bench/launch/board.py.)"""

from __future__ import annotations

import io
from datetime import timedelta

import pytest
from django.core.management import call_command
from django.utils import timezone

from models_app.benchmarks.models import BenchmarkRun, BenchmarkSuite, BenchmarkVerdictOverride
from tests.experiments.factories import agent_with_candidate, person
from tests.factories import ModelVersionFactory, UserFactory
from tests.launch.launch_world import RUNNING_ROLLOUTS, STATES, add_agents, default_budget
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


# --- every launch page over many agents ------------------------------------------------------------


@pytest.fixture
def world(client):
    """Every point of the chain once (tests/launch/launch_world.py), a budget for the spend column,
    and a logged-in operator who may see costs and press some of the buttons, not all."""
    team = {"root": UserFactory(username="root", is_superuser=True),
            "starter": person("starter", "add_experiment", "start_experiment", "request_stage"),
            "approver": person("approver", "view_experiment", "approve_stage", "pause_experiment", "rollback_experiment")}
    default_budget()
    add_agents(team=team)
    client.force_login(person("olivia", "view_experiment", "start_experiment", "request_stage", "models_app.add_benchmarkrun",
                              "costs.view_costentry"))
    return team


def _page(client, url):
    def read():
        response = client.get(url)
        assert response.status_code == 200
        return response
    return read


def _launch_report_command():
    try:
        call_command("launch_report", "--format", "json", stdout=io.StringIO(), stderr=io.StringIO())
    except SystemExit as exit:  # 1: some agent is NO-GO, as here
        assert exit.code == 1


LAUNCH_PAGES = {
    "board": "/admin/", "agent page": "/admin/launch/agent/world_00/", "approvals queue": "/admin/launch/approvals/",
    "report": "/admin/launch/report/?format=json",
}


@pytest.mark.parametrize("page", [*LAUNCH_PAGES, "launch_report command"])
def test_a_launch_page_reads_each_kind_of_row_once_however_many_agents(client, world, page):
    # Was: about 13 queries more per agent on the board (1, 5, 20 agents: 18, 71, 265), 11 in the report (13, 56, 212).
    read = _page(client, LAUNCH_PAGES[page]) if page in LAUNCH_PAGES else _launch_report_command
    assert_same_queries_with_more_rows(read, lambda: add_agents(team=world, states=STATES * 2))


@pytest.mark.parametrize("page", ["board", "approvals queue", "report", "launch_report command"])
def test_running_rollouts_add_no_query(client, world, page):
    """Evaluated by the guardrail task or not yet, a running rollout's row reads no outcome: the board
    costs the same with one running rollout as with many. Was: its outcome aggregate on every view (the
    board at 1, 5, 20 running rollouts: 22, 34, 79 queries; the queue 8, 20, 65; the report 22, 38, 98)."""
    read = _page(client, LAUNCH_PAGES[page]) if page in LAUNCH_PAGES else _launch_report_command
    assert_same_queries_with_more_rows(read, lambda: add_agents(team=world, states=RUNNING_ROLLOUTS * 3))
