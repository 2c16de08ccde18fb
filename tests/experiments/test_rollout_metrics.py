"""The rollout figures /metrics exports (experiments.selectors_monitoring.rollout_states, exported by
experiments.metrics.RolloutCollector) are each running rollout's latest guardrail evaluation, which the
guardrail task stores on the experiment's row every minute (experiments.holds.stored_evaluation): a scrape
reads no outcome and makes the same queries however many rollouts run. Until 2026-12-07 it read every
running rollout's outcome aggregate — seconds per rollout at a million outcomes, past Prometheus' 10 s
scrape timeout with a few (bench/metrics/rollout.py)."""

from __future__ import annotations

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext

from experiments.holds import stage_holds
from experiments.metrics import RolloutCollector
from experiments.selectors import get_experiment
from experiments.selectors_monitoring import RolloutState, rollout_states
from experiments.services import experiment_pause
from tests.experiments.factories import agent_with_candidate, evaluate, feed, running_rollout
from tests.query_counts import assert_same_queries_with_more_rows

pytestmark = pytest.mark.django_db


def state_of(agent: str) -> RolloutState:
    [state] = [state for state in rollout_states() if state.agent == agent]
    return state


def outcome_reads(queries: list[dict]) -> list[str]:
    return [query["sql"] for query in queries if "experiments_outcomeevent" in query["sql"]]


def test_a_scrape_reads_no_outcome_and_the_same_queries_however_many_rollouts_run():
    # Was: each running rollout's outcome aggregate (experiment_metrics), its guardrails and its holds,
    # on every scrape — 37 queries and 6.0 s for five rollouts of 200 000 outcomes (bench/metrics/rollout.py).
    running_rollout("qa_agent")
    experiment_pause(experiment=running_rollout("summary_agent"), actor=None, reason="checking the logs")

    def more_rollouts() -> None:
        for slug in ("content_agent", "legal_agent", "support_agent"):
            running_rollout(slug)
        running_rollout("analyst_agent", evaluated=False)
        experiment_pause(experiment=running_rollout("triage_agent"), actor=None, reason="checking the logs")

    states = assert_same_queries_with_more_rows(rollout_states, more_rollouts)
    assert [(state.agent, state.status) for state in states] == [
        ("analyst_agent", "running"), ("content_agent", "running"), ("legal_agent", "running"), ("qa_agent", "running"),
        ("summary_agent", "paused"), ("support_agent", "running"), ("triage_agent", "paused")]
    with CaptureQueriesContext(connection) as captured:
        rollout_states()
    assert outcome_reads(captured.captured_queries) == []


def test_a_running_rollout_shows_its_latest_evaluation_until_the_next():
    experiment = running_rollout("qa_agent", evaluated=False)
    # Not judged yet: the stage's time and the "evaluation" hold are open, no guardrail or split figure.
    fresh = state_of("qa_agent")
    assert (fresh.status, fresh.stage_percent, fresh.holds_open, fresh.guardrails, fresh.srm_p) == ("running", 10, 1, (), None)

    feed(experiment, arm="control", n=60, success_rate=0.9, seed=1)
    feed(experiment, arm="treatment", n=25, success_rate=0.9, seed=2)
    evaluate(experiment)
    experiment = get_experiment(key=experiment.key)
    judged = state_of("qa_agent")
    assert judged.guardrails == tuple((state["metric"], state["state"]) for state in experiment.guardrail_states)
    assert judged.srm_p == experiment.stage_figures["srm_p"] is not None
    # The holds judged from the outcomes at that moment, as an approval would judge them.
    assert judged.holds_open == sum(1 for hold in stage_holds(experiment=experiment) if not hold.cleared)

    # Outcomes since change nothing until the next evaluation (a minute later, by beat).
    feed(experiment, arm="treatment", n=300, success_rate=0.2, seed=3)
    assert state_of("qa_agent") == judged
    assert evaluate(experiment) == "rolled_back"
    assert state_of("qa_agent").status == "none"


def judged_gauge() -> dict[str, float]:
    """genesis_rollout_guardrails_checked_timestamp_seconds per agent, as the scrape's rollout part exports it."""
    [family] = [family for family in RolloutCollector().collect()
                if family.name == "genesis_rollout_guardrails_checked_timestamp_seconds"]
    return {sample.labels["agent"]: sample.value for sample in family.samples}


def test_the_scrape_says_when_the_guardrail_task_last_judged_each_running_rollout():
    judged = running_rollout("qa_agent")
    fresh = running_rollout("content_agent", evaluated=False)
    paused = running_rollout("support_agent")
    experiment_pause(experiment=paused, actor=None, reason="checking the logs")
    agent_with_candidate("legal_agent")  # no experiment
    assert judged_gauge() == {
        "qa_agent": judged.guardrails_checked_at.timestamp(),
        # Not judged yet: its stage's start, so that it ages until the first evaluation comes.
        "content_agent": fresh.current_stage.started_at.timestamp(),
    }
    # An evaluation moves it; a rollout not evaluated since keeps the time of its last one.
    evaluate(fresh)
    assert judged_gauge() == {
        "qa_agent": judged.guardrails_checked_at.timestamp(),
        "content_agent": get_experiment(key=fresh.key).guardrails_checked_at.timestamp(),
    }
