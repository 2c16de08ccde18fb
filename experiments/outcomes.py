"""Writes of what agents report: outcome events (POST /outcomes) and the exposures recorded from
them and from the routing path. Validated one by one, stored in one statement, priced and put on the
ledger (experiments/costing.py), counted for /metrics (experiments/metrics.py)."""

from __future__ import annotations

import operator
import re
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from django.db import connection, transaction
from django.utils import timezone
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from experiments import costing, intake, retention, routing
from experiments.assignment import assign_variant
from experiments.bulk import insert_ignoring_conflicts, staged_rows
from experiments.metrics import outcomes_count
from experiments.models import (
    ASSIGNMENT_COLUMNS,
    MAX_OUTCOME_CLOCK_SKEW,
    Assignment,
    Experiment,
    ExperimentStage,
    ExperimentStatus,
    OutcomeEvent,
    Variant,
)
from genesis.errors import InvalidInput
from genesis.validation import Identifier, Slug
from models_app.registry.models import Agent
from models_app.registry.services import ApiPrincipal, ensure_may_act_for

MAX_OUTCOME_EVENTS = 1000

MAX_OUTCOME_LATENCY_MS = 3_600_000
MAX_OUTCOME_TOKENS = 10_000_000


# ISO-8601 as the contract says: a date (taken as midnight UTC) with or without a time of day.
ISO_DATE = re.compile(r"\d{4}-\d{2}-\d{2}(?:$|[Tt ]\d{2}:\d{2})")


class OutcomeEventIn(BaseModel):
    """One outcome as the contract names it; unknown fields are ignored."""

    # No whitespace stripping: ids are opaque and used byte for byte, as POST /route and the
    # in-process client hash them (" u1" is routed as " u1", so it is recorded as " u1").
    model_config = ConfigDict(extra="ignore")

    # Identifier / Slug (genesis/validation.py) bound the length and refuse NUL, which PostgreSQL
    # text cannot hold.
    event_id: Identifier
    agent: Slug
    user_id: Identifier
    model: Identifier
    success: bool
    # Upper bounds keep the per-arm sums (Σx² of latency, tokens × price in cost_usd numeric(14, 8))
    # finite: one absurd value would otherwise make every results query fail. An hour is more than
    # any request takes; ten million tokens more than any context window.
    # strict: JSON numbers only — true, "12" or "1e3" were taken as 1, 12 and 1000, and 5.0 tokens as 5.
    latency_ms: float = Field(ge=0, le=MAX_OUTCOME_LATENCY_MS, allow_inf_nan=False, strict=True)
    input_tokens: int | None = Field(default=None, ge=0, le=MAX_OUTCOME_TOKENS, strict=True)
    output_tokens: int | None = Field(default=None, ge=0, le=MAX_OUTCOME_TOKENS, strict=True)
    quality: float | None = Field(default=None, ge=0, le=1, allow_inf_nan=False, strict=True)
    occurred_at: datetime | None = None

    @field_validator("success", mode="before")
    @classmethod
    def _strict_bool(cls, value: Any) -> Any:
        # "yes", 1 or "0" are too easy to get wrong for the metric everything hangs on.
        if not isinstance(value, bool):
            raise ValueError("must be true or false")
        return value

    @field_validator("occurred_at", mode="before")
    @classmethod
    def _date_time(cls, value: Any) -> Any:
        # ISO-8601 only: a number (or a string of digits) was taken as seconds since 1970 — a guess at
        # what the sender meant, not what the contract asks for.
        if value is not None and not (isinstance(value, str) and ISO_DATE.match(value)):
            raise ValueError("must be an ISO-8601 date-time (or date), e.g. 2026-12-06T10:15:00Z")
        return value


@dataclass(frozen=True)
class IngestResult:
    accepted: int
    duplicates: int
    rejected: list[dict[str, Any]]
    # Accepted events whose tokens found no price, by model (experiments.costing.uncharged_events).
    uncharged: list[dict[str, Any]] = field(default_factory=list)


