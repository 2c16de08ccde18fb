"""Reads of experiments for the admin, the launch pages and `rollout_models`: an experiment by key or
the agent's one people act on, what starting an agent's rollout would do, the stage timeline, pending
approval requests and who may approve them, the audit trail's rollback and pause entries, and the
launch calendar. The outcome aggregate is read in experiments/outcome_aggregate.py, the results and
guardrail states in experiments/results.py, the holds in experiments/holds.py, and what /metrics and
an agent's health read in experiments/selectors_monitoring.py.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from django.db.models import QuerySet
from django.utils import timezone

from experiments.calendar import CalendarEntry, PlannedStage, rollout_calendar
from experiments.models import (
    ACTIVE_STATUSES,
    ApprovalStatus,
    EventAction,
    Experiment,
    ExperimentEvent,
    ExperimentStage,
    ExperimentStatus,
    StageApproval,
)
from genesis.errors import NotFound
from models_app.registry.models import Agent, ModelStatus, ModelVersion
from models_app.registry.selectors import candidate_versions


def get_experiment(*, key: str) -> Experiment:
    experiment = (
        Experiment.objects.select_related("agent", "control__provider", "treatment__provider", "current_stage", "started_by")
        .filter(key=key)
        .first()
    )
    if experiment is None:
        raise NotFound(f"experiment '{key}' does not exist")
    return experiment


def experiment_for_agent(*, agent_slug: str) -> Experiment | None:
    """The agent's experiment people act on: its running or paused one, else its newest draft, else
    its newest finished one."""
    experiments = Experiment.objects.select_related(
        "agent", "control__provider", "treatment__provider", "current_stage", "started_by"
    ).filter(agent__slug=agent_slug)
    return (
        experiments.filter(status__in=ACTIVE_STATUSES).first()
        or experiments.filter(status="draft").order_by("-created_at").first()
        or experiments.order_by("-created_at").first()
    )


@dataclass(frozen=True)
class RolloutStart:
    """What starting an agent's rollout does (experiments.services.experiment_start_for_agent): start
    `draft`, or else create and start an experiment for `treatment`. `other_draft` is the agent's
    newest draft when it is for another candidate and so is left as it is; nothing to start leaves
    both `draft` and `treatment` None."""

    draft: Experiment | None
    treatment: ModelVersion | None
    other_draft: Experiment | None


def rollout_start_plan(*, agent: Agent, candidate_model_id: str = "") -> RolloutStart:
    """The candidate named, or else the agent's newest candidate (the one the launch board shows, so
    the board's button and `rollout_models --start` do the same): its own draft, or else a new
    experiment for it; another candidate's draft is left as it is. With no candidate at all, the
    agent's newest draft (its start then says what stops it)."""
    drafts = Experiment.objects.filter(agent=agent, status=ExperimentStatus.DRAFT).select_related("treatment").order_by("-created_at")
    versions = candidate_versions(agent=agent).exclude(status=ModelStatus.ROLLING_OUT)
    return rollout_start_choice(drafts=list(drafts), versions=list(versions), candidate_model_id=candidate_model_id)


def rollout_start_choice(*, drafts: list[Experiment], versions: list[ModelVersion], candidate_model_id: str = "") -> RolloutStart:
    """rollout_start_plan's rule over the agent's drafts and candidates not rolling out, newest first."""
    newest_draft = drafts[0] if drafts else None
    if not candidate_model_id:
        if not versions:
            return RolloutStart(draft=newest_draft, treatment=newest_draft.treatment if newest_draft else None, other_draft=None)
        candidate_model_id = versions[0].model_id
    draft = next((draft for draft in drafts if draft.treatment.model_id == candidate_model_id), None)
    if draft is not None:
        return RolloutStart(draft=draft, treatment=draft.treatment, other_draft=None)
    treatment = next((version for version in versions if version.model_id == candidate_model_id), None)
    return RolloutStart(draft=None, treatment=treatment, other_draft=newest_draft)



# --- the admin page and the CLI -------------------------------------------------------------------


