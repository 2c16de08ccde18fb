"""HTTP endpoints of online evaluation, mounted under /api/v1 by genesis/api.py.

`POST /route` and `GET /agents/{agent}/config` answer from the in-process routing table
(experiments/routing.py): no database query per request in steady state.
"""

from __future__ import annotations

import json
from typing import Annotated, Any

from django.http import HttpRequest, HttpResponse
from ninja import Field, Router, Schema, Status
from pydantic import BaseModel, WithJsonSchema

from experiments import routing, selectors_monitoring
from experiments.outcomes import MAX_OUTCOME_EVENTS, OutcomeEventIn, outcomes_ingest
from experiments.selectors import experiment_results, get_experiment
from genesis.errors import Conflict, PermissionDenied
from genesis.validation import Identifier, Slug
from models_app.registry.services import ensure_agent_access, request_principal

router = Router(tags=["experiments"])


class RouteIn(BaseModel):
    # A plain pydantic model, not a ninja Schema: Schema's Django-attribute root validator costs
    # ~15 µs a request on the hot path and this body has nothing to read from Django objects.
    # Ids are opaque and used byte for byte (no stripping): the in-process client hashes exactly what
    # it is given, and POST /outcomes stores it as given. A NUL would make the exposure unwritable.
    agent: Slug
    user_id: Identifier
    attributes: dict[str, Any] = Field(default_factory=dict)


class RouteOut(Schema):
    agent: str
    model: str
    provider: str
    variant: str = Field(description="control | treatment | live (no running experiment)")
    experiment: str | None
    stage_percent: int | None


class ModelRefOut(Schema):
    model: str
    provider: str


class ExperimentRoutingOut(Schema):
    key: str
    seed: str
    stage_percent: int
    control: ModelRefOut
    treatment: ModelRefOut


class AgentConfigOut(Schema):
    agent: str
    config_version: int
    live: ModelRefOut
    experiment: ExperimentRoutingOut | None


def _outcome_event_schema() -> dict[str, Any]:
    schema = OutcomeEventIn.model_json_schema()
    schema.pop("title", None)
    schema["description"] = (
        "One outcome. Each event is checked on its own: one that breaks these rules is listed in `rejected` "
        "with its index and field, and the others are accepted. Unknown fields are ignored."
    )
    return schema


class OutcomesIn(Schema):
    # Items are checked one by one by the service, so one bad event is rejected by index instead of
    # failing the whole batch; only the batch size is checked here. The document still shows what
    # an event is (OutcomeEventIn's fields, types and bounds).
    events: Annotated[list[Any], WithJsonSchema({
        "type": "array", "maxItems": MAX_OUTCOME_EVENTS, "items": _outcome_event_schema(),
    })] = Field(max_length=MAX_OUTCOME_EVENTS)


class RejectedOut(Schema):
    index: int
    detail: str


class OutcomesOut(Schema):
    accepted: int
    duplicates: int
    rejected: list[RejectedOut]


class ArmOut(Schema):
    n: int = Field(description="Outcomes")
    users: int = Field(description="Users, the unit of analysis (a user active in two stages counts in each)")
    success_rate: float | None
    mean_quality: float | None
    quality_n: int
    latency_p50_ms: float | None
    latency_p95_ms: float | None
    mean_latency_ms: float | None
    cost_per_request_usd: str | None
    cost_usd: str
    stage_users: int


class ComparisonOut(Schema):
    control: float | None
    treatment: float | None
    absolute_lift: float | None
    absolute_ci95: list[float | None] | None = Field(description="95 % interval of treatment − control; null without spread")
    relative_lift: float | None
    ci95: list[float | None] | None = Field(description="95 % Fieller interval of the relative lift; null when unbounded")
    p_value: float | None = Field(description=(
        "Fixed-horizon two-sided Welch t, from the same standard error as the intervals: valid at the planned end "
        "of the rollout, not for stopping early (looked at daily, an A/A crosses 0.05 in about 15 % of rollouts); "
        "the guardrails' sequential test is what stops"
    ))


class GuardrailOut(Schema):
    metric: str
    state: str
    on_violation: str
    estimate: float | None
    interval: list[float] | None
    reason: str
    rule: str = Field(description="What this guardrail's decision means")
    alpha: float = Field(description="The level this rule is tested at (rules that roll back share guardrail_alpha)")


class AnalysisStageOut(Schema):
    percent: int
    started_at: str
    users: dict[str, int]


class AnalysisOut(Schema):
    unit: str
    method: str
    covers: str = Field(description="The stages the estimates cover")
    stages: list[AnalysisStageOut]


