"""Reads for /metrics: benchmark runs and fine-tuning jobs by state, and stalled benchmark runs."""

from __future__ import annotations

from datetime import datetime

from django.db.models import Count, Max
from django.utils import timezone

from models_app.models import BenchmarkChunk, BenchmarkRun, BenchmarkRunStatus, FineTuningJob, FineTuningStatus


def _counts_by_state(model, states: list[str]) -> list[tuple[str, int]]:  # type: ignore[no-untyped-def]
    counts = dict(model.objects.values_list("status").annotate(n=Count("id")).order_by())
    return [(state, counts.get(state, 0)) for state in states]


def benchmark_run_counts() -> list[tuple[str, int]]:
    return _counts_by_state(BenchmarkRun, list(BenchmarkRunStatus.values))


def finetuning_job_counts() -> list[tuple[str, int]]:
    return _counts_by_state(FineTuningJob, list(FineTuningStatus.values))


def benchmark_runs_since_progress(*, now: datetime | None = None) -> list[tuple[str, float]]:
    """(agent, seconds) for each agent with a running run: the longest any of its running runs has gone
    without a chunk heartbeat, a finished chunk or (for a run with neither yet) its start."""
    now = now or timezone.now()
    runs = BenchmarkRun.objects.filter(status=BenchmarkRunStatus.RUNNING).select_related("agent")
    last_chunk = {
        row["run_id"]: max(filter(None, (row["heartbeat"], row["finished"])), default=None)
        for row in BenchmarkChunk.objects.filter(run__in=runs).values("run_id").annotate(
            heartbeat=Max("heartbeat_at"), finished=Max("finished_at")
        ).order_by()
    }
    worst: dict[str, float] = {}
    for run in runs:
        last = max(filter(None, (last_chunk.get(run.pk), run.started_at or run.created_at)))
        worst[run.agent.slug] = max(worst.get(run.agent.slug, 0.0), (now - last).total_seconds())
    return sorted(worst.items())
