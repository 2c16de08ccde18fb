"""Experiment services: creation, start and the verdict gate, stage requests and approvals (four-eyes,
holds, config-version binding, no skipping), completion, pause, rollback and the audit trail."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.utils import timezone

from experiments.holds import stage_holds
from experiments.models import ApprovalStatus, EventAction, Experiment, ExperimentEvent, ExperimentStage, StageApproval
from experiments.outcomes import outcomes_ingest
from experiments.services import (
    experiment_create,
    experiment_pause,
    experiment_resume,
    experiment_rollback,
    experiment_start,
    experiment_start_for_agent,
    experiment_update,
    stage_approve,
    stage_approve_next,
    stage_request_advance,
)
from genesis.errors import AlreadyDone, Conflict, InvalidInput, PermissionDenied
from models_app.registry.models import ModelVersion
from models_app.registry.services import model_version_transition
from tests.experiments.factories import agent_with_candidate, draft_experiment, feed, outcome_events, user_in_arm
from tests.factories import ModelVersionFactory

pytestmark = pytest.mark.django_db


def next_stage(experiment: Experiment) -> ExperimentStage:
    experiment.refresh_from_db()
    return experiment.stages.get(index=experiment.current_stage.index + 1)


def satisfy_sample_holds(experiment: Experiment, *, per_arm: int = 20, seed: int = 0) -> None:
    """Outcomes in the current stage's split, both arms equally good: every data hold clears."""
    experiment.refresh_from_db()
    percent = experiment.current_stage.percent
    treatment = per_arm if percent <= 50 else round(per_arm * percent / (100 - percent))
    control = round(treatment * (100 - percent) / percent)
    feed(experiment, arm="treatment", n=treatment, success_rate=0.9, seed=seed)
    feed(experiment, arm="control", n=control, success_rate=0.9, seed=seed + 1000)


def events(experiment: Experiment, action: str) -> list[ExperimentEvent]:
    return list(ExperimentEvent.objects.filter(experiment=experiment, action=action).order_by("at", "id"))


# --- creation ------------------------------------------------------------------------------------


def test_create_takes_the_live_version_as_control_and_defaults_from_settings(team, settings):
    agent, baseline, candidate = agent_with_candidate()
    experiment = experiment_create(agent=agent, treatment=candidate, actor=team["starter"])
    assert experiment.control == baseline and experiment.treatment == candidate
    assert experiment.status == "draft"
    assert experiment.stage_plan == settings.ROLLOUT_STAGES == [10, 25, 50, 100]
    assert experiment.min_stage_hours == settings.ROLLOUT_MIN_STAGE_HOURS
    assert experiment.min_samples_per_arm == settings.ROLLOUT_MIN_SAMPLES_PER_ARM
    assert experiment.guardrails[0] == {"metric": "success_rate", "harmful_direction": "decrease", "threshold": 0.05,
                                        "threshold_kind": "absolute", "on_violation": "breach"}
    assert experiment.guardrails[1]["metric"] == "latency_ms" and experiment.guardrails[1]["on_violation"] == "warning"
    assert len(experiment.seed) == 16 and experiment.config_version == 1
    created = events(experiment, EventAction.CREATE)
    assert len(created) == 1 and created[0].actor == team["starter"]


def test_each_experiment_gets_its_own_seed(team):
    first = draft_experiment("qa_agent", actor=team["starter"])
    second = draft_experiment("legal_agent", actor=team["starter"])
    assert first.seed != second.seed


@pytest.mark.parametrize(
    ("plan", "message"),
    [
        ([10, 5, 100], "must increase strictly"),
        ([10, 25, 50], "last stage must be 100"),
        ([0, 100], "between 1 and 100"),
        ([], "at least two stages"),
        ([100], "at least two stages"),  # no partial stage, nothing to approve: it could never complete
        ([100, 100], "increase strictly"),
        (["ten", 100], "whole percentages"),
    ],
)
def test_a_bad_stage_plan_is_refused_with_a_reason(team, plan, message):
    agent, _, candidate = agent_with_candidate()
    with pytest.raises(InvalidInput, match=message):
        experiment_create(agent=agent, treatment=candidate, actor=team["starter"], stage_plan=plan)
    assert not Experiment.objects.exists()


