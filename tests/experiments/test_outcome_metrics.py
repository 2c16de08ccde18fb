"""The outcome counters: summed per label set before counting (one increment per series), with the
histogram filled exactly as prometheus_client's observe() fills it."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st
from prometheus_client import CollectorRegistry, Histogram

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
from tests.experiments.factories import agent_with_candidate


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
