"""The read API's GET endpoints under /api/v1 cost a fixed number of queries per answer, however many
rows it lists (tests/query_counts.py: a few rows, then many, the same queries): the lists of benchmark
runs, datasets, fine-tuning jobs and agents, the cost summary, a model's lineage, an experiment's
results, and one run, whatever it holds (results, ledger entries, tags, regressions).

Until 2026-12-07 `GET /benchmarks/runs` read each unfinished run's means and cost with 4 queries of
its own (a run without a stored comparison — failed, cancelled — 2), and a lineage read 3 queries per
experiment of the version."""

from __future__ import annotations

import itertools
from datetime import timedelta
from decimal import Decimal
from typing import Any

import pytest
from django.utils import timezone

from costs.services import cost_record
from experiments.models import Experiment, ExperimentEvent, ExperimentStage, StageApproval
from experiments.services import experiment_pause, experiment_resume, experiment_start, stage_approve
from models_app.benchmarks.models import BenchmarkCase, BenchmarkResult, BenchmarkRun, BenchmarkSuite
from tests.experiments.factories import agent_with_candidate, draft_experiment, feed, person, rollout_team
from tests.factories import UserFactory
from tests.launch.launch_world import STATES, add_agents, default_budget
from tests.query_counts import assert_same_queries_with_more_rows

pytestmark = pytest.mark.django_db

_numbers = itertools.count()


def _getter(client, url: str, key: str):
    def read() -> Any:
        response = client.get(url, HTTP_AUTHORIZATION=f"Bearer {key}")
        assert response.status_code == 200, response.content
        return response.json()
    return read


# --- the lists over a launch world: a row of each kind per agent ------------------------------------


@pytest.fixture
def world():
    """One agent with a row of every kind (a running benchmark run, a fine-tuning job, a dataset being
    audited, a budget's spend); the tests add the launch world's agents at every point of the chain."""
    team = {"root": UserFactory(username="root", is_superuser=True),
            "starter": person("starter", "add_experiment", "start_experiment", "request_stage"),
            "approver": person("approver", "view_experiment", "approve_stage", "pause_experiment", "rollback_experiment")}
    default_budget()
    add_agents(team=team, states=("benchmarking",))
    return team


# The benchmark runs' list has a world of its own below (runs in every state, with results and charges).
LISTS = {
    "datasets": "/api/v1/audits/datasets?limit=200",
    "fine-tuning jobs": "/api/v1/fine-tuning/jobs?limit=200",
    "agents": "/api/v1/agents",
}


@pytest.mark.parametrize("endpoint", LISTS)
def test_a_list_costs_the_same_queries_with_one_row_as_with_many(client, world, api_key_for, endpoint):
    read = _getter(client, LISTS[endpoint], api_key_for(all_agents=True))
    assert len(read()) == 1
    listed = assert_same_queries_with_more_rows(read, lambda: add_agents(team=world, states=STATES * 3))
    assert len(listed) >= 20


def test_the_cost_summary_costs_the_same_queries_however_many_agents_spent(client, world, api_key_for):
    read = _getter(client, "/api/v1/costs/summary", api_key_for(all_agents=True))
    summary = assert_same_queries_with_more_rows(read, lambda: add_agents(team=world, states=STATES * 3))
    assert len(summary["by_agent"]) == 18 and set(summary["by_operation"]) == {"benchmark", "inference"}


# --- benchmark runs in every state: the list and one run ---------------------------------------------


TAGS = [f"tag-{n}" for n in range(12)]