def experiment_timeline(*, experiment: Experiment) -> list[dict[str, Any]]:
    """The stage plan with each stage's dates and its approval requests (the admin timeline)."""
    if experiment.status == "draft":
        return [{"percent": percent, "status": "planned", "started_at": None, "ended_at": None, "approvals": []}
                for percent in experiment.stage_plan]
    approvals: dict[int, list[StageApproval]] = {}
    for approval in StageApproval.objects.filter(stage__experiment=experiment).select_related("requested_by", "decided_by").order_by("requested_at"):
        approvals.setdefault(approval.stage_id, []).append(approval)
    return [
        {
            "id": stage.pk,
            "percent": stage.percent,
            "status": stage.status,
            "current": stage.pk == experiment.current_stage_id,
            "started_at": stage.started_at,
            "ended_at": stage.ended_at,
            "approvals": approvals.get(stage.pk, []),
        }
        for stage in experiment.stages.order_by("index")
    ]


def approval_blocker(*, experiment: Experiment, pending: StageApproval | None, user: Any) -> str:
    """Why `user` may not approve the pending request, the real reason first: the permission, then
    the four-eyes rule (they started the experiment or asked for this advance); "" when they may."""
    if pending is None or user is None:
        return ""
    if not (user.is_active and user.has_perm("experiments.approve_stage")):
        return "you may not approve stages: it needs the permission 'experiments.approve_stage'"
    if experiment.started_by_id == user.pk:
        return "you started this experiment; another approver must approve"
    if pending.requested_by_id == user.pk:
        return "you requested this advance; another approver must approve"
    return ""


def pending_approval(*, experiment: Experiment) -> StageApproval | None:
    return pending_approvals(experiments=[experiment]).get(experiment.pk)


def pending_approvals(*, experiments: list[Experiment]) -> dict[int, StageApproval]:
    """Each experiment's pending request (the newest, were there two) by experiment id, in one query."""
    pending = StageApproval.objects.filter(stage__experiment__in=experiments, status=ApprovalStatus.PENDING)
    # Oldest first: an experiment's newest request is the one its key keeps.
    return {approval.stage.experiment_id: approval for approval in pending.select_related("stage", "requested_by").order_by("requested_at")}


def experiment_rollback_event(*, experiment: Experiment) -> ExperimentEvent | None:
    """The entry of the experiment's rollback (who, when, why), None when it was not rolled back."""
    return rollback_events(experiments=[experiment]).get(experiment.pk)


def rollback_events(*, experiments: list[Experiment]) -> dict[int, ExperimentEvent]:
    """experiment_rollback_event of each experiment that has one, by experiment id, in one query."""
    events = ExperimentEvent.objects.filter(experiment__in=experiments, action=EventAction.ROLLBACK).select_related("actor")
    return {event.experiment_id: event for event in events.order_by("at", "id")}  # oldest first: the newest is kept


def experiment_pause_event(*, experiment: Experiment) -> ExperimentEvent | None:
    """The entry of the experiment's latest pause (who, when, why, its reason code), None if never paused."""
    return experiment.events.filter(action=EventAction.PAUSE).select_related("actor").order_by("-at", "-id").first()


def experiment_events(*, experiment: Experiment, limit: int = 50) -> QuerySet[ExperimentEvent]:
    return experiment.events.select_related("actor").order_by("-at", "-id")[:limit]


def experiment_calendar(*, experiment: Experiment, now: datetime | None = None, stages: list[ExperimentStage] | None = None) -> list[CalendarEntry]:
    """The launch calendar (experiments/calendar.py) of an experiment: its stages (`stages`, by index,
    when the caller read them), their earliest start given the minimum hours, and the operator's targets."""
    now = now or timezone.now()
    if experiment.status == "draft":
        planned = [PlannedStage(percent, "planned", None) for percent in experiment.stage_plan]
    else:
        rows = stages if stages is not None else experiment.stages.order_by("index")
        planned = [PlannedStage(stage.percent, stage.status, stage.started_at) for stage in rows]
    targets = {int(percent): datetime.fromisoformat(when) for percent, when in (experiment.stage_targets or {}).items()}
    return rollout_calendar(stages=planned, min_stage_hours=experiment.min_stage_hours, targets=targets, now=now,
                            running=experiment.status in ("draft", "running"))
