"""Prometheus gauges of benchmark runs, read from the database at scrape time:

- ``genesis_benchmark_runs{state}``  runs per state (every state, 0 included)
- ``genesis_benchmark_run_seconds_since_progress{agent}``  the longest a running run of the agent has
  gone without a chunk heartbeat or a finished chunk
- ``genesis_benchmark_run_seconds_queued{agent}``  how long the agent's oldest queued run has waited to
  start (no chunk claimed yet); BenchmarkRunNotStarted watches it beside the benchmarks queue's length
  and workers, to tell a run whose chunk messages were lost from one waiting its turn
"""

from __future__ import annotations

import logging
from collections.abc import Iterator

from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

from models_app.benchmarks.selectors import (
    benchmark_run_counts,
    benchmark_runs_since_progress,
    benchmark_runs_waiting_to_start,
)

logger = logging.getLogger(__name__)


class BenchmarkRunsCollector(Collector):
    def describe(self) -> Iterator[GaugeMetricFamily]:
        yield from self._families()

    @staticmethod
    def _families() -> tuple[GaugeMetricFamily, GaugeMetricFamily, GaugeMetricFamily]:
        return (
            GaugeMetricFamily("genesis_benchmark_runs", "Benchmark runs by state", labels=["state"]),
            GaugeMetricFamily(
                "genesis_benchmark_run_seconds_since_progress",
                "Longest time a running benchmark run of the agent has gone without progress (seconds)",
                labels=["agent"],
            ),
            GaugeMetricFamily(
                "genesis_benchmark_run_seconds_queued",
                "How long the agent's oldest queued benchmark run has waited for its first chunk to be claimed (seconds)",
                labels=["agent"],
            ),
        )

    def collect(self) -> Iterator[GaugeMetricFamily]:
        runs, stall, queued = self._families()
        try:
            for state, count in benchmark_run_counts():
                runs.add_metric([state], count)
            for agent, seconds in benchmark_runs_since_progress():
                stall.add_metric([agent], seconds)
            for agent, seconds in benchmark_runs_waiting_to_start():
                queued.add_metric([agent], seconds)
        except Exception as exc:  # noqa: BLE001 - a scrape must answer even when the database does not
            logger.warning("metrics: cannot count benchmark runs: %s: %s", type(exc).__name__, exc)
        yield from (runs, stall, queued)
