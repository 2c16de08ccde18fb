"""The audits app's background jobs at /metrics (genesis/metrics.py `BackgroundJobsCollector`, read at
scrape time): kind ``audit`` (audit runs) and ``dataset_copy`` (scrubbed or rebalanced copies being
written). Stalled is what beat's sweep would send again now (audits/selectors.py)."""

from __future__ import annotations

from django.utils import timezone

from audits.selectors import audit_runs_queued, audit_runs_stranded, dataset_copies_queued, dataset_copies_stranded
from genesis.metrics import JobBacklog, queued_seconds, register_job_backlog


def audit_runs_backlog() -> JobBacklog:
    now = timezone.now()
    return JobBacklog(stalled=len(audit_runs_stranded(now=now)), oldest_queued_seconds=queued_seconds(audit_runs_queued(), now=now))


def dataset_copies_backlog() -> JobBacklog:
    now = timezone.now()
    return JobBacklog(stalled=len(dataset_copies_stranded(now=now)),
                      oldest_queued_seconds=queued_seconds(dataset_copies_queued(), now=now))


def register_audit_metrics() -> None:
    register_job_backlog("audit", audit_runs_backlog)
    register_job_backlog("dataset_copy", dataset_copies_backlog)
