"""Alert delivery: every configured channel, failures kept on the alert and retried, never lost."""

from __future__ import annotations

import logging
from decimal import Decimal

import pytest

from costs.models import BudgetAlert
from costs.services import MAX_ALERT_DELIVERY_ATTEMPTS, budget_alert_deliver, budget_alerts_redeliver, cost_record

pytestmark = pytest.mark.django_db


@pytest.fixture
def alert(qa_agent, default_budget):  # type: ignore[no-untyped-def]
    cost_record(agent=qa_agent, operation="benchmark", amount_usd=Decimal("8"), idempotency_key="cross-25")
    return BudgetAlert.objects.get()


def test_an_alert_goes_to_the_log_email_and_webhook_once(alert, alert_channels, mailoutbox, caplog):
    with caplog.at_level(logging.WARNING, logger="genesis.costs.alerts"):
        delivered = budget_alert_deliver(alert_id=alert.pk)
    assert (delivered.delivery, delivered.deliveries) == ("delivered", {"log": "ok", "email": "ok", "slack": "ok"})
    assert delivered.delivered_at is not None
    subject = "[Genesis] WARNING: budget 'default' at 25 %"
    assert [m.subject for m in mailoutbox] == [subject] and mailoutbox[0].to == ["finance@example.com"]
    assert "$8.00 of $30.00 spent" in mailoutbox[0].body and "Hard limit is on" in mailoutbox[0].body
    assert alert_channels.texts() == [f"*{subject}*\n{mailoutbox[0].body}"]
    assert [r.levelno for r in caplog.records if subject in r.getMessage()] == [logging.WARNING]
    budget_alert_deliver(alert_id=alert.pk)  # already delivered: nothing is sent again
    assert len(mailoutbox) == 1 and len(alert_channels.texts()) == 1


def test_a_failing_webhook_is_recorded_and_only_it_is_retried(alert, alert_channels, mailoutbox):
    alert_channels.status = 503
    first = budget_alert_deliver(alert_id=alert.pk)
    assert first.delivery == "pending" and first.delivery_attempts == 1
    assert first.deliveries["email"] == "ok"
    assert first.deliveries["slack"].startswith("failed: RuntimeError: webhook answered HTTP 503")
    alert_channels.status = 200
    assert budget_alerts_redeliver(older_than_seconds=0) == 1
    alert.refresh_from_db()
    assert (alert.delivery, alert.delivery_attempts, alert.deliveries["slack"]) == ("delivered", 2, "ok")
    assert len(mailoutbox) == 1  # email already had it
    assert len(alert_channels.texts()) == 2  # the failed POST and the retry


def test_after_the_last_attempt_the_alert_is_kept_as_failed(alert, alert_channels):
    alert_channels.status = 500
    for _ in range(MAX_ALERT_DELIVERY_ATTEMPTS):
        budget_alert_deliver(alert_id=alert.pk)
    alert.refresh_from_db()
    assert (alert.delivery, alert.delivery_attempts) == ("failed", MAX_ALERT_DELIVERY_ATTEMPTS)
    assert budget_alerts_redeliver(older_than_seconds=0) == 0
    assert BudgetAlert.objects.filter(pk=alert.pk).exists()


def test_alert_enqueues_its_delivery_only_after_commit(qa_agent, default_budget, django_capture_on_commit_callbacks):
    with django_capture_on_commit_callbacks(execute=False) as callbacks:
        cost_record(agent=qa_agent, operation="benchmark", amount_usd=Decimal("8"), idempotency_key="cross")
        assert BudgetAlert.objects.count() == 1
    assert len(callbacks) == 1  # one alert, one delivery, run when the entry and alert are committed
