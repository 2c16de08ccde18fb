"""The rollout rules: every write of an experiment, its stages and approvals.
The admin buttons, the launch board, `manage.py rollout_models`, the API and the guardrail task all
call these functions, so they enforce the same permissions, four-eyes rule and holds. (What agents
report — outcomes and exposures — is written by experiments/outcomes.py; the rollback alert is sent
by experiments/alerts.py; the guardrail task's verdict on a running experiment, which pauses or rolls
it back through these services, is experiments/guardrail_check.py.)

`actor=None` means Genesis itself (the guardrail task, seed_demo). A person must act for requests and
approvals: the four-eyes rule is about people.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from datetime import datetime
from typing import TYPE_CHECKING, Any

from django.conf import settings
from django.core.exceptions import ValidationError as DjangoValidationError
from django.core.validators import validate_slug
from django.db import transaction
from django.utils import timezone

from experiments import audit, rollout_settings, routing
from experiments.assignment import new_experiment_seed
from experiments.holds import stage_holds
from experiments.models import (
    ACTIVE_STATUSES,
    ApprovalStatus,
    EventAction,
    Experiment,
    ExperimentStage,
    ExperimentStatus,
    StageApproval,
    StageStatus,
)
from experiments.selectors import pending_approval, rollout_start_plan
from genesis.errors import AlreadyDone, Conflict, InvalidInput, PermissionDenied
from genesis.integrity import UniqueKey, unique_violation_raises
from genesis.permissions import Actor, require_permission
from genesis.tasks import send_on_commit
from genesis.validation import reject_nul
from models_app.registry.models import Agent, ModelStatus, ModelVersion
from models_app.registry.selectors import live_version
from models_app.registry.services import model_version_transition

if TYPE_CHECKING:
    from django.contrib.auth.models import User

logger = logging.getLogger(__name__)
# Refusals answered as a conflict; any other integrity error (another unique constraint's too) is itself.
EXPERIMENT_KEY_TAKEN = UniqueKey.field(Experiment, "key")
AGENT_ALREADY_EXPERIMENTING = UniqueKey.constraint(Experiment, "one_active_experiment_per_agent")
STAGE_ALREADY_REQUESTED = UniqueKey.constraint(StageApproval, "one_pending_approval_per_stage")


# --- defaults ------------------------------------------------------------------------------------


def default_guardrails() -> list[dict[str, Any]]:
    """The prototype's rules (success rate down more than 5 points rolls back; latency up more than
    30 % warns, both from settings.GENESIS.ab_testing) plus two warnings of ours on quality and cost."""
    ab = settings.GENESIS.ab_testing
    return [
        {"metric": "success_rate", "harmful_direction": "decrease", "threshold": ab.success_rate_drop_points / 100,
         "threshold_kind": "absolute", "on_violation": "breach"},
        {"metric": "latency_ms", "harmful_direction": "increase", "threshold": ab.latency_increase_warn,
         "threshold_kind": "relative", "on_violation": "warning"},
        {"metric": "quality", "harmful_direction": "decrease", "threshold": 0.05,
         "threshold_kind": "absolute", "on_violation": "warning"},
        {"metric": "cost_per_request", "harmful_direction": "increase", "threshold": 0.50,
         "threshold_kind": "relative", "on_violation": "warning"},
    ]


# --- locking and the registry --------------------------------------------------------------------------------


def _lock(experiment: Experiment) -> Experiment:
    return (
        Experiment.objects.select_for_update(of=("self",))
        .select_related("agent", "control", "treatment", "current_stage")
        .get(pk=experiment.pk)
    )


def _transition_model(version: ModelVersion, *, to_status: str, actor: Actor, reason: str, verdict_overridden: bool = False) -> ModelVersion:
    """The registry moves the version as Genesis (the experiment permission was checked here) and
    names the person who caused it on the version's history."""
    return model_version_transition(
        version=version, to_status=to_status, actor=None, on_behalf_of=actor, reason=reason,
        verdict_overridden=verdict_overridden,
    )


# --- experiments ----------------------------------------------------------------------------------


