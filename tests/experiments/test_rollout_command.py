"""`manage.py rollout_models`: the same services and checks as the admin, exit 0 done / 1 refused / 2 usage."""

from __future__ import annotations

import io
import json
import subprocess
import sys

import pytest
from django.core.management import CommandError, call_command

from experiments.models import EventAction, Experiment, ExperimentEvent, ExperimentStage
from tests.conftest import ROOT, child_environment
from tests.experiments.factories import draft_experiment, feed

pytestmark = pytest.mark.django_db


def rollout(*args: str) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    try:
        call_command("rollout_models", *args, stdout=out, stderr=err)
    except CommandError as exc:
        return exc.returncode, out.getvalue(), err.getvalue() + str(exc)
    return 0, out.getvalue(), err.getvalue()


def test_start_request_approve_and_status_with_four_eyes(team):
    experiment = draft_experiment(actor=team["starter"])
    code, out, _ = rollout("--agent", "qa_agent", "--start", "--as", "starter", "--json")
    assert code == 0
    started = json.loads(out)
    assert started["ok"] is True and started["status"] == "running" and started["stage_percent"] == 10
    assert [s["percent"] for s in started["stages"]] == [10, 25, 50, 100]

    feed(experiment, arm="treatment", n=20, success_rate=0.9, seed=1)
    feed(experiment, arm="control", n=180, success_rate=0.9, seed=2)
    assert rollout("--agent", "qa_agent", "--request", "--as", "starter")[0] == 0

    code, out, err = rollout("--agent", "qa_agent", "--approve", "--as", "starter", "--json")
    assert code == 1
    refused = json.loads(out)
    assert refused["ok"] is False and refused["detail"].startswith("four-eyes: starter started experiment")
    assert "refused: four-eyes" in err

    code, out, _ = rollout("--agent", "qa_agent", "--approve", "--as", "approver", "--json")
    assert code == 0 and json.loads(out)["stage_percent"] == 25

    code, out, _ = rollout("--agent", "qa_agent", "--status", "--as", "nobody")
    assert code == 0
    assert "qa_agent-exp (qa_agent): running at 25 %" in out
    assert "stages: [ 10% done]  [>25% active]  [ 50% pending]  [ 100% pending]" in out
    assert "HOLD min_samples: control 0 and treatment 0 users with outcomes in this stage (minimum 20 per arm)" in out


def test_a_user_without_permission_is_refused_with_exit_1(team):
    draft_experiment(actor=team["starter"])
    code, _, err = rollout("--agent", "qa_agent", "--start", "--as", "nobody")
    assert code == 1
    assert "user 'nobody' may not start experiments: it needs the permission 'experiments.start_experiment'" in err
    assert Experiment.objects.get().status == "draft"


def test_open_holds_refuse_an_approval(team):
    draft_experiment(actor=team["starter"], min_stage_hours=48)
    rollout("--agent", "qa_agent", "--start", "--as", "starter")
    rollout("--agent", "qa_agent", "--request", "--as", "requester")
    code, out, err = rollout("--agent", "qa_agent", "--approve", "--as", "approver")
    assert code == 1 and "cannot advance 'qa_agent-exp' to 25 % yet — min_time: 0.0 h of the 48.0 h minimum" in err
    assert ExperimentEvent.objects.filter(action=EventAction.REFUSAL, actor=team["approver"]).exists()


def test_rollback_needs_a_reason_and_records_it(team):
    draft_experiment(actor=team["starter"])
    rollout("--agent", "qa_agent", "--start", "--as", "starter")
    code, _, err = rollout("--agent", "qa_agent", "--rollback", "--as", "roller")
    assert code == 2 and "--rollback needs --reason" in err
    code, out, _ = rollout("--agent", "qa_agent", "--rollback", "--reason", "tone complaints", "--as", "roller", "--json")
    assert code == 0 and json.loads(out)["status"] == "rolled_back"
    event = ExperimentEvent.objects.get(action=EventAction.ROLLBACK)
    assert event.actor == team["roller"] and event.reason == "tone complaints"
    # --status says who rolled it back and why (UX review: it showed a bare "rolled_back").
    code, out, _ = rollout("--status")
    assert code == 0 and f"qa_agent: qa_agent-exp rolled back by roller at {event.at:%Y-%m-%d %H:%M} UTC: tone complaints" in out


def test_start_without_a_draft_creates_one_for_the_newest_candidate(team):
    from tests.experiments.factories import agent_with_candidate

    _, _, candidate = agent_with_candidate()
    code, out, _ = rollout("--agent", "qa_agent", "--start", "--as", "starter", "--json")
    assert code == 0
    assert json.loads(out)["treatment"] == candidate.model_id
    assert Experiment.objects.get().created_by == team["starter"]