def _describe_validation_error(exc: ValidationError) -> str:
    parts = []
    for error in exc.errors():
        location = ".".join(str(part) for part in error.get("loc", ())) or "event"
        parts.append(f"{location}: {error.get('msg', 'invalid')}")
    return "; ".join(parts)


def outcomes_ingest(*, principal: ApiPrincipal | None, events: list[Any], received_at: datetime | None = None) -> IngestResult:
    """Validate each event on its own, then insert the valid ones in one statement. A repeated
    event_id (earlier, or twice in this batch) counts as a duplicate and is stored once. Raises
    PermissionDenied when the key may not act for an existing agent a valid event names; an event of
    an agent that does not exist is rejected on its own."""
    if len(events) > MAX_OUTCOME_EVENTS:
        raise InvalidInput(f"events: at most {MAX_OUTCOME_EVENTS} per request, got {len(events)}; send them in batches")
    received_at = received_at or timezone.now()
    valid, rejected = _validated(events)
    agents = {agent.slug: agent for agent in Agent.objects.filter(slug__in={event.agent for _, event in valid})}
    if principal is not None:
        # The whole batch: an existing agent the key may not act for refuses it (nothing stored); an
        # unknown agent only rejects its own events (models_app.registry.services, "Which agents a key
        # may learn about").
        ensure_may_act_for(principal=principal, agent_slugs=(event.agent for _, event in valid if event.agent in agents))
    with transaction.atomic():
        # From reading the limits (what a prune or an erasure deleted) to storing what they let through,
        # one transaction behind the intake fence: a deletion records its limit only once this has
        # committed, so it finds what this stores, and it deletes nothing before its limit is recorded,
        # so this cannot store again what it deleted (experiments/intake.py, intake_fence_hold).
        intake.intake_fence_hold()
        rows, duplicates = _outcome_rows(valid, agents=agents, received_at=received_at, rejected=rejected)
        rejected.sort(key=lambda item: item["index"])
        if not rows:
            return IngestResult(accepted=0, duplicates=duplicates, rejected=rejected)
        costing.price_rows(rows=rows)
        skipped = _store_outcomes_and_exposures(rows)
        inserted = [row for row in rows if (row["agent_id"], row["event_id"]) not in skipped] if skipped else rows
        costing.record_rows(rows=inserted, agents={agent.pk: agent for agent in agents.values()})
    slugs = {agent.pk: slug for slug, agent in agents.items()}
    outcomes_count(rows=inserted, agent_slugs=slugs)  # /metrics
    return IngestResult(accepted=len(inserted), duplicates=duplicates + len(rows) - len(inserted), rejected=rejected,
                        uncharged=costing.uncharged_events(rows=inserted, agent_slugs=slugs))


def _validated(events: list[Any]) -> tuple[list[tuple[int, OutcomeEventIn]], list[dict[str, Any]]]:
    """(index, event) of each valid event, and {index, detail} of each invalid one."""
    rejected: list[dict[str, Any]] = []
    valid: list[tuple[int, OutcomeEventIn]] = []
    for index, raw in enumerate(events):
        if not isinstance(raw, dict):
            rejected.append({"index": index, "detail": "event: must be an object"})
            continue
        try:
            valid.append((index, OutcomeEventIn.model_validate(raw)))
        except ValidationError as exc:
            rejected.append({"index": index, "detail": _describe_validation_error(exc)})
    return valid, rejected


@dataclass(frozen=True)
class _RunningExperiment:
    """What ingestion needs to know of a running experiment to name an outcome's arm."""

    experiment_id: int
    seed: str
    # (started_at, ended_at, percent) of each started stage, newest first: an outcome usually
    # belongs to the current one.
    stages: list[tuple[datetime, datetime | None, int]]
    # arm → the model id that arm's users are routed to: an outcome another model served is counted
    # (genesis_agent_served_by_other_model_total, experiments/metrics.py) — Genesis's one sight of fallbacks.
    arm_models: dict[str, str]

    def arm_of(self, *, user_id: str, occurred_at: datetime) -> str | None:
        """The arm /route gave this user when the outcome occurred: the hash of the seed and the user
        (experiments.client.decide_route) at the percent of the stage whose window [started_at,
        ended_at) holds occurred_at — the window the results put the outcome in. None outside every
        window: before the start, or before a resume (everyone had the live model while paused)."""
        for started_at, ended_at, percent in self.stages:
            if started_at <= occurred_at and (ended_at is None or occurred_at < ended_at):
                return assign_variant(seed=self.seed, user_id=user_id, treatment_fraction=percent / 100)
        return None


