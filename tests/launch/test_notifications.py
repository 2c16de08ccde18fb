"""Approvers are told about a stage request once, when it can be approved (its holds clear), with a
link to the approve form, and reminded once after GENESIS_APPROVAL_REMINDER_HOURS; the weekly report
goes to the alert channels."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.core import mail
from django.utils import timezone

from experiments.services import experiment_start, stage_request_advance
from launch.models import ApprovalNotice
from launch.services import approval_requests_notify, launch_report_send
from tests.costs.test_notifications import use_channels
from tests.experiments.factories import draft_experiment, feed, person

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


def test_the_weekly_report_goes_through_the_cost_report_channels(seeded_demo, settings):
    use_channels(settings, email_to=("ops@example.com",))
    deliveries = launch_report_send()
    assert deliveries == {"log": "ok", "email": "ok"}
    message = mail.outbox[-1]
    assert message.to == ["ops@example.com"] and "Go/No-Go report" in message.subject
    assert [name for name, _, _ in message.attachments][0].startswith("launch-report-")
