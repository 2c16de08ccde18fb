"""Keeps the API's promises on its short middleware chain (genesis/wsgi.py), where the answers Django
gives before the API's own handlers run would otherwise break them:

- every error is JSON `{"detail", "code"}`: an unknown path under /api/ (Django's HTML 404) and a
  method the path does not serve (ninja's empty 405) are given that body;
- the Host header is checked against ALLOWED_HOSTS, as CommonMiddleware does on every other path (the
  API chain leaves CommonMiddleware out): a host not allowed is a JSON 400 and reaches no view — on the
  probes and /metrics too, which is why both chains list this first, before SecurityMiddleware's HTTPS
  redirect and CommonMiddleware's check (each reads the Host and answers Django's HTML 400);
- HEAD is answered wherever GET is (RFC 9110 §9.3.2; probes and caches use it): the GET operation
  runs and its status and headers are sent without the body. ninja routes by method
  and the OpenAPI document lists GET only, as is usual.

`get_and_head_only` gives the views that read and are not ninja operations — the probes, /metrics and
the API's document — the same 405.
"""

from __future__ import annotations

import functools
import json
import logging
from collections.abc import Callable

from django.core.exceptions import DisallowedHost
from django.http import HttpRequest, HttpResponse
from django.views.decorators.csrf import csrf_exempt

# Every path under /api/ (genesis/wsgi.py sends them all down the API chain), not only /api/v1/: a client
# with another version or a dropped slash is an API client too, and gets the API's error body.
API_PREFIX = "/api/"
# The probes and /metrics are part of the HTTP API too (no key): their Host refusal is the same JSON. Their
# views answer GET and HEAD themselves (get_and_head_only, below), so nothing else here applies to them.
PROBE_PATHS = frozenset({"/healthz", "/readyz", "/metrics"})
_JSON_BODIES = {
    404: ("not_found", "no such API path: see /api/v1/docs for the operations"),
    405: ("method_not_allowed", "this path does not serve that method"),
}
# What the JSON error bodies keep of the answer they replace: SecurityMiddleware's headers (HSTS on
# HTTPS, nosniff, referrer policy, cross-origin opener policy) and, on the full chain, the clickjacking
# one (XFrameOptionsMiddleware).
SECURITY_HEADERS = (
    "Strict-Transport-Security",
    "X-Content-Type-Options",
    "Referrer-Policy",
    "Cross-Origin-Opener-Policy",
    "X-Frame-Options",
)
# Django logs a DisallowedHost under this logger name wherever it is raised; the API's answer does too.
security_logger = logging.getLogger("django.security.DisallowedHost")


def json_error(status: int, code: str, detail: str) -> HttpResponse:
    response = HttpResponse(json.dumps({"detail": detail, "code": code}), status=status, content_type="application/json")
    # The Host refusal is answered before SecurityMiddleware runs: no browser may read the body as anything else.
    response["X-Content-Type-Options"] = "nosniff"
    return response


def method_not_allowed(allow: str) -> HttpResponse:
    code, detail = _JSON_BODIES[405]
    response = json_error(405, code, f"{detail}; allowed: {allow}")
    response["Allow"] = allow
    return response


View = Callable[..., HttpResponse]


def get_and_head_only(view: View) -> View:
    """GET and HEAD, as Django's require_safe, but any other method is the API's JSON 405. CSRF-exempt:
    on the full stack a POST without a CSRF cookie (every probe and script) met the CSRF check's HTML 403
    before the method was judged, and these views only read."""

    @functools.wraps(view)
    def guarded(request: HttpRequest, *args: object, **kwargs: object) -> HttpResponse:
        if request.method not in ("GET", "HEAD"):
            return method_not_allowed("GET, HEAD")
        return view(request, *args, **kwargs)

    return csrf_exempt(guarded)


class ApiJsonErrorsMiddleware:
    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        probe = request.path in PROBE_PATHS
        if not (probe or request.path.startswith(API_PREFIX)):
            return self.get_response(request)
        try:
            request.get_host()
        except DisallowedHost as exc:
            security_logger.error(str(exc), extra={"status_code": 400, "request": request})
            return json_error(400, "malformed_request", f"this server does not answer for that Host header: {exc}")
        if probe:
            return self.get_response(request)
        head = request.method == "HEAD"
        if head:
            request.method = "GET"
        response = self._json_error_body(request, self.get_response(request))
        if head:
            request.method = "HEAD"
            _drop_body(response)
        return response

    @staticmethod
    def _json_error_body(request: HttpRequest, response: HttpResponse) -> HttpResponse:
        if response.status_code not in _JSON_BODIES or response.get("Content-Type", "").startswith("application/json"):
            return response
        allow = response.get("Allow")
        if response.status_code == 405 and allow:
            if "GET" in allow.replace(" ", "").split(","):
                allow = f"{allow}, HEAD"  # answered for every GET operation (above)
            replacement = method_not_allowed(allow)
        else:
            code, detail = _JSON_BODIES[response.status_code]
            replacement = json_error(response.status_code, code, detail)
        # The security headers the middleware inside this one set on the answer replaced. Only those: the
        # rest describe the body replaced (an ETag, a Content-Encoding, a Content-Language) or the
        # request it was negotiated for (Vary), and a header a middleware added later is not copied
        # until someone decides here that it should be.
        for header in SECURITY_HEADERS:
            if header in response:
                replacement.headers.setdefault(header, response[header])
        return replacement


def _drop_body(response: HttpResponse) -> None:
    """HEAD: the GET answer's headers, unchanged, without its body."""
    if response.streaming:
        return  # the WSGI server sends no body for HEAD (gunicorn and runserver do so)
    length = response.get("Content-Length")
    response.content = b""
    if length is not None:
        response["Content-Length"] = length