def _running_experiments(agents: dict[str, Agent]) -> dict[int, _RunningExperiment]:
    """agent id → its running experiment, from one query per batch (not per event).

    An outcome counts in the arm its user was *assigned* to (intention to treat), not in the arm
    whose model served it: an agent's router may answer with the live model when the candidate fails
    (a fallback of the agent's own), and counting those answers as control would move the
    candidate's hardest requests out of its own arm and flatter it. The model that served stays on
    the row, so the results can say how often an arm was served by another model, and /metrics
    counts those outcomes as they arrive (genesis_agent_served_by_other_model_total).

    Only a running experiment's outcomes are its own: while paused everyone gets the live model, so
    those outcomes are "live" (counting them in an arm would trip the SRM check on resume)."""
    running: dict[int, _RunningExperiment] = {}
    for experiment_id, agent_id, seed, control_model, treatment_model, started_at, ended_at, percent in (
        ExperimentStage.objects.filter(
            experiment__agent_id__in=[agent.pk for agent in agents.values()],
            experiment__status=ExperimentStatus.RUNNING,
        )
        .order_by("-started_at")
        .values_list("experiment_id", "experiment__agent_id", "experiment__seed", "experiment__control__model_id",
                     "experiment__treatment__model_id", "started_at", "ended_at", "percent")
    ):
        experiment = running.setdefault(agent_id, _RunningExperiment(
            experiment_id=experiment_id, seed=seed, stages=[],
            arm_models={Variant.CONTROL.value: control_model, Variant.TREATMENT.value: treatment_model},
        ))
        if started_at is not None:  # a stage to come has no window yet
            experiment.stages.append((started_at, ended_at, percent))
    return running


def _outcome_rows(
    valid: list[tuple[int, OutcomeEventIn]], *, agents: dict[str, Agent], received_at: datetime, rejected: list[dict[str, Any]]
) -> tuple[list[dict[str, Any]], int]:
    """The rows to insert, one per new (agent, event_id) of the batch, and how many repeated an
    event_id within the batch. Events of unknown agents, from the future, or older than the outcome
    retention or what a prune or an erasure deleted allows (retention.outcome_age_limits) go to `rejected`."""
    running = _running_experiments(agents)
    agent_ids = {slug: agent.pk for slug, agent in agents.items()}
    sent_at = [_occurred_at(event, received_at=received_at) for _, event in valid]
    age_limits = retention.outcome_age_limits(received_at=received_at, agents={pk: slug for slug, pk in agent_ids.items()},
                                              oldest_event=min(sent_at, default=received_at))
    rows: list[dict[str, Any]] = []
    seen_in_batch: set[tuple[int, str]] = set()  # (agent id, event_id): event ids are unique per agent
    duplicates = 0
    for (index, event), occurred_at in zip(valid, sent_at, strict=True):
        agent_id = agent_ids.get(event.agent)
        if agent_id is None:
            rejected.append({"index": index, "detail": f"agent: '{event.agent}' does not exist"})
            continue
        refusal = _time_refusal(occurred_at, received_at=received_at,
                                age_limit=age_limits.of(agent_id=agent_id, user_id=event.user_id))
        if refusal is not None:
            rejected.append({"index": index, "detail": refusal})
            continue
        # Within the skew allowed, a time ahead of the server's is the agent's clock: the outcome
        # occurred by the time it was received, when the stage current now was in effect. So it is
        # stored at received_at, for the arm and for the stage window alike: kept as sent, an outcome
        # dated after an advance that came a minute later would carry the old stage's arm into the new
        # stage's cell (a user control at 10 % counted as control at 25 %, where it is treatment).
        occurred_at = min(occurred_at, received_at)
        key = (agent_id, event.event_id)
        if key in seen_in_batch:
            duplicates += 1
            continue
        seen_in_batch.add(key)
        experiment = running.get(agent_id)
        variant = experiment.arm_of(user_id=event.user_id, occurred_at=occurred_at) if experiment else None
        experiment_id = experiment.experiment_id if experiment and variant else None
        rows.append({
            "index": index,  # in the request; not stored
            "arm_model": experiment.arm_models[variant] if experiment and variant else None,  # for /metrics; not stored
            "event_id": event.event_id,
            "agent_id": agent_id,
            "experiment_id": experiment_id,
            "variant": variant or Variant.LIVE.value,
            "user_id": event.user_id,
            "model": event.model,
            "success": event.success,
            "latency_ms": event.latency_ms,
            "input_tokens": event.input_tokens,
            "output_tokens": event.output_tokens,
            "quality": event.quality,
            "cost_usd": None,
            "occurred_at": occurred_at,
            "received_at": received_at,
        })
    return rows, duplicates