def test_create_needs_a_live_control_and_a_candidate_of_the_same_agent(team):
    agent, baseline, candidate = agent_with_candidate("qa_agent")
    other_agent, _, other_candidate = agent_with_candidate("legal_agent")
    with pytest.raises(InvalidInput, match="belongs to agent 'legal_agent'"):
        experiment_create(agent=agent, treatment=other_candidate, actor=team["starter"])
    with pytest.raises(InvalidInput, match="already the live model"):
        experiment_create(agent=agent, treatment=baseline, actor=team["starter"])
    with pytest.raises(PermissionDenied, match="experiments.add_experiment"):
        experiment_create(agent=agent, treatment=candidate, actor=team["nobody"])


def test_the_plan_is_editable_until_the_start_and_fixed_after(team):
    experiment = draft_experiment(actor=team["starter"])
    experiment = experiment_update(experiment=experiment, actor=team["starter"], stage_plan=[5, 20, 100])
    assert experiment.stage_plan == [5, 20, 100] and experiment.config_version == 2
    edit = events(experiment, EventAction.EDIT)[0]
    assert edit.before == {"stage_plan": [10, 25, 50, 100], "config_version": 1}
    assert edit.after["stage_plan"] == [5, 20, 100] and edit.actor == team["starter"]
    experiment_start(experiment=experiment, actor=team["starter"])
    assert list(experiment.stages.values_list("percent", flat=True)) == [5, 20, 100]
    with pytest.raises(Conflict, match="the plan is fixed at the start"):
        experiment_update(experiment=experiment, actor=team["starter"], stage_plan=[10, 100])


# --- start and the verdict gate ---------------------------------------------------------------------


def test_start_moves_the_candidate_to_rolling_out_and_opens_the_first_stage(team):
    experiment = draft_experiment(actor=team["starter"])
    experiment = experiment_start(experiment=experiment, actor=team["starter"])
    assert experiment.status == "running" and experiment.started_by == team["starter"]
    assert experiment.current_stage.percent == 10 and experiment.current_stage.status == "active"
    assert ModelVersion.objects.get(pk=experiment.treatment_id).status == "rolling_out"
    history = ModelVersion.objects.get(pk=experiment.treatment_id).history.order_by("-history_id").first()
    assert history.history_user == team["starter"]
    start = events(experiment, EventAction.START)[0]
    assert start.before["status"] == "draft" and start.after["status"] == "running"
    assert start.after["stage_percent"] == 10


def test_a_candidate_without_a_pass_verdict_needs_an_override_by_someone_allowed(team):
    experiment = draft_experiment(actor=team["starter"], candidate_status="registered")
    with pytest.raises(Conflict, match="has no PASS verdict .* benchmark_finetuned"):
        experiment_start(experiment=experiment, actor=team["starter"])
    operator = rollout_team_operator_without_override()
    with pytest.raises(PermissionDenied, match="experiments.override_verdict"):
        experiment_start(experiment=experiment, actor=operator, override_reason="urgent fix")
    assert Experiment.objects.get(pk=experiment.pk).status == "draft"
    assert ModelVersion.objects.get(pk=experiment.treatment_id).status == "registered"

    experiment = experiment_start(experiment=experiment, actor=team["starter"], override_reason="benchmark suite broken; manual review OK")
    assert experiment.status == "running"
    assert experiment.verdict_override_reason == "benchmark suite broken; manual review OK"
    assert ModelVersion.objects.get(pk=experiment.treatment_id).status == "rolling_out"
    start = events(experiment, EventAction.START)[0]
    assert start.reason_code == "verdict_override" and start.after["verdict_overridden"] is True
    refusals = events(experiment, EventAction.REFUSAL)
    assert [r.after["attempted"] for r in refusals] == ["start", "start"]
    assert "no PASS verdict" in refusals[0].reason and refusals[1].actor == operator


def rollout_team_operator_without_override():
    from tests.experiments.factories import person

    return person("operator", "start_experiment", "request_stage")


