"""Approvers are told about a stage request once, when it can be approved (its holds clear), with a
link to the approve form, and reminded once after GENESIS_APPROVAL_REMINDER_HOURS; the weekly report
goes to the alert channels."""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta

import pytest
from django.core import mail
from django.db import connection
from django.utils import timezone

from costs.services import MAX_ALERT_DELIVERY_ATTEMPTS
from experiments.services import experiment_start, stage_approve, stage_request_advance
from genesis.locks import lock_is_free
from genesis.schedules import DEFAULT_SCHEDULES
from launch import services
from launch.models import ApprovalNotice, WeeklyLaunchReport
from launch.services import (
    LAUNCH_REPORT_LOCK_NAMESPACE,
    approval_notices_redeliver,
    approval_requests_notify,
    launch_report_lock_key,
    launch_report_send,
    launch_report_week,
)
from tests.costs.test_notifications import unused_port, use_channels
from tests.experiments.factories import draft_experiment, feed, person
from tests.genesis.test_locks import other_session

pytestmark = pytest.mark.django_db


def test_a_request_is_announced_once_and_reminded_once(settings):
    use_channels(settings)  # no alert email list, no webhook: the approvers' email only
    settings.GENESIS_APPROVAL_REMINDER_HOURS = 2
    starter = person("starter", "add_experiment", "start_experiment", "request_stage", "approve_stage")
    approver = person("approver", "approve_stage")
    person("bystander", "view_experiment")
    experiment = experiment_start(experiment=draft_experiment("qa_agent", actor=starter), actor=starter)
    stage_request_advance(experiment=experiment, actor=starter, note="numbers look fine")
    # Requested while the stage still waits for samples: nobody can approve it yet, so nobody is told.
    assert approval_requests_notify() == {"notified": 0, "reminded": 0, "waiting_for_holds": 1}
    assert mail.outbox == []
    feed(experiment, arm="treatment", n=20, success_rate=0.9, seed=1)
    feed(experiment, arm="control", n=180, success_rate=0.9, seed=2)

    assert approval_requests_notify() == {"notified": 1, "reminded": 0, "waiting_for_holds": 0}
    assert approval_requests_notify() == {"notified": 0, "reminded": 0, "waiting_for_holds": 0}
    assert len(mail.outbox) == 1
    message = mail.outbox[0]
    # Only people who may approve it — not the starter (four-eyes), not someone without the permission.
    assert message.to == [approver.email]
    assert "approve qa_agent-exp → 25 %" in message.subject
    assert f"/admin/experiments/experiment/{experiment.pk}/change/#actions" in message.body
    assert ApprovalNotice.objects.get().deliveries == {"log": "ok", "email": "ok"}

    later = timezone.now() + timedelta(hours=3)
    assert approval_requests_notify(now=later)["reminded"] == 1
    assert approval_requests_notify(now=later + timedelta(hours=5))["reminded"] == 0
    assert len(mail.outbox) == 2 and mail.outbox[1].subject.startswith("[Genesis] reminder: approve")


def test_a_notice_the_mail_server_refused_is_sent_again_by_the_redelivery_sweep(settings):
    # Was: deliveries {'log': 'ok', 'email': 'failed: …'} and never sent again.
    use_channels(settings)
    settings.GENESIS_APPROVAL_REMINDER_HOURS = 2
    starter = person("starter", "add_experiment", "start_experiment", "request_stage")
    approver = person("approver", "approve_stage")
    experiment = experiment_start(experiment=draft_experiment("qa_agent", actor=starter), actor=starter)
    stage_request_advance(experiment=experiment, actor=starter)
    feed(experiment, arm="treatment", n=20, success_rate=0.9, seed=1)
    feed(experiment, arm="control", n=180, success_rate=0.9, seed=2)
    # A real SMTP connection to a port nobody listens on: refused.
    settings.EMAIL_BACKEND = "django.core.mail.backends.smtp.EmailBackend"
    settings.EMAIL_HOST, settings.EMAIL_PORT, settings.EMAIL_TIMEOUT = "127.0.0.1", unused_port(), 2
    approval_requests_notify()
    notice = ApprovalNotice.objects.get()
    assert notice.deliveries["log"] == "ok" and notice.deliveries["email"].startswith("failed: ConnectionRefusedError")
    assert approval_notices_redeliver() == 1  # still refused: counted, kept failed
    notice.refresh_from_db()
    assert notice.delivery_attempts == 2 and notice.deliveries["email"].startswith("failed:")

    settings.EMAIL_BACKEND = "django.core.mail.backends.locmem.EmailBackend"  # the mail server is back
    assert approval_notices_redeliver() == 1
    notice.refresh_from_db()
    assert notice.deliveries == {"log": "ok", "email": "ok"} and notice.delivery_attempts == 3
    assert [message.to for message in mail.outbox] == [[approver.email]]  # only the failed channel, once
    assert approval_notices_redeliver() == 0  # nothing failed any more