class ResultsOut(Schema):
    experiment: str
    agent: str
    status: str
    stage_percent: int | None
    config_version: int
    control: ModelRefOut
    treatment: ModelRefOut
    variants: dict[str, ArmOut]
    relative_lift: float | None = Field(description="Success rate, treatment vs control")
    ci95: list[float | None] | None = Field(description="95 % interval of the relative lift (fixed-horizon, as p_value)")
    p_value: float | None = Field(description=(
        "Success rate, fixed-horizon: valid at the planned end of the rollout, not for stopping early — the "
        "guardrails' sequential (any-time) test is what stops"
    ))
    analysis: AnalysisOut
    comparisons: dict[str, ComparisonOut | None]
    srm_p: float | None = Field(description="Any-time-valid sample-ratio-mismatch p-value of the current stage")
    srm_threshold: float = Field(description="The current stage's pause threshold for srm_p")
    srm_flagged: bool
    guardrails: list[GuardrailOut]


def _entry(request: HttpRequest, agent: str) -> routing.AgentEntry:
    table = routing.current_table(agent=agent)
    ensure_agent_access(principal=request_principal(request), agent_slug=agent, known_agents=table.known_agents)
    return table.agents[agent]


@router.post("/route", response=RouteOut, summary="Which model serves this user")
def route(request: HttpRequest, payload: RouteIn) -> HttpResponse:
    entry = _entry(request, payload.agent)
    try:
        decision = routing.decide(entry=entry, user_id=payload.user_id)
    except routing.AgentNotRoutable as exc:
        raise Conflict(exc.message) from None
    # Serialised here rather than by the response schema (nor dataclasses.asdict, ~30 µs): this is
    # the hot path, and the decision already has exactly the documented shape.
    body = {"agent": decision.agent, "model": decision.model, "provider": decision.provider, "variant": decision.variant,
            "experiment": decision.experiment, "stage_percent": decision.stage_percent}
    return HttpResponse(json.dumps(body), content_type="application/json")


@router.get(
    "/agents/{agent}/config",
    response={200: AgentConfigOut, 304: None},
    summary="Everything an agent needs to route locally (ETag; If-None-Match → 304)",
)
def agent_config(request: HttpRequest, agent: Slug) -> HttpResponse:
    entry = _entry(request, agent)
    if entry.problem:
        raise Conflict(entry.problem)
    if_none_match = request.headers.get("If-None-Match", "")
    if entry.etag in {tag.strip() for tag in if_none_match.split(",")} or if_none_match.strip() == "*":
        response = HttpResponse(status=304)
    else:
        response = HttpResponse(json.dumps(entry.config_json), content_type="application/json")
    response["ETag"] = entry.etag
    response["Cache-Control"] = "no-cache"
    return response


@router.post("/outcomes", response={202: OutcomesOut}, summary="Report what happened (≤ 1 000 events)")
def outcomes(request: HttpRequest, payload: OutcomesIn) -> Status[dict[str, Any]]:
    result = outcomes_ingest(principal=request_principal(request), events=payload.events)
    return Status(202, {"accepted": result.accepted, "duplicates": result.duplicates, "rejected": result.rejected})


@router.get("/experiments/{key}/results", response=ResultsOut, summary="Per-arm metrics, lift, SRM and guardrails")
def results(request: HttpRequest, key: Identifier) -> dict[str, Any]:
    experiment = get_experiment(key=key)
    principal = request_principal(request)
    if not principal.may_act_for(experiment.agent.slug):
        raise PermissionDenied(f"API key '{principal.label}' may not act for agent '{experiment.agent.slug}'")
    return experiment_results(experiment=experiment)


class HealthWindowOut(Schema):
    requests: int
    error_ratio: float | None
    latency_p95_ms: float | None


class HealthExperimentOut(Schema):
    key: str
    status: str
    stage_percent: int


class AgentHealthOut(Schema):
    agent: str
    status: str = Field(description="ok | degraded | failing | idle")
    window_5m: HealthWindowOut
    window_15m: HealthWindowOut
    live_model: str | None
    experiment: HealthExperimentOut | None


@router.get("/agents/{agent}/health", response=AgentHealthOut, summary="Error ratio and p95 latency of the last 5 and 15 minutes")
def agent_health(request: HttpRequest, agent: Slug) -> dict[str, Any]:
    ensure_agent_access(principal=request_principal(request), agent_slug=agent)
    return selectors_monitoring.agent_health(agent_slug=agent)
