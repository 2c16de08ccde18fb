"""The holds as the guardrail task last judged them (experiments.holds.stored_evaluation): what each
evaluation stores, that the holds read back from it are those judged afresh, and that it stands only
for the stage window and settings it judged. The launch pages show these (tests/launch/test_board.py)."""

from __future__ import annotations

import json

import pytest
from django.utils import timezone

from experiments.guardrail_check import guardrails_check
from experiments.holds import (
    StageFigures,
    evaluation_holds,
    judged_at,
    stage_holds,
    stored_evaluation,
    stored_stage_figures,
)
from experiments.outcome_aggregate import experiment_metrics
from experiments.outcomes import outcomes_ingest
from experiments.results import experiment_results
from experiments.selectors import get_experiment
from experiments.services import (
    experiment_pause,
    experiment_resume,
    experiment_start,
    experiment_update,
    stage_approve_next,
)
from tests.experiments.factories import draft_experiment, feed, outcome_events, rollout_team


def running_experiment():
    team = rollout_team()
    return experiment_start(experiment=draft_experiment(actor=team["starter"]), actor=team["starter"])


@pytest.mark.django_db
def test_an_evaluation_stores_what_the_holds_read_and_the_holds_read_from_it_are_those_judged_afresh():
    # The launch pages show a running rollout's holds from the evaluation the guardrail task stored
    # (holds.stored_evaluation): with no outcome since, they are word for word the holds an approval
    # judges from the outcomes.
    experiment = running_experiment()
    assert stored_evaluation(experiment=get_experiment(key=experiment.key)) is None  # none yet
    feed(experiment, arm="control", n=180, success_rate=0.9, seed=1)
    events = outcome_events(experiment, arm="treatment", n=25, success_rate=0.88, seed=2)
    for event in events[:4]:
        event["model"] = experiment.control.model_id  # a fallback: the live model served it
    outcomes_ingest(principal=None, events=events)
    guardrails_check(experiment_id=experiment.pk)

    experiment = get_experiment(key=experiment.key)
    metrics = experiment_metrics(experiment=experiment)
    stored = experiment.stage_figures
    assert (stored["stage_id"], stored["config_version"]) == (experiment.current_stage_id, experiment.config_version)
    assert stored["users"] == {"control": 180, "treatment": 25} == {"control": metrics.stage_users_control,
                                                                    "treatment": metrics.stage_users_treatment}
    assert stored["outcomes"] == {"control": 180, "treatment": 25} and stored["served_other"] == {"control": 0, "treatment": 4}
    assert (stored["srm_p"], stored["srm_flagged"], stored["srm_rule"]) == (metrics.srm_p, metrics.srm_flagged, metrics.srm_rule)
    assert stored["relative_lift"] is not None and stored["relative_lift"] == experiment_results(experiment=experiment)["relative_lift"]
    evaluation = stored_evaluation(experiment=experiment)
    assert evaluation is not None and evaluation.at == experiment.guardrails_checked_at
    assert [state.as_json() for state in evaluation.guardrails] == experiment.guardrail_states
    now = timezone.now()
    holds = evaluation_holds(experiment=experiment, evaluation=evaluation, now=now)
    assert holds == stage_holds(experiment=experiment, now=now)
    assert {hold.name for hold in holds if not hold.cleared} == {"served"}  # 4 of 25 served by the live model


@pytest.mark.django_db
def test_a_stored_evaluation_is_of_one_stage_window_at_one_config_version():
    # The figures of another stage must not be shown as this one's: after an edit (it may change the
    # guardrails), a resume (it restarts the stage's window) or an advance, none is shown until the next.
    team = rollout_team()
    experiment = experiment_start(experiment=draft_experiment(actor=team["starter"]), actor=team["starter"])
    feed(experiment, arm="control", n=180, success_rate=0.9, seed=1)
    feed(experiment, arm="treatment", n=25, success_rate=0.9, seed=2)

    def stored():
        return stored_evaluation(experiment=get_experiment(key=experiment.key))

    def evaluated():
        guardrails_check(experiment_id=experiment.pk)
        return stored()

    assert stored() is None and evaluated() is not None
    experiment_update(experiment=experiment, actor=team["starter"], min_samples_per_arm=25)
    assert stored() is None and evaluated() is not None
    experiment_pause(experiment=experiment, actor=team["roller"], reason="checking the logs")
    assert stored() is None  # not running
    # Paused, its stage window stays: the figures are the split it paused on (/metrics' SRM p-value).
    assert stored_stage_figures(experiment=get_experiment(key=experiment.key)) is not None
    experiment_resume(experiment=experiment, actor=team["roller"])
    assert stored_stage_figures(experiment=get_experiment(key=experiment.key)) is None  # a new window
    assert stored() is None and evaluated() is not None
    feed(experiment, arm="control", n=180, success_rate=0.9, seed=3)  # the resumed window's own users
    feed(experiment, arm="treatment", n=25, success_rate=0.9, seed=4)
    assert evaluated() is not None
    stage_approve_next(experiment=experiment, actor=team["approver"])
    assert get_experiment(key=experiment.key).current_stage.percent == 25
    assert stored() is None and evaluated().figures.stage_percent == 25


def test_stored_figures_read_back_as_they_were_written():
    figures = StageFigures(
        stage_id=3, stage_started_at=timezone.now(), config_version=2, stage_percent=25,
        users={"control": 180, "treatment": 60}, outcomes={"control": 200, "treatment": 70},
        served_other={"control": 0, "treatment": 3}, srm_p=0.42, srm_flagged=False, srm_rule="test 1 of this stage",
        relative_lift=-0.01,
    )
    assert StageFigures.from_json(json.loads(json.dumps(figures.as_json()))) == figures
    # Figures stored by another version of the class (a field added or gone) are not read as these.
    assert StageFigures.from_json({**figures.as_json(), "new_field": 1}) is None


@pytest.mark.django_db
def test_judged_at_is_the_tasks_last_judgement_or_the_stages_start_before_the_first():
    # What genesis_rollout_guardrails_checked_timestamp_seconds exports and RolloutUnguarded watches: a
    # stage the task has not judged yet counts from its start (a rollout never judged ages too), and an
    # evaluation of an earlier window does not count for the new one.
    team = rollout_team()
    experiment = experiment_start(experiment=draft_experiment(actor=team["starter"]), actor=team["starter"])

    def current():
        return get_experiment(key=experiment.key)

    assert judged_at(experiment=current()) == current().current_stage.started_at
    feed(experiment, arm="control", n=180, success_rate=0.9, seed=1)
    feed(experiment, arm="treatment", n=25, success_rate=0.9, seed=2)
    guardrails_check(experiment_id=experiment.pk)
    checked = current().guardrails_checked_at
    assert checked > current().current_stage.started_at and judged_at(experiment=current()) == checked
    experiment_update(experiment=experiment, actor=team["starter"], min_samples_per_arm=25)
    assert judged_at(experiment=current()) == checked  # edited since: the task still ran then
    experiment_pause(experiment=experiment, actor=team["roller"], reason="checking the logs")
    assert judged_at(experiment=current()) is None  # paused: nothing to guard
    experiment_resume(experiment=experiment, actor=team["roller"])
    resumed = current().current_stage.started_at
    assert resumed > checked and judged_at(experiment=current()) == resumed
