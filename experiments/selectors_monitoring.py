"""Reads for monitoring: the rollout state /metrics exports, rollback and pause counts, the exposure
dead letters, and an agent's health (GET /agents/{agent}/health, the Agent admin's health column).

Health is computed from the outcomes recorded in the last 15 minutes (by `received_at`, which a BRIN
index keeps cheap to range over on PostgreSQL) and never asks a model anything.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from django.db import connection
from django.db.models import Count, Max, Q
from django.utils import timezone

from experiments.health import WindowStats, health_status
from experiments.holds import evaluation_holds, judged_at, stored_evaluation, stored_stage_figures
from experiments.models import ACTIVE_STATUSES, EventAction, Experiment, ExperimentEvent, OutcomeEvent
from experiments.outcome_aggregate import PercentileCont, _percentile_cont
from experiments.routing import EXPOSURE_DEAD_LETTER_KEY
from models_app.registry.models import Agent, ModelVersion

HEALTH_WINDOWS = {"window_5m": timedelta(minutes=5), "window_15m": timedelta(minutes=15)}


@dataclass(frozen=True)
class RolloutState:
    agent: str
    status: str  # none | running | paused
    stage_percent: int
    pause_reason: str
    holds_open: int
    guardrails: tuple[tuple[str, str], ...]  # (metric, state)
    stage_started: float | None  # Unix time
    srm_p: float | None
    # Running only: when the guardrail task last judged it, or its stage's start before it has (Unix time).
    guardrails_judged: float | None = None


def _active_experiments() -> dict[int, Experiment]:
    experiments = Experiment.objects.select_related("agent", "current_stage").filter(status__in=ACTIVE_STATUSES)
    return {experiment.agent_id: experiment for experiment in experiments}


def _last_pause_reasons(experiment_ids: list[int]) -> dict[int, str]:
    reasons: dict[int, str] = {}
    events = ExperimentEvent.objects.filter(experiment_id__in=experiment_ids, action=EventAction.PAUSE).order_by("at", "id")
    for experiment_id, reason_code in events.values_list("experiment_id", "reason_code"):
        reasons[experiment_id] = reason_code
    return reasons


def rollout_states() -> list[RolloutState]:
    """Every agent's rollout: none, or its running / paused experiment with its stage, and its holds,
    guardrails and split as the guardrail task's latest evaluation judged them (experiments.holds.
    stored_evaluation: beat judges every running experiment every minute and stores that on its row).
    Reads no outcome — a few queries however many rollouts and outcomes, where each rollout's outcome
    aggregate took seconds at a million outcomes and a scrape has 10 s. Before the first evaluation of a
    stage a running rollout has the "evaluation" hold open and no guardrail or SRM figures. When the task
    last judged each running rollout comes too (holds.judged_at): what RolloutUnguarded watches."""
    active = _active_experiments()
    pause_reasons = _last_pause_reasons([e.pk for e in active.values() if e.status == "paused"])
    now = timezone.now()
    states = []
    for agent in Agent.objects.order_by("slug"):
        experiment = active.get(agent.pk)
        if experiment is None:
            states.append(RolloutState(agent.slug, "none", 0, "", 0, (), None, None))
            continue
        stage = experiment.current_stage
        stage_started = _timestamp(stage.started_at if stage is not None else None)
        if experiment.status != "running":
            # Paused: the stage's split as the last evaluation before the pause read it — the p-value an
            # SRM pause was about (the task stores it as it pauses), for the runbook's Confirm step.
            figures = stored_stage_figures(experiment=experiment)
            states.append(RolloutState(agent.slug, experiment.status, 0, pause_reasons.get(experiment.pk, ""), 0, (),
                                       stage_started, figures.srm_p if figures is not None else None))
            continue
        evaluation = stored_evaluation(experiment=experiment)
        holds = evaluation_holds(experiment=experiment, evaluation=evaluation, now=now)
        states.append(RolloutState(
            agent=agent.slug, status="running", stage_percent=stage.percent if stage else 0, pause_reason="",
            holds_open=sum(1 for hold in holds if not hold.cleared),
            guardrails=tuple((g.metric, g.state) for g in evaluation.guardrails) if evaluation is not None else (),
            stage_started=stage_started, srm_p=evaluation.figures.srm_p if evaluation is not None else None,
            guardrails_judged=_timestamp(judged_at(experiment=experiment)),
        ))
    return states


def _timestamp(at: datetime | None) -> float | None:
    return at.timestamp() if at is not None else None


def event_counts(*, action: EventAction) -> list[tuple[str, str, int]]:
    """(agent, reason_code, events) of experiment events of one `action` over all time: the
    rollbacks (genesis_experiment_rollbacks_total) or the pauses (genesis_experiment_pauses_total)."""
    return list(
        ExperimentEvent.objects.filter(action=action)
        .values_list("experiment__agent__slug", "reason_code")
        .annotate(total=Count("id"))
        .order_by()
    )


def last_rollbacks() -> list[tuple[str, str, float]]:
    """(agent, reason_code, Unix time) of each agent's latest rollback per reason."""
    rows = (
        ExperimentEvent.objects.filter(action=EventAction.ROLLBACK)
        .values_list("experiment__agent__slug", "reason_code")
        .annotate(last=Max("at"))
        .order_by()
    )
    return [(agent, reason, last.timestamp()) for agent, reason, last in rows]


