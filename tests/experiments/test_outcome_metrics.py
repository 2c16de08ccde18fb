"""The outcome counters: summed per label set before counting (one increment per series), with the
histogram filled exactly as prometheus_client's observe() fills it; a label set's counters made together
(at 0 where nothing counted); outcomes served by another model than their arm's counted at ingestion."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st
from prometheus_client import REGISTRY, CollectorRegistry, Histogram

from experiments.metrics import (
    ERRORS,
    LATENCY_BUCKETS_SECONDS,
    OTHER_MODEL,
    REQUESTS,
    SUCCESSES,
    TOKENS,
    _observe_many,
    outcomes_count,
)
from experiments.outcomes import outcomes_ingest
from experiments.results import experiment_results
from experiments.selectors import get_experiment
from experiments.services import experiment_start
from tests.experiments.factories import agent_with_candidate, draft_experiment, user_in_arm


def histogram_samples(histogram: Histogram) -> list[tuple[str, dict, float]]:
    return [(s.name, s.labels, s.value) for metric in histogram.collect() for s in metric.samples if not s.name.endswith("_created")]


@given(st.lists(st.floats(min_value=0, max_value=500, allow_nan=False), max_size=200))
def test_observing_many_at_once_equals_observing_one_by_one(amounts: list[float]) -> None:
    one_by_one = Histogram("one_seconds", "x", buckets=LATENCY_BUCKETS_SECONDS, registry=CollectorRegistry())
    at_once = Histogram("one_seconds", "x", buckets=LATENCY_BUCKETS_SECONDS, registry=CollectorRegistry())
    for amount in amounts:
        one_by_one.observe(amount)
    _observe_many(at_once, amounts)
    expected, got = histogram_samples(one_by_one), histogram_samples(at_once)
    assert [(name, labels) for name, labels, _ in got] == [(name, labels) for name, labels, _ in expected]
    assert [value for *_, value in got] == pytest.approx([value for *_, value in expected])


def value(counter, *labels: str) -> float:
    return counter.labels(*labels)._value.get()


@pytest.mark.django_db
def test_a_batch_is_counted_per_agent_model_and_variant() -> None:
    agent, baseline, _ = agent_with_candidate("qa_agent")
    labels = ("qa_agent", baseline.model_id, "live")
    before = {name: value(counter, *labels) for name, counter in (("r", REQUESTS), ("e", ERRORS), ("s", SUCCESSES))}
    other_before = value(REQUESTS, "qa_agent", OTHER_MODEL, "live")
    tokens_before = value(TOKENS, "qa_agent", baseline.model_id, "output")
    rows = [{"agent_id": agent.pk, "model": baseline.model_id, "variant": "live", "success": i % 4 != 0, "latency_ms": 100.0 * i,
             "input_tokens": 3, "output_tokens": None if i % 2 else 7} for i in range(12)]
    rows.append({"agent_id": agent.pk, "model": "not-registered", "variant": "live", "success": True, "latency_ms": 5.0})
    outcomes_count(rows=rows, agent_slugs={agent.pk: "qa_agent"})
    assert value(REQUESTS, *labels) - before["r"] == 12
    assert value(ERRORS, *labels) - before["e"] == 3
    assert value(SUCCESSES, *labels) - before["s"] == 9
    assert value(REQUESTS, "qa_agent", OTHER_MODEL, "live") - other_before == 1
    assert value(TOKENS, "qa_agent", baseline.model_id, "output") - tokens_before == 42


def sample(name: str, labels: dict[str, str]) -> float | None:
    """The value /metrics would show for a series, None when it does not exist (read without making it)."""
    return REGISTRY.get_sample_value(name, labels)


@pytest.mark.django_db
def test_an_agent_that_never_succeeds_has_a_successes_series_at_zero() -> None:
    # LowSuccessRate divides successes by requests: with no successes series it returned nothing, and
    # an agent failing every request raised no alert.
    agent, baseline, _ = agent_with_candidate("never_succeeds")
    labels = {"agent": "never_succeeds", "model": baseline.model_id, "variant": "live"}
    assert sample("genesis_agent_requests_total", labels) is None
    rows = [{"agent_id": agent.pk, "model": baseline.model_id, "variant": "live", "success": False, "latency_ms": 10.0}
            for _ in range(5)]
    outcomes_count(rows=rows, agent_slugs={agent.pk: "never_succeeds"})
    assert sample("genesis_agent_requests_total", labels) == 5
    assert sample("genesis_agent_errors_total", labels) == 5
    assert sample("genesis_agent_successes_total", labels) == 0


@pytest.mark.django_db
def test_an_agent_that_never_fails_has_an_errors_series_at_zero() -> None:
    agent, baseline, _ = agent_with_candidate("never_fails")
    labels = {"agent": "never_fails", "model": baseline.model_id, "variant": "live"}
    outcomes_count(rows=[{"agent_id": agent.pk, "model": baseline.model_id, "variant": "live", "success": True, "latency_ms": 1.0}],
                   agent_slugs={agent.pk: "never_fails"})
    assert (sample("genesis_agent_errors_total", labels), sample("genesis_agent_successes_total", labels)) == (0, 1)


@pytest.mark.django_db
def test_outcomes_another_model_served_are_counted_per_arm_at_ingestion(team) -> None:
    # Genesis makes no agent's calls: its sight of an agent's fallbacks is the outcomes that report a
    # model other than their arm's. 12 of 40 treatment users were served the live model; control none;
    # outcomes outside the experiment (another agent's live traffic) are in no arm and not counted.
    experiment = experiment_start(experiment=draft_experiment("falls_back", actor=team["starter"], stage_plan=[50, 100]),
                                  actor=team["starter"])
    control, treatment = experiment.control.model_id, experiment.treatment.model_id
    events = []
    for i in range(40):
        events.append({"event_id": f"t-{i}", "agent": "falls_back", "model": control if i < 12 else treatment,
                       "user_id": user_in_arm(experiment, "treatment", percent=50, base=f"t-{i}"), "success": True, "latency_ms": 5.0})
        events.append({"event_id": f"c-{i}", "agent": "falls_back", "model": control,
                       "user_id": user_in_arm(experiment, "control", percent=50, base=f"c-{i}"), "success": True, "latency_ms": 5.0})
    assert outcomes_ingest(principal=None, events=events).accepted == 80

    assert sample("genesis_agent_served_by_other_model_total", {"agent": "falls_back", "variant": "treatment"}) == 12
    assert sample("genesis_agent_served_by_other_model_total", {"agent": "falls_back", "variant": "control"}) == 0
    assert sample("genesis_agent_served_by_other_model_total", {"agent": "falls_back", "variant": "live"}) is None
    # The hold and the results count the same outcomes the same way.
    results = experiment_results(experiment=get_experiment(key=experiment.key))
    assert results["variants"]["treatment"]["served_other_model"] == 12
