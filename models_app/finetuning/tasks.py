"""Celery entry points of fine-tuning job tracking: beat's fan-out, and the sync of one job.

Both take ids (never rows), call one service, and are safe to run twice: the sync service locks the
job row, ignores snapshots older than what it holds, and registers a model / charges the ledger only
while the job has no model version (a OneToOne) — so a message redelivered after a worker died, or a
sync a person started at the same time as beat's, changes nothing the first one did.

Provider errors are not retried here: the service already retried them with backoff
(providers/retry.py, the one retry layer) and noted what is left on the row; beat's next tick is the
next attempt. Only a lost database connection is retried by Celery.
"""

from __future__ import annotations

import logging
from functools import partial

from celery import shared_task
from django.db import transaction

from genesis.errors import DomainError
from genesis.tasks import RETRY_ON_DATABASE_ERRORS, SWEEP_OPTIONS
from models_app.finetuning import rules
from models_app.finetuning.models import FineTuningJob
from models_app.finetuning.selectors import jobs_to_sync
from models_app.finetuning.services import finetuning_job_sync
from models_app.finetuning.storage import StorageChargesFailed, storage_charge_month

logger = logging.getLogger(__name__)

SYNC_INTERVAL_SECONDS = 60  # beat's schedule (genesis/schedules.py)
# A per-job message older than this is dropped: a newer tick has queued a fresher one.
SYNC_MESSAGE_EXPIRES_SECONDS = 3 * SYNC_INTERVAL_SECONDS
# Up to four attempts of a 30 s provider timeout plus backoff fit under the soft limit.
SYNC_SOFT_TIME_LIMIT = 240
SYNC_TIME_LIMIT = 300


@shared_task(name="models_app.sync_active_fine_tuning_jobs", **SWEEP_OPTIONS)
def sync_active_fine_tuning_jobs() -> int:
    """Beat, every minute: queue one sync per job the provider may still change."""
    job_ids = list(jobs_to_sync().values_list("pk", flat=True))
    for job_id in job_ids:
        transaction.on_commit(
            partial(sync_fine_tuning_job.apply_async, args=[job_id], expires=SYNC_MESSAGE_EXPIRES_SECONDS)
        )
    return len(job_ids)


@shared_task(
    name="models_app.sync_fine_tuning_job",
    max_retries=3,
    soft_time_limit=SYNC_SOFT_TIME_LIMIT,
    time_limit=SYNC_TIME_LIMIT,
    **RETRY_ON_DATABASE_ERRORS,
)
def sync_fine_tuning_job(job_id: int) -> str:
    job = FineTuningJob.objects.filter(pk=job_id).first()
    if job is None:
        return "gone"
    if not job.provider_job_id or not (
        job.status in rules.MOVING_STATUSES or (job.status == rules.SUCCESS and job.model_version_id is None)
    ):
        return f"nothing to do ({job.status})"
    try:
        job = finetuning_job_sync(job=job)
    except DomainError as exc:
        # Refused by a rule (e.g. its provider account was disabled since beat queued it): nothing to
        # retry; the job waits for a person, and the next tick skips it.
        logger.warning("fine-tuning job #%s not synced: %s", job_id, exc.message)
        return f"refused: {exc.message}"
    if job.last_error:
        logger.warning("fine-tuning job #%s (%s) sync: %s", job.pk, job.status, job.last_error)
    return job.status


# Named when it lived in the costs app: beat rows already installed call it by this name.
@shared_task(name="costs.charge_monthly_storage")
def charge_monthly_storage() -> int:
    month = storage_charge_month()
    if month.failed:
        # The others are charged; failing the task puts the rest where failed tasks are seen. The next
        # daily run tries them again.
        failures = "; ".join(f"{model} at {provider}: {why}" for (provider, model), why in month.failed.items())
        raise StorageChargesFailed(f"{len(month.failed)} model(s) not charged for storage: {failures}")
    return len(month.charged)