def exposure_dead_letter_size(*, client: Any) -> int:
    """Exposure batches parked in Redis because they could not be written (`client`: a redis-py client;
    /metrics passes the scrape's own, genesis.metrics.RedisReads)."""
    return int(client.llen(EXPOSURE_DEAD_LETTER_KEY))


# --- health ---------------------------------------------------------------------------------------


def _window_stats(*, agent_ids: list[int], since: datetime) -> dict[int, WindowStats]:
    """Each agent's window in one query, whatever the number of agents (an agent without outcomes in
    the window gets empty stats)."""
    outcomes = OutcomeEvent.objects.filter(agent_id__in=agent_ids, received_at__gte=since)
    found = dict.fromkeys(agent_ids, WindowStats(requests=0, errors=0, latency_p95_ms=None))
    if connection.vendor == "postgresql":
        rows = outcomes.values("agent_id").order_by("agent_id").annotate(
            requests=Count("id"), errors=Count("id", filter=Q(success=False)),
            p95=PercentileCont("latency_ms", fraction=0.95),
        )
        for row in rows:
            found[row["agent_id"]] = WindowStats(requests=row["requests"], errors=row["errors"], latency_p95_ms=row["p95"])
        return found
    by_agent: dict[int, tuple[list[float], int]] = {}
    for agent_id, success, latency_ms in outcomes.values_list("agent_id", "success", "latency_ms"):
        latencies, errors = by_agent.setdefault(agent_id, ([], 0))
        latencies.append(latency_ms)
        by_agent[agent_id] = (latencies, errors + (not success))
    for agent_id, (latencies, errors) in by_agent.items():
        latencies.sort()
        found[agent_id] = WindowStats(requests=len(latencies), errors=errors, latency_p95_ms=_percentile_cont(latencies, 0.95))
    return found


def agent_health(*, agent_slug: str, now: datetime | None = None) -> dict[str, Any]:
    """The health document of GET /agents/{agent}/health."""
    now = now or timezone.now()
    agent = Agent.objects.get(slug=agent_slug)
    windows = {name: _window_stats(agent_ids=[agent.pk], since=now - span)[agent.pk] for name, span in HEALTH_WINDOWS.items()}
    live = ModelVersion.objects.filter(agent=agent, status="live").values_list("model_id", flat=True).first()
    experiment = (
        Experiment.objects.select_related("current_stage").filter(agent=agent, status__in=ACTIVE_STATUSES).first()
    )
    return {
        "agent": agent.slug,
        "status": health_status(window_5m=windows["window_5m"], window_15m=windows["window_15m"]),
        **{name: stats.as_json() for name, stats in windows.items()},
        "live_model": live,
        "experiment": None if experiment is None else {
            "key": experiment.key,
            "status": experiment.status,
            "stage_percent": experiment.current_stage.percent
            if experiment.status == "running" and experiment.current_stage else 0,
        },
    }


def agents_health_statuses(*, agents: list[Agent], now: datetime | None = None) -> dict[int, str]:
    """Just the status of each agent (the Agent admin list's column): one query per window, for all
    the agents listed at once."""
    now = now or timezone.now()
    ids = [agent.pk for agent in agents]
    counts = {name: _window_stats(agent_ids=ids, since=now - span) for name, span in HEALTH_WINDOWS.items()}
    return {
        agent.pk: health_status(window_5m=counts["window_5m"][agent.pk], window_15m=counts["window_15m"][agent.pk])
        for agent in agents
    }
