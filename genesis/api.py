"""The one NinjaAPI, at /api/v1: API-key auth, error handlers, and the routers of each app.

Every error is JSON with a `detail` string: 401 missing/invalid key, 403 key not allowed for that
agent, 404 unknown agent/experiment, 422 invalid body (the `errors` list names each field), 409 refused
by state. Domain errors raised by services are mapped here and nowhere else.
"""

from __future__ import annotations

import logging
from typing import Any

from django.http import Http404, HttpRequest, HttpResponse
from ninja import NinjaAPI
from ninja.errors import AuthenticationError, HttpError, ValidationError
from ninja.security import HttpBearer

from genesis.errors import DomainError
from models_app.services import ApiPrincipal, api_key_authenticate


logger = logging.getLogger(__name__)


class ApiKeyAuth(HttpBearer):
    def authenticate(self, request: HttpRequest, token: str) -> ApiPrincipal | None:
        return api_key_authenticate(raw_key=token)


api = NinjaAPI(
    title="Genesis control plane",
    version="1",
    description="Routing, outcomes, experiments, benchmarks and costs for fine-tuned agent models.",
    auth=ApiKeyAuth(),
    urls_namespace="api-v1",
)


def _field_name(location: list[Any]) -> str:
    # ninja prefixes the parameter source and name ("body", "payload"); people think in fields.
    parts = [str(part) for part in location]
    if len(parts) >= 2 and parts[0] in {"body", "query", "path", "form", "file"}:
        parts = parts[2:] if len(parts) > 2 else parts[1:]
    return ".".join(parts) or "body"


@api.exception_handler(ValidationError)
def on_validation_error(request: HttpRequest, exc: ValidationError) -> HttpResponse:
    errors = [{"field": _field_name(list(error.get("loc", []))), "message": error.get("msg", "")} for error in exc.errors]
    detail = "; ".join(f"{error['field']}: {error['message']}" for error in errors)
    return api.create_response(request, {"detail": detail, "errors": errors}, status=422)


@api.exception_handler(AuthenticationError)
def on_authentication_error(request: HttpRequest, exc: AuthenticationError) -> HttpResponse:
    return api.create_response(
        request, {"detail": "missing or invalid API key: send 'Authorization: Bearer <key>'"}, status=401
    )


@api.exception_handler(DomainError)
def on_domain_error(request: HttpRequest, exc: DomainError) -> HttpResponse:
    return api.create_response(request, {"detail": exc.message}, status=exc.status_code)


@api.exception_handler(HttpError)
def on_http_error(request: HttpRequest, exc: HttpError) -> HttpResponse:
    # ninja answers an unparsable JSON body with 400; the contract calls every invalid body 422.
    status = 422 if exc.status_code == 400 else exc.status_code
    return api.create_response(request, {"detail": str(exc)}, status=status)


@api.exception_handler(Exception)
def on_unexpected_error(request: HttpRequest, exc: Exception) -> HttpResponse:
    logger.exception("unexpected error answering %s %s", request.method, request.path)
    return api.create_response(request, {"detail": "internal error; it has been logged"}, status=500)


@api.exception_handler(Http404)
def on_not_found(request: HttpRequest, exc: Http404) -> HttpResponse:
    return api.create_response(request, {"detail": str(exc) or "not found"}, status=404)


def _mount_routers() -> None:
    from audits.api import router as audits_router
    from costs.api import router as costs_router
    from experiments.api import router as experiments_router
    from launch.api import router as launch_router
    from models_app.api import router as models_router

    # Experiments first: POST /route is the hot path, and URLs are matched in this order.
    api.add_router("/", experiments_router)
    api.add_router("/", models_router)
    api.add_router("/", costs_router)
    api.add_router("/", audits_router)
    api.add_router("/", launch_router)


_mount_routers()
