"""Prometheus metrics of the control plane's own provider calls (benchmarks, judges, fine-tuning, safety
data). The states of benchmark runs and fine-tuning jobs are collected by their
domains (models_app/benchmarks/metrics.py, models_app/finetuning/metrics.py).

Counted as they happen, in whichever process makes the call (a Celery pool process, usually; merged
across processes by genesis/metrics.py in multiprocess mode):

- ``genesis_provider_calls_total{provider,model,operation,status}``  status: ok, rate_limited,
  transient, permanent, error; model ``-`` for calls about no single model (files, jobs)
- ``genesis_provider_call_duration_seconds{provider,operation}``      histogram
- ``genesis_api_key_refusals_total{reason}``  bearer keys refused by the API: ``expired`` (a key past its
  expiry — its service is failing) or ``unknown`` (malformed, unknown or revoked); both made at 0

Fallbacks are the agents' own (Genesis makes no agent's calls): they are counted from the outcomes the
agents report, as genesis_agent_served_by_other_model_total (experiments/metrics.py).

Read from the database at scrape time:

- ``genesis_api_keys_expiring_soon{state}``  unrevoked API keys: ``expiring`` within 14 days (or half its
  lifetime, when shorter) and used within 90 — a service that will be refused (401) unless its key is rotated — or ``expired`` and last
  used within 14 days — revoke it if its service moved to another key, rotate it if not (both
  ApiKeysExpiringSoon). Bounded: an expired key leaves the count 14 days after its last use at the latest,
  as its uses stop at its expiry. That a service is still calling with an expired key — refused now — is
  ``genesis_api_key_refusals_total{reason="expired"}`` (ApiKeysExpiredInUse).
"""

from __future__ import annotations

import logging
from collections.abc import Iterator

from django.utils import timezone
from prometheus_client import Counter, Histogram
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

from models_app.providers.instrumented import CallRecorder
from models_app.registry.selectors import (
    API_KEY_EXPIRED_RECENT_USE_DAYS,
    API_KEY_EXPIRY_STATES,
    API_KEY_EXPIRY_WARNING_DAYS,
    API_KEY_UNUSED_DAYS,
    api_keys_in_use_by_expiry,
)

logger = logging.getLogger(__name__)

PROVIDER_CALLS = Counter(
    "genesis_provider_calls_total", "Provider calls made by the control plane", ["provider", "model", "operation", "status"]
)
# Counted where the key is judged (registry.services.api_key_authenticate), in the web process.
API_KEY_REFUSALS = Counter(
    "genesis_api_key_refusals_total", "API keys refused by the API: expired, or unknown (malformed, unknown or revoked)",
    ["reason"],
)
for _reason in ("expired", "unknown"):
    API_KEY_REFUSALS.labels(_reason)  # at 0 from the start, so a rate reads 0 rather than nothing
PROVIDER_CALL_SECONDS = Histogram(
    "genesis_provider_call_duration_seconds", "Duration of the control plane's provider calls (seconds)",
    ["provider", "operation"], buckets=(0.1, 0.25, 0.5, 1.0, 2.0, 5.0, 10.0, 20.0, 30.0, 60.0, 120.0),
)


def provider_call_recorder(provider_name: str) -> CallRecorder:
    def record(operation: str, model: str, status: str, seconds: float) -> None:
        PROVIDER_CALLS.labels(provider_name, model, operation, status).inc()
        PROVIDER_CALL_SECONDS.labels(provider_name, operation).observe(seconds)

    return record


class ApiKeysCollector(Collector):
    def describe(self) -> Iterator[GaugeMetricFamily]:
        yield self._family()

    @staticmethod
    def _family() -> GaugeMetricFamily:
        return GaugeMetricFamily(
            "genesis_api_keys_expiring_soon",
            f"Unrevoked API keys by state: expiring (within {API_KEY_EXPIRY_WARNING_DAYS} days, used within "
            f"{API_KEY_UNUSED_DAYS} days) or expired (last used within {API_KEY_EXPIRED_RECENT_USE_DAYS} days)",
            labels=["state"],
        )

    def collect(self) -> Iterator[GaugeMetricFamily]:
        family = self._family()
        try:
            counts = api_keys_in_use_by_expiry(now=timezone.now())
        except Exception as exc:  # noqa: BLE001 - a scrape must answer even when the database does not
            logger.warning("metrics: cannot count expiring API keys: %s: %s", type(exc).__name__, exc)
        else:
            for state in API_KEY_EXPIRY_STATES:  # both, 0 included: an alert reads 0, not nothing
                family.add_metric([state], counts[state])
        yield family
