"""Outcomes count in the arm the user was assigned to (intention to treat), not in the arm whose
model served them: an agent's router falls back to the live model when the candidate fails, and
counting those answers as control would move the candidate's failures out of its own arm."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest
from django.utils import timezone

from experiments.models import Assignment, Experiment, OutcomeEvent
from experiments.outcome_aggregate import experiment_metrics
from experiments.outcomes import outcomes_ingest
from experiments.results import experiment_results
from experiments.selectors import get_experiment
from experiments.services import experiment_start, stage_approve
from tests.experiments.factories import draft_experiment, feed, user_in_arm, user_in_buckets

pytestmark = pytest.mark.django_db


def running(team, **options) -> Experiment:
    return experiment_start(experiment=draft_experiment(actor=team["starter"], **options), actor=team["starter"])


def event(experiment: Experiment, event_id: str, user_id: str, *, model: str, success: bool = True, **extra: Any) -> dict[str, Any]:
    return {"event_id": event_id, "agent": experiment.agent.slug, "user_id": user_id, "model": model,
            "success": success, "latency_ms": 400.0, **extra}


def with_fallbacks(experiment: Experiment, *, users: int, fell_back: int, percent: int) -> list[dict[str, Any]]:
    """One outcome per user of each arm. Every control user succeeds on the live model; in treatment
    `fell_back` users' requests failed on the candidate and the live model's answer failed too, the
    rest succeed on the candidate."""
    control, treatment = experiment.control.model_id, experiment.treatment.model_id
    events = []
    for i in range(users):
        user = user_in_arm(experiment, "treatment", percent=percent, base=f"t-{i}")
        events.append(event(experiment, f"t-{i}", user, model=control if i < fell_back else treatment, success=i >= fell_back))
        events.append(event(experiment, f"c-{i}", user_in_arm(experiment, "control", percent=percent, base=f"c-{i}"), model=control))
    return events


def test_a_fallback_failure_of_a_treatment_user_counts_against_treatment(team):
    experiment = running(team, stage_plan=[50, 100])
    outcomes_ingest(principal=None, events=with_fallbacks(experiment, users=40, fell_back=12, percent=50))

    results = experiment_results(experiment=get_experiment(key=experiment.key))
    treatment, control = results["variants"]["treatment"], results["variants"]["control"]
    # By the model that served, treatment would be 28 of 28 (100 %) and control 40 of 52.
    assert (treatment["n"], treatment["users"], treatment["success_rate"]) == (40, 40, pytest.approx(0.7))
    assert (control["n"], control["users"], control["success_rate"]) == (40, 40, 1.0)
    assert results["relative_lift"] == pytest.approx(-0.3)
    # How often an arm got another model than its own (the fallback), said beside the estimate.
    assert (treatment["served_other_model"], treatment["served_other_model_rate"]) == (12, pytest.approx(0.3))
    assert (control["served_other_model"], control["served_other_model_rate"]) == (0, 0.0)


def test_fallbacks_do_not_skew_the_sample_ratio(team):
    """Users whose candidate failed stay in treatment, so the split is the planned one; counted by
    the serving model, 80 of the 200 treatment users would have moved to control (SRM)."""
    experiment = running(team, stage_plan=[50, 100])
    outcomes_ingest(principal=None, events=with_fallbacks(experiment, users=200, fell_back=80, percent=50))

    metrics = experiment_metrics(experiment=Experiment.objects.select_related("current_stage").get(pk=experiment.pk))
    assert (metrics.stage_users_control, metrics.stage_users_treatment) == (200, 200)
    assert not metrics.srm_flagged


def test_an_outcome_counts_in_the_arm_of_the_stage_it_occurred_in(team):
    """A user in buckets [0.10, 0.25) is control at 10 % and treatment at 25 %: an outcome served at
    10 % and reported after the advance is control's, as /route answered then, and lands in the 10 %
    stage's cell."""
    experiment = running(team)
    mover = user_in_buckets(experiment, base="mover", low=0.10, high=0.25)
    served_at_10 = timezone.now()
    feed(experiment, arm="treatment", n=20, success_rate=0.9, seed=1)  # the 10 % stage's holds
    feed(experiment, arm="control", n=180, success_rate=0.9, seed=2)
    stage_approve(stage=experiment.stages.get(index=1), actor=team["approver"])

    control, treatment = experiment.control.model_id, experiment.treatment.model_id
    outcomes_ingest(principal=None, events=[
        event(experiment, "at-10", mover, model=control, occurred_at=served_at_10.isoformat()),
        event(experiment, "at-25", mover, model=treatment),
    ])
    assert dict(OutcomeEvent.objects.filter(user_id=mover).values_list("event_id", "variant")) == {
        "at-10": "control", "at-25": "treatment"}
    metrics = experiment_metrics(experiment=Experiment.objects.select_related("current_stage").get(pk=experiment.pk))
    assert [(stage.percent, stage.control.users, stage.treatment.users) for stage in metrics.stages] == [
        (10, 181, 20), (25, 0, 1)]


