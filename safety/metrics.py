"""The safety app's background jobs at /metrics (genesis/metrics.py `BackgroundJobsCollector`, read at
scrape time): kind ``waltz_build``. Stalled is what beat's sweep would send again now
(safety/selectors.py)."""

from __future__ import annotations

from django.utils import timezone

from genesis.metrics import JobBacklog, queued_seconds, register_job_backlog
from safety.selectors import waltz_builds_queued, waltz_builds_stranded


def waltz_builds_backlog() -> JobBacklog:
    now = timezone.now()
    return JobBacklog(stalled=len(waltz_builds_stranded(now=now)),
                      oldest_queued_seconds=queued_seconds(waltz_builds_queued(), now=now))


def register_safety_metrics() -> None:
    register_job_backlog("waltz_build", waltz_builds_backlog)
