"""genesis_rollout_guardrails_checked_timestamp_seconds, scraped from the running app (gunicorn, two
workers, the test database and Redis) after real guardrail evaluations (experiments.guardrail_check.
guardrails_check, what beat's task runs every minute): it is the time of each running rollout's latest
evaluation — its stage's start before the first —, and a rollout whose check has stopped succeeding keeps
the time of its last one while the others move on, so RolloutUnguarded sees it age."""

from __future__ import annotations

import pytest
from prometheus_client.parser import text_string_to_metric_families

from experiments.guardrail_check import guardrails_check
from experiments.models import Experiment
from experiments.services import experiment_pause
from tests.experiments.factories import evaluate, running_rollout

pytestmark = pytest.mark.django_db(transaction=True)

GAUGE = "genesis_rollout_guardrails_checked_timestamp_seconds"


def judged(server) -> dict[str, float]:
    return {sample.labels["agent"]: sample.value
            for family in text_string_to_metric_families(server.metrics_text()) for sample in family.samples
            if sample.name == GAUGE}


def checked_at(experiment: Experiment) -> float:
    return Experiment.objects.get(pk=experiment.pk).guardrails_checked_at.timestamp()


def test_the_gauge_is_the_latest_real_evaluation_and_a_rollout_whose_check_fails_ages(genesis_server):
    qa, content = running_rollout("qa_agent"), running_rollout("content_agent")  # each judged once
    legal = running_rollout("legal_agent", evaluated=False)
    experiment_pause(experiment=running_rollout("support_agent"), actor=None, reason="checking the logs")
    first = judged(genesis_server)
    assert first == {"qa_agent": checked_at(qa), "content_agent": checked_at(content),
                     "legal_agent": legal.current_stage.started_at.timestamp()}  # paused: no series

    # content_agent's check now fails on its data: a guardrail rule without a field the check reads (as
    # a row written by another release might be). Its transaction rolls back, its time stays; qa_agent's
    # next evaluation moves qa_agent's on.
    rules = Experiment.objects.get(pk=content.pk).guardrails
    Experiment.objects.filter(pk=content.pk).update(guardrails=[
        {name: value for name, value in rule.items() if name != "threshold_kind"} for rule in rules])
    with pytest.raises(KeyError, match="threshold_kind"):
        guardrails_check(experiment_id=content.pk)
    assert evaluate(qa) == "none"
    second = judged(genesis_server)
    assert second["qa_agent"] == checked_at(qa) > first["qa_agent"]
    assert second["content_agent"] == first["content_agent"]
    assert second["legal_agent"] == first["legal_agent"]  # never judged: its stage's start

    # Its first evaluation moves legal_agent's; pausing content_agent withdraws its series (nothing to guard).
    assert evaluate(legal) == "none"
    experiment_pause(experiment=Experiment.objects.get(pk=content.pk), actor=None, reason="guardrail check failing")
    third = judged(genesis_server)
    assert set(third) == {"qa_agent", "legal_agent"} and third["legal_agent"] == checked_at(legal) > first["legal_agent"]