def test_redelivery_stops_after_the_budget_alerts_attempt_limit_and_for_a_decided_request(settings):
    use_channels(settings)
    starter = person("starter", "add_experiment", "start_experiment", "request_stage")
    approver = person("approver", "approve_stage")
    experiment = experiment_start(experiment=draft_experiment("qa_agent", actor=starter), actor=starter)
    approval = stage_request_advance(experiment=experiment, actor=starter)
    feed(experiment, arm="treatment", n=20, success_rate=0.9, seed=1)
    feed(experiment, arm="control", n=180, success_rate=0.9, seed=2)
    settings.EMAIL_BACKEND = "django.core.mail.backends.smtp.EmailBackend"
    settings.EMAIL_HOST, settings.EMAIL_PORT, settings.EMAIL_TIMEOUT = "127.0.0.1", unused_port(), 2
    approval_requests_notify()
    for _ in range(MAX_ALERT_DELIVERY_ATTEMPTS - 1):
        assert approval_notices_redeliver() == 1
    assert ApprovalNotice.objects.get().delivery_attempts == MAX_ALERT_DELIVERY_ATTEMPTS
    assert approval_notices_redeliver() == 0  # given up, as a budget alert is

    ApprovalNotice.objects.update(delivery_attempts=1)
    stage_approve(stage=approval.stage, actor=approver)  # decided meanwhile: nobody needs telling
    assert approval_notices_redeliver() == 0


def test_the_redelivery_runs_on_the_budget_alerts_schedule():
    schedules = {entry.task: entry for entry in DEFAULT_SCHEDULES}
    assert schedules["launch.redeliver_approval_notices"].every_seconds == schedules["costs.redeliver_budget_alerts"].every_seconds


def test_the_weekly_report_goes_through_the_cost_report_channels(seeded_demo, settings):
    use_channels(settings, email_to=("ops@example.com",))
    deliveries = launch_report_send()
    assert deliveries == {"log": "ok", "email": "ok"}
    message = mail.outbox[-1]
    assert message.to == ["ops@example.com"] and "Go/No-Go report" in message.subject
    assert [name for name, _, _ in message.attachments][0].startswith("launch-report-")



def test_the_weekly_report_is_named_by_the_local_day_it_is_sent_on(seeded_demo, settings):
    # Beat fires at 07:00 on Monday in TIME_ZONE: in Tokyo that is Sunday 22:00 UTC. The subject and the
    # files named Sunday while the week key said Monday's week.
    settings.TIME_ZONE = "Asia/Tokyo"
    use_channels(settings, email_to=("ops@example.com",))
    monday_in_tokyo = datetime(2027, 1, 3, 22, 0, tzinfo=UTC)
    assert launch_report_send(now=monday_in_tokyo) == {"log": "ok", "email": "ok"}
    message = mail.outbox[-1]
    assert message.subject.startswith("[Genesis] Go/No-Go report 2027-01-04: ")
    assert [name for name, _, _ in message.attachments] == ["launch-report-2027-01-04.md", "launch-report-2027-01-04.html"]
    assert WeeklyLaunchReport.objects.get().week == "2027-W01"

