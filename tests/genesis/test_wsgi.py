"""genesis.wsgi: /api/ requests go through settings.API_MIDDLEWARE only (no sessions, CSRF, auth,
messages, clickjacking or history middleware: bench/route measured them at a quarter of an API call),
everything else through the full stack."""

from __future__ import annotations

import io
import json

import pytest
from django.conf import settings

pytestmark = pytest.mark.django_db


def call(path: str) -> tuple[str, dict[str, str], bytes]:
    from genesis.wsgi import application

    environ = {"REQUEST_METHOD": "GET", "PATH_INFO": path, "SERVER_NAME": "testserver", "SERVER_PORT": "80",
               "HTTP_HOST": "testserver", "wsgi.input": io.BytesIO(b""), "wsgi.url_scheme": "http",
               "SERVER_PROTOCOL": "HTTP/1.1"}
    answer: dict[str, object] = {}

    def start_response(status: str, headers: list[tuple[str, str]], exc_info=None):
        answer["status"], answer["headers"] = status, dict(headers)

    body = b"".join(application(environ, start_response))
    return str(answer["status"]), answer["headers"], body


def test_api_requests_skip_the_middleware_only_the_admin_needs():
    status, headers, body = call("/api/v1/agents/qa_agent/health")
    assert status.startswith("401") and b"API key" in body
    assert "X-Frame-Options" not in headers and "Vary" not in headers  # no clickjacking, no session middleware
    assert headers.get("X-Content-Type-Options") == "nosniff"  # SecurityMiddleware still answers


def test_the_admin_keeps_the_full_stack():
    status, headers, _ = call("/admin/login/")
    assert status.startswith("200")
    assert headers["X-Frame-Options"] == "DENY" and "Cookie" in headers.get("Vary", "")
    assert settings.API_MIDDLEWARE == ["django.middleware.security.SecurityMiddleware",
                                       "genesis.middleware.ApiJsonErrorsMiddleware"]


def test_an_unknown_api_path_answers_json_on_the_short_chain_too():
    # The API's own handler is not reached for a path no route serves: the JSON errors middleware,
    # kept on the API chain, turns Django's HTML 404 into the API's error body.
    status, headers, body = call("/api/v1/no-such-thing")
    assert status.startswith("404") and headers["Content-Type"].startswith("application/json")
    assert json.loads(body)["code"] == "not_found"
