"""Alert delivery: every configured channel, failures kept on the alert and retried, never lost."""

from __future__ import annotations

import contextlib
import io
import json
import logging
import socket
from decimal import Decimal
from logging.config import dictConfig

import pytest
from django.db import DatabaseError, connection, transaction

from costs.models import BudgetAlert, CostReport
from costs.services import (
    MAX_ALERT_DELIVERY_ATTEMPTS,
    budget_alert_deliver,
    budget_alerts_redeliver,
    budget_upsert,
    cost_record,
    cost_report_run,
)
from genesis.logging import logging_config
from tests.costs.factories import BudgetAlertFactory

SECRET = "T0SECRET-xoxb-9f8e7d6c"


def use_channels(settings, *, slack_webhook: str = "", email_to: tuple[str, ...] = ()) -> None:
    settings.GENESIS = settings.GENESIS.model_copy(update={"alerting": settings.GENESIS.alerting.model_copy(
        update={"slack_webhook": slack_webhook, "email_to": list(email_to)})})


def unused_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@pytest.fixture
def alert(db, qa_agent, default_budget):
    cost_record(agent=qa_agent, operation="benchmark", amount_usd=Decimal("8"), idempotency_key="cross-25")
    return BudgetAlert.objects.get()


def test_an_alert_goes_to_the_log_email_and_webhook_once(alert, alert_channels, mailoutbox, caplog):
    with caplog.at_level(logging.WARNING, logger="genesis.notifications"):
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
    assert first.deliveries["slack"] == f"failed: WebhookRefused from webhook host 127.0.0.1:{alert_channels.server.server_address[1]}, HTTP 503"
    alert_channels.status = 200
    assert budget_alerts_redeliver(older_than_seconds=0) == 1
    alert.refresh_from_db()
    assert (alert.delivery, alert.delivery_attempts, alert.deliveries["slack"]) == ("delivered", 2, "ok")
    assert len(mailoutbox) == 1  # email already had it
    assert len(alert_channels.texts()) == 2  # the failed POST and the retry


def test_a_failed_attempt_says_which_channels_and_that_the_redelivery_tries_again(alert, alert_channels, caplog):
    alert_channels.status = 503
    with caplog.at_level(logging.INFO, logger="costs.services"):
        budget_alert_deliver(alert_id=alert.pk)
    [line] = [r for r in caplog.records if r.name == "costs.services"]
    assert line.levelno == logging.WARNING
    assert line.getMessage() == (
        f"budget alert {alert.pk} not delivered through slack (attempt 1 of {MAX_ALERT_DELIVERY_ATTEMPTS}); "
        "beat's redelivery tries again within 300 s"
    )


def test_after_the_last_attempt_the_alert_is_kept_as_failed(alert, alert_channels):
    alert_channels.status = 500
    for _ in range(MAX_ALERT_DELIVERY_ATTEMPTS):
        budget_alert_deliver(alert_id=alert.pk)
    alert.refresh_from_db()
    assert (alert.delivery, alert.delivery_attempts) == ("failed", MAX_ALERT_DELIVERY_ATTEMPTS)
    assert budget_alerts_redeliver(older_than_seconds=0) == 0
    assert BudgetAlert.objects.filter(pk=alert.pk).exists()


@pytest.mark.django_db
def test_alert_enqueues_its_delivery_only_after_commit(qa_agent, default_budget, django_capture_on_commit_callbacks):
    with django_capture_on_commit_callbacks(execute=False) as callbacks:
        cost_record(agent=qa_agent, operation="benchmark", amount_usd=Decimal("8"), idempotency_key="cross")
        assert BudgetAlert.objects.count() == 1
    assert len(callbacks) == 1  # one alert, one delivery, run when the entry and alert are committed


def test_alerts_raised_together_go_out_lowest_threshold_first(qa_agent, default_budget, alert_channels, mailoutbox):
    # Not committed, so not enqueued: the sweep sends them, as after a broker outage.
    cost_record(agent=qa_agent, operation="benchmark", amount_usd=Decimal("31"), idempotency_key="all-at-once")
    assert budget_alerts_redeliver(older_than_seconds=0) == 4
    assert [m.subject for m in mailoutbox] == [
        "[Genesis] WARNING: budget 'default' at 25 %", "[Genesis] CRITICAL: budget 'default' at 50 %",
        "[Genesis] EMERGENCY: budget 'default' at 83 %", "[Genesis] EMERGENCY: budget 'default' exhausted"]
    assert "Budget 'default' (all agents, all time) is exhausted (100 %): $31.00 of $30.00 spent." in mailoutbox[3].body


def test_alerts_raised_together_are_delivered_by_one_task_in_order(qa_agent, default_budget, django_capture_on_commit_callbacks):
    with django_capture_on_commit_callbacks(execute=False) as callbacks:
        cost_record(agent=qa_agent, operation="benchmark", amount_usd=Decimal("20"), idempotency_key="two")
    alerts = list(BudgetAlert.objects.order_by("threshold_percent"))
    assert [a.threshold_percent for a in alerts] == [25, 50]
    assert [callback.args for callback in callbacks] == [([alerts[0].pk, alerts[1].pk],)]


