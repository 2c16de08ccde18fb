"""genesis.wsgi: /api/ requests go through settings.API_MIDDLEWARE only (no sessions, CSRF, auth,
messages, clickjacking or history middleware: bench/route measured them at a quarter of an API call),
everything else through the full stack."""

from __future__ import annotations

import io
import json

import pytest
from django.conf import settings
from django.core.signals import request_finished, request_started
from django.db import close_old_connections

pytestmark = pytest.mark.django_db


def call(path: str, *, method: str = "GET", host: str = "testserver", application=None,
         **headers: str) -> tuple[str, dict[str, str], bytes]:
    if application is None:
        from genesis.wsgi import application

    environ = {"REQUEST_METHOD": method, "PATH_INFO": path, "SERVER_NAME": "testserver", "SERVER_PORT": "80",
               "HTTP_HOST": host, "wsgi.input": io.BytesIO(b""), "wsgi.url_scheme": "http",
               "SERVER_PROTOCOL": "HTTP/1.1", **headers}
    answer: dict[str, object] = {}

    def start_response(status: str, headers: list[tuple[str, str]], exc_info=None):
        answer["status"], answer["headers"] = status, dict(headers)

    # As Django's test client does: the handler's close_old_connections would close the connection that
    # holds the test's transaction (the demo world) between requests.
    request_started.disconnect(close_old_connections)
    request_finished.disconnect(close_old_connections)
    try:
        body = b"".join(application(environ, start_response))
    finally:
        request_started.connect(close_old_connections)
        request_finished.connect(close_old_connections)
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
    assert settings.API_MIDDLEWARE == ["genesis.middleware.ApiJsonErrorsMiddleware",
                                       "django.middleware.security.SecurityMiddleware"]


def test_an_unknown_api_path_answers_json_on_the_short_chain_too():
    # The API's own handler is not reached for a path no route serves: the JSON errors middleware,
    # kept on the API chain, turns Django's HTML 404 into the API's error body.
    status, headers, body = call("/api/v1/no-such-thing")
    assert status.startswith("404") and headers["Content-Type"].startswith("application/json")
    assert json.loads(body)["code"] == "not_found"


@pytest.mark.parametrize("path", ["/api/v2/route", "/api/v1", "/api/"])
def test_a_path_under_api_outside_v1_is_a_json_404_too(path):
    # A client with the wrong version or a dropped slash is still an API client: it gets the API's error
    # body, not Django's HTML page.
    status, headers, body = call(path)
    assert status.startswith("404") and headers["Content-Type"].startswith("application/json"), (status, body[:100])
    assert json.loads(body)["code"] == "not_found"


def test_the_api_checks_the_host_header_as_the_rest_of_the_site_does(seeded_demo, api_key_for):
    # The short chain has no CommonMiddleware (which checks ALLOWED_HOSTS for every other path); the API
    # checks the host itself, before any view runs, and says so in its error shape.
    key = api_key_for("qa_agent")
    status, headers, body = call("/api/v1/agents/qa_agent/config", host="evil.example", HTTP_AUTHORIZATION=f"Bearer {key}")
    assert status.startswith("400") and headers["Content-Type"].startswith("application/json")
    error = json.loads(body)
    assert error["code"] == "malformed_request" and "evil.example" in error["detail"]
    for path in ("/api/v1/openapi.json", "/api/v1/no-such-thing"):
        assert call(path, host="evil.example")[0].startswith("400"), path
    # The probes and /metrics (the full stack) refuse it too, with the same JSON body: they are part of
    # the HTTP API, whose every error is {"detail", "code"} (it was Django's HTML 400 page).
    for path in ("/healthz", "/readyz", "/metrics"):
        status, headers, body = call(path, host="evil.example")
        assert status.startswith("400") and headers["Content-Type"].startswith("application/json"), (path, body[:80])
        assert json.loads(body)["code"] == "malformed_request"
    # An allowed host is served as before.
    assert call("/api/v1/agents/qa_agent/config", HTTP_AUTHORIZATION=f"Bearer {key}")[0].startswith("200")
    assert call("/api/v1/agents/qa_agent/config", host="localhost:8000", HTTP_AUTHORIZATION=f"Bearer {key}")[0].startswith("200")


def test_head_is_answered_wherever_get_is(seeded_demo, api_key_for):
    key = api_key_for("qa_agent")
    auth = {"HTTP_AUTHORIZATION": f"Bearer {key}"}
    status, get_headers, get_body = call("/api/v1/agents/qa_agent/config", **auth)
    status_head, head_headers, head_body = call("/api/v1/agents/qa_agent/config", method="HEAD", **auth)
    assert status.startswith("200") and status_head.startswith("200") and head_body == b""
    assert head_headers == get_headers and "ETag" in head_headers and get_body
    # The GET's other answers too: no key is 401, a conditional HEAD is 304.
    assert call("/api/v1/agents/qa_agent/config", method="HEAD")[0].startswith("401")
    assert call("/api/v1/agents/qa_agent/config", method="HEAD", HTTP_IF_NONE_MATCH=get_headers["ETag"], **auth)[0].startswith("304")
    assert call("/api/v1/openapi.json", method="HEAD")[1:] == (call("/api/v1/openapi.json")[1], b"")
    # The probes and /metrics (plain Django views, the full stack): HEAD is allowed; the WSGI server
    # (gunicorn, runserver) sends no body for it.
    assert call("/healthz", method="HEAD")[0].startswith("200")
    assert call("/readyz", method="HEAD")[0][:3] in ("200", "503")
    assert call("/metrics", method="HEAD")[0].startswith("200")
    # A path that serves no GET still refuses HEAD; a GET path's Allow names HEAD beside GET.
    status, headers, _ = call("/api/v1/route", method="HEAD")
    assert status.startswith("405") and headers["Allow"] == "POST"
    status, headers, body = call("/api/v1/agents/qa_agent/config", method="DELETE", **auth)
    assert status.startswith("405") and headers["Allow"] == "GET, HEAD" and json.loads(body)["code"] == "method_not_allowed"