def test_a_user_without_permission_cannot_start_and_the_refusal_is_recorded(team):
    experiment = draft_experiment(actor=team["starter"])
    with pytest.raises(PermissionDenied, match="user 'nobody' may not start experiments"):
        experiment_start(experiment=experiment, actor=team["nobody"])
    refusal = events(experiment, EventAction.REFUSAL)[0]
    assert refusal.actor == team["nobody"] and refusal.reason_code == "permissiondenied"
    assert Experiment.objects.get(pk=experiment.pk).status == "draft"


def test_only_one_active_experiment_per_agent(team):
    experiment = draft_experiment(actor=team["starter"])
    experiment_start(experiment=experiment, actor=team["starter"])
    from tests.factories import ModelVersionFactory

    second_candidate = ModelVersionFactory(agent=experiment.agent, model_id="ft:open-mistral-7b:00000002:20261101:cafebabe")
    second = experiment_create(agent=experiment.agent, treatment=second_candidate, actor=team["starter"], key="second")
    with pytest.raises(Conflict, match="already has experiment 'qa_agent-exp' running"):
        experiment_start(experiment=second, actor=team["starter"], override_reason="x")


def _second_candidate(agent):
    other = ModelVersionFactory(agent=agent, model_id="ft:open-mistral-7b:other:20261102:0ddba11")
    for status in ("benchmarking", "approved_for_rollout"):
        other = model_version_transition(version=other, to_status=status, reason="test")
    return other


def test_starting_for_an_agent_takes_the_named_candidates_own_draft_before_a_newer_one(team):
    older = draft_experiment(actor=team["starter"])
    experiment_create(agent=older.agent, treatment=_second_candidate(older.agent), actor=team["starter"], key="qa_agent-other")
    started = experiment_start_for_agent(agent=older.agent, actor=team["starter"], candidate_model_id=older.treatment.model_id)
    assert (started.pk, started.status) == (older.pk, "running")
    assert Experiment.objects.get(key="qa_agent-other").status == "draft"


def test_starting_a_named_candidate_without_a_draft_leaves_another_candidates_draft_alone(team):
    """The launch board's case: seed_demo left a draft for an older candidate; the board starts its
    own candidate in a new experiment."""
    waiting = draft_experiment(actor=team["starter"])
    other = _second_candidate(waiting.agent)
    started = experiment_start_for_agent(agent=waiting.agent, actor=team["starter"], candidate_model_id=other.model_id)
    assert (started.treatment_id, started.status) == (other.pk, "running") and started.pk != waiting.pk
    assert Experiment.objects.get(pk=waiting.pk).status == "draft"


# --- requests, approvals, four-eyes, holds ------------------------------------------------------------


def test_approving_as_the_starter_is_refused_with_a_reason(team):
    experiment = experiment_start(experiment=draft_experiment(actor=team["starter"]), actor=team["starter"])
    satisfy_sample_holds(experiment)
    stage_request_advance(experiment=experiment, actor=team["requester"])
    with pytest.raises(PermissionDenied, match="four-eyes: starter started experiment 'qa_agent-exp'"):
        stage_approve(stage=next_stage(experiment), actor=team["starter"])
    refusal = events(experiment, EventAction.REFUSAL)[-1]
    assert refusal.actor == team["starter"] and "four-eyes" in refusal.reason
    assert refusal.after == {"attempted": "approve"}
    assert Experiment.objects.get(pk=experiment.pk).current_stage.percent == 10


def test_the_requester_cannot_approve_their_own_request(team):
    experiment = experiment_start(experiment=draft_experiment(actor=team["starter"]), actor=team["starter"])
    satisfy_sample_holds(experiment)
    stage_request_advance(experiment=experiment, actor=team["requester"])
    with pytest.raises(PermissionDenied, match="requester requested this advance"):
        stage_approve(stage=next_stage(experiment), actor=team["requester"])


def test_a_user_without_the_permission_cannot_approve(team):
    experiment = experiment_start(experiment=draft_experiment(actor=team["starter"]), actor=team["starter"])
    satisfy_sample_holds(experiment)
    stage_request_advance(experiment=experiment, actor=team["requester"])
    with pytest.raises(PermissionDenied, match="experiments.approve_stage"):
        stage_approve(stage=next_stage(experiment), actor=team["roller"])


