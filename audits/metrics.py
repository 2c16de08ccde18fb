"""The audits app's background jobs at /metrics (genesis/metrics.py `BackgroundJobsCollector`, read at
scrape time): kind ``audit`` (audit runs) and ``dataset_copy`` (scrubbed or rebalanced copies being
written). Stalled is what beat's sweep would send again now (audits/selectors.py)."""

from __future__ import annotations

from audits.selectors import audit_runs_queued, audit_runs_stranded, dataset_copies_queued, dataset_copies_stranded
from genesis.metrics import register_job_backlog


def register_audit_metrics() -> None:
    register_job_backlog("audit", stranded=audit_runs_stranded, queued=audit_runs_queued)
    register_job_backlog("dataset_copy", stranded=dataset_copies_stranded, queued=dataset_copies_queued)
