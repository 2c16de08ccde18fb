"""Safety settings a rollout cannot do without: a success-rate guardrail that rolls back, sample
sizes above a floor, and, once started, holds and guardrails that can only be tightened."""

from __future__ import annotations

import pytest

from experiments.models import Experiment
from experiments.rollout_settings import validate_guardrails
from experiments.services import experiment_create, experiment_start, experiment_update
from genesis.errors import Conflict, InvalidInput
from tests.experiments.factories import agent_with_candidate, draft_experiment

pytestmark = pytest.mark.django_db


def running(team, **options):
    return experiment_start(experiment=draft_experiment(actor=team["starter"], **options), actor=team["starter"])



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
