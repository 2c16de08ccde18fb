"""Writes of the launch console: telling approvers about stage requests (once, and one reminder),
and sending the Go/No-Go report through the channels the cost reports use (log, email, the
Slack-compatible webhook — genesis/notifications.py)."""

from __future__ import annotations

import logging
import zlib
from datetime import datetime, timedelta
from typing import Any

from django.conf import settings
from django.contrib.auth import get_user_model
from django.db import IntegrityError, connection, transaction
from django.db.models import Q
from django.urls import reverse
from django.utils import timezone

from experiments.holds import stage_holds
from experiments.models import ApprovalStatus, ExperimentStatus, StageApproval
from genesis import notifications
from genesis.integrity import UniqueKey, is_unique_violation
from genesis.locks import worker_lock
from launch import report as launch_report
from launch.models import ApprovalNotice, WeeklyLaunchReport
from launch.selectors import launch_report_facts

logger = logging.getLogger(__name__)

# The worker lock of the weekly report (genesis.locks), one key per ISO week (launch_report_lock_key).
LAUNCH_REPORT_LOCK_NAMESPACE = zlib.crc32(b"launch.WeeklyLaunchReport") & 0x7FFFFFFF
# A stage request's notice row, claimed by the run that announces it (another run's claim refuses ours).
NOTICE_CLAIMED = UniqueKey.field(ApprovalNotice, "approval")


def approvers_of(approval: StageApproval) -> list[Any]:
    """Active users who may approve `approval`: experiments.approve_stage (directly, through a group
    or as superuser), minus the experiment's starter and the requester (four-eyes)."""
    users = get_user_model().objects.filter(is_active=True).filter(
        Q(is_superuser=True)
        | Q(user_permissions__codename="approve_stage", user_permissions__content_type__app_label="experiments")
        | Q(groups__permissions__codename="approve_stage", groups__permissions__content_type__app_label="experiments")
    ).distinct()
    excluded = {approval.stage.experiment.started_by_id, approval.requested_by_id}
    return [user for user in users.order_by("username") if user.pk not in excluded]


def _approve_link(approval: StageApproval) -> str:
    path = reverse("admin:experiments_experiment_change", args=[approval.stage.experiment_id])
    return f"{settings.GENESIS_PUBLIC_URL}{path}#actions"


def _notice(approval: StageApproval, *, reminder: bool) -> notifications.Notice:
    experiment = approval.stage.experiment
    requester = approval.requested_by.get_username() if approval.requested_by else "someone"
    waited = timezone.now() - approval.requested_at
    subject = (f"[Genesis] {'reminder: ' if reminder else ''}approve {experiment.key} → {approval.stage.percent} %"
               f" ({experiment.agent.slug})")
    text = (
        f"{requester} asked to advance {experiment.key} ({experiment.treatment.model_id} for {experiment.agent.slug}) to "
        f"{approval.stage.percent} %"
        + (f" {int(waited.total_seconds() // 3600)} h ago and it is still waiting" if reminder else "")
        + (f": “{approval.note}”" if approval.note else "")
        + f". Review the evidence and approve or not: {_approve_link(approval)}"
    )
    return notifications.Notice(subject=subject, text=text)


def _channels(recipients: list[str]) -> list[notifications.Channel]:
    """The alert channels, with the email going to the approvers (not the alert list)."""
    channels: list[notifications.Channel] = [notifications.LogChannel()]
    if recipients:
        channels.append(notifications.EmailChannel(recipients))
    webhook = settings.GENESIS.alerting.slack_webhook
    if webhook:
        channels.append(notifications.SlackWebhookChannel(webhook))
    return channels