def test_a_second_person_approves_once_holds_clear_and_the_stage_advances(team):
    experiment = experiment_start(experiment=draft_experiment(actor=team["starter"]), actor=team["starter"])
    satisfy_sample_holds(experiment)
    approval = stage_request_advance(experiment=experiment, actor=team["starter"], note="looks fine")
    assert approval.config_version == 1 and approval.stage.percent == 25
    stage = stage_approve(stage=next_stage(experiment), actor=team["approver"])
    experiment.refresh_from_db()
    assert stage.percent == 25 and experiment.current_stage == stage and stage.status == "active"
    assert experiment.stages.get(index=0).status == "done"
    approval.refresh_from_db()
    assert approval.status == ApprovalStatus.APPROVED and approval.decided_by == team["approver"]
    approved = events(experiment, EventAction.APPROVAL)[0]
    assert approved.before["stage_percent"] == 10 and approved.after["stage_percent"] == 25
    assert approved.actor == team["approver"] and approved.after["requested_by"] == "starter"


def test_approve_next_takes_the_requested_stage_or_else_the_one_after_the_current(team):
    experiment = experiment_start(experiment=draft_experiment(actor=team["starter"]), actor=team["starter"])
    satisfy_sample_holds(experiment)
    stage_request_advance(experiment=experiment, actor=team["starter"])
    assert stage_approve_next(experiment=experiment, actor=team["approver"]).percent == 25  # the request's stage
    satisfy_sample_holds(experiment, seed=1)
    approved = stage_approve_next(experiment=experiment, actor=team["approver"])  # no request: the next one
    assert approved.percent == 50 and events(experiment, EventAction.APPROVAL)[-1].after["requested_by"] == "approver"
    draft = draft_experiment("legal_agent", actor=team["starter"])
    with pytest.raises(Conflict, match="'legal_agent-exp' is draft; it has no stage to approve"):
        stage_approve_next(experiment=draft, actor=team["approver"])


def test_the_sample_hold_counts_users_not_outcomes(team):
    # 180 outcomes an arm from 3 users each: the statistics cluster by user, so that is the
    # information of about 3 samples, not 180; the hold waits for 20 users.
    experiment = experiment_start(experiment=draft_experiment(actor=team["starter"]), actor=team["starter"])
    for arm, seed in (("control", 1), ("treatment", 2)):
        events = outcome_events(experiment, arm=arm, n=180, success_rate=0.9, seed=seed)
        heavy = [user_in_arm(experiment, arm, percent=experiment.current_stage.percent, base=f"{arm}-heavy-{n}") for n in range(3)]
        for index, event in enumerate(events):
            event["user_id"] = heavy[index % 3]
        outcomes_ingest(principal=None, events=events)
    experiment.refresh_from_db()
    hold = next(hold for hold in stage_holds(experiment=experiment) if hold.name == "min_samples")
    assert not hold.cleared
    assert hold.detail == "control 3 and treatment 3 users with outcomes in this stage (minimum 20 per arm)"


def test_the_min_time_hold_clears_at_exactly_the_minimum_and_names_when_until_then(team):
    # ROLLOUT_MIN_STAGE_HOURS is the minimum time in a stage: 48 h in it is enough, a second less is not.
    experiment = experiment_start(
        experiment=draft_experiment(actor=team["starter"], min_stage_hours=48), actor=team["starter"]
    )
    experiment.refresh_from_db()
    started = experiment.current_stage.started_at
    clears = started + timedelta(hours=48)

    def min_time(now):
        return next(hold for hold in stage_holds(experiment=experiment, now=now) if hold.name == "min_time")

    early = min_time(clears - timedelta(seconds=1))
    assert not early.cleared and early.clears_at == clears
    assert f"clears at {clears:%Y-%m-%d %H:%M} UTC" in early.detail
    on_time = min_time(clears)
    assert on_time.cleared and on_time.clears_at is None



def test_hold_hours_read_to_a_tenth_below_100_and_whole_from_100(team):
    experiment = experiment_start(
        experiment=draft_experiment(actor=team["starter"], min_stage_hours=100), actor=team["starter"]
    )
    experiment.refresh_from_db()
    started = experiment.current_stage.started_at
    min_time = next(hold for hold in stage_holds(experiment=experiment, now=started + timedelta(minutes=90))
                    if hold.name == "min_time")
    assert min_time.detail.startswith("1.5 h of the 100 h minimum in this stage")