@transaction.atomic
def experiment_create(
    *,
    agent: Agent,
    treatment: ModelVersion,
    actor: Actor = None,
    key: str = "",
    description: str = "",
    stage_plan: Sequence[Any] | None = None,
    min_stage_hours: float | None = None,
    min_samples_per_arm: int | None = None,
    planned_samples_per_arm: int | None = None,
    guardrails: list[dict[str, Any]] | None = None,
) -> Experiment:
    """A draft experiment of `treatment` against the agent's live version. Holds and the stage plan
    default to settings (ROLLOUT_*); all of them can be edited until the start."""
    require_permission(actor=actor, permission="experiments.add_experiment", action="create experiments")
    control = live_version(agent=agent)
    if control is None:
        raise Conflict(f"agent '{agent.slug}' has no live model version to compare against: make its baseline live first")
    if treatment.agent_id != agent.pk:
        raise InvalidInput(f"treatment: '{treatment.model_id}' belongs to agent '{treatment.agent.slug}', not '{agent.slug}'")
    if treatment.pk == control.pk:
        raise InvalidInput(f"treatment: '{treatment.model_id}' is already the live model; choose a candidate")
    allowed = (ModelStatus.REGISTERED, ModelStatus.BENCHMARKING, ModelStatus.APPROVED_FOR_ROLLOUT)
    if treatment.status not in allowed:
        raise Conflict(
            f"treatment: '{treatment.model_id}' is {treatment.status}; a candidate must be one of "
            f"{', '.join(allowed)}"
        )
    seed = new_experiment_seed()
    key = (key or f"{agent.slug}-{timezone.now():%Y%m%d}-{seed[:6]}").strip()
    if Experiment.objects.filter(key=key).exists():
        raise Conflict(f"key: an experiment '{key}' already exists; choose another key")
    try:
        validate_slug(key)
    except DjangoValidationError:
        raise InvalidInput(f"key: '{key}' may contain only letters, digits, hyphens and underscores") from None
    experiment = _create_experiment_row(
        key=key,
        agent=agent,
        control=control,
        treatment=treatment,
        description=description,
        seed=seed,
        stage_plan=rollout_settings.validate_stage_plan(stage_plan if stage_plan is not None else settings.ROLLOUT_STAGES),
        min_stage_hours=rollout_settings.validate_number(
            "min_stage_hours", settings.ROLLOUT_MIN_STAGE_HOURS if min_stage_hours is None else min_stage_hours, minimum=0
        ),
        min_samples_per_arm=rollout_settings.validate_sample_size(
            "min_samples_per_arm", settings.ROLLOUT_MIN_SAMPLES_PER_ARM if min_samples_per_arm is None else min_samples_per_arm,
        ),
        planned_samples_per_arm=rollout_settings.validate_sample_size(
            "planned_samples_per_arm", 2000 if planned_samples_per_arm is None else planned_samples_per_arm,
        ),
        guardrails=rollout_settings.validate_guardrails(default_guardrails() if guardrails is None else guardrails),
        created_by=actor,
    )
    audit.record_event(experiment, action=EventAction.CREATE, actor=actor, after={**audit.snapshot(experiment), **_settings_of(experiment)})
    return experiment


def _create_experiment_row(**fields: Any) -> Experiment:
    taken = Conflict(f"key: an experiment '{fields['key']}' already exists; choose another key")
    with unique_violation_raises(taken, EXPERIMENT_KEY_TAKEN), transaction.atomic():
        return Experiment.objects.create(**fields)


# What experiment_update may change (the admin form offers exactly these).
EDITABLE_SETTINGS = ("stage_plan", "min_stage_hours", "min_samples_per_arm", "planned_samples_per_arm", "guardrails", "description")


def _settings_of(experiment: Experiment) -> dict[str, Any]:
    return {name: getattr(experiment, name) for name in EDITABLE_SETTINGS}


@transaction.atomic
def experiment_update(*, experiment: Experiment, actor: Actor = None, **changes: Any) -> Experiment:
    """Edit the plan (until the start), the holds and the guardrails. Every effective edit raises the
    config version, which voids pending stage approvals: people approved what they saw."""
    require_permission(actor=actor, permission="experiments.change_experiment", action="edit experiments")
    unknown = set(changes) - set(EDITABLE_SETTINGS)
    if unknown:
        raise InvalidInput(f"cannot edit {', '.join(sorted(unknown))}; editable: {', '.join(EDITABLE_SETTINGS)}")
    experiment = _lock(experiment)
    if experiment.status in (ExperimentStatus.ROLLED_BACK, ExperimentStatus.COMPLETED):
        raise Conflict(f"experiment '{experiment.key}' is {experiment.status}; a finished experiment cannot be edited")
    cleaned: dict[str, Any] = {}
    for name, value in changes.items():
        if value is None:
            continue
        if name == "stage_plan":
            plan = rollout_settings.validate_stage_plan(value)
            if plan != experiment.stage_plan and experiment.status != ExperimentStatus.DRAFT:
                raise Conflict(f"stage_plan: experiment '{experiment.key}' has started; the plan is fixed at the start")
            cleaned[name] = plan
        elif name == "guardrails":
            cleaned[name] = rollout_settings.validate_guardrails(value)
        elif name == "min_stage_hours":
            cleaned[name] = rollout_settings.validate_number(name, value, minimum=0)
        elif name in ("min_samples_per_arm", "planned_samples_per_arm"):
            cleaned[name] = rollout_settings.validate_sample_size(name, value)
        else:
            cleaned[name] = str(value)
    before = _settings_of(experiment)
    # Once started, one person with change_experiment must not undo what the approvers agreed to:
    # holds and guardrails may only tighten. To loosen them, roll back and start a new experiment.
    loosened = rollout_settings.loosenings(before=before, after=cleaned) if experiment.status != ExperimentStatus.DRAFT else []
    if loosened:
        raise Conflict(
            f"experiment '{experiment.key}' has started, so its holds and guardrails can only be tightened; this edit "
            f"{', '.join(loosened)}. Roll it back and start a new experiment to loosen them"
        )
    changed = {name: value for name, value in cleaned.items() if before[name] != value}
    if not changed:
        return experiment
    for name, value in changed.items():
        setattr(experiment, name, value)
    experiment.config_version += 1
    experiment.save(update_fields=[*changed, "config_version"])
    voided = _void_pending_approvals(experiment, actor=actor, why=f"the experiment was edited ({', '.join(sorted(changed))})")
    audit.record_event(
        experiment,
        action=EventAction.EDIT,
        actor=actor,
        before={**{name: before[name] for name in changed}, "config_version": experiment.config_version - 1},
        after={**changed, "config_version": experiment.config_version, "voided_approvals": voided},
    )
    return experiment


