"""Pausing: while an experiment is paused everyone gets the live model, so the paused time counts
neither toward the stage's minimum time nor toward its split (outcomes, sample ratio)."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.utils import timezone

from experiments.guardrail_check import guardrails_check
from experiments.holds import stage_holds
from experiments.models import EventAction, Experiment, ExperimentEvent, ExperimentStage, OutcomeEvent
from experiments.outcome_aggregate import experiment_metrics
from experiments.outcomes import outcomes_ingest
from experiments.results import experiment_results
from experiments.services import (
    experiment_pause,
    experiment_resume,
    experiment_start,
    stage_approve_next,
    stage_request_advance,
)
from models_app.benchmarks.reruns import ZETA_3
from tests.experiments.factories import draft_experiment, feed, outcome_events

pytestmark = pytest.mark.django_db


def running(team, **options):
    return experiment_start(experiment=draft_experiment(actor=team["starter"], **options), actor=team["starter"])



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
    # No arm was assigned then (everyone had the live model), so they are live traffic.
    assert OutcomeEvent.objects.filter(user_id__startswith="late-", variant="live", experiment=None).count() == 100
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


def feed_mismatched_split(experiment):
    """200 control and 65 treatment users at a planned 90/10: any-time SRM p ≈ 0.003, below the first
    test's threshold of a [10, 100] plan (1 %/ζ(3) ≈ 0.0083) but not the second's (0.0010)."""
    feed(experiment, arm="control", n=200, success_rate=0.9, seed=1, user_prefix="c")
    feed(experiment, arm="treatment", n=65, success_rate=0.9, seed=2, user_prefix="t")


def test_the_first_srm_test_of_a_stage_pauses_at_its_share_of_the_budget(team):
    experiment = running(team, stage_plan=[10, 100])
    feed_mismatched_split(experiment)
    result = guardrails_check(experiment_id=experiment.pk)
    assert result.action == "paused"
    assert "(any-time p = 0.003132; test 1 of this stage: pauses below 0.008319)" in result.reason


def test_a_resume_starts_a_new_srm_test_at_a_smaller_threshold(team):
    # A resume restarts the stage's window and so the test, whatever the pause was for: the k-th test
    # of a stage pauses below share/(ζ(3)·k³), so resumes cannot spend more than the stage's share.
    experiment = running(team, stage_plan=[10, 100])
    experiment_pause(experiment=experiment, actor=team["starter"], reason="incident elsewhere")
    experiment_resume(experiment=experiment, actor=team["starter"])
    feed_mismatched_split(experiment)

    experiment = Experiment.objects.select_related("current_stage").get(pk=experiment.pk)
    metrics = experiment_metrics(experiment=experiment)
    assert metrics.srm_test == 2 and metrics.srm_threshold == pytest.approx(0.01 / (ZETA_3 * 8))
    srm = next(hold for hold in stage_holds(experiment=experiment) if hold.name == "srm")
    assert srm.cleared and srm.detail.endswith("(test 2 of this stage, after 1 resume: pauses below 0.00104)")
    results = experiment_results(experiment=experiment)
    assert (results["srm_test"], results["srm_flagged"]) == (2, False)
    assert guardrails_check(experiment_id=experiment.pk).action == "none"


def test_each_resume_of_the_stage_counts_and_only_its_own_experiments(team):
    # Another agent's experiment resumed at the same percent is no resume of this one.
    other = experiment_start(experiment=draft_experiment("legal_agent", actor=team["starter"], key="other", stage_plan=[10, 100]),
                             actor=team["starter"])
    experiment_pause(experiment=other, actor=team["starter"])
    experiment_resume(experiment=other, actor=team["starter"])
    experiment = running(team, stage_plan=[10, 100])
    for _ in range(2):
        experiment_pause(experiment=experiment, actor=team["starter"])
        experiment_resume(experiment=experiment, actor=team["starter"])

    metrics = experiment_metrics(experiment=Experiment.objects.select_related("current_stage").get(pk=experiment.pk))
    assert metrics.srm_test == 3 and metrics.srm_threshold == pytest.approx(0.01 / (ZETA_3 * 27))
    other_metrics = experiment_metrics(experiment=Experiment.objects.select_related("current_stage").get(pk=other.pk))
    assert other_metrics.srm_test == 2


def test_resumes_spend_the_guardrails_alpha_over_the_whole_rollout(team):
    # A resume restarts the current stage's window and with it the guardrails' sequential test: the
    # rollout's k-th segment (k = 1 + every resume so far, in any stage) judges at alpha/(ζ(3)·k³).
    experiment = running(team, stage_plan=[10, 50, 100])
    experiment_pause(experiment=experiment, actor=team["starter"])
    experiment_resume(experiment=experiment, actor=team["starter"])
    feed(experiment, arm="treatment", n=20, success_rate=0.9, seed=1)
    feed(experiment, arm="control", n=180, success_rate=0.9, seed=2)
    stage_request_advance(experiment=experiment, actor=team["requester"])
    stage_approve_next(experiment=experiment, actor=team["approver"])
    experiment_pause(experiment=experiment, actor=team["starter"])
    experiment_resume(experiment=experiment, actor=team["starter"])

    experiment = Experiment.objects.select_related("current_stage").get(pk=experiment.pk)
    metrics = experiment_metrics(experiment=experiment)
    assert (metrics.srm_test, metrics.guardrail_segment) == (2, 3)  # the stage's second SRM test, the rollout's third segment
    results = experiment_results(experiment=experiment)
    assert results["guardrail_segment"] == 3
    for guardrail in results["guardrails"]:
        assert guardrail["segment_alpha"] == pytest.approx(guardrail["alpha"] / (ZETA_3 * 27))
    success = next(guardrail for guardrail in results["guardrails"] if guardrail["metric"] == "success_rate")
    assert "each end a 99.85 % bound" in success["reason"]  # 1 − 5 %/(ζ(3)·27)


def test_a_new_stage_starts_with_its_first_srm_test(team):
    experiment = running(team, stage_plan=[10, 50, 100])
    experiment_pause(experiment=experiment, actor=team["starter"])
    experiment_resume(experiment=experiment, actor=team["starter"])
    feed(experiment, arm="treatment", n=20, success_rate=0.9, seed=1)
    feed(experiment, arm="control", n=180, success_rate=0.9, seed=2)
    stage_request_advance(experiment=experiment, actor=team["requester"])
    stage_approve_next(experiment=experiment, actor=team["approver"])

    experiment = Experiment.objects.select_related("current_stage").get(pk=experiment.pk)
    metrics = experiment_metrics(experiment=experiment)
    assert metrics.stage_percent == 50 and metrics.srm_test == 1
    assert metrics.srm_threshold == pytest.approx(0.01 / 2 / ZETA_3)  # two stages with control share the 1 %