def test_a_paused_experiment_is_held_by_its_status_alone(team):
    # Only a running experiment advances: a paused one shows one open hold saying so, not the data holds
    # of a stage whose clock and split are stopped.
    experiment = experiment_start(experiment=draft_experiment(actor=team["starter"]), actor=team["starter"])
    satisfy_sample_holds(experiment)
    experiment_pause(experiment=experiment, actor=team["starter"], reason="investigating")
    experiment.refresh_from_db()
    holds = stage_holds(experiment=experiment)
    assert [(hold.name, hold.cleared) for hold in holds] == [("status", False)]
    assert holds[0].detail == "the experiment is paused; only a running experiment advances"


def test_a_stage_with_open_holds_cannot_be_approved(team):
    experiment = experiment_start(
        experiment=draft_experiment(actor=team["starter"], min_stage_hours=48), actor=team["starter"]
    )
    stage_request_advance(experiment=experiment, actor=team["requester"])
    with pytest.raises(Conflict) as refused:
        stage_approve(stage=next_stage(experiment), actor=team["approver"])
    message = refused.value.message
    assert "min_time: 0.0 h of the 48.0 h minimum" in message
    assert "min_samples: control 0 and treatment 0 users with outcomes in this stage (minimum 20 per arm)" in message
    assert "guardrails: success_rate: waiting for data" in message

    satisfy_sample_holds(experiment)
    experiment.refresh_from_db()
    open_holds = [hold.name for hold in stage_holds(experiment=experiment) if not hold.cleared]
    assert open_holds == ["min_time"]
    with pytest.raises(Conflict, match="min_time"):
        stage_approve(stage=next_stage(experiment), actor=team["approver"])

    # 48 hours later (the stage's start moved back rather than the clock forward).
    ExperimentStage.objects.filter(pk=experiment.current_stage_id).update(started_at=timezone.now() - timedelta(hours=49))
    assert stage_approve(stage=next_stage(experiment), actor=team["approver"]).percent == 25
    assert len(events(experiment, EventAction.REFUSAL)) == 2


def test_an_edit_voids_a_pending_approval(team):
    experiment = experiment_start(experiment=draft_experiment(actor=team["starter"]), actor=team["starter"])
    satisfy_sample_holds(experiment)
    approval = stage_request_advance(experiment=experiment, actor=team["requester"])
    experiment_update(experiment=experiment, actor=team["starter"], min_samples_per_arm=25)
    approval.refresh_from_db()
    assert approval.status == ApprovalStatus.VOIDED and "edited (min_samples_per_arm)" in approval.void_reason
    void = events(experiment, EventAction.VOID)[0]
    assert void.before["config_version"] == 1 and void.after["config_version"] == 2
    # The voided request no longer counts: approving now would be the approver's own request, held
    # by the raised sample minimum.
    with pytest.raises(Conflict, match="min_samples: .*minimum 25 per arm"):
        stage_approve(stage=next_stage(experiment), actor=team["approver"])
    # Requested again at version 2, it can be approved (25 per arm needed now).
    satisfy_sample_holds(experiment, per_arm=5, seed=7)
    again = stage_request_advance(experiment=experiment, actor=team["requester"])
    assert again.config_version == 2
    assert stage_approve(stage=next_stage(experiment), actor=team["approver"]).percent == 25


def test_an_approval_bound_to_an_older_config_version_is_refused(team):
    experiment = experiment_start(experiment=draft_experiment(actor=team["starter"]), actor=team["starter"])
    satisfy_sample_holds(experiment)
    approval = stage_request_advance(experiment=experiment, actor=team["requester"])
    # A version bump that did not go through experiment_update (e.g. a direct database fix).
    Experiment.objects.filter(pk=experiment.pk).update(config_version=5)
    with pytest.raises(Conflict, match="made at config version 1, but the experiment is now at 5"):
        stage_approve(stage=approval.stage, actor=team["approver"])