def _void_pending_approvals(experiment: Experiment, *, actor: Actor, why: str) -> int:
    pending = list(
        StageApproval.objects.select_for_update(of=("self",))
        .filter(stage__experiment=experiment, status=ApprovalStatus.PENDING)
        .select_related("stage")
    )
    for approval in pending:
        approval.status = ApprovalStatus.VOIDED
        approval.void_reason = why
        approval.decided_at = timezone.now()
        approval.save(update_fields=["status", "void_reason", "decided_at"])
        audit.record_event(
            experiment,
            action=EventAction.VOID,
            actor=actor,
            before={"approval": approval.pk, "stage_percent": approval.stage.percent, "status": "pending",
                    "config_version": approval.config_version},
            after={"approval": approval.pk, "status": "voided", "config_version": experiment.config_version},
            reason=f"request to advance to {approval.stage.percent} % voided: {why}; request it again",
        )
    return len(pending)


def experiment_start(*, experiment: Experiment, actor: Actor = None, override_reason: str = "") -> Experiment:
    """Start the first stage. The candidate needs a PASS verdict (status approved_for_rollout) unless
    a person with experiments.override_verdict gives `override_reason`. The candidate becomes
    rolling_out."""
    return audit.recording_refusals(
        "start", lambda: _start(experiment=experiment, actor=actor, override_reason=override_reason.strip()),
        experiment=experiment, actor=actor,
    )


def experiment_create_and_start(*, agent: Agent, treatment: ModelVersion, actor: Actor = None, override_reason: str = "") -> Experiment:
    """Create a draft with the default plan and start it, all or nothing: a refused start leaves no
    draft behind (`rollout_models --start` for an agent without a draft)."""
    with transaction.atomic():
        experiment = experiment_create(agent=agent, treatment=treatment, actor=actor)
        return experiment_start(experiment=experiment, actor=actor, override_reason=override_reason)


def _start(*, experiment: Experiment, actor: Actor, override_reason: str) -> Experiment:
    require_permission(actor=actor, permission="experiments.start_experiment", action="start experiments")
    experiment = _lock(experiment)
    _require_startable(experiment)
    overridden = _move_candidate_to_rollout(experiment, actor=actor, override_reason=override_reason)
    before = audit.snapshot(experiment)
    now = timezone.now()
    stages = ExperimentStage.objects.bulk_create(
        [ExperimentStage(experiment=experiment, index=index, percent=percent) for index, percent in enumerate(experiment.stage_plan)]
    )
    first = ExperimentStage.objects.get(experiment=experiment, index=0)
    first.status, first.started_at = StageStatus.ACTIVE, now
    first.save(update_fields=["status", "started_at"])
    experiment.status = ExperimentStatus.RUNNING
    experiment.started_by = actor
    experiment.started_at = now
    experiment.current_stage = first
    experiment.routing_changed_at = now
    if overridden:
        experiment.verdict_override_reason = override_reason
    # one_active_experiment_per_agent: another experiment of this agent may have started at the same moment.
    raced = Conflict(f"agent '{experiment.agent.slug}' started another experiment just now; complete or roll it back first")
    with unique_violation_raises(raced, AGENT_ALREADY_EXPERIMENTING), transaction.atomic():
        experiment.save(update_fields=["status", "started_by", "started_at", "current_stage", "routing_changed_at",
                                       "verdict_override_reason"])
    audit.record_event(
        experiment, action=EventAction.START, actor=actor, before=before,
        after={**audit.snapshot(experiment), "stages": [stage.percent for stage in stages], "verdict_overridden": overridden},
        reason=override_reason if overridden else "",
        reason_code="verdict_override" if overridden else "",
    )
    routing.publish_change()
    return experiment