def approval_requests_notify(*, now: datetime | None = None) -> dict[str, int]:
    """Announce each pending stage request to its approvers once — as soon as it can be approved:
    when it is made if its holds are clear, else when they clear — and remind them once when it has
    waited GENESIS_APPROVAL_REMINDER_HOURS since. Safe to run concurrently and repeatedly (beat runs
    it every minute): the notice row is claimed before anything is sent."""
    now = now or timezone.now()
    pending = StageApproval.objects.filter(
        status=ApprovalStatus.PENDING, stage__experiment__status=ExperimentStatus.RUNNING
    ).select_related("stage__experiment__agent", "stage__experiment__treatment", "requested_by")
    counts = {"notified": 0, "reminded": 0, "waiting_for_holds": 0}
    for approval in pending.filter(launch_notice__isnull=True):
        if any(not hold.cleared for hold in stage_holds(experiment=approval.stage.experiment, now=now)):
            counts["waiting_for_holds"] += 1  # nobody can approve it yet; told when the holds clear
            continue
        recipients = [user.email for user in approvers_of(approval) if user.email]
        try:
            with transaction.atomic():
                notice = ApprovalNotice.objects.create(approval=approval, notified_at=now, recipients=recipients)
        except IntegrityError as exc:
            if not is_unique_violation(exc, NOTICE_CLAIMED):
                raise
            continue  # another run announced it
        notice.deliveries = notifications.deliver(_notice(approval, reminder=False), _channels(recipients))
        notice.delivery_attempts = 1
        notice.save(update_fields=["deliveries", "delivery_attempts"])
        counts["notified"] += 1
    due = now - timedelta(hours=settings.GENESIS_APPROVAL_REMINDER_HOURS)
    for approval in pending.filter(launch_notice__notified_at__lte=due, launch_notice__reminded_at__isnull=True):
        claimed = ApprovalNotice.objects.filter(approval=approval, reminded_at__isnull=True).update(reminded_at=now)
        if not claimed:
            continue
        recipients = [user.email for user in approvers_of(approval) if user.email]
        deliveries = notifications.deliver(_notice(approval, reminder=True), _channels(recipients))
        ApprovalNotice.objects.filter(approval=approval).update(reminder_deliveries=deliveries, reminder_delivery_attempts=1)
        counts["reminded"] += 1
    return counts


def _failed(deliveries: dict[str, str]) -> bool:
    return any(result != notifications.OK for result in deliveries.values())


def approval_notices_redeliver(*, now: datetime | None = None) -> int:
    """Send a pending request's announcement or reminder again through the channels that failed to
    take it (an SMTP server that refused, a webhook that was down), as budget alerts are redelivered:
    beat every genesis.notifications.REDELIVERY_EVERY_SECONDS, at most MAX_DELIVERY_ATTEMPTS sends each,
    a claim that only a dead worker leaves standing for DELIVERY_LEASE. A request decided meanwhile is
    not announced again. Returns how many notices were sent again."""
    now = now or timezone.now()
    limit = notifications.MAX_DELIVERY_ATTEMPTS
    candidates = (
        ApprovalNotice.objects.filter(approval__status=ApprovalStatus.PENDING,
                                      approval__stage__experiment__status=ExperimentStatus.RUNNING)
        .filter(Q(delivery_attempts__lt=limit) | Q(reminded_at__isnull=False, reminder_delivery_attempts__lt=limit))
        .filter(Q(redelivery_claimed_at__isnull=True) | Q(redelivery_claimed_at__lte=now - notifications.DELIVERY_LEASE))
        .select_related("approval__stage__experiment__agent", "approval__stage__experiment__treatment", "approval__requested_by")
    )
    sent = 0
    # No cut: a running experiment has at most one pending request, so these are few — and a cut taken
    # before the failed ones are picked out could leave a failed notice behind it for ever.
    for notice in candidates:
        due = [(reminder, deliveries_field, attempts_field)
               for reminder, deliveries_field, attempts_field in ((False, "deliveries", "delivery_attempts"),
                                                                   (True, "reminder_deliveries", "reminder_delivery_attempts"))
               if _failed(getattr(notice, deliveries_field)) and getattr(notice, attempts_field) < limit]
        if not due:
            continue
        # The claim: one short UPDATE, so no lock is held while the mail server and the webhook answer.
        claimed = ApprovalNotice.objects.filter(pk=notice.pk, redelivery_claimed_at=notice.redelivery_claimed_at).update(
            redelivery_claimed_at=now)
        if not claimed:
            continue  # another sweep took it
        updates: dict[str, Any] = {"redelivery_claimed_at": None}
        for reminder, deliveries_field, attempts_field in due:
            before = getattr(notice, deliveries_field)
            channels = notifications.undelivered(_channels(notice.recipients), before)
            results = notifications.deliver(_notice(notice.approval, reminder=reminder), channels)
            updates[deliveries_field] = notifications.merged(before, results)
            updates[attempts_field] = getattr(notice, attempts_field) + 1
        ApprovalNotice.objects.filter(pk=notice.pk).update(**updates)
        sent += 1
    return sent


