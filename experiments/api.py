"""HTTP endpoints of online evaluation, mounted under /api/v1 by genesis/api.py.

`POST /route` and `GET /agents/{agent}/config` answer from the in-process routing table
(experiments/routing.py): no database query per request in steady state.
"""

from __future__ import annotations

import json
from typing import Annotated, Any, Literal

from django.http import HttpRequest, HttpResponse
from django.utils.http import parse_etags
from ninja import Field, Router, Schema, Status
from pydantic import BaseModel, WithJsonSchema

from experiments import routing, selectors_monitoring, stats
from experiments.outcomes import MAX_OUTCOME_EVENTS, OutcomeEventIn, outcomes_ingest
from experiments.results import experiment_results
from experiments.selectors import get_experiment
from genesis.errors import Conflict
from genesis.validation import Identifier, Slug
from models_app.registry.services import ensure_agent_access, ensure_object_access, request_principal

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
    variant: Literal["control", "treatment", "live"] = Field(description="control | treatment | live (no running experiment)")
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


# Two fields share the name `config_version` (clients read both, so neither is renamed): each says which it is.
ROUTING_CONFIG_VERSION = (
    "Version of this routing config, for caching: the time, in milliseconds since 1970 (UTC), of the newest change to "
    "the agent's model versions or experiments — a new live model, a start, a stage, a pause, a rollback. It grows "
    "with each change, so a higher number is a newer config; the ETag changes with it. Not the experiment's settings version "
    "that GET /experiments/{key}/results calls config_version."
)
EXPERIMENT_SETTINGS_VERSION = (
    "Version of the experiment's settings: 1 when created, +1 with each edit of its stage plan, holds, guardrails or "
    "description. A stage approval holds for the version it was requested at, so an edit voids pending approvals. "
    "Moving a stage or pausing does not change it. Not the routing config's cache version that GET "
    "/agents/{agent}/config calls config_version."
)


class AgentConfigOut(Schema):
    agent: str
    config_version: int = Field(description=ROUTING_CONFIG_VERSION)
    live: ModelRefOut
    experiment: ExperimentRoutingOut | None


def _outcome_event_schema() -> dict[str, Any]:
    event = OutcomeEventIn.model_json_schema()
    event["title"] = OUTCOME_EVENT
    event["description"] = (
        "One outcome, an item of POST /outcomes' `events`. Each event is checked on its own: one that breaks these "
        "rules is listed in `rejected` with its index and field, and the others are accepted. Unknown fields are ignored."
    )
    return event


OUTCOME_EVENT = "OutcomeEvent"
# Schemas the OpenAPI document lists beside those of the operations (genesis/api.py adds them).
OPENAPI_SCHEMAS: dict[str, dict[str, Any]] = {OUTCOME_EVENT: _outcome_event_schema()}


class OutcomesIn(Schema):
    # Items are checked one by one by the service, so one bad event is rejected by index instead of
    # failing the whole batch; only the batch size is checked here. So the document declares the items
    # as any value, as the server takes them — declared as OutcomeEvent objects, it said a batch with
    # another item is refused, when it is answered 202 with that item in `rejected` (schemathesis
    # ST201) — and describes an event in the OutcomeEvent schema, which client generators turn into a type.
    events: Annotated[list[Any], WithJsonSchema({
        "type": "array", "maxItems": MAX_OUTCOME_EVENTS,
        "items": {"description": (
            f"An outcome event: an object as #/components/schemas/{OUTCOME_EVENT} describes. Any item is taken; "
            "one that is not a valid event (not an object, a field missing or out of bounds) is listed in `rejected` "
            "with its index, and the others are accepted."
        )},
    })] = Field(max_length=MAX_OUTCOME_EVENTS)


class RejectedOut(Schema):
    index: int
    detail: str


class UnchargedOut(Schema):
    model: str
    indexes: list[int] = Field(description="Where in `events` the accepted events of this model with tokens are")
    detail: str = Field(description="Why their tokens are not on the ledger (no price in force on which days, or the "
                        "model is not one of the agent's registered models) and what to do")


class OutcomesOut(Schema):
    accepted: int = Field(description="Events stored now")
    duplicates: int = Field(description="Events whose (agent, event_id) was already stored, or repeated in this batch")
    rejected: list[RejectedOut] = Field(description="Events refused, each by its index in `events`, naming the field")
    uncharged: list[UnchargedOut] = Field(
        description="Accepted events with tokens that were not charged — their model has no price in force, or is "
        "not one of the agent's registered models — one entry per model and reason: their inference cost is not "
        "on the ledger, and resending them will not add it. Empty when every token was charged",
    )


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
    served_other_model: int = Field(description=(
        "Outcomes counted in this arm that a model other than the arm's served, as reported — the live model "
        "answering when the candidate failed (fallback), or any other. Outcomes count in the arm the user was "
        "assigned to, whichever model served (intention to treat)"
    ))
    served_other_model_rate: float | None = Field(description="served_other_model over the arm's outcomes; null without outcomes")


