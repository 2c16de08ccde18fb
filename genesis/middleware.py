"""Keeps the API's promise that every error is JSON `{"detail", "code"}`, also for the answers Django
gives before the API's own handlers run: an unknown path under /api/v1/ (Django's HTML 404) and a
method the path does not serve (ninja's empty 405)."""

from __future__ import annotations

import json
from collections.abc import Callable

from django.http import HttpRequest, HttpResponse

API_PREFIX = "/api/v1/"
_JSON_BODIES = {
    404: ("not_found", "no such API path: see /api/v1/docs for the operations"),
    405: ("method_not_allowed", "this path does not serve that method"),
}


class ApiJsonErrorsMiddleware:
    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        response = self.get_response(request)
        if (
            response.status_code in _JSON_BODIES
            and request.path.startswith(API_PREFIX)
            and not response.get("Content-Type", "").startswith("application/json")
        ):
            code, detail = _JSON_BODIES[response.status_code]
            if response.status_code == 405 and response.get("Allow"):
                detail = f"{detail}; allowed: {response['Allow']}"
            replacement = HttpResponse(json.dumps({"detail": detail, "code": code}), status=response.status_code,
                                       content_type="application/json")
            if response.get("Allow"):
                replacement["Allow"] = response["Allow"]
            return replacement
        return response
