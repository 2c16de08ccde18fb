"""Chaos review: a cost report requested while the broker was down stayed "pending" forever (the admin
said "queued"), and a daily report whose publish failed was lost (beat records the run first). Beat's
`costs.resend_stranded_reports` sweep (costs/report_sweep.py) makes both up, a bounded number of times."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.utils import timezone
from kombu.exceptions import OperationalError

from costs.models import CostReport
from costs.report_sweep import MAX_REPORT_RESENDS, cost_reports_resend_stranded
from costs.services import cost_report_run
from genesis.schedules import install_default_schedules


@pytest.fixture
def broker(monkeypatch):
    """The broker as `send_task` sees it: `down` refuses every message; `sent` lists those it took."""

    class Broker:
        down = False
        sent: list[tuple[str, tuple]] = []

        def send_task(self, name, args=(), kwargs=None):
            if self.down:
                raise OperationalError("Error 111 connecting to 127.0.0.1:6399. Connection refused.")
            self.sent.append((name, tuple(args)))

    fake = Broker()
    fake.sent = []
    monkeypatch.setattr("genesis.tasks.current_app.send_task", fake.send_task)
    return fake


@pytest.mark.django_db(transaction=True)
def test_generate_now_with_the_broker_down_says_so_and_the_sweep_sends_the_report_once_it_answers(admin_client, broker):
    broker.down = True
    page = admin_client.post("/admin/costs/costreport/generate/", follow=True).content.decode()
    report = CostReport.objects.get()
    assert f"report #{report.pk} is saved but could not be queued" in page.lower() and "queued; a worker" not in page
    assert report.status == CostReport.Status.PENDING

    later = timezone.now() + timedelta(minutes=6)
    assert cost_reports_resend_stranded(now=later)["sent"] == []  # still down: nothing counted
    broker.down = False
    assert cost_reports_resend_stranded(now=timezone.now() + timedelta(minutes=2)) == {"made_up": [], "sent": [], "gave_up": []}
    assert cost_reports_resend_stranded(now=later)["sent"] == [report.pk]
    assert broker.sent == [("costs.run_cost_report", (report.pk,))]
    assert cost_reports_resend_stranded(now=later)["sent"] == []  # the next one waits 5 min more
    assert cost_report_run(report_id=report.pk).status == CostReport.Status.SUCCEEDED

    admin_client.post("/admin/costs/costreport/generate/", follow=True)
    page = admin_client.post("/admin/costs/costreport/generate/", follow=True).content.decode()
    assert "queued; a worker makes it in a moment" in page


@pytest.mark.django_db
def test_resends_are_bounded_then_the_report_fails_with_the_reason_and_a_late_message_still_makes_it(broker, settings):
    now = timezone.now()
    pending = CostReport.objects.create()
    CostReport.objects.filter(pk=pending.pk).update(created_at=now - timedelta(hours=1), resends=MAX_REPORT_RESENDS - 1)
    abandoned = CostReport.objects.create(status=CostReport.Status.RUNNING,
                                          started_at=now - timedelta(seconds=settings.CELERY_TASK_TIME_LIMIT + 60))
    CostReport.objects.filter(pk=abandoned.pk).update(created_at=now - timedelta(hours=1))
    busy = CostReport.objects.create(status=CostReport.Status.RUNNING, started_at=now - timedelta(minutes=10))
    CostReport.objects.filter(pk=busy.pk).update(created_at=now - timedelta(hours=1))

    assert cost_reports_resend_stranded(now=now) == {"made_up": [], "sent": [pending.pk, abandoned.pk], "gave_up": []}
    assert cost_reports_resend_stranded(now=now)["gave_up"] == [pending.pk]
    pending.refresh_from_db()
    assert (pending.status, pending.resends) == (CostReport.Status.FAILED, MAX_REPORT_RESENDS)
    assert "no worker made this report in the 60 min" in pending.error and "Celery worker is running" in pending.error
    assert cost_report_run(report_id=pending.pk).status == CostReport.Status.SUCCEEDED


@pytest.mark.django_db
def test_a_daily_report_beat_fired_but_never_published_is_made_up_once(broker, django_capture_on_commit_callbacks):
    """celery beat marks an entry run before it publishes (celery/beat.py `Scheduler.tick`: `reserve`,
    then `apply_entry`, which only logs a publish error): with the broker down at 00:05 no row was made
    and that day's report was lost."""
    from django_celery_beat.models import PeriodicTask

    install_default_schedules()
    now = timezone.now()
    PeriodicTask.objects.filter(task="costs.daily_cost_report").update(last_run_at=now - timedelta(minutes=2))
    assert cost_reports_resend_stranded(now=now)["made_up"] == []  # its message may still be on its way
    PeriodicTask.objects.filter(task="costs.daily_cost_report").update(last_run_at=now - timedelta(minutes=10))
    with django_capture_on_commit_callbacks(execute=True):
        made_up = cost_reports_resend_stranded(now=now)["made_up"]
    day = timezone.localdate(now - timedelta(minutes=10))
    report = CostReport.objects.get(schedule_key=f"daily:{day.isoformat()}")
    assert made_up == [report.pk] and broker.sent == [("costs.run_cost_report", (report.pk,))]
    assert report.spend_since == (day - timedelta(days=1)).replace(day=1)
    assert cost_reports_resend_stranded(now=now)["made_up"] == []

    report.delete()
    PeriodicTask.objects.filter(task="costs.daily_cost_report").update(enabled=False)  # switched off: nothing to make up
    assert cost_reports_resend_stranded(now=now)["made_up"] == []
