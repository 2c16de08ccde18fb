"""A launch world of many agents, each at another point of the chain (training job → benchmark →
rollout → launch), so that a board built over it takes every path of launch.selectors: the
query-count tests read the launch pages over a few of these agents and again over many, and the
output test holds what the pages show over it."""

from __future__ import annotations

import itertools
from datetime import timedelta
from decimal import Decimal
from typing import Any

from django.utils import timezone

from audits.models import AuditRun, Dataset
from costs.models import Budget
from costs.services import cost_entry_reverse, cost_record
from experiments.services import (
    experiment_create,
    experiment_pause,
    experiment_rollback,
    experiment_start,
    stage_request_advance,
)
from models_app.benchmarks.models import BenchmarkRun, BenchmarkSuite, BenchmarkVerdictOverride
from models_app.finetuning.models import FineTuningJob, TrainingFile
from models_app.registry.models import Agent, ModelVersion
from models_app.registry.services import model_version_transition
from tests.experiments.factories import agent_with_candidate, evaluate, feed
from tests.factories import ModelVersionFactory

_files = itertools.count()

# The points of the chain an agent can be at (add_agent builds each); RUNNING_ROLLOUTS are those whose
# experiment runs: their rows show its latest guardrail evaluation, which beat makes every minute (here
# once, after the outcomes), or, just started, that none has judged its stage yet.
STATES = ("demo", "passed_with_draft", "awaiting_approval", "paused", "rolled_back", "benchmarking", "other_draft", "running",
          "just_started")
RUNNING_ROLLOUTS = ("awaiting_approval", "running", "just_started")


def _job(agent: Agent, *, status: str, version: ModelVersion | None, audit: dict[str, Any] | None) -> FineTuningJob:
    dataset = None
    if audit is not None:
        dataset = Dataset.objects.create(agent=agent, original_name=f"train-{agent.slug}.jsonl", line_count=100, sha256="1" * 64)
        run = AuditRun.objects.create(dataset=dataset, **audit)
        dataset.latest_audit = run
        dataset.save(update_fields=["latest_audit"])
    training = TrainingFile.objects.create(
        agent=agent, provider=agent.versions.first().provider, provider_file_id=f"file-{next(_files)}", filename="train.jsonl",
        line_count=100, size_bytes=1000, sha256="1" * 64, estimated_tokens=1000, dataset=dataset,
    )
    return FineTuningJob.objects.create(agent=agent, provider=training.provider, base_model="open-mistral-7b", status=status,
                                        training_file=training, model_version=version,
                                        fine_tuned_model=version.model_id if version else "")


def _run(agent: Agent, *, candidate: ModelVersion, baseline: ModelVersion, actor: Any, **fields: Any) -> BenchmarkRun:
    suite, _ = BenchmarkSuite.objects.get_or_create(agent=agent, slug="qa", version=1,
                                                    defaults={"fingerprint": "f", "case_count": 30, "created_by": actor})
    return BenchmarkRun.objects.create(agent=agent, suite=suite, suite_version=1, candidate=candidate, baseline=baseline,
                                       requested_by=actor, **fields)


PASSED = {"baseline_live": True, "relative_improvement": 0.12, "ci_low": 0.03, "ci_high": 0.2, "alpha": 0.05, "n": 30}
CLEAN = {"status": "succeeded", "progress": 1.0, "lines": 100, "valid": 98, "format_error_total": 2, "pii_total": 0,
         "duplicates_exact": 1, "duplicates_near": 0, "has_findings": False, "report": {"pii": {}}}
FINDINGS = {**CLEAN, "pii_total": 3, "has_findings": True, "report": {"pii": {"email": 3}}}


def add_agent(slug: str, state: str, *, team: dict[str, Any]) -> Agent:
    """An agent with a live baseline and a candidate at `state`; `team`: root (a superuser), starter
    (creates, starts, requests) and approver (pauses, rolls back)."""
    starter, approver = team["starter"], team["approver"]
    if state in ("demo", "benchmarking"):
        agent, baseline, candidate = agent_with_candidate(slug, candidate_status="registered")
        if state == "benchmarking":
            _job(agent, status="SUCCESS", version=candidate, audit={"status": "running", "progress": 0.4})
            _run(agent, candidate=candidate, baseline=baseline, actor=starter, status="running", total_items=60, completed_items=15)
        return agent
    agent, baseline, candidate = agent_with_candidate(slug)
    if state == "other_draft":
        experiment_create(agent=agent, treatment=candidate, actor=starter, key=f"{slug}-old", min_stage_hours=0)
        newer = ModelVersionFactory(agent=agent, model_id=f"ft:open-mistral-7b:{slug}:20261102:0ddba11")
        for status in ("benchmarking", "approved_for_rollout"):
            newer = model_version_transition(version=newer, to_status=status, reason="test")
        _job(agent, status="FAILED", version=None, audit=None)
        return agent
    _job(agent, status="SUCCESS", version=candidate, audit=FINDINGS if state == "passed_with_draft" else CLEAN)
    run = _run(agent, candidate=candidate, baseline=baseline, actor=starter, status="completed", verdict="PASS",
               comparison=PASSED, finished_at=timezone.now() - timedelta(hours=2), total_items=60, completed_items=60,
               cost_usd=Decimal("0.42"))
    cost_record(agent=agent, operation="benchmark", idempotency_key=f"benchmark:{run.pk}:1", amount_usd=Decimal("0.42"),
                model=candidate.model_id, actor=team["root"])
    inference = cost_record(agent=agent, operation="inference", idempotency_key=f"{slug}-inference", amount_usd=Decimal("1.25"),
                            model=candidate.model_id, actor=team["root"])
    experiment = experiment_create(agent=agent, treatment=candidate, actor=starter, key=f"{slug}-exp", min_stage_hours=0,
                                   min_samples_per_arm=20)
    if state == "passed_with_draft":
        _job(agent, status="VALIDATED", version=None, audit=None)  # a newer job in flight, named beside
        return agent
    experiment = experiment_start(experiment=experiment, actor=starter)
    if state == "just_started":
        return agent
    feed(experiment, arm="treatment", n=25, success_rate=0.9, seed=1)
    feed(experiment, arm="control", n=60, success_rate=0.85, seed=2)
    evaluate(experiment)  # as beat does every minute
    if state == "awaiting_approval":
        stage_request_advance(experiment=experiment, actor=starter, note="looks fine")
    elif state == "paused":
        experiment_pause(experiment=experiment, actor=approver, reason="checking the logs")
        BenchmarkVerdictOverride.objects.create(run=run, actor=team["root"], verdict_before="PASS", reason="checked by hand",
                                                candidate_status_before="registered", candidate_status_after="approved_for_rollout")
        cost_entry_reverse(entry=inference, actor=team["root"], reason="charged twice")
    elif state == "rolled_back":
        experiment_rollback(experiment=experiment, actor=approver, reason="complaints")
    return agent


def add_agents(*, team: dict[str, Any], states: tuple[str, ...] = STATES) -> list[Agent]:
    """One more agent in each of `states`, named world_00, world_01… in turn."""
    start = Agent.objects.filter(slug__startswith="world_").count()
    return [add_agent(f"world_{start + offset:02d}", state, team=team) for offset, state in enumerate(states)]


def default_budget() -> Budget:
    """The budget whose period the board's spend column covers."""
    return Budget.objects.create(name="default", period="monthly", amount_usd=Decimal("1000"))