def _require_startable(experiment: Experiment) -> None:
    """A draft, of an agent with no other active experiment, whose control is still the live model."""
    if experiment.status != ExperimentStatus.DRAFT:
        raise Conflict(f"experiment '{experiment.key}' is {experiment.status}; only a draft can be started")
    other = Experiment.objects.filter(agent=experiment.agent, status__in=ACTIVE_STATUSES).exclude(pk=experiment.pk).first()
    if other is not None:
        raise Conflict(
            f"agent '{experiment.agent.slug}' already has experiment '{other.key}' {other.status}; "
            "complete or roll it back first"
        )
    control = ModelVersion.objects.get(pk=experiment.control_id)
    if control.status != ModelStatus.LIVE:
        raise Conflict(
            f"control '{control.model_id}' is no longer live (it is {control.status}); create a new experiment "
            "against the current live version"
        )


def _move_candidate_to_rollout(experiment: Experiment, *, actor: Actor, override_reason: str) -> bool:
    """Move the candidate to rolling_out: straight from approved_for_rollout (a PASS verdict), or from
    registered / benchmarking with an override reason given by someone allowed to override. True when
    the verdict was overridden."""
    treatment = ModelVersion.objects.get(pk=experiment.treatment_id)
    overridden = False
    if treatment.status != ModelStatus.APPROVED_FOR_ROLLOUT:
        if treatment.status not in (ModelStatus.REGISTERED, ModelStatus.BENCHMARKING):
            raise Conflict(f"candidate '{treatment.model_id}' is {treatment.status}; it cannot be rolled out")
        if not override_reason:
            raise Conflict(
                f"candidate '{treatment.model_id}' has no PASS verdict against the live model (it is {treatment.status}): run "
                f"`manage.py benchmark_finetuned --agent {experiment.agent.slug}` first, or give an override reason "
                "as a user with experiments.override_verdict"
            )
        require_permission(
            actor=actor, permission="experiments.override_verdict", action="start a candidate without a PASS verdict"
        )
        treatment = _transition_model(
            treatment, to_status=ModelStatus.APPROVED_FOR_ROLLOUT, actor=actor, verdict_overridden=True,
            reason=f"experiment {experiment.key}: verdict overridden by {audit.actor_name(actor)}: {override_reason}",
        )
        overridden = True
    _transition_model(
        treatment, to_status=ModelStatus.ROLLING_OUT, actor=actor,
        reason=f"experiment {experiment.key} started by {audit.actor_name(actor)}",
    )
    return overridden


def _next_stage(experiment: Experiment) -> ExperimentStage | None:
    current = experiment.current_stage
    if current is None:
        return None
    return ExperimentStage.objects.filter(experiment=experiment, index=current.index + 1).first()


def stage_request_advance(*, experiment: Experiment, actor: Actor, note: str = "") -> StageApproval:
    """Ask for the next stage. It may be asked while holds are open (the request shows what they wait
    for); it can be approved only once they clear, by someone else."""
    return audit.recording_refusals(
        "request", lambda: _request(experiment=experiment, actor=actor, note=note), experiment=experiment, actor=actor
    )


def _require_person(actor: Actor, action: str) -> User:
    """The person behind `actor`: Genesis itself (None) can neither ask nor approve."""
    if actor is None or not getattr(actor, "pk", None):
        raise PermissionDenied(f"{action} needs a person: the four-eyes rule is about who asked and who approved")
    return actor


def _request(*, experiment: Experiment, actor: Actor, note: str) -> StageApproval:
    _require_person(actor, "requesting a stage advance")
    require_permission(actor=actor, permission="experiments.request_stage", action="request stage advances")
    experiment = _lock(experiment)
    if experiment.status != ExperimentStatus.RUNNING:
        raise Conflict(f"experiment '{experiment.key}' is {experiment.status}; only a running experiment advances")
    target = _next_stage(experiment)
    if target is None:
        raise Conflict(f"experiment '{experiment.key}' has no further stage")
    pending = StageApproval.objects.filter(stage=target, status=ApprovalStatus.PENDING).select_related("requested_by").first()
    if pending is not None:
        raise Conflict(
            f"an advance to {target.percent} % is already requested by {audit.actor_name(pending.requested_by)} "
            f"at {pending.requested_at:%Y-%m-%d %H:%M} UTC; it waits for approval"
        )
    return _create_request(experiment, target=target, actor=actor, note=note, holds=stage_holds(experiment=experiment))


