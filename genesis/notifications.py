"""The one way Genesis tells people something: the log (always), email through Django's mail (when
`alerting.email_to` / GENESIS_ALERT_EMAILS names recipients) and a Slack-compatible webhook (when
`alerting.slack_webhook` / GENESIS_SLACK_WEBHOOK is set). Budget alerts, cost reports, the launch
console's approval requests and reports, and rollback alerts all go through here.

Two ways to send, for two kinds of caller:

* `deliver` never raises: a channel that fails is logged and reported back as "failed: …", and the
  caller keeps the alert or report row with that result, so nothing is lost and a later sweep can
  retry only the channels that failed (budget alerts, reports).
* `webhook_post` is for a Celery task that retries by itself (the rollback alert): it raises
  WebhookUnavailable when another try may succeed (connection error, timeout, 429, 5xx) and logs a
  refusal that retrying cannot fix (any other 4xx).

This module belongs to the genesis base layer: it imports nothing from the apps.

A webhook URL is a secret (whoever has it can post to the channel), so a webhook failure is described
by the exception's type, the host and the HTTP status only — never the exception text, which for
`requests` errors contains the URL path, nor the response body."""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Protocol
from urllib.parse import urlsplit

import requests
from django.conf import settings
from django.core.mail import EmailMessage

logger = logging.getLogger(__name__)

WEBHOOK_TIMEOUT_SECONDS = 5.0
OK = "ok"


@dataclass(frozen=True)
class Attachment:
    filename: str
    content: str
    mimetype: str


@dataclass(frozen=True)
class Notice:
    subject: str
    text: str
    severity: str = "info"  # warning, critical, emergency for budget alerts
    attachments: tuple[Attachment, ...] = field(default_factory=tuple)
    # Extra top-level keys of the webhook's JSON body, for programs reading the channel (the
    # rollback alert's experiment, agent and reason_code); other channels ignore them.
    webhook_fields: Mapping[str, str] = field(default_factory=dict)


class Channel(Protocol):
    name: str

    def send(self, notice: Notice) -> None: ...

    def describe_failure(self, exc: Exception) -> str:
        """What may be logged and stored about a failed send (it is shown in the admin)."""
        ...


def _describe_exception(exc: Exception) -> str:
    return f"{type(exc).__name__}: {exc}"


_LOG_LEVELS = {"warning": logging.WARNING, "critical": logging.ERROR, "emergency": logging.CRITICAL}


class LogChannel:
    name = "log"
    describe_failure = staticmethod(_describe_exception)

    def send(self, notice: Notice) -> None:
        logger.log(_LOG_LEVELS.get(notice.severity, logging.INFO), "%s — %s", notice.subject, notice.text)


class EmailChannel:
    """Django's mail backend; host, port, credentials, TLS and timeout come from the EMAIL_* settings."""

    name = "email"
    describe_failure = staticmethod(_describe_exception)

    def __init__(self, recipients: list[str]) -> None:
        self.recipients = recipients

    def send(self, notice: Notice) -> None:
        message = EmailMessage(subject=notice.subject, body=notice.text, to=self.recipients)
        for attachment in notice.attachments:
            message.attach(attachment.filename, attachment.content, attachment.mimetype)
        message.send(fail_silently=False)


class WebhookRefused(Exception):
    """The webhook answered with an HTTP error status."""

    def __init__(self, status_code: int) -> None:
        super().__init__(f"HTTP {status_code}")
        self.status_code = status_code


class SlackWebhookChannel:
    """POSTs `{"text": …}`, which Slack, Mattermost, Rocket.Chat and Discord's /slack endpoint accept."""

    name = "slack"

    def __init__(self, url: str, timeout: float = WEBHOOK_TIMEOUT_SECONDS) -> None:
        self.url, self.timeout = url, timeout

    @property
    def host(self) -> str:
        """Host and port only: the path and query of a webhook URL are its secret, and the user info
        part would be a password."""
        parts = urlsplit(self.url)
        try:
            port = parts.port
        except ValueError:
            port = None
        return f"{parts.hostname or '?'}{f':{port}' if port else ''}"

    def send(self, notice: Notice) -> None:
        body = {"text": f"*{notice.subject}*\n{notice.text}", **notice.webhook_fields}
        response = requests.post(self.url, json=body, timeout=self.timeout)
        if response.status_code >= 300:
            raise WebhookRefused(response.status_code)

    def describe_failure(self, exc: Exception) -> str:
        status = getattr(exc, "status_code", None)
        if status is None:
            status = getattr(getattr(exc, "response", None), "status_code", None)
        return f"{type(exc).__name__} from webhook host {self.host}" + (f", HTTP {status}" if status else "")


