"""Prometheus gauge of fine-tuning jobs, read from the database at scrape time:
``genesis_finetuning_jobs{state}``, jobs per state (every state, 0 included)."""

from __future__ import annotations

import logging
from collections.abc import Iterator

from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

from models_app.finetuning.selectors import finetuning_job_counts

logger = logging.getLogger(__name__)


class FineTuningJobsCollector(Collector):
    def describe(self) -> Iterator[GaugeMetricFamily]:
        yield self._family()

    @staticmethod
    def _family() -> GaugeMetricFamily:
        return GaugeMetricFamily("genesis_finetuning_jobs", "Fine-tuning jobs by state", labels=["state"])

    def collect(self) -> Iterator[GaugeMetricFamily]:
        jobs = self._family()
        try:
            for state, count in finetuning_job_counts():
                jobs.add_metric([state], count)
        except Exception as exc:  # noqa: BLE001 - a scrape must answer even when the database does not
            logger.warning("metrics: cannot count fine-tuning jobs: %s: %s", type(exc).__name__, exc)
        yield jobs