def launch_report_week(now: datetime) -> str:
    """The ISO week of `now` in local time, 'YYYY-Www': the key of its weekly report."""
    year, week, _ = timezone.localdate(now).isocalendar()
    return f"{year}-W{week:02d}"


def launch_report_lock_key(week: str) -> int:
    """The worker-lock key of a week's report (genesis.locks): 'YYYY-Www' as YYYYWW."""
    return int(week.replace("-W", ""))


def launch_report_send(*, now: datetime | None = None) -> dict[str, str]:
    """Make the Go/No-Go report and send it (summary in the text, markdown and HTML attached) — once per
    ISO week however often beat fires: a standby beat that takes over from a killed one sends again
    what that beat sent since it last saved its schedule. The sender holds the week's worker lock
    (genesis.locks, a session lock that goes with a killed worker's connection) while it claims, builds
    and sends: a message delivered again while it is alive leaves it to that worker; one redelivered
    because it died (acks_late) finds the week claimed, unsent and its lock free, and sends it. The lock
    was needed: a claim alone, left by a worker killed after claiming, made the redelivery seconds later
    leave the week to a dead worker, and beat fires weekly — the week's report was lost. Off PostgreSQL
    no lock tells a live worker from a dead one: a claim younger than the task time limit is left alone.
    Returns the channels' results, or those of the week's report already sent ({} while another worker
    sends it)."""
    now = now or timezone.now()
    week = launch_report_week(now)
    with worker_lock(LAUNCH_REPORT_LOCK_NAMESPACE, launch_report_lock_key(week)) as mine:
        if not mine:
            logger.info("launch report of %s is being sent by another worker; not sending it again", week)
            return {}
        return _launch_report_send_locked(now=now, week=week)


def _launch_report_send_locked(*, now: datetime, week: str) -> dict[str, str]:
    claimed_at = timezone.now()
    with transaction.atomic():
        row, created = WeeklyLaunchReport.objects.select_for_update().get_or_create(
            week=week, defaults={"claimed_at": claimed_at})
        if not created:
            stale_before = claimed_at - timedelta(seconds=settings.CELERY_TASK_TIME_LIMIT)
            live_claim = connection.vendor != "postgresql" and row.claimed_at > stale_before
            if row.sent_at is not None or live_claim:
                logger.info("launch report of %s already %s; not sending it again",
                            week, "sent" if row.sent_at else "being sent by another worker")
                return dict(row.deliveries)
            row.claimed_at = claimed_at
            row.save(update_fields=["claimed_at"])
    entries = launch_report_facts()
    markdown = launch_report.render_markdown(entries, generated_at=now)
    judged = [(facts["agent"], launch_report.judge(facts).decision) for facts in entries]
    day = timezone.localdate(now)  # the day of the week it is named by, as a daily cost report's
    summary = "; ".join(f"{agent}: {decision}" for agent, decision in judged if decision) or "no agent has a candidate"
    notice = notifications.Notice(
        subject=f"[Genesis] Go/No-Go report {day:%Y-%m-%d}: {'all GO' if launch_report.all_go(entries) else 'not all GO'}",
        text=summary,
        attachments=(
            notifications.Attachment(f"launch-report-{day:%Y-%m-%d}.md", markdown, "text/markdown"),
            notifications.Attachment(f"launch-report-{day:%Y-%m-%d}.html",
                                     launch_report.render_html(entries, generated_at=now), "text/html"),
        ),
    )
    deliveries = notifications.deliver(notice, notifications.configured_channels())
    WeeklyLaunchReport.objects.filter(pk=row.pk, claimed_at=claimed_at).update(sent_at=timezone.now(), deliveries=deliveries)
    return deliveries
