"""Prometheus metrics of online evaluation, exported at /metrics.

`genesis_experiment_rollbacks_total{agent,reason}` is read from the audit trail at scrape time
rather than kept in process memory: a rollback usually happens in a Celery worker (the guardrail
task), whose memory the web process serving /metrics cannot see. Rollback events are never deleted,
so the count only grows, as a counter must, and every web process reports the same value.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator

from prometheus_client.core import CounterMetricFamily
from prometheus_client.registry import REGISTRY, Collector

logger = logging.getLogger(__name__)


class ExperimentRollbacksCollector(Collector):
    def collect(self) -> Iterator[CounterMetricFamily]:
        family = CounterMetricFamily(
            "genesis_experiment_rollbacks",
            "Experiments rolled back, by agent and reason (manual, guardrail_<metric>).",
            labels=["agent", "reason"],
        )
        try:
            from experiments.selectors import rollback_counts

            for agent, reason, total in rollback_counts():
                family.add_metric([agent, reason or "unspecified"], total)
        except Exception as exc:  # noqa: BLE001 - a scrape must not fail because the database is away
            logger.warning("metrics: cannot count experiment rollbacks: %s", exc)
        yield family

    def describe(self) -> Iterator[CounterMetricFamily]:
        # Without describe(), registering would call collect() — a query — at import time.
        yield CounterMetricFamily(
            "genesis_experiment_rollbacks", "Experiments rolled back, by agent and reason.", labels=["agent", "reason"]
        )


_registered = False


def register_metrics() -> None:
    global _registered
    if not _registered:
        REGISTRY.register(ExperimentRollbacksCollector())
        _registered = True