def _create_request(experiment: Experiment, *, target: ExperimentStage, actor: Actor, note: str, holds: list[Any]) -> StageApproval:
    raced = Conflict(f"an advance to {target.percent} % was requested by someone else just now; it waits for approval")
    # A savepoint: losing a race must not abort the caller's transaction.
    with unique_violation_raises(raced, STAGE_ALREADY_REQUESTED), transaction.atomic():
        approval = StageApproval.objects.create(
            stage=target, config_version=experiment.config_version, requested_by=actor, note=note
        )
    audit.record_event(
        experiment, action=EventAction.REQUEST, actor=actor,
        after={**audit.snapshot(experiment), "requested_percent": target.percent, "approval": approval.pk,
               "open_holds": [hold.as_json() for hold in holds if not hold.cleared]},
        reason=note,
    )
    return approval


def stage_approve(
    *, stage: ExperimentStage, actor: Actor, approval_id: int | None = None, config_version: int | None = None,
    reason: str = "",
) -> ExperimentStage:
    """Approve the advance to `stage`: it must be the next stage, every hold must be clear, and the
    approver must not be the person who started the experiment. Approving 100 % completes the
    experiment and makes the candidate the live model.

    With a pending request (the admin's request → approve flow), it must be at the current config
    version and made by someone else. Without one (`rollout_models --approve`, as the contract
    names no request step), the approver requests and approves in one go: two people are still
    involved, the starter and the approver.

    `approval_id` and `config_version`: what the approver was shown (the admin page posts them).
    When given, a different pending request or config version is refused: people approve what they saw."""
    return audit.recording_refusals(
        "approve",
        lambda: _approve(stage=stage, actor=actor, approval_id=approval_id, config_version=config_version,
                         reason=reason),
        experiment=stage.experiment, actor=actor,
    )


def stage_approve_next(
    *, experiment: Experiment, actor: Actor, approval_id: int | None = None, config_version: int | None = None,
    reason: str = "",
) -> ExperimentStage:
    """Approve the experiment's next stage: the one a pending request asks for, else the one after
    the current stage (which stage_approve then requests and approves in one go). What the admin's
    and the launch board's Approve button and `rollout_models --approve` do."""
    experiment = Experiment.objects.select_related("current_stage").get(pk=experiment.pk)
    shown = (StageApproval.objects.filter(pk=approval_id, stage__experiment=experiment, status=ApprovalStatus.APPROVED)
             .select_related("stage").first() if approval_id is not None else None)
    pending = pending_approval(experiment=experiment)
    # The request shown was approved already (a form sent twice): stage_approve says by whom.
    stage = shown.stage if shown is not None else pending.stage if pending is not None else _next_stage(experiment)
    if stage is None:
        last = experiment.stages.order_by("-index").first()
        if experiment.status == ExperimentStatus.COMPLETED and last is not None:
            _require_not_yet_approved(experiment, stage=last, approval_id=None)  # AlreadyDone: who approved 100 %
        raise Conflict(f"experiment '{experiment.key}' is {experiment.status}; it has no stage to approve")
    return stage_approve(stage=stage, actor=actor, approval_id=approval_id, config_version=config_version, reason=reason)


def _approve(
    *, stage: ExperimentStage, actor: Actor, approval_id: int | None, config_version: int | None, reason: str = ""
) -> ExperimentStage:
    approver = _require_person(actor, "approving a stage")
    require_permission(actor=approver, permission="experiments.approve_stage", action="approve stage advances")
    experiment = _lock(stage.experiment)
    stage = ExperimentStage.objects.get(pk=stage.pk)
    _require_not_yet_approved(experiment, stage=stage, approval_id=approval_id)
    _require_next_stage(experiment, stage)
    approval = (
        StageApproval.objects.select_for_update(of=("self",))
        .filter(stage=stage, status=ApprovalStatus.PENDING)
        .select_related("requested_by")
        .first()
    )
    _require_approvable_request(experiment, approval=approval, actor=approver, approval_id=approval_id, config_version=config_version)
    holds = stage_holds(experiment=experiment)
    open_holds = [hold for hold in holds if not hold.cleared]
    if open_holds:
        raise Conflict(
            f"cannot advance '{experiment.key}' to {stage.percent} % yet — "
            + "; ".join(f"{hold.name}: {hold.detail}" for hold in open_holds)
        )
    if approval is None:
        approval = _create_request(experiment, target=stage, actor=approver, holds=holds,
                                   note="requested and approved in one go by the approver")
    _advance(experiment, stage=stage, approval=approval, actor=approver, reason=reason)
    routing.publish_change()
    return stage