def test_stages_cannot_be_skipped(team):
    experiment = experiment_start(experiment=draft_experiment(actor=team["starter"]), actor=team["starter"])
    satisfy_sample_holds(experiment)
    stage_request_advance(experiment=experiment, actor=team["requester"])
    fifty = experiment.stages.get(percent=50)
    with pytest.raises(Conflict, match="stages cannot be skipped: .* at 10 %, so the next stage is 25 %, not 50 %"):
        stage_approve(stage=fifty, actor=team["approver"])


def test_approving_a_request_approved_already_says_so_and_records_no_refusal(team):
    # Was: the form sent twice answered "stages cannot be skipped: … is at 25 %, so the next stage is
    # 50 %, not 25 %" and left that refusal on the trail, although the approval had gone through.
    experiment = experiment_start(experiment=draft_experiment(actor=team["starter"]), actor=team["starter"])
    satisfy_sample_holds(experiment)
    approval = stage_request_advance(experiment=experiment, actor=team["requester"])
    stage = next_stage(experiment)
    stage_approve_next(experiment=experiment, actor=team["approver"], approval_id=approval.pk, config_version=1)
    already = r"advance of 'qa_agent-exp' to 25 % was already approved by approver at .* UTC — the experiment is at 25 %"
    # The same form again (the request is no longer pending), and a second approver's simultaneous
    # post that read the request before the first one's commit (it names the 25 % stage).
    with pytest.raises(AlreadyDone, match=already):
        stage_approve_next(experiment=experiment, actor=team["approver"], approval_id=approval.pk, config_version=1)
    with pytest.raises(AlreadyDone, match=already):
        stage_approve(stage=stage, actor=team["requester"], approval_id=approval.pk, config_version=1)
    with pytest.raises(AlreadyDone, match=already):
        stage_approve(stage=stage, actor=team["approver"])  # `rollout_models --approve` racing another
    assert events(experiment, EventAction.REFUSAL) == []
    experiment.refresh_from_db()
    assert experiment.current_stage.percent == 25 and len(events(experiment, EventAction.APPROVAL)) == 1


def test_another_experiments_approved_request_is_no_already_approved_answer(team):
    # A request id from another experiment (a crafted or mixed-up post) is a mismatched request, not
    # "already approved" — which would tell the approver this experiment's advance had happened.
    first = experiment_start(experiment=draft_experiment(actor=team["starter"]), actor=team["starter"])
    satisfy_sample_holds(first)
    approved = stage_request_advance(experiment=first, actor=team["requester"])
    stage_approve_next(experiment=first, actor=team["approver"], approval_id=approved.pk, config_version=1)
    second = experiment_start(experiment=draft_experiment("content_agent", actor=team["starter"]), actor=team["starter"])
    satisfy_sample_holds(second)
    stage_request_advance(experiment=second, actor=team["requester"])
    with pytest.raises(Conflict) as refused:
        stage_approve_next(experiment=second, actor=team["approver"], approval_id=approved.pk, config_version=1)
    assert not isinstance(refused.value, AlreadyDone)
    second.refresh_from_db()
    assert second.current_stage.percent == 10


def test_a_second_request_for_the_same_stage_is_refused(team):
    experiment = experiment_start(experiment=draft_experiment(actor=team["starter"]), actor=team["starter"])
    stage_request_advance(experiment=experiment, actor=team["requester"])
    with pytest.raises(Conflict, match="already requested by requester"):
        stage_request_advance(experiment=experiment, actor=team["starter"])
    assert StageApproval.objects.filter(status="pending").count() == 1


def test_approving_100_percent_completes_and_makes_the_candidate_live(team):
    experiment = experiment_start(
        experiment=draft_experiment(actor=team["starter"], stage_plan=[50, 100]), actor=team["starter"]
    )
    satisfy_sample_holds(experiment)
    stage_request_advance(experiment=experiment, actor=team["requester"])
    stage_approve(stage=next_stage(experiment), actor=team["approver"])
    experiment.refresh_from_db()
    assert experiment.status == "completed" and experiment.ended_at is not None
    treatment = ModelVersion.objects.get(pk=experiment.treatment_id)
    control = ModelVersion.objects.get(pk=experiment.control_id)
    assert (treatment.status, control.status) == ("live", "retired")
    # The registry names the approver on both versions' history (the retirement is their doing too).
    assert treatment.history.order_by("-history_id").first().history_user == team["approver"]
    assert control.history.order_by("-history_id").first().history_user == team["approver"]
    complete = events(experiment, EventAction.COMPLETE)[0]
    assert complete.actor == team["approver"] and complete.after["status"] == "completed"
    with pytest.raises(Conflict, match="is completed"):
        stage_request_advance(experiment=experiment, actor=team["requester"])
    # Approving again (a repeated `rollout_models --approve`) is what was done already, not a refusal.
    with pytest.raises(AlreadyDone, match=r"the advance of 'qa_agent-exp' to 100 % was already approved by approver at "
                                          r".* UTC — the experiment is completed"):
        stage_approve_next(experiment=experiment, actor=team["approver"])


