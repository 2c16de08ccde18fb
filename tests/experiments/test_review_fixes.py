"""Rules from the review of experiments/: pauses do not count toward a stage, safety settings cannot
be loosened mid-rollout, and an optional metric reported by one arm only does not hold a stage."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.utils import timezone

from experiments.models import EventAction, Experiment, ExperimentEvent, ExperimentStage, OutcomeEvent
from experiments.outcomes import outcomes_ingest
from experiments.selectors import experiment_guardrail_results, experiment_metrics, stage_holds
from experiments.services import (
    experiment_create,
    experiment_pause,
    experiment_resume,
    experiment_start,
    experiment_update,
    guardrails_check,
    stage_approve,
    validate_guardrails,
)
from genesis.errors import Conflict, InvalidInput
from tests.experiments.factories import agent_with_candidate, draft_experiment, feed, outcome_events

pytestmark = pytest.mark.django_db


def running(team, **options):  # type: ignore[no-untyped-def]
    return experiment_start(experiment=draft_experiment(actor=team["starter"], **options), actor=team["starter"])


# --- 1, 12: a pause counts neither toward the stage's time nor its split ----------------------------


def test_outcomes_while_paused_go_to_the_live_model_not_to_the_experiment(team):
    experiment = running(team)
    experiment_pause(experiment=experiment, actor=team["starter"], reason="investigating")
    # While paused everyone gets the live model (control's): those outcomes are not the experiment's.
    feed(experiment, arm="control", n=200, success_rate=0.9, seed=3, user_prefix="during-pause")
    assert OutcomeEvent.objects.filter(experiment=experiment).count() == 0
    assert OutcomeEvent.objects.filter(experiment=None, variant="live").count() == 200


def test_resuming_does_not_trip_srm_with_the_paused_traffic(team):
    experiment = running(team, stage_plan=[10, 100])
    feed(experiment, arm="treatment", n=20, success_rate=0.9, seed=1)
    feed(experiment, arm="control", n=180, success_rate=0.9, seed=2)
    experiment_pause(experiment=experiment, actor=team["starter"], reason="investigating")
    feed(experiment, arm="control", n=300, success_rate=0.9, seed=3, user_prefix="during-pause")
    experiment_resume(experiment=experiment, actor=team["starter"])
    # Reported late: served before the resume, so outside the resumed stage's window.
    late = outcome_events(experiment, arm="control", n=100, success_rate=0.9, seed=4, user_prefix="late")
    for event in late:
        event["occurred_at"] = (timezone.now() - timedelta(minutes=1)).isoformat()
    outcomes_ingest(principal=None, events=late)
    feed(experiment, arm="treatment", n=5, success_rate=0.9, seed=5, user_prefix="after-t")
    feed(experiment, arm="control", n=45, success_rate=0.9, seed=6, user_prefix="after-c")

    experiment = Experiment.objects.select_related("current_stage").get(pk=experiment.pk)
    metrics = experiment_metrics(experiment=experiment)
    assert (metrics.stage_users_control, metrics.stage_users_treatment) == (45, 5)
    assert metrics.srm_p is not None and metrics.srm_p > 0.5
    assert guardrails_check(experiment_id=experiment.pk).action == "none"
    assert Experiment.objects.get(pk=experiment.pk).status == "running"


def test_paused_time_does_not_count_toward_the_minimum_stage_time(team):
    experiment = running(team, min_stage_hours=2)
    stage = ExperimentStage.objects.get(pk=Experiment.objects.get(pk=experiment.pk).current_stage_id)
    first_start = timezone.now() - timedelta(hours=3)
    ExperimentStage.objects.filter(pk=stage.pk).update(started_at=first_start)  # started 3 h ago …
    experiment_pause(experiment=experiment, actor=team["starter"])  # … and paused (say) for all of it
    experiment_resume(experiment=experiment, actor=team["starter"])

    experiment = Experiment.objects.select_related("current_stage").get(pk=experiment.pk)
    min_time = next(hold for hold in stage_holds(experiment=experiment) if hold.name == "min_time")
    assert not min_time.cleared and "0.0 h of the 2.0 h minimum" in min_time.detail
    resumed = ExperimentEvent.objects.get(experiment=experiment, action=EventAction.RESUME)
    assert resumed.before["stage_started_at"] == first_start.isoformat()


# --- 7: safety settings ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("rules", "message"),
    [
        ([], "a success_rate rule .* is required"),
        ([{"metric": "latency_ms", "threshold": 0.3}], "a success_rate rule .* is required"),
        ([{"metric": "success_rate", "threshold": 0.05, "on_violation": "warning"}], "is required"),
        ([{"metric": "success_rate", "threshold": 0.05, "harmful_direction": "increase"}], "is required"),
        ([{"metric": "success_rate", "threshold": 0.5}], "threshold 0.5 is above 0.2"),
    ],
)
def test_guardrails_always_include_a_success_rate_rule_that_rolls_back(rules, message):
    with pytest.raises(InvalidInput, match=message):
        validate_guardrails(rules)


def test_sample_sizes_have_a_floor(team):
    agent, _, candidate = agent_with_candidate()
    with pytest.raises(InvalidInput, match="min_samples_per_arm: must be a number >= 20"):
        experiment_create(agent=agent, treatment=candidate, actor=team["starter"], min_samples_per_arm=2)
    with pytest.raises(InvalidInput, match="planned_samples_per_arm: must be a number >= 20"):
        experiment_create(agent=agent, treatment=candidate, actor=team["starter"], planned_samples_per_arm=5)


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"min_stage_hours": 0}, "lowers min_stage_hours"),
        ({"min_samples_per_arm": 20}, "lowers min_samples_per_arm"),
        ({"planned_samples_per_arm": 500}, "changes planned_samples_per_arm"),
        ({"guardrails": [{"metric": "success_rate", "threshold": 0.05}]}, "removes the latency_ms guardrail"),
        ({"guardrails": [{"metric": "success_rate", "threshold": 0.15}, {"metric": "latency_ms", "threshold": 0.3,
          "threshold_kind": "relative", "on_violation": "warning"}]}, "raises the success_rate threshold"),
    ],
)
def test_a_started_experiment_cannot_be_loosened(team, changes, message):
    experiment = running(team, min_stage_hours=4, min_samples_per_arm=50, guardrails=[
        {"metric": "success_rate", "threshold": 0.05},
        {"metric": "latency_ms", "threshold": 0.3, "threshold_kind": "relative", "on_violation": "warning"},
    ])
    with pytest.raises(Conflict, match=f"can only be tightened; this edit {message}.*Roll it back"):
        experiment_update(experiment=experiment, actor=team["starter"], **changes)
    assert Experiment.objects.get(pk=experiment.pk).config_version == 1


def test_a_started_experiment_can_be_tightened_and_a_draft_loosened(team):
    experiment = running(team, min_stage_hours=4, min_samples_per_arm=50)
    tightened = experiment_update(
        experiment=experiment, actor=team["starter"], min_stage_hours=6, min_samples_per_arm=80,
        guardrails=[{"metric": "success_rate", "threshold": 0.03},
                    {"metric": "latency_ms", "threshold": 0.2, "threshold_kind": "relative", "on_violation": "breach"},
                    {"metric": "quality", "threshold": 0.05, "on_violation": "warning"},
                    {"metric": "cost_per_request", "threshold": 0.5, "threshold_kind": "relative", "on_violation": "warning"}],
    )
    assert tightened.config_version == 2 and tightened.min_samples_per_arm == 80

    draft = draft_experiment("legal_agent", actor=team["starter"], min_stage_hours=4)
    assert experiment_update(experiment=draft, actor=team["starter"], min_stage_hours=0).min_stage_hours == 0


# --- 11: an optional metric only one arm reports ----------------------------------------------------


def test_a_warning_metric_reported_by_one_arm_only_does_not_hold_the_stage(team):
    experiment = running(team)
    feed(experiment, arm="treatment", n=30, success_rate=0.9, seed=1, quality=0.8)  # only the candidate reports quality
    feed(experiment, arm="control", n=270, success_rate=0.9, seed=2)
    experiment = Experiment.objects.select_related("current_stage").get(pk=experiment.pk)
    states = {g.metric: g for g in experiment_guardrail_results(experiment=experiment, metrics=experiment_metrics(experiment=experiment))}
    assert states["quality"].state == "not_reported"
    assert "only the treatment arm reports quality" in states["quality"].reason
    assert all(hold.cleared for hold in stage_holds(experiment=experiment))
    assert stage_approve(stage=experiment.stages.get(index=1), actor=team["approver"]).percent == 25


def test_a_breach_rule_on_an_optional_metric_keeps_waiting_for_both_arms(team):
    experiment = running(team, guardrails=[{"metric": "success_rate", "threshold": 0.05},
                                           {"metric": "quality", "threshold": 0.05, "on_violation": "breach"}])
    feed(experiment, arm="treatment", n=30, success_rate=0.9, seed=1, quality=0.8)
    feed(experiment, arm="control", n=270, success_rate=0.9, seed=2)
    experiment = Experiment.objects.select_related("current_stage").get(pk=experiment.pk)
    states = {g.metric: g.state for g in experiment_guardrail_results(experiment=experiment, metrics=experiment_metrics(experiment=experiment))}
    assert states["quality"] == "no_data"