@pytest.fixture
def runs():
    """qa_agent's suite of 6 cases, and `add(kinds)`: a run of each kind — queued (nothing yet), running
    (scored and unscored results, a charge on the ledger against the run), failed (results, no
    comparison), completed (a stored comparison with a per-tag table and regressions)."""
    root = UserFactory(username="root", is_superuser=True)
    agent, baseline, candidate = agent_with_candidate("qa_agent", candidate_status="registered")
    suite = BenchmarkSuite.objects.create(agent=agent, slug="qa", version=1, fingerprint="f", case_count=6, created_by=root)
    cases = [BenchmarkCase.objects.create(suite=suite, key=f"case-{n}", position=n, messages=[{"role": "user", "content": "?"}],
                                          scorer={"name": "normalized_match"}, tags=TAGS[n::6]) for n in range(6)]

    def results(run: BenchmarkRun) -> None:
        for case in cases:
            for version, score in ((baseline, 0.5 + case.position / 20), (candidate, 0.6 + case.position / 30)):
                BenchmarkResult.objects.create(run=run, model_version=version, case=case, score=score,
                                               scored=case.position != 5, cost_usd=Decimal("0.000137"),
                                               cost_key=f"result-{next(_numbers)}")
        cost_record(agent=agent, operation="benchmark", idempotency_key=f"paid-twice-{run.pk}", amount_usd=Decimal("0.000021"),
                    source_object=run)

    def add(kinds: tuple[str, ...]) -> list[BenchmarkRun]:
        made = []
        for kind in kinds:
            fields: dict[str, Any] = {"queued": {"status": "queued", "total_items": 12},
                                      "running": {"status": "running", "total_items": 12, "completed_items": 7},
                                      "failed": {"status": "failed", "error": "the provider refused", "total_items": 12,
                                                 "finished_at": timezone.now()},
                                      "completed": {"status": "completed", "verdict": "FAIL", "total_items": 12,
                                                    "completed_items": 12, "cost_usd": Decimal("0.001644"),
                                                    "finished_at": timezone.now(), "comparison": _comparison()}}[kind]
            run = BenchmarkRun.objects.create(agent=agent, suite=suite, suite_version=1, candidate=candidate,
                                              baseline=baseline, requested_by=root, **fields)
            if kind != "queued":
                results(run)
            made.append(run)
        return made

    return add


def _comparison() -> dict[str, Any]:
    return {"baseline_live": True, "baseline_mean": 0.61, "candidate_mean": 0.67, "n": 5, "relative_improvement": 0.098,
            "ci_low": -0.02, "ci_high": 0.21, "reasons": ["the interval includes 0"],
            "per_tag": [{"tag": tag, "n": 1, "baseline_mean": 0.5, "candidate_mean": 0.4} for tag in TAGS],
            "regressions": [{"key": f"case-{n}", "baseline": 0.9, "candidate": 0.1} for n in range(40)]}


KINDS = ("queued", "running", "failed", "completed")


def test_the_run_list_costs_the_same_queries_however_many_runs_it_shows(client, runs, api_key_for):
    """Each run's means, counts and cost-so-far come with the page, not from queries of its own: the
    list says of each run exactly what `GET /benchmarks/runs/{id}` says of it."""
    key = api_key_for("qa_agent")
    read = _getter(client, "/api/v1/benchmarks/runs?limit=200", key)
    runs(("running",))
    listed = assert_same_queries_with_more_rows(read, lambda: runs(KINDS * 6))
    assert len(listed) == 25 and {run["status"] for run in listed} == set(KINDS)
    for run in listed:
        detail = _getter(client, f"/api/v1/benchmarks/runs/{run['run']}", key)()
        assert {name: value for name, value in detail.items() if name not in ("per_tag", "regressions")} == run
    running = next(run for run in listed if run["status"] == "running")
    assert running["cost_usd"] == "0.001665"  # 12 results at 0.000137 and 0.000021 charged against the run itself
    assert running["baseline"] == {"model": "open-mistral-7b", "mean_score": 0.6, "n": 5}


