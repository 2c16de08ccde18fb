"""Celery entry points of online evaluation: ids in, one service call, safe to run twice."""

from __future__ import annotations

import logging

from celery import Task, shared_task

from experiments import alerts, guardrail_check, outcomes, retention
from experiments.models import Experiment, ExperimentStatus
from genesis.errors import Conflict
from genesis.notifications import WebhookUnavailable
from genesis.tasks import SWEEP_OPTIONS

# Webhook failures worth another try (connection errors, timeouts, 429, 5xx), already stripped of
# the secret webhook URL; a 4xx other than 429 will not get better by retrying.
TRANSIENT_WEBHOOK_ERRORS = (WebhookUnavailable,)
logger = logging.getLogger(__name__)


@shared_task(name="experiments.evaluate_guardrails", **SWEEP_OPTIONS)
def evaluate_guardrails() -> int:
    """Beat, every minute: fan out one check per running experiment (each locks its own row)."""
    ids = list(Experiment.objects.filter(status=ExperimentStatus.RUNNING).values_list("pk", flat=True))
    for experiment_id in ids:
        evaluate_experiment_guardrails.delay(experiment_id=experiment_id)
    return len(ids)


# One check a minute per experiment, like a sweep: cut off rather than overlap the next one.
@shared_task(name="experiments.evaluate_experiment_guardrails", **SWEEP_OPTIONS)
def evaluate_experiment_guardrails(*, experiment_id: int) -> str:
    return guardrail_check.guardrails_check(experiment_id=experiment_id).action


@shared_task(name="experiments.flush_exposures", **SWEEP_OPTIONS)
def flush_exposures() -> int:
    """Beat, every 10 s: move exposures buffered by /route from Redis into Assignment rows."""
    return outcomes.exposures_flush()


@shared_task(name="experiments.prune_outcomes")
def prune_outcomes() -> int:
    """Beat, daily: delete the outcomes and exposures past the settings' retentions (experiments/retention.py);
    returns the rows deleted. It stops starting batches before its time limit; the next run goes on."""
    try:
        result = retention.outcomes_prune_scheduled()
    except Conflict as refused:  # the intake fence stayed taken (intake.limit_recorded): tomorrow's run goes on
        logger.warning("prune: stopped, to try again at the next run: %s", refused.message)
        return 0
    return result.outcomes + result.assignments if result else 0


@shared_task(
    bind=True,
    name="experiments.notify_rollback",
    autoretry_for=TRANSIENT_WEBHOOK_ERRORS,
    retry_backoff=5,
    retry_backoff_max=300,
    retry_jitter=True,
    max_retries=6,
)
def notify_rollback(self: Task, *, event_id: int) -> bool:
    try:
        return alerts.rollback_notify(event_id=event_id)
    except TRANSIENT_WEBHOOK_ERRORS as exc:
        if self.request.retries < self.max_retries:
            raise  # Celery's retry line says when the next try is
        # The last try: say what was given up and what still stands, without a traceback — a webhook down for
        # the ten minutes of retries is a fact about the webhook, not a bug here (Celery's own line would be
        # "raised unexpected" with one).
        logger.error(
            "rollback alert of audit event %s not delivered after %s tries; gave up: %s — the rollback itself is done, "
            "and genesis_experiment_rollbacks_total counts it", event_id, self.request.retries + 1, exc,
        )
        return False
