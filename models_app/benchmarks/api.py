"""Benchmark endpoints: start a run of a candidate against a baseline, follow it, list runs."""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

from django.http import HttpRequest
from ninja import Field, Query, Router, Schema, Status

from genesis.errors import NotFound
from genesis.validation import Identifier, ObjectId, Slug
from models_app.benchmarks.models import BenchmarkRun, BenchmarkSuite
from models_app.benchmarks.selectors import (
    benchmark_run_get,
    benchmark_run_summaries,
    benchmark_run_summary,
    benchmark_runs,
    money,
    version_named,
)
from models_app.benchmarks.services import benchmark_run_create
from models_app.registry.models import Agent, ModelVersion
from models_app.registry.services import ensure_agent_access, ensure_object_access, request_principal

router = Router(tags=["benchmarks"])


class RunIn(Schema):
    agent: Slug = Field(..., description="The agent whose models are compared, e.g. qa_agent")
    suite: Slug | None = Field(None, description="Suite slug; default: the agent's latest suite")
    candidate: Identifier | None = Field(None, description="Model id of the candidate; default: the newest fine-tune that is registered, "
                                          "approved for rollout or being benchmarked (409 naming the run while it is)")
    baseline: Identifier | None = Field(None, description="Model id of the baseline; default: the live model. Only a PASS "
                                         "against the agent's live version approves the candidate for rollout; against "
                                         "any other version the run is a comparison, and its reasons say so")


class ModelScoreOut(Schema):
    model: str
    mean_score: float | None
    n: int


class ProgressOut(Schema):
    done: int
    total: int
    percent: float


class SuiteRefOut(Schema):
    slug: str
    version: int


class RunOut(Schema):
    run: int
    agent: str
    status: str
    verdict: str | None
    suite: SuiteRefOut
    baseline: ModelScoreOut
    candidate: ModelScoreOut
    relative_improvement: float | None
    ci95: tuple[float, float] | None = Field(
        ..., description="the interval of the relative improvement the verdict read: 95 % on a single look, "
        "wider on a candidate's first and later runs on one suite, which spend α as α/(ζ(3)·k³) "
        "(95.84 %, 99.48 %, 99.85 % …; the reasons name the run); null when there is none (no verdict yet, "
        "a baseline that scored 0 everywhere, or an unbounded end — the reasons say which)",
    )
    cost_usd: str = Field(..., description="Decimal string")
    estimated_cost_usd: str = Field(..., description="Decimal string")
    progress: ProgressOut
    reasons: list[str]
    more_cases_needed: int | None
    error: str
    created_at: datetime
    started_at: datetime | None
    finished_at: datetime | None


class RunDetailOut(RunOut):
    per_tag: list[dict[str, Any]]
    regressions: list[dict[str, Any]]


def _run_out(run: BenchmarkRun, summary: dict[str, Any], *, detail: bool = False) -> dict[str, Any]:
    comparison = run.comparison or {}
    out = {
        **summary,
        "agent": run.agent.slug,
        "status": run.status,
        "suite": {"slug": run.suite.slug, "version": run.suite_version},
        "estimated_cost_usd": money(run.estimated_cost_usd),
        "progress": {"done": run.completed_items, "total": run.total_items, "percent": run.progress_percent},
        "reasons": comparison.get("reasons", []),
        "more_cases_needed": comparison.get("more_cases_needed"),
        "error": run.error,
        "created_at": run.created_at,
        "started_at": run.started_at,
        "finished_at": run.finished_at,
    }
    if detail:
        out["per_tag"] = comparison.get("per_tag", [])
        out["regressions"] = comparison.get("regressions", [])
    return out


def _one_version(agent: Agent, model_id: str | None, role: str) -> ModelVersion | None:
    return None if model_id is None else version_named(agent=agent, model_id=model_id, field=role)


RunStatus = Literal["queued", "running", "completed", "failed", "cancelled"]


@router.post("/benchmarks/runs", response={202: RunOut}, summary="Start a benchmark run (candidate vs baseline)")
def create_run(request: HttpRequest, payload: RunIn) -> Status[dict[str, Any]]:
    principal = request_principal(request)
    ensure_agent_access(principal=principal, agent_slug=payload.agent)
    agent = Agent.objects.get(slug=payload.agent)
    suite = None
    if payload.suite is not None:
        suite = BenchmarkSuite.objects.filter(agent=agent, slug=payload.suite).order_by("-version").first()
        if suite is None:
            raise NotFound(f"suite: agent '{agent.slug}' has no benchmark suite '{payload.suite}'")
    run = benchmark_run_create(
        agent=agent, suite=suite, candidate=_one_version(agent, payload.candidate, "candidate"),
        baseline=_one_version(agent, payload.baseline, "baseline"), requested_via=f"api: {principal.label}",
    )
    # Read again with the relations the answer shows (the service's row is the same run).
    run = benchmark_run_get(run_id=run.pk) or run
    return Status(202, _run_out(run, benchmark_run_summary(run=run)))


@router.get("/benchmarks/runs", response=list[RunOut], summary="Recent benchmark runs of the agents this key may act for")
def list_runs(
    request: HttpRequest,
    agent: Slug | None = Query(None),
    status: RunStatus | None = Query(None),
    limit: int = Query(50, ge=1, le=200),
) -> list[dict[str, Any]]:
    principal = request_principal(request)
    slugs = None if principal.all_agents else principal.agent_slugs
    if agent is not None:
        ensure_agent_access(principal=principal, agent_slug=agent)
        slugs = frozenset({agent})
    runs = list(benchmark_runs(agent_slugs=slugs, status=status, limit=limit))
    # The runs' scores and costs so far in a few queries for the page, not a few per run.
    return [_run_out(run, summary) for run, summary in zip(runs, benchmark_run_summaries(runs=runs), strict=True)]


@router.get("/benchmarks/runs/{run_id}", response=RunDetailOut, summary="One run: progress, verdict, per-tag table, regressions")
def get_run(request: HttpRequest, run_id: ObjectId) -> dict[str, Any]:
    run = benchmark_run_get(run_id=run_id)
    if run is None:
        raise NotFound(f"benchmark run #{run_id} does not exist")
    ensure_object_access(principal=request_principal(request), owner_slug=run.agent.slug, what=f"benchmark run #{run_id}")
    return _run_out(run, benchmark_run_summary(run=run), detail=True)