def test_the_weekly_report_goes_out_once_a_week_however_often_beat_fires(seeded_demo, settings):
    """A standby beat taking over from a killed one fires again what that beat fired since it last saved
    its schedule: the second send of the same ISO week sends nothing; the next week's goes out."""
    use_channels(settings, email_to=("ops@example.com",))
    monday = timezone.make_aware(datetime(2026, 11, 30, 7, 0))
    assert launch_report_send(now=monday) == {"log": "ok", "email": "ok"}
    assert launch_report_send(now=monday + timedelta(minutes=1)) == {"log": "ok", "email": "ok"}  # what was sent
    assert launch_report_send(now=monday + timedelta(days=6, hours=16)) == {"log": "ok", "email": "ok"}  # Sunday
    assert len(mail.outbox) == 1
    assert launch_report_send(now=monday + timedelta(days=7)) == {"log": "ok", "email": "ok"}
    assert len(mail.outbox) == 2
    assert sorted(WeeklyLaunchReport.objects.values_list("week", flat=True)) == ["2026-W49", "2026-W50"]


def test_a_weekly_report_claimed_by_a_killed_worker_is_sent_by_the_redelivered_task(seeded_demo, settings):
    """Third review: a worker killed after claiming the week left a fresh claim; the message redelivered
    seconds later (acks_late) left the week to that dead worker, and beat fires weekly: the report was lost.
    A live sender holds the week's worker lock; a dead one's went with its connection."""
    use_channels(settings, email_to=("ops@example.com",))
    monday = timezone.make_aware(datetime(2026, 11, 30, 7, 0))
    week = launch_report_week(monday)
    WeeklyLaunchReport.objects.create(week=week, claimed_at=timezone.now())  # claimed, unsent, seconds ago
    if connection.vendor == "postgresql":
        # While the claimant is alive (it holds the week's lock), a duplicate message leaves the week to it.
        with other_session() as live_worker:
            live_worker.execute("SELECT pg_advisory_lock(%s, %s)", (LAUNCH_REPORT_LOCK_NAMESPACE, launch_report_lock_key(week)))
            assert launch_report_send(now=monday) == {}
            assert mail.outbox == [] and WeeklyLaunchReport.objects.get().sent_at is None
        # It dies (its connection, and the lock, gone — the server ends the session a moment after the
        # client went): the redelivered message sends the week, once.
        for _ in range(100):
            if lock_is_free(LAUNCH_REPORT_LOCK_NAMESPACE, launch_report_lock_key(week)):
                break
            time.sleep(0.05)
        assert launch_report_send(now=monday) == {"log": "ok", "email": "ok"}
    else:  # no lock off PostgreSQL: the claim is taken over once older than the task time limit
        assert launch_report_send(now=monday) == {}
        WeeklyLaunchReport.objects.update(claimed_at=timezone.now() - timedelta(seconds=settings.CELERY_TASK_TIME_LIMIT + 1))
        assert launch_report_send(now=monday) == {"log": "ok", "email": "ok"}
    assert launch_report_send(now=monday) == {"log": "ok", "email": "ok"}  # what was sent, not sent again
    assert len(mail.outbox) == 1
    assert WeeklyLaunchReport.objects.get().sent_at is not None


def test_a_worker_killed_while_building_the_report_leaves_it_to_the_redelivered_task(seeded_demo, settings, monkeypatch):
    use_channels(settings, email_to=("ops@example.com",))
    monday = timezone.make_aware(datetime(2026, 11, 30, 7, 0))

    class WorkerKilled(BaseException):
        pass

    def killed() -> None:
        raise WorkerKilled  # the pool child dies (OOM, SIGKILL) after the claim, before delivery

    real = services.launch_report_facts
    monkeypatch.setattr(services, "launch_report_facts", killed)
    with pytest.raises(WorkerKilled):
        launch_report_send(now=monday)
    monkeypatch.setattr(services, "launch_report_facts", real)
    assert WeeklyLaunchReport.objects.get().sent_at is None
    assert launch_report_send(now=monday) == {"log": "ok", "email": "ok"}  # redelivered at once
    assert len(mail.outbox) == 1
