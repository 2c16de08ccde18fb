"""The safety app's background jobs at /metrics (genesis/metrics.py `BackgroundJobsCollector`, read at
scrape time): kind ``waltz_build``. Stalled is what beat's sweep would send again now
(safety/selectors.py)."""

from __future__ import annotations

from genesis.metrics import register_job_backlog
from safety.selectors import waltz_builds_queued, waltz_builds_stranded


def register_safety_metrics() -> None:
    register_job_backlog("waltz_build", stranded=waltz_builds_stranded, queued=waltz_builds_queued)
