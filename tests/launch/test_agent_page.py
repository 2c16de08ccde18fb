"""The agent's launch page (reached from the board and from the agent's admin page): its board row in
full, the timeline of its model versions from their history, and links to each version's lineage,
benchmark runs and experiments. Also the board's short form of the suite's power, as the run stored it."""

from __future__ import annotations

import re
from html import unescape

import pytest
from django.contrib.auth.models import Group
from django.urls import reverse

from experiments.models import Experiment
from experiments.services import experiment_create_and_start
from launch import report
from launch.selectors import agent_timeline
from models_app.benchmarks.services import benchmark_run_create
from models_app.registry.models import Agent, ModelStatus, ModelVersion
from models_app.registry.services import model_version_change_status_by_hand
from tests.factories import UserFactory
from tests.models_app.conftest import demo_simulator, simulator_factory  # noqa: F401
from tests.models_app.test_gate_runs import run_to_the_end

pytestmark = pytest.mark.django_db


def text_of(html: bytes) -> str:
    return re.sub(r"\s+", " ", unescape(re.sub(r"<[^>]+>", " ", html.decode())))


def operator():
    user = UserFactory(username="olivia")
    user.groups.add(Group.objects.get(name="Rollout operators"))
    return type(user).objects.get(pk=user.pk)


def test_the_agent_page_shows_the_row_the_versions_timeline_and_links(demo_simulator, client):  # noqa: F811
    root = UserFactory(username="root", is_superuser=True)
    agent = Agent.objects.get(slug="support_agent")
    run = run_to_the_end(benchmark_run_create(agent=agent, actor=root))
    assert run.verdict == "PASS"
    experiment = experiment_create_and_start(agent=agent, treatment=run.candidate, actor=root)
    client.force_login(operator())

    board = client.get("/admin/").content.decode()
    page_url = reverse("launch_agent", args=["support_agent"])
    assert page_url == "/admin/launch/agent/support_agent/" and f'href="{page_url}"' in board
    # The board's benchmark cell carries the power the gate stored with the run, in short form.
    plan = run.comparison["plan"]
    short = report.power_short(plan)
    assert short.startswith(f"power {plan['current_power'] * 100:.0f} %") and short in text_of(board.encode())

    response = client.get(page_url)
    assert response.status_code == 200
    html, text = response.content.decode(), text_of(response.content)
    assert 'id="agent-support_agent"' in html  # the board's own row, buttons and all
    assert short in text and plan["basis"] in text  # the row in full: the plan's whole summary too
    candidate, live = run.candidate, ModelVersion.objects.get(agent=agent, status=ModelStatus.LIVE)
    for version in (candidate, live):
        assert reverse("admin:models_app_modelversion_change", args=[version.pk]) in html
    assert reverse("admin:models_app_benchmarkrun_change", args=[run.pk]) in html
    assert reverse("admin:experiments_experiment_change", args=[experiment.pk]) in html
    row = html.split(f'data-version="{candidate.pk}"')[1].split("</tr>")[0]
    statuses = re.findall(r'data-status="(\w+)"', row)
    assert statuses == ["registered", "benchmarking", "approved_for_rollout", "rolling_out"]
    assert f"{experiment.key}" in row and "running at 10 %" in text_of(row.encode())
    assert f"?agent__id__exact={agent.pk}" in html  # the lists below, filtered to this agent
    assert client.get(reverse("admin:models_app_agent_change", args=[agent.pk])).content.decode().count(page_url) == 1
    assert client.get("/admin/launch/agent/nobody/").status_code == 404
    one = client.get(reverse("launch_report_download") + "?format=md&agent=support_agent").content.decode()
    assert one.count("\n## ") == 1 and "## support_agent" in one and f"power {plan['current_power'] * 100:.0f} %" in one


def test_the_timeline_comes_from_history_and_skips_edits_that_kept_the_status(seeded_demo):
    root = UserFactory(username="root", is_superuser=True)
    agent = Agent.objects.get(slug="qa_agent")
    version = agent.versions.filter(kind="fine_tuned").first()
    version.reason = "edited, status unchanged"
    version.save()  # what an edit of the form writes: a history row with the same status, not a step
    model_version_change_status_by_hand(version=version, to_status=ModelStatus.RETIRED, actor=root, reason="superseded")
    entry = next(e for e in agent_timeline(agent=agent) if e.version.pk == version.pk)
    assert [step.status for step in entry.steps] == ["registered", "retired"]
    assert entry.steps[-1].reason == "superseded" and entry.steps[-1].by == "root" and entry.benchmark_runs == []
    assert entry.experiments == list(Experiment.objects.filter(treatment=version))
    assert [e.version for e in agent_timeline(agent=agent)] == list(agent.versions.order_by("-created_at", "-pk"))