@pytest.mark.parametrize("kind", KINDS)
def test_one_run_costs_the_same_queries_however_much_it_holds(client, runs, api_key_for, kind):
    """A run's answer reads its results and ledger in aggregates: more results and charges (or a longer
    per-tag table and more regressions, stored with the verdict) cost no query more."""
    (run,) = runs((kind,))
    read = _getter(client, f"/api/v1/benchmarks/runs/{run.pk}", api_key_for("qa_agent"))

    def more() -> None:
        for n in range(10):
            cost_record(agent=run.agent, operation="benchmark", idempotency_key=f"again-{run.pk}-{n}",
                        amount_usd=Decimal("0.000001"), source_object=run)
        run.comparison = run.comparison and {**run.comparison, "per_tag": run.comparison["per_tag"] * 10}
        run.save(update_fields=["comparison"])

    assert_same_queries_with_more_rows(read, more)


# --- a model's lineage over many experiments ----------------------------------------------------------


def test_the_lineage_costs_the_same_queries_however_many_experiments_the_version_had(client, api_key_for):
    """Each experiment's stages, approvals and rollback come with the experiments (was: 3 queries per experiment)."""
    team = rollout_team()
    agent, baseline, candidate = agent_with_candidate("qa_agent")
    now = timezone.now()

    def rolled_back_rollout() -> None:
        experiment = Experiment.objects.create(
            key=f"qa-rollout-{next(_numbers)}", agent=agent, control=baseline, treatment=candidate, seed="s",
            status="rolled_back", stage_plan=[10, 50, 100], min_stage_hours=0, min_samples_per_arm=20, guardrails=[],
            started_by=team["starter"], started_at=now - timedelta(hours=3), ended_at=now,
        )
        for index, percent in enumerate((10, 50, 100)):
            stage = ExperimentStage.objects.create(experiment=experiment, index=index, percent=percent,
                                                   status="rolled_back" if index < 2 else "pending")
            if index:
                StageApproval.objects.create(stage=stage, status="approved", config_version=1,
                                             requested_by=team["requester"], decided_by=team["approver"], decided_at=now)
        ExperimentEvent.objects.create(experiment=experiment, action="rollback", actor=team["roller"],
                                       reason="complaints", reason_code="manual")

    rolled_back_rollout()
    read = _getter(client, f"/api/v1/models/{candidate.pk}/lineage", api_key_for("qa_agent"))
    lineage = assert_same_queries_with_more_rows(read, lambda: [rolled_back_rollout() for _ in range(5)])
    assert len(lineage["experiments"]) == 6
    for experiment in lineage["experiments"]:
        assert [stage["percent"] for stage in experiment["stages"]] == [10, 50, 100]
        assert [len(stage["approvals"]) for stage in experiment["stages"]] == [0, 1, 1]
        assert experiment["stages"][1]["approvals"][0]["approved_by"] == "approver"
        assert experiment["rollback"]["by"] == "roller" and experiment["rollback"]["reason"] == "complaints"


# --- an experiment's results over more outcomes, stages and resumes ------------------------------------


def test_the_results_cost_the_same_queries_however_many_outcomes_stages_and_resumes(client, api_key_for):
    team = rollout_team()
    experiment = experiment_start(experiment=draft_experiment(actor=team["starter"], stage_plan=[10, 20, 50, 100]),
                                  actor=team["starter"])
    feed(experiment, arm="control", n=30, success_rate=0.9, seed=1)
    feed(experiment, arm="treatment", n=25, success_rate=0.9, seed=2)
    read = _getter(client, f"/api/v1/experiments/{experiment.key}/results", api_key_for("qa_agent"))

    def more() -> None:
        for index in (1, 2):
            stage_approve(stage=experiment.stages.get(index=index), actor=team["approver"])
            feed(experiment, arm="control", n=40, success_rate=0.85, seed=10 + index)
            feed(experiment, arm="treatment", n=40, success_rate=0.9, seed=20 + index)
        experiment_pause(experiment=experiment, actor=team["roller"], reason="checking")
        experiment_resume(experiment=experiment, actor=team["starter"], reason="fine")
        feed(experiment, arm="treatment", n=30, success_rate=0.9, seed=31)

    results = assert_same_queries_with_more_rows(read, more)
    assert results["stage_percent"] == 50 and results["srm_test"] == 2