def test_start_without_a_candidate_starts_what_the_boards_button_starts(team):
    # Was: the newest draft, although it was for an older candidate, while the board's "Start rollout"
    # (CONTRACT: the same services the admin buttons call) started the newest candidate.
    from models_app.registry.services import model_version_transition
    from tests.factories import ModelVersionFactory

    draft = draft_experiment(actor=team["starter"])
    newer = ModelVersionFactory(agent=draft.agent, model_id="ft:open-mistral-7b:newer:20261102:0ddba11")
    for status in ("benchmarking", "approved_for_rollout"):
        newer = model_version_transition(version=newer, to_status=status, reason="test")
    code, out, _ = rollout("--agent", "qa_agent", "--start", "--as", "starter", "--json")
    assert code == 0 and json.loads(out)["treatment"] == newer.model_id
    assert Experiment.objects.get(pk=draft.pk).status == "draft"  # left as it is, as on the board
    assert Experiment.objects.get(status="running").treatment == newer


def test_unknown_agent_or_user_is_a_usage_error(team):
    assert rollout("--agent", "nobody_agent", "--status", "--as", "starter")[0] == 2
    draft_experiment(actor=team["starter"])
    code, _, err = rollout("--agent", "qa_agent", "--status", "--as", "ghost")
    assert code == 2 and "unknown user 'ghost'" in err
    # --status of every agent reads only, yet an --as naming nobody is still a usage error, nothing shown.
    code, out, err = rollout("--status", "--as", "ghost")
    assert code == 2 and "unknown user 'ghost'" in err and out == ""
    assert rollout("--status", "--as", "starter")[0] == 0


def test_bad_arguments_exit_2_from_the_command_line():
    env = child_environment()
    missing_action = subprocess.run([sys.executable, "manage.py", "rollout_models", "--agent", "qa_agent", "--as", "x"],
                                    cwd=ROOT, env=env, capture_output=True, text=True, timeout=60)
    assert missing_action.returncode == 2 and "one of the arguments --status --start" in missing_action.stderr
    two_actions = subprocess.run([sys.executable, "manage.py", "rollout_models", "--agent", "qa_agent", "--start",
                                  "--approve", "--as", "x"], cwd=ROOT, env=env, capture_output=True, text=True, timeout=60)
    assert two_actions.returncode == 2 and "not allowed with argument" in two_actions.stderr


def test_approve_without_a_request_requests_and_approves_as_the_contract_says(team):
    # The contract's script: --start as one person, --approve as another; no --request step.
    experiment = draft_experiment(actor=team["starter"])
    assert rollout("--agent", "qa_agent", "--start", "--as", "starter")[0] == 0
    feed(experiment, arm="treatment", n=20, success_rate=0.9, seed=1)
    feed(experiment, arm="control", n=180, success_rate=0.9, seed=2)

    code, _, err = rollout("--agent", "qa_agent", "--approve", "--as", "starter")
    assert code == 1 and "four-eyes: starter started experiment" in err  # still checked against the starter

    code, out, _ = rollout("--agent", "qa_agent", "--approve", "--as", "approver", "--json")
    assert code == 0 and json.loads(out)["stage_percent"] == 25
    from experiments.models import StageApproval

    approval = StageApproval.objects.get(stage__percent=25)
    assert approval.status == "approved" and approval.requested_by == approval.decided_by == team["approver"]
    request = ExperimentEvent.objects.get(action=EventAction.REQUEST)
    assert request.actor == team["approver"] and "in one go" in request.reason


def test_start_with_a_refused_start_leaves_no_draft(team):
    from tests.experiments.factories import agent_with_candidate

    agent_with_candidate(candidate_status="registered")  # no PASS verdict, and no override reason given
    code, _, err = rollout("--agent", "qa_agent", "--start", "--as", "starter")
    assert code == 1 and "has no PASS verdict" in err
    assert not Experiment.objects.exists()


def test_start_refuses_a_candidate_that_is_not_the_drafts(team):
    experiment = draft_experiment(actor=team["starter"])
    code, _, err = rollout("--agent", "qa_agent", "--start", "--candidate", "ft:something-else", "--as", "starter")
    assert code == 1 and f"draft experiment 'qa_agent-exp' for candidate '{experiment.treatment.model_id}', not 'ft:something-else'" in err
    assert Experiment.objects.get().status == "draft"
    code, out, _ = rollout("--agent", "qa_agent", "--start", "--candidate", experiment.treatment.model_id, "--as", "starter", "--json")
    assert code == 0 and json.loads(out)["status"] == "running"


def test_status_reads_without_as_and_shows_every_agent_without_agent(team):
    draft_experiment(actor=team["starter"])
    assert rollout("--agent", "qa_agent", "--start", "--as", "starter")[0] == 0
    code, out, _ = rollout("--agent", "qa_agent", "--status")
    assert code == 0 and "qa_agent-exp (qa_agent): running at 10 %" in out
    code, out, _ = rollout("--status")
    assert code == 0 and out.startswith("qa_agent: qa_agent-exp running at 10 %; holds: min_samples")
    code, out, _ = rollout("--status", "--json")
    assert [state["agent"] for state in json.loads(out)] == ["qa_agent"]
    code, _, err = rollout("--agent", "qa_agent", "--request")
    assert code == 2 and "--request needs --as USERNAME" in err
    assert rollout("--start", "--as", "starter")[0] == 2