def _current_stage(experiment: Experiment) -> ExperimentStage:
    """The stage a running or paused experiment is at: starting it sets one, and only its end clears it."""
    stage = experiment.current_stage
    if stage is None:
        raise Conflict(f"experiment '{experiment.key}' is {experiment.status} but has no current stage")
    return stage


def _require_not_yet_approved(experiment: Experiment, *, stage: ExperimentStage, approval_id: int | None) -> None:
    """The request shown (`approval_id`), or else the advance to `stage`, was approved already — a
    form sent twice, two approvers at once, or a page left open: say by whom and where the experiment
    is, rather than refuse it as a skipped stage."""
    approved = StageApproval.objects.filter(stage__experiment=experiment, status=ApprovalStatus.APPROVED).select_related(
        "decided_by", "stage"
    )
    done = approved.filter(pk=approval_id).first() if approval_id is not None else None
    if done is None and stage.status != StageStatus.PENDING:
        done = approved.filter(stage=stage).order_by("-decided_at").first()
    if done is None:
        return
    at = experiment.current_stage.percent if experiment.current_stage else 0
    where = f"the experiment is at {at} %" if experiment.status in ACTIVE_STATUSES else f"the experiment is {experiment.status}"
    raise AlreadyDone(
        f"the advance of '{experiment.key}' to {done.stage.percent} % was already approved by "
        f"{audit.actor_name(done.decided_by)} at {done.decided_at:%Y-%m-%d %H:%M} UTC — {where}"
    )


def _require_next_stage(experiment: Experiment, stage: ExperimentStage) -> None:
    if experiment.status != ExperimentStatus.RUNNING:
        raise Conflict(f"experiment '{experiment.key}' is {experiment.status}; only a running experiment advances")
    target = _next_stage(experiment)
    if target is None or target.pk != stage.pk:
        expected = f"{target.percent} %" if target else "none"
        raise Conflict(
            f"stages cannot be skipped: experiment '{experiment.key}' is at {_current_stage(experiment).percent} %, "
            f"so the next stage is {expected}, not {stage.percent} %"
        )


def _require_approvable_request(
    experiment: Experiment, *, approval: StageApproval | None, actor: User, approval_id: int | None, config_version: int | None
) -> None:
    """The approver saw this request at this config version, and is neither the starter nor the
    requester (four-eyes)."""
    shown_changed = (approval_id is not None and (approval is None or approval.pk != approval_id)) or (
        config_version is not None and config_version != experiment.config_version
    )
    if shown_changed:
        raise Conflict(
            f"the request to advance '{experiment.key}' changed since you opened the page (now: "
            + (f"request {approval.pk} by {audit.actor_name(approval.requested_by)}" if approval else "no pending request")
            + f", config version {experiment.config_version}); reload"
        )
    if experiment.started_by_id == actor.pk:
        raise PermissionDenied(
            f"four-eyes: {actor.get_username()} started experiment '{experiment.key}' and so cannot approve its "
            "stages; ask another approver",
            code="four_eyes",
        )
    if approval is not None and approval.requested_by_id == actor.pk:
        raise PermissionDenied(
            f"four-eyes: {actor.get_username()} requested this advance and so cannot approve it; ask another approver",
            code="four_eyes",
        )
    if approval is not None and approval.config_version != experiment.config_version:
        raise Conflict(
            f"the request was made at config version {approval.config_version}, but the experiment is now at "
            f"{experiment.config_version}; request the advance again"
        )


def _advance(experiment: Experiment, *, stage: ExperimentStage, approval: StageApproval, actor: User, reason: str) -> None:
    """Approve `approval` and make `stage` current; at 100 % the experiment completes and the
    candidate becomes the live model."""
    before = audit.snapshot(experiment)
    now = timezone.now()
    approval.status, approval.decided_by, approval.decided_at = ApprovalStatus.APPROVED, actor, now
    approval.save(update_fields=["status", "decided_by", "decided_at"])
    current = ExperimentStage.objects.get(pk=_current_stage(experiment).pk)
    current.status, current.ended_at = StageStatus.DONE, now
    current.save(update_fields=["status", "ended_at"])
    stage.status, stage.started_at = StageStatus.ACTIVE, now
    experiment.current_stage = stage
    experiment.routing_changed_at = now
    if stage.percent >= 100:
        stage.status, stage.ended_at = StageStatus.DONE, now
        experiment.status = ExperimentStatus.COMPLETED
        experiment.ended_at = now
    stage.save(update_fields=["status", "started_at", "ended_at"])
    experiment.save(update_fields=["current_stage", "routing_changed_at", "status", "ended_at"])
    audit.record_event(
        experiment, action=EventAction.APPROVAL, actor=actor, before=before,
        after={**audit.snapshot(experiment), "approval": approval.pk, "requested_by": audit.actor_name(approval.requested_by)},
        reason=reject_nul(reason.strip()),  # why the approver judged the evidence enough (optional)
    )
    if experiment.status == ExperimentStatus.COMPLETED:
        treatment = ModelVersion.objects.get(pk=experiment.treatment_id)
        _transition_model(
            treatment, to_status=ModelStatus.LIVE, actor=actor,
            reason=f"experiment {experiment.key} completed: 100 % approved by {actor.get_username()}",
        )
        audit.record_event(experiment, action=EventAction.COMPLETE, actor=actor, before=before,
                reason=f"'{treatment.model_id}' is now the live model of {experiment.agent.slug}")


