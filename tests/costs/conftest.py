"""Fixtures of the costs tests: agents, the demo base model's price, budgets made by the service."""

from __future__ import annotations

from decimal import Decimal

import pytest

from costs.services import budget_upsert
from tests.costs.factories import PriceTableFactory
from tests.factories import AgentFactory, UserFactory


@pytest.fixture
def qa_agent(db):
    return AgentFactory(slug="qa_agent")


@pytest.fixture
def legal_agent(db):
    return AgentFactory(slug="legal_agent")


@pytest.fixture
def base_price(db):
    return PriceTableFactory()


@pytest.fixture
def default_budget(db):
    """$30, all agents, all time, 25/50/83 %, hard limit on — what seed_demo makes."""
    return budget_upsert(name="default", amount_usd=Decimal("30"), period="total", hard_limit=True)


@pytest.fixture
def overrider(db):
    """A staff user holding costs.override_budget (and nothing else)."""
    from django.contrib.auth.models import Permission

    user = UserFactory(username="finance_lead")
    user.user_permissions.add(Permission.objects.get(codename="override_budget", content_type__app_label="costs"))
    return user


class WebhookRecorder:
    """A real HTTP server standing in for a Slack-compatible webhook: it keeps every JSON body it is
    sent and answers `status` (200 unless a test makes it fail). A failure's body repeats the request
    path, as many proxies' error pages do. `on_request`, when set, runs in the server's thread while
    the sender waits for the answer."""

    def __init__(self) -> None:
        import http.server
        import json
        import threading

        recorder = self
        self.bodies: list[dict[str, object]] = []
        self.status = 200
        self.on_request = None
        self._lock = threading.Lock()

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802 - http.server's naming
                length = int(self.headers.get("Content-Length") or 0)
                body = json.loads(self.rfile.read(length) or b"{}")
                with recorder._lock:
                    recorder.bodies.append(body)
                    status = recorder.status
                if recorder.on_request is not None:
                    recorder.on_request()
                self.send_response(status)
                self.end_headers()
                self.wfile.write(b"ok" if status < 300 else f"upstream trouble at {self.path}".encode())

            def log_message(self, *args: object) -> None:
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/hooks/genesis"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def texts(self) -> list[str]:
        with self._lock:
            return [str(body.get("text", "")) for body in self.bodies]

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def webhook():
    recorder = WebhookRecorder()
    yield recorder
    recorder.close()


@pytest.fixture
def alert_channels(settings, webhook):
    """In this process, alerts go to the log, email (Django's test outbox) and the webhook above."""
    settings.GENESIS = settings.GENESIS.model_copy(
        update={"alerting": settings.GENESIS.alerting.model_copy(update={"slack_webhook": webhook.url, "email_to": ["finance@example.com"]})}
    )
    return webhook
