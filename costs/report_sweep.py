"""Beat's sweep of cost reports: a report row is a job (GUIDE), and like the audits' and the WaltzRL
builds' rows it must not stay "pending" or "running" because one message was lost.

Three ways a report is stranded, each seen from its row or its schedule:

* pending, never started: its task was not taken (the broker was down at "Generate now" — the admin
  says so — or the message was lost later). Sent again;
* running since longer than the task's hard time limit: its worker was killed (a killed worker's
  message waits out Redis' visibility timeout). Sent again: `cost_report_run` claims it again;
* no row at all for the day beat fired the daily report: celery beat marks an entry run *before* it
  publishes the message (celery/beat.py, `Scheduler.tick`: `reserve`, then `apply_entry`, which only
  logs a publish error), so a publish that fails at 00:05 loses that day's report until the next
  day's. With Redis as the broker that is rare (beat renews its lock in Redis first, genesis/beat.py,
  so a beat that cannot reach Redis does not fire at all, and fires when Redis is back); with the
  embedded file broker, or Redis lost between the renewal and the send, it happens. The sweep makes
  that day's row and sends it, and prunes the old reports as the daily task does.

Bounded: a report is sent again at most MAX_REPORT_RESENDS times, the k-th no sooner than k × 5 min
after it was requested; a report still not made after that is marked failed with the reason (a worker
that later gets one of its messages still makes it: failed → running is allowed).
"""

from __future__ import annotations

import logging
from datetime import datetime, timedelta

from django.conf import settings
from django.db import models, transaction
from django.utils import timezone

from costs.models import REPORT_TRANSITIONS, CostReport
from costs.selectors import daily_report_missed
from costs.services import cost_report_daily_row, cost_reports_prune
from genesis.jobs import advance
from genesis.tasks import send_on_commit, send_task

logger = logging.getLogger(__name__)

# A report's message has had this long to reach a worker (the report itself takes seconds).
REPORT_STRANDED_AFTER = timedelta(minutes=5)
MAX_REPORT_RESENDS = 5


def cost_reports_resend_stranded(*, now: datetime | None = None) -> dict[str, list[int]]:
    """Beat, every minute: make up a daily report beat lost, send again the reports whose message or
    worker is gone, and give up (failed, with the reason) on those sent MAX_REPORT_RESENDS times.
    Returns the report ids by what was done. A duplicate message is harmless: a report is made and
    sent at most once (`cost_report_run`'s claim)."""
    now = now or timezone.now()
    done: dict[str, list[int]] = {"made_up": [], "sent": [], "gave_up": []}
    if (day := daily_report_missed(now=now, after=REPORT_STRANDED_AFTER)) is not None:
        report = cost_report_daily_row(day=day)
        send_on_commit("costs.run_cost_report", report.pk, what=f"the daily cost report of {day} (beat's was lost)")
        logger.warning("cost report sweep: beat fired the daily report of %s but no row was made; made #%s", day, report.pk)
        done["made_up"].append(report.pk)
        cost_reports_prune(now=now)
    abandoned_before = now - timedelta(seconds=settings.CELERY_TASK_TIME_LIMIT)
    stranded = CostReport.objects.filter(
        models.Q(status=CostReport.Status.PENDING)
        | models.Q(status=CostReport.Status.RUNNING, started_at__lt=abandoned_before)
    ).exclude(pk__in=done["made_up"]).order_by("pk").only("pk", "created_at", "resends")
    for report in stranded:
        if report.created_at >= now - REPORT_STRANDED_AFTER * (report.resends + 1):
            continue  # its last message may still be on its way
        if report.resends >= MAX_REPORT_RESENDS:
            if _give_up(report.pk, now=now):
                done["gave_up"].append(report.pk)
            continue
        if not send_task("costs.run_cost_report", report.pk, what=f"cost report #{report.pk} (again)"):
            break  # the broker is down: every send would wait for its timeout; the next sweep tries
        CostReport.objects.filter(pk=report.pk).update(resends=models.F("resends") + 1)
        done["sent"].append(report.pk)
    if done["sent"] or done["gave_up"]:
        logger.warning("cost report sweep: sent again %s, gave up on %s", done["sent"], done["gave_up"])
    return done


def _give_up(report_id: int, *, now: datetime) -> bool:
    """Fail a stranded report with the reason; False when a worker claimed it meanwhile."""
    with transaction.atomic():
        report = CostReport.objects.select_for_update(skip_locked=True).filter(pk=report_id).first()
        abandoned_before = now - timedelta(seconds=settings.CELERY_TASK_TIME_LIMIT)
        if report is None or not (
            report.status == CostReport.Status.PENDING
            or (report.status == CostReport.Status.RUNNING and report.started_at and report.started_at < abandoned_before)
        ):
            return False
        advance(report, CostReport.Status.FAILED, transitions=REPORT_TRANSITIONS)
        waited = int((now - report.created_at).total_seconds() // 60)
        report.finished_at, report.error = now, (
            f"no worker made this report in the {waited} min since it was requested (its task was sent "
            f"again {report.resends} times): check that a Celery worker is running and that the broker answers, "
            "then generate a new report. A worker that still gets one of its messages makes it."
        )
        report.save(update_fields=["status", "finished_at", "error"])
        return True