@pytest.mark.django_db(transaction=True)  # the command runs in another process: it must see the rows
def test_a_refusal_is_printed_once_from_the_command_line(team):
    draft_experiment(actor=team["starter"])
    result = subprocess.run([sys.executable, "manage.py", "rollout_models", "--agent", "qa_agent", "--start", "--as", "nobody"],
                            cwd=ROOT, env=child_environment(), capture_output=True, text=True, timeout=60)
    assert result.returncode == 1
    assert result.stderr.count("may not start experiments") == 1 and "CommandError" not in result.stderr


def test_status_of_an_experiment_paused_on_a_sample_ratio_mismatch_says_why_and_shows_the_split(team):
    # The runbook's Confirm step for ExperimentPausedBySRM: --status showed no reason and no split, and
    # --json held "holds": [] — nothing to confirm with while the alert fired.
    from experiments.guardrail_check import guardrails_check
    from experiments.selectors_monitoring import rollout_states
    from experiments.services import experiment_start

    experiment = experiment_start(experiment=draft_experiment(actor=team["starter"]), actor=team["starter"])
    feed(experiment, arm="treatment", n=100, success_rate=0.9, seed=1)  # half and half at a 10 % stage
    feed(experiment, arm="control", n=100, success_rate=0.9, seed=2)
    assert guardrails_check(experiment_id=experiment.pk).action == "paused"

    code, out, _ = rollout("--agent", "qa_agent", "--status", "--json")
    state = json.loads(out)
    assert code == 0 and state["status"] == "paused"
    assert state["pause"]["reason_code"] == "srm" and state["pause"]["reason"].startswith("sample-ratio mismatch: 100 control")
    split = state["split"]
    assert (split["control_users"], split["treatment_users"], split["planned_percent"]) == (100, 100, 10)
    assert split["srm_flagged"] is True and split["srm_p"] < split["srm_threshold"]

    code, out, _ = rollout("--agent", "qa_agent", "--status")
    assert "qa_agent-exp (qa_agent): paused (srm) at 10 %" in out
    assert "\npaused by genesis at " in out and " UTC: sample-ratio mismatch: 100 control" in out
    assert "split when paused: control 100 and treatment 100 users vs planned 90/10 %; any-time SRM p = " in out
    assert out.rstrip().endswith("— mismatch")
    code, out, _ = rollout("--status")
    assert "qa_agent: qa_agent-exp paused (srm) at 10 %" in out

    # /metrics exports the p-value the pause was about (genesis_rollout_srm_p_value), not nothing.
    [paused] = [state for state in rollout_states() if state.agent == "qa_agent"]
    assert paused.status == "paused" and paused.pause_reason == "srm"
    assert paused.srm_p == pytest.approx(split["srm_p"])


def test_status_says_when_the_guardrail_task_last_judged_a_running_rollout(team):
    # RolloutUnguarded's Confirm step: --status named no evaluation, so a rollout the task had stopped
    # judging looked like any other.
    from django.utils import timezone

    from experiments.guardrail_check import guardrails_check
    from experiments.services import experiment_start

    experiment = experiment_start(experiment=draft_experiment(actor=team["starter"]), actor=team["starter"])
    started = Experiment.objects.get(pk=experiment.pk).current_stage.started_at
    code, out, _ = rollout("--agent", "qa_agent", "--status")
    assert f"guardrail task: has not judged this stage (started {started:%Y-%m-%d %H:%M:%S} UTC)" in out
    assert "over 10 min ago" not in out

    feed(experiment, arm="treatment", n=20, success_rate=0.9, seed=1)
    feed(experiment, arm="control", n=180, success_rate=0.9, seed=2)
    assert guardrails_check(experiment_id=experiment.pk).action == "none"
    checked = Experiment.objects.get(pk=experiment.pk).guardrails_checked_at
    code, out, _ = rollout("--agent", "qa_agent", "--status", "--json")
    assert json.loads(out)["guardrails_judged_at"] == str(checked)
    code, out, _ = rollout("--agent", "qa_agent", "--status")
    assert f"\nguardrail task: last judged {checked:%Y-%m-%d %H:%M:%S} UTC\n" in out

    # A stage begun an hour ago whose evaluations stopped 11 minutes ago (the check failing, no worker):
    # past RolloutUnguarded's line.
    now = timezone.now()
    ExperimentStage.objects.filter(pk=experiment.current_stage_id).update(started_at=now - timezone.timedelta(hours=1))
    Experiment.objects.filter(pk=experiment.pk).update(guardrails_checked_at=now - timezone.timedelta(minutes=11))
    code, out, _ = rollout("--agent", "qa_agent", "--status")
    assert " UTC — over 10 min ago: no breach rolls it back and no sample-ratio mismatch pauses it" in out