def test_an_outcome_dated_ahead_of_the_server_stays_in_the_stage_it_was_received_in(team):
    """An agent clock a few minutes fast (within MAX_OUTCOME_CLOCK_SKEW): the outcome occurred by the
    time it arrived, at 10 %, so it is control's and in the 10 % cell — not, as when it was stored at
    the agent's time, control's arm in the 25 % cell the stage advanced into a minute later, where the
    user is treatment."""
    experiment = running(team)
    mover = user_in_buckets(experiment, base="mover", low=0.10, high=0.25)
    ahead = timezone.now() + timedelta(minutes=4)
    outcomes_ingest(principal=None, events=[
        event(experiment, "fast-clock", mover, model=experiment.control.model_id, occurred_at=ahead.isoformat()),
    ])
    feed(experiment, arm="treatment", n=20, success_rate=0.9, seed=1)  # the 10 % stage's holds
    feed(experiment, arm="control", n=180, success_rate=0.9, seed=2)
    stage_approve(stage=experiment.stages.get(index=1), actor=team["approver"])

    metrics = experiment_metrics(experiment=Experiment.objects.select_related("current_stage").get(pk=experiment.pk))
    assert [(stage.percent, stage.control.users, stage.treatment.users) for stage in metrics.stages] == [
        (10, 181, 20), (25, 0, 0)]
    stored = OutcomeEvent.objects.get(event_id="fast-clock")
    assert stored.variant == "control" and stored.occurred_at == stored.received_at


def test_an_outcome_outside_every_stage_is_live(team):
    """Before the start (and while paused) everyone had the live model: no assignment was in effect."""
    experiment = running(team)
    started_at = experiment.stages.get(index=0).started_at
    user = user_in_arm(experiment, "treatment", percent=10, base="early")
    outcomes_ingest(principal=None, events=[
        event(experiment, "early", user, model=experiment.control.model_id,
              occurred_at=(started_at - timedelta(minutes=1)).isoformat()),
    ])
    stored = OutcomeEvent.objects.get()
    assert (stored.variant, stored.experiment_id) == ("live", None)
    assert not Assignment.objects.exists()


def test_a_client_that_never_routes_holds_the_stage(team):
    """Second reviewer: counted by assignment, a client serving every user the live model splits
    perfectly and cleared every hold; the 'served' hold sees that the candidate served nobody."""
    from experiments.guardrail_check import guardrails_check
    from experiments.holds import stage_holds

    experiment = running(team, stage_plan=[50, 100])
    live = experiment.control.model_id
    events = [event(experiment, f"{arm}-{i}", user_in_arm(experiment, arm, percent=50, base=f"{arm}-{i}"), model=live)
              for i in range(60) for arm in ("control", "treatment")]
    assert outcomes_ingest(principal=None, events=events).accepted == 120

    experiment = get_experiment(key=experiment.key)
    assert experiment_results(experiment=experiment)["variants"]["treatment"]["served_other_model_rate"] == 1.0
    assert guardrails_check(experiment_id=experiment.pk).action == "none"  # nothing else sees it
    holds = {hold.name: hold for hold in stage_holds(experiment=experiment)}
    assert [name for name, hold in holds.items() if not hold.cleared] == ["served"]
    assert holds["served"].detail.startswith(
        "outcomes in this stage another model than the arm's served: control 0 of 60 (0.0%), treatment 60 of 60 (100.0%) "
        "— over 10% in treatment: a router that does not route")


def test_a_few_fallbacks_do_not_hold_the_stage(team):
    experiment = running(team, stage_plan=[50, 100])
    feed(experiment, arm="control", n=40, success_rate=0.9, seed=1)
    feed(experiment, arm="treatment", n=36, success_rate=0.9, seed=2)
    fallbacks = [event(experiment, f"fb-{i}", user_in_arm(experiment, "treatment", percent=50, base=f"fb-{i}"),
                       model=experiment.control.model_id) for i in range(4)]  # 4 of 40: 10 %, at the line
    outcomes_ingest(principal=None, events=fallbacks)
    from experiments.holds import stage_holds

    served = next(hold for hold in stage_holds(experiment=get_experiment(key=experiment.key)) if hold.name == "served")
    assert served.cleared and "treatment 4 of 40 (10.0%)" in served.detail


def test_the_served_hold_shows_a_share_just_over_the_line_as_over_it():
    """15 of 144 is 10.4 %: in whole percents it read "(10%) — over 10%"."""
    from experiments.holds import StageFigures, _served_hold

    figures = StageFigures(stage_id=1, stage_started_at=timezone.now(), config_version=1, stage_percent=50,
                           users={"control": 150, "treatment": 144}, outcomes={"control": 150, "treatment": 144},
                           served_other={"control": 0, "treatment": 15}, srm_p=None, srm_flagged=False, srm_rule="",
                           relative_lift=None)
    served = _served_hold(figures)
    assert not served.cleared
    assert "control 0 of 150 (0.0%), treatment 15 of 144 (10.4%) — over 10% in treatment" in served.detail


def test_served_other_model_counts_the_outcomes_n_counts(team):
    """Second reviewer: it counted every outcome of the arm, also those before a resume that n leaves out."""
    from experiments.services import experiment_pause, experiment_resume

    experiment = running(team, stage_plan=[50, 100])
    live = experiment.control.model_id
    outcomes_ingest(principal=None, events=[
        event(experiment, f"fb-{i}", user_in_arm(experiment, "treatment", percent=50, base=f"fb-{i}"), model=live, success=False)
        for i in range(10)])  # before the pause: outside the analysed window once resumed
    experiment_pause(experiment=experiment, actor=team["starter"], reason="incident")
    experiment_resume(experiment=experiment, actor=team["starter"])
    feed(experiment, arm="treatment", n=10, success_rate=1.0, seed=1)

    treatment = experiment_results(experiment=get_experiment(key=experiment.key))["variants"]["treatment"]
    assert (treatment["n"], treatment["served_other_model"], treatment["served_other_model_rate"]) == (10, 0, 0.0)
