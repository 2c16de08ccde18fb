"""Prometheus metrics of the model's path before rollout: the control plane's own provider calls
(benchmarks, judges, fine-tuning), fallbacks, and the state of benchmark runs and fine-tuning jobs.

Counted as they happen, in whichever process makes the call (a Celery pool process, usually; merged
across processes by genesis/metrics.py in multiprocess mode):

- ``genesis_provider_calls_total{provider,model,operation,status}``  status: ok, rate_limited,
  transient, permanent, error; model ``-`` for calls about no single model (files, jobs)
- ``genesis_provider_call_duration_seconds{provider,operation}``      histogram
- ``genesis_model_chat_calls_total{agent,model}``  chats through the gateway (the fallback ratio's base)
- ``genesis_model_fallbacks_total{agent,primary_model,fallback_model}``  answered by the baseline

Read at scrape time from the database:

- ``genesis_benchmark_runs{state}``, ``genesis_finetuning_jobs{state}``   rows per state (every state,
  0 included)
- ``genesis_benchmark_run_seconds_since_progress{agent}``  the longest a running run of the agent has
  gone without a chunk heartbeat or a finished chunk
"""

from __future__ import annotations

import logging
from collections.abc import Iterator

from prometheus_client import Counter, Histogram
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

from genesis.metrics import register_scrape_collector

logger = logging.getLogger(__name__)

PROVIDER_CALLS = Counter(
    "genesis_provider_calls_total", "Provider calls made by the control plane", ["provider", "model", "operation", "status"]
)
PROVIDER_CALL_SECONDS = Histogram(
    "genesis_provider_call_duration_seconds", "Duration of the control plane's provider calls (seconds)",
    ["provider", "operation"], buckets=(0.1, 0.25, 0.5, 1.0, 2.0, 5.0, 10.0, 20.0, 30.0, 60.0, 120.0),
)
CHAT_CALLS = Counter("genesis_model_chat_calls_total", "Chats asked through the gateway, by primary model", ["agent", "model"])
FALLBACKS = Counter(
    "genesis_model_fallbacks_total",
    "Calls answered by the baseline because the fine-tuned model failed transiently",
    ["agent", "primary_model", "fallback_model"],
)


def provider_call_recorder(provider_name: str):  # type: ignore[no-untyped-def]
    def record(operation: str, model: str, status: str, seconds: float) -> None:
        PROVIDER_CALLS.labels(provider_name, model, operation, status).inc()
        PROVIDER_CALL_SECONDS.labels(provider_name, operation).observe(seconds)

    return record


class JobsCollector(Collector):
    def describe(self) -> Iterator[GaugeMetricFamily]:
        yield from self._families().values()

    @staticmethod
    def _families() -> dict[str, GaugeMetricFamily]:
        return {
            "runs": GaugeMetricFamily("genesis_benchmark_runs", "Benchmark runs by state", labels=["state"]),
            "jobs": GaugeMetricFamily("genesis_finetuning_jobs", "Fine-tuning jobs by state", labels=["state"]),
            "stall": GaugeMetricFamily(
                "genesis_benchmark_run_seconds_since_progress",
                "Longest time a running benchmark run of the agent has gone without progress (seconds)",
                labels=["agent"],
            ),
        }

    def collect(self) -> Iterator[GaugeMetricFamily]:
        families = self._families()
        try:
            from models_app.selectors_monitoring import (
                benchmark_run_counts,
                benchmark_runs_since_progress,
                finetuning_job_counts,
            )

            for state, count in benchmark_run_counts():
                families["runs"].add_metric([state], count)
            for state, count in finetuning_job_counts():
                families["jobs"].add_metric([state], count)
            for agent, seconds in benchmark_runs_since_progress():
                families["stall"].add_metric([agent], seconds)
        except Exception as exc:  # noqa: BLE001 - a scrape must answer even when the database does not
            logger.warning("metrics: cannot count benchmark runs and fine-tuning jobs: %s: %s", type(exc).__name__, exc)
        yield from families.values()


def register_metrics() -> None:
    register_scrape_collector(JobsCollector())
