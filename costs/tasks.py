"""Celery entry points of the costs app: ids in, one service call, safe to run twice.

Retries: none of these calls a paid or rate-limited API. A failed alert channel is kept on the alert
row and retried by the `redeliver_budget_alerts` sweep, not by re-running the task."""

from __future__ import annotations

import logging

from celery import shared_task

from costs import report_sweep, services
from genesis.errors import NotFound
from genesis.tasks import SWEEP_OPTIONS

logger = logging.getLogger(__name__)

@shared_task(name="costs.deliver_budget_alert")
def deliver_budget_alert(alert_id: int) -> str:
    alert = services.budget_alert_deliver(alert_id=alert_id)
    if alert is None:
        # Gone (a flushed test database) or locked by the sweep, which will finish it.
        return "skipped"
    return alert.delivery


@shared_task(name="costs.deliver_budget_alerts")
def deliver_budget_alerts(alert_ids: list[int]) -> list[str]:
    """The alerts one threshold check raised, lowest threshold first (`deliver_budget_alert` stays for
    messages queued before this task existed)."""
    return [alert.delivery if alert is not None else "skipped" for alert in services.budget_alerts_deliver(alert_ids=alert_ids)]


@shared_task(name="costs.redeliver_budget_alerts")
def redeliver_budget_alerts() -> int:
    return services.budget_alerts_redeliver()


@shared_task(name="costs.daily_cost_report")
def daily_cost_report() -> int:
    return services.cost_report_daily().pk


@shared_task(name="costs.run_cost_report")
def run_cost_report(report_id: int) -> str:
    try:
        return services.cost_report_run(report_id=report_id).status
    except NotFound as exc:
        logger.info("cost report %s not run: %s", report_id, exc.message)
        return "skipped"


@shared_task(name="costs.resend_stranded_reports", **SWEEP_OPTIONS)
def resend_stranded_reports() -> dict[str, list[int]]:
    return report_sweep.cost_reports_resend_stranded()