def _time_refusal(occurred_at: datetime, *, received_at: datetime, age_limit: retention.OutcomeAgeLimit | None) -> str | None:
    """Why an event that occurred at `occurred_at` is not stored, or None when its time is fine."""
    if occurred_at > received_at + MAX_OUTCOME_CLOCK_SKEW:
        return (
            f"occurred_at: {occurred_at.isoformat()} is in the future (received at {received_at.isoformat()}, "
            f"allowing {MAX_OUTCOME_CLOCK_SKEW.total_seconds() / 60:g} minutes of clock skew); check the agent's clock and time zone"
        )
    if age_limit is not None and occurred_at < age_limit.oldest:
        # "A repeated event_id is counted once" holds only while the first one is stored: an outcome
        # this old may have been pruned (by the retention, or a prune's cut-off) or erased, and sent
        # again it would be stored and charged a second time. The time compared is the one sent, not
        # the one stored (below): it is the same on every copy of the event, where the stored one
        # depends on when each copy arrived — the limits allow for that (outcome_age_limits).
        return f"occurred_at: {occurred_at.isoformat()} {age_limit.reason}"
    return None


def _occurred_at(event: OutcomeEventIn, *, received_at: datetime) -> datetime:
    """When the event happened: as reported (naive times are UTC), else when it was received."""
    if event.occurred_at is None:
        return received_at
    if event.occurred_at.tzinfo is None:
        return event.occurred_at.replace(tzinfo=UTC)
    return event.occurred_at


OUTCOME_COLUMNS = (
    ("event_id", "text"), ("agent_id", "bigint"), ("experiment_id", "bigint"), ("variant", "text"), ("user_id", "text"),
    ("model", "text"), ("success", "boolean"), ("latency_ms", "double precision"), ("input_tokens", "integer"),
    ("output_tokens", "integer"), ("quality", "double precision"), ("cost_usd", "numeric"),
    ("occurred_at", "timestamptz"), ("received_at", "timestamptz"),
)
_outcome_values = operator.itemgetter(*(name for name, _ in OUTCOME_COLUMNS))