class ComparisonOut(Schema):
    measures: str = Field(description=(
        "What the means and lifts estimate; for latency and cost the mean of requests each capped at capped_at"
    ))
    capped_at: float | None = Field(description=(
        f"Latency and cost: each request's value is capped here (the {stats.CAP_PERCENTILE}th percentile of both arms' "
        "analysed requests) "
        "before the comparison's means and lifts; the guardrails and the arms' mean_latency_ms and "
        "cost_per_request_usd use the real, uncapped values. "
        "Null for the other metrics"
    ))
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
    alpha: float = Field(description=(
        "This rule's level over the whole rollout (rules that roll back share guardrail_alpha); resumes spend it"
    ))
    segment_alpha: float = Field(description=(
        "The level the current segment is judged at: alpha/(ζ(3)·k³) for the k-th segment, k = guardrail_segment"
    ))


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
    config_version: int = Field(description=EXPERIMENT_SETTINGS_VERSION)
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
    srm_threshold: float = Field(description=(
        "Where srm_p pauses the experiment: the current test's part of its stage's share of srm_alpha "
        "(the k-th test of a stage, k = srm_test, at share/(ζ(3)·k³))"
    ))
    srm_test: int = Field(description=(
        "Which SRM test of the current stage runs: 1 + the resumes in the stage (a resume restarts the test)"
    ))
    srm_flagged: bool
    guardrail_segment: int = Field(description=(
        "Which guardrail segment of the rollout runs: 1 + the resumes so far (a resume restarts the current "
        "stage's window, and with it the guardrails' sequential test; the k-th segment is judged at "
        "alpha/(ζ(3)·k³))"
    ))
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


def _none_match_fails(if_none_match: str, *, etag: str) -> bool:
    """Whether `If-None-Match` names the current representation, so the answer is 304: RFC 9110
    §13.1.2 — `*`, or a list of entity tags compared weakly (W/"x" matches "x"). A proxy that
    compresses the body weakens the ETag it passes on (nginx with gzip), and its clients send that
    back."""
    tags = parse_etags(if_none_match)
    if tags == ["*"]:
        return True
    current = etag.removeprefix("W/")
    return any(tag.removeprefix("W/") == current for tag in tags)


# Declared on the config's 200 and 304 (ninja's `response=` describes bodies only): both always carry them.
_ETAG_HEADER = {"description": "The config's version; send it back in If-None-Match", "required": True,
                "schema": {"type": "string"}}
_NO_CACHE_HEADER = {"description": "no-cache: revalidate with If-None-Match before each use", "required": True,
                    "schema": {"type": "string"}}


@router.get(
    "/agents/{agent}/config",
    response={200: AgentConfigOut, 304: None},
    summary="Everything an agent needs to route locally (ETag; If-None-Match → 304)",
    openapi_extra={"responses": {
        200: {"headers": {"ETag": _ETAG_HEADER, "Cache-Control": _NO_CACHE_HEADER}},
        304: {"headers": {"ETag": _ETAG_HEADER, "Cache-Control": _NO_CACHE_HEADER}},
    }},
)
def agent_config(request: HttpRequest, agent: Slug) -> HttpResponse:
    """The agent's routing config with an `ETag`. Send the ETag back in `If-None-Match` (a list of
    tags, weak `W/"…"` ones included, or `*`) to get 304 with no body while the config is unchanged."""
    entry = _entry(request, agent)
    if entry.problem:
        raise Conflict(entry.problem)
    if _none_match_fails(request.headers.get("If-None-Match", ""), etag=entry.etag):
        response = HttpResponse(status=304)
    else:
        response = HttpResponse(json.dumps(entry.config_json), content_type="application/json")
    response["ETag"] = entry.etag
    response["Cache-Control"] = "no-cache"
    return response


@router.post("/outcomes", response={202: OutcomesOut}, summary="Report what happened (≤ 1 000 events)")
def outcomes(request: HttpRequest, payload: OutcomesIn) -> Status[dict[str, Any]]:
    result = outcomes_ingest(principal=request_principal(request), events=payload.events)
    return Status(202, {"accepted": result.accepted, "duplicates": result.duplicates, "rejected": result.rejected,
                        "uncharged": result.uncharged})


@router.get("/experiments/{key}/results", response=ResultsOut, summary="Per-arm metrics, lift, SRM and guardrails")
def results(request: HttpRequest, key: Identifier) -> dict[str, Any]:
    experiment = get_experiment(key=key)
    ensure_object_access(principal=request_principal(request), owner_slug=experiment.agent.slug, what=f"experiment '{key}'")
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
    status: Literal["ok", "degraded", "failing", "idle"] = Field(description="ok | degraded | failing | idle")
    window_5m: HealthWindowOut
    window_15m: HealthWindowOut
    live_model: str | None
    experiment: HealthExperimentOut | None


@router.get("/agents/{agent}/health", response=AgentHealthOut, summary="Error ratio and p95 latency of the last 5 and 15 minutes")
def agent_health(request: HttpRequest, agent: Slug) -> dict[str, Any]:
    ensure_agent_access(principal=request_principal(request), agent_slug=agent)
    return selectors_monitoring.agent_health(agent_slug=agent)