# --- pause, resume, rollback --------------------------------------------------------------------------


def test_pause_and_resume(team):
    experiment = experiment_start(experiment=draft_experiment(actor=team["starter"]), actor=team["starter"])
    experiment = experiment_pause(experiment=experiment, actor=team["roller"], reason="investigating a complaint")
    assert experiment.status == "paused"
    with pytest.raises(Conflict, match="only a running experiment advances"):
        stage_request_advance(experiment=experiment, actor=team["requester"])
    experiment = experiment_resume(experiment=experiment, actor=team["roller"])
    assert experiment.status == "running"
    pause, resume = events(experiment, EventAction.PAUSE)[0], events(experiment, EventAction.RESUME)[0]
    assert (pause.before["status"], pause.after["status"], pause.reason) == ("running", "paused", "investigating a complaint")
    assert (resume.before["status"], resume.after["status"]) == ("paused", "running")


def test_a_manual_rollback_rejects_the_candidate_and_is_audited(team):
    experiment = experiment_start(experiment=draft_experiment(actor=team["starter"]), actor=team["starter"])
    stage_request_advance(experiment=experiment, actor=team["requester"])
    with pytest.raises(InvalidInput, match="say why"):
        experiment_rollback(experiment=experiment, actor=team["roller"], reason="  ")
    with pytest.raises(PermissionDenied, match="experiments.rollback_experiment"):
        experiment_rollback(experiment=experiment, actor=team["approver"], reason="no")
    experiment = experiment_rollback(experiment=experiment, actor=team["roller"], reason="users complain about tone")
    assert experiment.status == "rolled_back"
    assert ModelVersion.objects.get(pk=experiment.treatment_id).status == "rejected"
    assert ModelVersion.objects.get(pk=experiment.control_id).status == "live"
    assert experiment.stages.get(index=0).status == "rolled_back"
    assert StageApproval.objects.get().status == ApprovalStatus.VOIDED
    rollback = events(experiment, EventAction.ROLLBACK)[0]
    assert rollback.actor == team["roller"] and rollback.reason == "users complain about tone"
    assert rollback.reason_code == "manual"
    assert rollback.before == {"status": "running", "stage_percent": 10, "config_version": 1}
    assert rollback.after["status"] == "rolled_back" and rollback.after["stage_percent"] == 0
    with pytest.raises(Conflict, match="is rolled_back"):
        experiment_start(experiment=experiment, actor=team["starter"])


def test_a_candidate_approved_against_a_replaced_live_model_is_benchmarked_again_before_a_rollout(team):
    # A second reviewer's walk: C1 and C2 both PASSed against L1; C2 rolled out and went live; C1 was still
    # "approved for rollout" and started against C2 with no new benchmark and no override.
    agent, first_live, approved = agent_with_candidate("qa_agent")
    successor = ModelVersionFactory(agent=agent, model_id="ft:open-mistral-7b:aaaaaaaa:20261101:deadbeef")
    for status in ("benchmarking", "approved_for_rollout", "rolling_out", "live"):
        successor = model_version_transition(version=successor, to_status=status, reason="test")
    first_live.refresh_from_db()
    approved.refresh_from_db()
    assert (first_live.status, approved.status) == ("retired", "registered")
    assert "benchmark it again against the live model" in approved.history.first().history_change_reason
    experiment = experiment_create(agent=agent, treatment=approved, actor=team["starter"], key="stale-approval")
    with pytest.raises(Conflict, match="has no PASS verdict against the live model"):
        experiment_start(experiment=experiment, actor=team["starter"])