def _store_outcomes_and_exposures(rows: list[dict[str, Any]]) -> set[tuple[int, str]]:
    """Insert the outcomes whose event id is new for their agent and record the exposure of each new
    outcome's user in its arm; return the (agent id, event_id) pairs NOT inserted (already stored,
    perhaps by a concurrent request) — usually none, so usually nothing comes back."""
    if connection.vendor != "postgresql":
        inserted = _insert_outcomes_ignoring_duplicates(rows)
        _record_exposures_of([row for row in rows if (row["agent_id"], row["event_id"]) in inserted])
        return {(row["agent_id"], row["event_id"]) for row in rows} - inserted
    # On PostgreSQL one statement does both: the rows go in by COPY (experiments/bulk.py), and the
    # exposures come from what the INSERT really added (RETURNING), earliest sighting per
    # (experiment, user, arm) in the experiment's current stage — the same rows _record_exposures_of
    # writes, without a second COPY and its round trips (a sixth of the work of a batch, bench/outcomes).
    # It answers with the skipped rows rather than the inserted ones: fetching a thousand ids back
    # was a tenth of the batch's CPU time, for an answer that is almost always "all of them".
    quote = connection.ops.quote_name
    names = ", ".join(quote(name) for name, _ in OUTCOME_COLUMNS)
    with staged_rows(table=OutcomeEvent._meta.db_table, columns=OUTCOME_COLUMNS, rows=map(_outcome_values, rows)) as (cursor, staging):
        cursor.execute(f"""
            WITH batch AS (DELETE FROM {staging} RETURNING {names}),
            new AS (
                INSERT INTO {quote(OutcomeEvent._meta.db_table)} ({names}) SELECT {names} FROM batch
                ON CONFLICT (agent_id, event_id) DO NOTHING
                RETURNING agent_id, event_id, experiment_id, user_id, variant, occurred_at
            ),
            exposures AS (
                INSERT INTO {quote(Assignment._meta.db_table)} (experiment_id, user_id, variant, stage_id, first_seen)
                SELECT new.experiment_id, new.user_id, new.variant, experiment.current_stage_id, MIN(new.occurred_at)
                FROM new JOIN {quote(Experiment._meta.db_table)} experiment ON experiment.id = new.experiment_id
                GROUP BY new.experiment_id, new.user_id, new.variant, experiment.current_stage_id
                ON CONFLICT (experiment_id, user_id, variant) DO NOTHING
            )
            SELECT batch.agent_id, batch.event_id FROM batch
            WHERE NOT EXISTS (SELECT FROM new WHERE new.agent_id = batch.agent_id AND new.event_id = batch.event_id)
        """)
        return set(cursor.fetchall())


def _insert_outcomes_ignoring_duplicates(rows: list[dict[str, Any]]) -> set[tuple[int, str]]:
    """INSERT … ON CONFLICT (agent_id, event_id) DO NOTHING RETURNING event_id: the database says
    exactly which events are new, even when two requests carry the same event at once. Event ids are
    unique per agent (two agents may both send "1"), so it runs once per agent in the batch — usually
    once, as an API key acts for one agent — and returns (agent id, event_id) pairs."""
    by_agent: dict[int, list[Any]] = {}
    for row in rows:
        by_agent.setdefault(row["agent_id"], []).append(_outcome_values(row))
    inserted: set[tuple[int, str]] = set()
    for agent_id, values in by_agent.items():
        inserted.update((agent_id, event_id) for event_id in insert_ignoring_conflicts(
            table=OutcomeEvent._meta.db_table,
            columns=OUTCOME_COLUMNS,
            rows=values,
            conflict=["agent_id", "event_id"],
            returning="event_id",
        ))
    return inserted


def _record_exposures_of(rows: list[dict[str, Any]]) -> None:
    """Agents that decide in-process (experiments/client.py) never call /route, so the outcomes they
    report are the only sign of their users' exposure; record it here too, in the experiment's
    current stage."""
    stage_of = dict(
        Experiment.objects.filter(pk__in={row["experiment_id"] for row in rows if row["experiment_id"]})
        .values_list("pk", "current_stage_id")
    )
    earliest: dict[tuple[int, str, str], datetime] = {}
    for row in rows:
        if row["experiment_id"] is None:
            continue
        key = (row["experiment_id"], row["user_id"], row["variant"])
        if key not in earliest or row["occurred_at"] < earliest[key]:
            earliest[key] = row["occurred_at"]
    insert_ignoring_conflicts(
        table=Assignment._meta.db_table,
        columns=ASSIGNMENT_COLUMNS,
        rows=[[exp_id, user_id, variant, stage_of.get(exp_id), seen] for (exp_id, user_id, variant), seen in earliest.items()],
        conflict=["experiment_id", "user_id", "variant"],
    )


# --- exposures --------------------------------------------------------------------------------------


def exposures_flush() -> int:
    """Write the exposures buffered in Redis by the routing path (the beat task's work)."""
    return routing.drain_exposure_queue()
