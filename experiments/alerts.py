"""What online evaluation tells people by itself: the rollback alert, posted through the one
notifications module (genesis/notifications.py) by the `experiments.notify_rollback` task, which
retries while the webhook is unavailable."""

from __future__ import annotations

import logging

from django.conf import settings

from experiments.audit import actor_name
from experiments.models import ExperimentEvent
from genesis import notifications

logger = logging.getLogger(__name__)


def rollback_notice(event: ExperimentEvent) -> notifications.Notice:
    experiment = event.experiment
    return notifications.Notice(
        subject=f":rotating_light: {experiment.key} rolled back",
        text=(
            f"Genesis rolled back experiment *{experiment.key}* of *{experiment.agent.slug}* "
            f"(candidate {experiment.treatment.model_id}) at {event.before.get('stage_percent')} %. "
            f"By: {actor_name(event.actor)}. Why: {event.reason}"
        ),
        severity="critical",
        webhook_fields={"experiment": experiment.key, "agent": experiment.agent.slug, "reason_code": event.reason_code},
    )


def rollback_notify(*, event_id: int) -> bool:
    """Post the rollback recorded as audit event `event_id` to the alert webhook. True when the
    webhook took it; False when no webhook is configured, the event is gone or the webhook refused it
    for good (a 4xx other than 429, logged). Raises notifications.WebhookUnavailable on a connection
    error, a timeout, a 429 or a 5xx so the task can retry."""
    url = settings.GENESIS.alerting.slack_webhook
    if not url:
        return False
    event = ExperimentEvent.objects.select_related("experiment__agent", "experiment__treatment", "actor").filter(pk=event_id).first()
    if event is None:
        logger.warning("rollback alert: audit event %s no longer exists; nothing to send", event_id)
        return False
    return notifications.webhook_post(rollback_notice(event), url=url)