@pytest.mark.parametrize("failure", ["answers 404", "unreachable"])
def test_a_failing_webhook_keeps_its_url_out_of_deliveries_and_logs(alert, settings, webhook, caplog, failure):
    """The webhook URL is a secret. A failure is recorded (and shown in the admin) as exception type,
    host and HTTP status only — not the URL's path, query or user info, and not the response body,
    which here repeats the path the way proxies' error pages do."""
    if failure == "answers 404":
        webhook.status, port = 404, webhook.server.server_address[1]
        expected = f"failed: WebhookRefused from webhook host 127.0.0.1:{port}, HTTP 404"
    else:
        port = unused_port()  # requests' ConnectionError text names the whole URL
        expected = f"failed: ConnectionError from webhook host 127.0.0.1:{port}"
    use_channels(settings, slack_webhook=f"http://hook:{SECRET}@127.0.0.1:{port}/services/T000/{SECRET}?token={SECRET}")
    # INFO, the level the deployed logging uses (urllib3 logs request lines at DEBUG only).
    with caplog.at_level(logging.INFO):
        delivered = budget_alert_deliver(alert_id=alert.pk)
        report = cost_report_run(report_id=CostReport.objects.create().pk)
    assert (delivered.deliveries, report.deliveries) == ({"log": "ok", "slack": expected}, {"log": "ok", "slack": expected})
    assert "could not deliver" in caplog.text and f"127.0.0.1:{port}" in caplog.text
    stored = json.dumps([list(BudgetAlert.objects.values()), list(CostReport.objects.values("deliveries", "error"))], default=str)
    assert SECRET not in stored
    assert SECRET not in caplog.text


@pytest.mark.skipif(connection.vendor != "postgresql", reason="probes the row lock with FOR UPDATE NOWAIT (PostgreSQL)")
def test_channels_are_called_with_the_alert_claimed_but_not_locked(transactional_db, settings, webhook):
    """Delivery claims the alert in a short transaction and calls the channels outside any, so the
    alert's row (on SQLite, the whole database) is not locked while a webhook or mail server is
    slow; a second worker arriving meanwhile sees the claim and sends nothing."""
    alert = BudgetAlertFactory(budget=budget_upsert(name="default", amount_usd="30"))
    use_channels(settings, slack_webhook=webhook.url)
    seen_while_sending: list[object] = []

    def while_sending() -> None:  # in the webhook server's thread, with its own database connection
        try:
            try:
                with transaction.atomic():
                    BudgetAlert.objects.select_for_update(nowait=True).get(pk=alert.pk)
                seen_while_sending.append("row free")
            except DatabaseError as exc:
                seen_while_sending.append(f"row locked ({type(exc).__name__})")
            second = budget_alert_deliver(alert_id=alert.pk)
            seen_while_sending.append((second.delivery, second.delivery_claimed_at is not None))
        finally:
            connection.close()

    webhook.on_request = while_sending
    delivered = budget_alert_deliver(alert_id=alert.pk)
    assert seen_while_sending == ["row free", ("pending", True)]
    assert (delivered.delivery, delivered.deliveries, delivered.delivery_attempts) == ("delivered", {"log": "ok", "slack": "ok"}, 1)
    assert delivered.delivery_claimed_at is None
    assert len(webhook.texts()) == 1


@pytest.mark.django_db
def test_a_claimed_alert_is_left_alone_until_its_claim_runs_out(settings, webhook):
    """The sweep skips an alert another worker is sending, and takes over one whose worker died."""
    from datetime import timedelta

    from django.utils import timezone

    from costs.services import ALERT_DELIVERY_LEASE

    use_channels(settings, slack_webhook=webhook.url)
    budget = budget_upsert(name="default", amount_usd="30")
    alert = BudgetAlertFactory(budget=budget, delivery_claimed_at=timezone.now())
    assert budget_alerts_redeliver(older_than_seconds=0) == 0
    assert budget_alert_deliver(alert_id=alert.pk).delivery == "pending" and webhook.texts() == []
    BudgetAlert.objects.filter(pk=alert.pk).update(delivery_claimed_at=timezone.now() - ALERT_DELIVERY_LEASE - timedelta(seconds=1))
    assert budget_alerts_redeliver(older_than_seconds=0) == 1
    alert.refresh_from_db()
    assert (alert.delivery, alert.delivery_claimed_at, len(webhook.texts())) == ("delivered", None, 1)


def test_at_debug_the_logs_never_carry_the_webhook_token(alert, settings, webhook):
    """With GENESIS_LOG_LEVEL=DEBUG (the deployed configuration, root at DEBUG, in both formats), posting an
    alert to a webhook whose path is its token does not print the token: urllib3 logs the request line
    ('"POST /services/T000/<token> HTTP/1.1" 200') at DEBUG, so it is held at WARNING."""
    port = webhook.server.server_address[1]
    use_channels(settings, slack_webhook=f"http://127.0.0.1:{port}/services/T000/{SECRET}")
    printed = io.StringIO()
    try:
        with contextlib.redirect_stderr(printed):  # the console handler writes to the stderr of when it is made
            for format in ("text", "json"):
                BudgetAlert.objects.filter(pk=alert.pk).update(delivery="pending", deliveries={})
                dictConfig(logging_config(level="DEBUG", format=format))
                assert logging.getLogger().isEnabledFor(logging.DEBUG)
                assert budget_alert_deliver(alert_id=alert.pk).deliveries["slack"] == "ok"
    finally:
        dictConfig(settings.LOGGING)
    # Printed where the test reads it, in both formats: the alert's own WARNING line.
    assert "WARNING genesis.notifications [Genesis]" in printed.getvalue()
    assert '"logger": "genesis.notifications"' in printed.getvalue()
    assert SECRET not in printed.getvalue() and len(webhook.texts()) == 2
