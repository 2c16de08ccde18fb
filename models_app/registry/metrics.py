"""Prometheus metrics of the control plane's own provider calls (benchmarks, judges, fine-tuning, safety
data). The states of benchmark runs and fine-tuning jobs are collected by their
domains (models_app/benchmarks/metrics.py, models_app/finetuning/metrics.py).

Counted as they happen, in whichever process makes the call (a Celery pool process, usually; merged
across processes by genesis/metrics.py in multiprocess mode):

- ``genesis_provider_calls_total{provider,model,operation,status}``  status: ok, rate_limited,
  transient, permanent, error; model ``-`` for calls about no single model (files, jobs)
- ``genesis_provider_call_duration_seconds{provider,operation}``      histogram

Fallbacks are the agents' own (Genesis makes no agent's calls): they are counted from the outcomes the
agents report, as genesis_agent_served_by_other_model_total (experiments/metrics.py).
"""

from __future__ import annotations

from prometheus_client import Counter, Histogram

from models_app.providers.instrumented import CallRecorder

PROVIDER_CALLS = Counter(
    "genesis_provider_calls_total", "Provider calls made by the control plane", ["provider", "model", "operation", "status"]
)
PROVIDER_CALL_SECONDS = Histogram(
    "genesis_provider_call_duration_seconds", "Duration of the control plane's provider calls (seconds)",
    ["provider", "operation"], buckets=(0.1, 0.25, 0.5, 1.0, 2.0, 5.0, 10.0, 20.0, 30.0, 60.0, 120.0),
)


def provider_call_recorder(provider_name: str) -> CallRecorder:
    def record(operation: str, model: str, status: str, seconds: float) -> None:
        PROVIDER_CALLS.labels(provider_name, model, operation, status).inc()
        PROVIDER_CALL_SECONDS.labels(provider_name, operation).observe(seconds)

    return record
