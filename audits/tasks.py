"""Celery entry points of the audits app: ids in, one service call, safe to run twice.

Both services lock their row (a Postgres advisory lock held while they work) and skip rows already
finished, so a message redelivered after a worker died takes over the half-done work, and one
delivered twice while its first worker is alive is dropped. Only a lost database connection is
retried: an audit that fails on its file would fail the same way again, and says why on its row.
"""

from __future__ import annotations

import logging
import multiprocessing
from collections.abc import Callable

from celery import shared_task

from audits import services
from audits.models import AuditRun, Dataset
from genesis.errors import NotFound
from genesis.tasks import RETRY_ON_DATABASE_ERRORS, SWEEP_OPTIONS

logger = logging.getLogger(__name__)

#: Processes an audit may use (the issue's target: a 100 MB file in under 10 s on both cores).
AUDIT_PROCESSES = 2



def audit_processes() -> int:
    """2 where this process may start processes of its own, else 1. A prefork pool child is a
    daemon, which may not have children; the core would fall back to one process by itself, but
    deciding here keeps a "ran in one process" note out of every report a worker writes."""
    return 1 if multiprocessing.current_process().daemon else AUDIT_PROCESSES


def _status_unless_gone(work: Callable[[], AuditRun | Dataset], *, row: str) -> str:
    """The row's status once the service has done its work, or "gone" when the row no longer exists
    (its dataset was deleted, or a test database was flushed): nothing is left to do."""
    try:
        return work().status
    except NotFound as exc:
        logger.info("%s not done: %s", row, exc.message)
        return "gone"


@shared_task(name="audits.run_audit", max_retries=3, **RETRY_ON_DATABASE_ERRORS)
def run_audit(run_id: int) -> str:
    return _status_unless_gone(
        lambda: services.audit_run_execute(run_id=run_id, workers=audit_processes()), row=f"audit run {run_id}"
    )


@shared_task(name="audits.derive_dataset", max_retries=3, **RETRY_ON_DATABASE_ERRORS)
def derive_dataset(dataset_id: int) -> str:
    return _status_unless_gone(
        lambda: services.dataset_derive_execute(dataset_id=dataset_id, workers=audit_processes()), row=f"dataset {dataset_id}"
    )


@shared_task(name="audits.sweep_stranded", **SWEEP_OPTIONS)
def sweep_stranded() -> dict[str, int]:
    return services.audits_sweep_stranded()