def test_the_openapi_document_keeps_get_only(client):
    paths = client.get("/api/v1/openapi.json").json()["paths"]
    assert not any("head" in operations for operations in paths.values())
    assert "get" in paths["/api/v1/agents/{agent}/config"]


@pytest.mark.parametrize("path", ["/healthz", "/readyz", "/metrics", "/api/v1/openapi.json", "/api/v1/docs"])
@pytest.mark.parametrize("method", ["POST", "PUT", "DELETE"])
def test_a_method_the_probes_and_the_api_document_do_not_serve_is_a_json_405(path, method):
    # A client sending no CSRF cookie, as every probe and script does: the probes, /metrics and the API's
    # document answer GET and HEAD only, and any other method is the API's 405 — not the CSRF page's 403
    # (the probes are on the full stack) nor the document served to a DELETE.
    status, headers, body = call(path, method=method)
    assert status.startswith("405"), (status, body[:200])
    assert headers["Content-Type"].startswith("application/json")
    assert json.loads(body)["code"] == "method_not_allowed"
    assert headers["Allow"] == "GET, HEAD"


@pytest.mark.parametrize("path", ["/api/v1/agents/qa_agent/config", "/healthz"])
def test_a_host_not_allowed_is_the_json_400_before_the_https_redirect(settings, path):
    # Production redirects plain HTTP to HTTPS (SECURE_SSL_REDIRECT); the redirect reads the Host, and
    # SecurityMiddleware ran first: a Host not allowed met Django's HTML 400 there.
    from genesis.wsgi import split_application

    settings.SECURE_SSL_REDIRECT = True
    production = split_application()  # the middleware reads the setting when the chain is built
    status, headers, body = call(path, host="evil.example", application=production)
    assert status.startswith("400") and headers["Content-Type"].startswith("application/json"), (status, body[:100])
    assert json.loads(body)["code"] == "malformed_request"
    status, headers, _ = call("/api/v1/agents/qa_agent/config", application=production)
    assert status.startswith("301") and headers["Location"] == "https://testserver/api/v1/agents/qa_agent/config"


@pytest.mark.parametrize(("path", "method"), [("/api/v1/no-such-thing", "GET"), ("/api/v2/route", "GET"),
                                              ("/api/v1/agents/qa_agent/health", "DELETE")])
def test_the_json_error_bodies_keep_the_security_headers(path, method):
    # Second reviewer: the JSON-errors middleware stands outside SecurityMiddleware and replaced its answer,
    # headers and all.
    status, headers, _ = call(path, method=method)
    assert status[:3] in ("404", "405") and headers["Content-Type"].startswith("application/json")
    assert headers.get("X-Content-Type-Options") == "nosniff", (status, headers)
    assert headers.get("Referrer-Policy") == "same-origin", (status, headers)


def test_the_host_refusal_is_not_sniffed():
    status, headers, _ = call("/api/v1/agents/qa_agent/config", host="evil.example")
    assert status.startswith("400") and headers.get("X-Content-Type-Options") == "nosniff"


class BodyHeadersMiddleware:
    """Inside SecurityMiddleware, as GZipMiddleware, ConditionalGetMiddleware or LocaleMiddleware would
    be: headers that describe the answer's body, or say nothing about security."""

    def __init__(self, get_response):
        self.get_response = get_response

    def __call__(self, request):
        response = self.get_response(request)
        response["ETag"], response["Content-Language"], response["Vary"] = '"html-404"', "fr", "Accept-Language"
        response["X-Added-Later"] = "by a middleware nobody reviewed here"
        return response


@pytest.mark.parametrize(("path", "method"), [("/api/v1/no-such-thing", "GET"),
                                              ("/api/v1/agents/qa_agent/health", "DELETE")])
def test_the_json_error_bodies_keep_the_security_headers_only(settings, path, method):
    # The JSON body replaces the answer: an ETag or a language of the HTML page replaced would be false,
    # and a header some other middleware adds later is not copied unless it is listed as one to keep.
    from genesis.wsgi import MiddlewareListWSGIHandler

    settings.SECURE_HSTS_SECONDS = 3600
    chain = MiddlewareListWSGIHandler([*settings.API_MIDDLEWARE, f"{__name__}.BodyHeadersMiddleware"])
    status, headers, _ = call(path, method=method, application=chain, **{"wsgi.url_scheme": "https"})
    assert status[:3] in ("404", "405") and headers["Content-Type"].startswith("application/json")
    assert headers.get("Strict-Transport-Security") == "max-age=3600"
    assert headers.get("X-Content-Type-Options") == "nosniff" and headers.get("Referrer-Policy") == "same-origin"
    assert headers.get("Cross-Origin-Opener-Policy") == "same-origin"
    assert not {"ETag", "Content-Language", "Vary", "X-Added-Later"} & set(headers), headers


def test_on_the_full_chain_the_json_404_keeps_the_clickjacking_header_too(client):
    # Django's test client runs settings.MIDDLEWARE, as a deployment without genesis.wsgi's split would.
    response = client.get("/api/v1/no-such-thing")
    assert response.status_code == 404 and response.json()["code"] == "not_found"
    assert response["X-Frame-Options"] == "DENY" and response["X-Content-Type-Options"] == "nosniff"
