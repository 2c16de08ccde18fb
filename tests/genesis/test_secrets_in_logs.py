"""No API key in any log record, in any mode (issue 18, finding 6): malformed, revoked, unknown and
valid keys sent through the API's authentication on every kind of endpoint, with DEBUG on and off,
and every record any logger emits (down to DEBUG) searched for the key."""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator

import pytest
from django.core.files.uploadedfile import SimpleUploadedFile

from models_app.registry.models import ApiKey
from models_app.registry.services import api_key_cache_clear, api_key_revoke, hash_api_key
from tests.factories import AgentFactory

pytestmark = pytest.mark.django_db


@pytest.fixture
def every_log_record() -> Iterator[list[str]]:
    """Every record any logger handles, formatted with its traceback; all loggers at DEBUG meanwhile."""
    formatted: list[str] = []
    formatter = logging.Formatter("%(name)s %(levelname)s %(message)s")
    original_call_handlers = logging.Logger.callHandlers

    def recording(self: logging.Logger, record: logging.LogRecord) -> None:
        formatted.append(formatter.format(record) + " " + repr(record.args) + " " + repr(record.__dict__.get("request", "")))
        original_call_handlers(self, record)

    loggers = [logging.getLogger()] + [logger for logger in logging.Logger.manager.loggerDict.values() if isinstance(logger, logging.Logger)]
    levels = {logger: logger.level for logger in loggers}
    disabled = {logger: logger.disabled for logger in loggers}
    logging.disable(logging.NOTSET)
    for logger in loggers:
        logger.setLevel(logging.DEBUG)
        logger.disabled = False
    logging.Logger.callHandlers = recording
    try:
        yield formatted
    finally:
        logging.Logger.callHandlers = original_call_handlers
        for logger in loggers:
            logger.setLevel(levels[logger])
            logger.disabled = disabled[logger]


def header_variants(key: str) -> list[str]:
    return [
        f"Bearer {key}", f"bearer {key}", f"Bearer\t{key}", f"Bearer  {key}", f"Bearer{key}", key,
        f"Token {key}", f"Basic {key}", f"Bearer {key} extra", f" Bearer {key}", f"Bearer {key}\x00",
    ]


def send_everywhere(client, header: str) -> list[int]:
    auth = {"HTTP_AUTHORIZATION": header}
    statuses = [
        client.get("/api/v1/agents", **auth).status_code,
        client.get("/api/v1/agents/qa_agent/config", **auth).status_code,
        client.post("/api/v1/route", json.dumps({"agent": "qa_agent", "user_id": "u"}), content_type="application/json", **auth).status_code,
        client.post("/api/v1/outcomes", json.dumps({"events": [{"event_id": "e"}]}), content_type="application/json", **auth).status_code,
        client.get("/api/v1/costs/summary?budget=nope", **auth).status_code,
        client.post("/api/v1/costs/budget-check", "{broken", content_type="application/json", **auth).status_code,
        client.get("/api/v1/benchmarks/runs/999999", **auth).status_code,
        client.get("/api/v1/fine-tuning/jobs", **auth).status_code,
        client.post("/api/v1/audits/datasets", {"file": SimpleUploadedFile("a.jsonl", b"{}\n"), "agent": "ghost"}, **auth).status_code,
        client.get("/api/v1/experiments/none/results", **auth).status_code,
        client.get("/api/v1/no-such-path", **auth).status_code,
    ]
    return statuses


@pytest.mark.parametrize("debug", [True, False])
def test_no_key_reaches_a_log_record(client, settings, api_key_for, every_log_record, debug, tmp_path):
    settings.DEBUG = debug
    settings.MEDIA_ROOT = tmp_path
    AgentFactory(slug="qa_agent")
    valid = api_key_for("qa_agent")
    revoked = api_key_for("qa_agent")
    api_key_revoke(key=ApiKey.objects.get(hashed_key=hash_api_key(revoked)))
    unknown = "gk_" + "x" * 40
    seen_statuses = set()
    for key in (valid, revoked, unknown, "not-even-our-prefix-0123456789abcdef"):
        for header in header_variants(key):
            api_key_cache_clear()
            seen_statuses.update(send_everywhere(client, header))
    assert {200, 401, 404}.issubset(seen_statuses)  # the valid key went through, the others did not
    assert every_log_record, "the capture saw no record at all: it would not see a leak either"
    for key in (valid, revoked, unknown):
        secret_part = key[len("gk_"):]
        leaks = [record for record in every_log_record if secret_part in record]
        assert not leaks, leaks[:3]