def experiment_pause(*, experiment: Experiment, actor: Actor = None, reason: str = "", reason_code: str = "manual") -> Experiment:
    """Stop the split (everyone gets the live model) without ending the experiment."""
    return audit.recording_refusals(
        "pause", lambda: _pause(experiment=experiment, actor=actor, reason=reason, reason_code=reason_code),
        experiment=experiment, actor=actor,
    )


def _pause(*, experiment: Experiment, actor: Actor, reason: str, reason_code: str) -> Experiment:
    require_permission(actor=actor, permission="experiments.pause_experiment", action="pause experiments")
    experiment = _lock(experiment)
    if experiment.status != ExperimentStatus.RUNNING:
        raise Conflict(f"experiment '{experiment.key}' is {experiment.status}; only a running experiment can be paused")
    before = audit.snapshot(experiment)
    experiment.status = ExperimentStatus.PAUSED
    experiment.routing_changed_at = timezone.now()
    experiment.save(update_fields=["status", "routing_changed_at"])
    audit.record_event(experiment, action=EventAction.PAUSE, actor=actor, before=before, reason=reason, reason_code=reason_code)
    routing.publish_change()
    if actor is None:
        transaction.on_commit(lambda: logger.warning("experiment %s paused by Genesis: %s", experiment.key, reason))
    return experiment


def experiment_resume(*, experiment: Experiment, actor: Actor, reason: str = "") -> Experiment:
    return audit.recording_refusals(
        "resume", lambda: _resume(experiment=experiment, actor=actor, reason=reason), experiment=experiment, actor=actor
    )


def _resume(*, experiment: Experiment, actor: Actor, reason: str) -> Experiment:
    require_permission(actor=actor, permission="experiments.pause_experiment", action="resume experiments")
    experiment = _lock(experiment)
    if experiment.status != ExperimentStatus.PAUSED:
        raise Conflict(f"experiment '{experiment.key}' is {experiment.status}; only a paused experiment can be resumed")
    before = audit.snapshot(experiment)
    now = timezone.now()
    # Restart the stage clock: while paused everyone got the live model, so the paused time must
    # count neither toward min_stage_hours nor toward the stage's sample and SRM window (both read
    # from started_at): a new SRM test starts, at a smaller threshold, and a new guardrail segment,
    # at a smaller alpha (outcome_aggregate.stages_with_resumes counts this entry). The stage's first start
    # stays on the audit trail.
    stage = _current_stage(experiment)
    stage_started_before = stage.started_at
    stage.started_at = now
    stage.save(update_fields=["started_at"])
    experiment.status = ExperimentStatus.RUNNING
    experiment.routing_changed_at = now
    experiment.save(update_fields=["status", "routing_changed_at"])
    audit.record_event(experiment, action=EventAction.RESUME, actor=actor, before={**before, "stage_started_at": stage_started_before.isoformat() if stage_started_before else None},
            after={**audit.snapshot(experiment), "stage_started_at": now.isoformat()}, reason=reason)
    routing.publish_change()
    return experiment


def experiment_rollback(*, experiment: Experiment, actor: Actor = None, reason: str, reason_code: str = "manual") -> Experiment:
    """Send everyone back to the live model (0 %), reject the candidate, and tell people: log,
    webhook (settings.GENESIS.alerting.slack_webhook) and genesis_experiment_rollbacks_total."""
    return audit.recording_refusals(
        "rollback", lambda: _rollback(experiment=experiment, actor=actor, reason=reason.strip(), reason_code=reason_code),
        experiment=experiment, actor=actor,
    )