def configured_channels() -> list[Channel]:
    """The channels the settings name, read at call time (the worker and web share the config)."""
    alerting = settings.GENESIS.alerting
    channels: list[Channel] = [LogChannel()]
    if alerting.email_to:
        channels.append(EmailChannel(list(alerting.email_to)))
    if alerting.slack_webhook:
        channels.append(SlackWebhookChannel(alerting.slack_webhook))
    return channels


def deliver(notice: Notice, channels: list[Channel]) -> dict[str, str]:
    """Send through each channel; return {channel: "ok" | "failed: …"}. Never raises."""
    results: dict[str, str] = {}
    for channel in channels:
        try:
            channel.send(notice)
        except Exception as exc:  # noqa: BLE001 - one broken channel must not stop the others
            failure = channel.describe_failure(exc)
            logger.error("could not deliver %r through %s: %s", notice.subject, channel.name, failure)
            results[channel.name] = f"failed: {failure}"[:300]
        else:
            results[channel.name] = OK
    return results


# Redelivery, shared by every row that keeps its `deliveries` (budget alerts, approval notices): a beat
# sweep every REDELIVERY_EVERY_SECONDS sends again through the channels that have not taken it yet, at
# most MAX_DELIVERY_ATTEMPTS times in all. DELIVERY_LEASE is how long a worker may take to send before
# another may try: far above the channels' timeouts (EMAIL_TIMEOUT, WEBHOOK_TIMEOUT_SECONDS), so it only
# runs out when the worker that claimed the row died while sending.
MAX_DELIVERY_ATTEMPTS = 5
DELIVERY_LEASE = timedelta(minutes=5)
REDELIVERY_EVERY_SECONDS = 300


def undelivered(channels: list[Channel], deliveries: Mapping[str, str]) -> list[Channel]:
    """The channels of `channels` that have not taken the notice yet (failed, or configured since)."""
    return [channel for channel in channels if deliveries.get(channel.name) != OK]


def merged(deliveries: Mapping[str, str], results: Mapping[str, str]) -> dict[str, str]:
    """`deliveries` updated by a retry's `results`; a channel that took the notice stays "ok"."""
    return {**deliveries, **{name: result for name, result in results.items() if deliveries.get(name) != OK}}


class WebhookUnavailable(Exception):
    """The webhook could not take a notice right now (worth another try). The message names only the
    host and the status or error type: the webhook URL is a secret (Slack's carries the token), and
    this message ends up in worker logs and retry lines."""


def webhook_post(notice: Notice, *, url: str) -> bool:
    """Post `notice` to the webhook at `url` for a caller that retries (a Celery task with
    autoretry_for=(WebhookUnavailable,)). True when the webhook took it; False when it refused it
    with a 4xx other than 429 (logged: retrying will not help). Raises WebhookUnavailable on a
    connection error, a timeout, a 429 or a 5xx."""
    channel = SlackWebhookChannel(url)
    try:
        channel.send(notice)
    except WebhookRefused as exc:
        if exc.status_code >= 500 or exc.status_code == 429:
            raise WebhookUnavailable(f"alert webhook at {channel.host} answered HTTP {exc.status_code}") from None
        logger.error("the webhook at %s refused %r: HTTP %s", channel.host, notice.subject, exc.status_code)
        return False
    except requests.RequestException as exc:
        # requests' messages carry the full URL; `from None` keeps it out of the traceback too.
        raise WebhookUnavailable(f"alert webhook at {channel.host}: {type(exc).__name__}") from None
    return True