def _rollback(*, experiment: Experiment, actor: Actor, reason: str, reason_code: str) -> Experiment:
    require_permission(actor=actor, permission="experiments.rollback_experiment", action="roll back experiments")
    if not reason:
        raise InvalidInput("reason: say why the experiment is rolled back; it goes on the audit trail and the alert")
    experiment = _lock(experiment)
    if experiment.status not in ACTIVE_STATUSES:
        raise Conflict(
            f"experiment '{experiment.key}' is {experiment.status}; only a running or paused experiment can be rolled back"
        )
    before = audit.snapshot(experiment)
    now = timezone.now()
    if experiment.current_stage_id:
        ExperimentStage.objects.filter(pk=experiment.current_stage_id).update(status=StageStatus.ROLLED_BACK, ended_at=now)
    experiment.status = ExperimentStatus.ROLLED_BACK
    experiment.ended_at = now
    experiment.routing_changed_at = now
    experiment.save(update_fields=["status", "ended_at", "routing_changed_at"])
    _void_pending_approvals(experiment, actor=actor, why="the experiment was rolled back")
    treatment = ModelVersion.objects.get(pk=experiment.treatment_id)
    if treatment.status == ModelStatus.ROLLING_OUT:
        _transition_model(
            treatment, to_status=ModelStatus.REJECTED, actor=actor,
            reason=f"experiment {experiment.key} rolled back by {audit.actor_name(actor)}: {reason}"[:500],
        )
    event = audit.record_event(
        experiment, action=EventAction.ROLLBACK, actor=actor, before=before,
        after={**audit.snapshot(experiment), "stage_percent": 0}, reason=reason, reason_code=reason_code,
    )
    routing.publish_change()
    message = f"experiment {experiment.key} ({experiment.agent.slug}) rolled back by {audit.actor_name(actor)}: {reason}"
    transaction.on_commit(lambda: logger.warning(message))
    # Best effort once the rollback is committed: the event row and genesis_experiment_rollbacks_total
    # (Alertmanager) say it too if the broker cannot take the webhook's task.
    send_on_commit("experiments.notify_rollback", what=f"the rollback alert of {experiment.key}", event_id=event.pk)
    return experiment


def experiment_start_for_agent(
    *, agent: Agent, actor: Actor = None, candidate_model_id: str = "", override_reason: str = ""
) -> Experiment:
    """Start the agent's rollout — what the launch board's "Start rollout" and `rollout_models
    --start` both do (selectors.rollout_start_plan): the candidate named, else the agent's newest
    candidate — its own draft, or else a new experiment for it (another candidate's draft is left as
    it is); a name that is not one of the agent's candidates is refused, naming the draft that waits,
    if any."""
    plan = rollout_start_plan(agent=agent, candidate_model_id=candidate_model_id)
    if plan.draft is not None:
        return experiment_start(experiment=plan.draft, actor=actor, override_reason=override_reason)
    if plan.treatment is not None:
        return experiment_create_and_start(agent=agent, treatment=plan.treatment, actor=actor, override_reason=override_reason)
    other = plan.other_draft
    if other is not None:
        raise Conflict(
            f"agent '{agent.slug}' has draft experiment '{other.key}' for candidate "
            f"'{other.treatment.model_id}', not '{candidate_model_id}': name that candidate to start the draft, "
            "or edit the draft in the admin"
        )
    raise Conflict(
        f"agent '{agent.slug}' has no candidate" + (f" '{candidate_model_id}'" if candidate_model_id else "")
        + " to roll out: register or fine-tune one first"
    )


@transaction.atomic
def experiment_set_stage_targets(*, experiment: Experiment, actor: Actor, targets: dict[int, datetime | None]) -> Experiment:
    """Set (or clear, with None) the date the operator aims to start each stage at — the launch
    calendar's plan. A target holds nothing and changes no routing, so it leaves the config version
    and pending requests alone; it is recorded with before and after."""
    require_permission(actor=actor, permission="experiments.change_experiment", action="plan experiment stages")
    experiment = _lock(experiment)
    if experiment.status in (ExperimentStatus.ROLLED_BACK, ExperimentStatus.COMPLETED):
        raise Conflict(f"experiment '{experiment.key}' is {experiment.status}; its calendar is history")
    plan = set(experiment.stage_plan)
    unknown = sorted(set(targets) - plan)
    if unknown:
        raise InvalidInput(f"targets: {', '.join(f'{p} %' for p in unknown)} is not a stage of {experiment.stage_plan}")
    before = dict(experiment.stage_targets)
    after = dict(before)
    for percent, when in targets.items():
        if when is None:
            after.pop(str(percent), None)
        else:
            after[str(percent)] = when.isoformat()
    ordered = [datetime.fromisoformat(after[str(p)]) for p in experiment.stage_plan if str(p) in after]
    if ordered != sorted(ordered):
        raise InvalidInput("targets: each stage's target must come after the one before it")
    if after == before:
        return experiment
    experiment.stage_targets = after
    experiment.save(update_fields=["stage_targets"])
    audit.record_event(experiment, action=EventAction.EDIT, actor=actor, before={"stage_targets": before},
            after={**audit.snapshot(experiment), "stage_targets": after}, reason="launch calendar")
    return experiment
