"""The one NinjaAPI, at /api/v1: API-key auth, error handlers, and the routers of each app.

Every error is JSON `{"detail": str, "code": str}` (codes in genesis.errors.ERROR_CODES and the
README): 401 missing/invalid key, 403 key not allowed for that agent, 404 unknown agent/experiment,
409 refused by state, 413 body too large, 400 unparsable multipart, 422 invalid field (the `errors`
list names each), 503 database unreachable (with Retry-After). Domain errors raised by services and
Django's request-parsing errors are mapped here and nowhere else; the OpenAPI document declares each
of these statuses on every operation that can answer it.
"""

from __future__ import annotations

import logging
from typing import Any

from django.conf import settings
from django.core.exceptions import RequestDataTooBig, TooManyFieldsSent, TooManyFilesSent
from django.db import DataError, InterfaceError, OperationalError
from django.http import Http404, HttpRequest, HttpResponse, UnreadablePostError
from django.http.multipartparser import MultiPartParserError
from ninja import NinjaAPI
from ninja.errors import AuthenticationError, HttpError, ValidationError
from ninja.openapi.schema import OpenAPISchema
from ninja.security import HttpBearer

from audits.api import router as audits_router
from costs.api import router as costs_router
from experiments.api import OPENAPI_SCHEMAS as experiments_schemas
from experiments.api import router as experiments_router
from genesis.errors import WHOLE_BODY, DomainError, field_errors
from genesis.middleware import get_and_head_only
from genesis.openapi import declare_error_responses, declare_schemas
from genesis.uploads import UploadTooLarge
from launch.api import router as launch_router
from models_app.api import router as models_router
from models_app.registry.services import ApiPrincipal, api_key_authenticate

logger = logging.getLogger(__name__)

# Seconds a client should wait before retrying after a 503 (the database out of reach).
RETRY_AFTER_SECONDS = 5


class ApiKeyAuth(HttpBearer):
    """`Authorization: Bearer <key>`. Parsed here rather than by ninja's HttpBearer.__call__, which
    logs the whole header (the key) at ERROR when DEBUG is on and the scheme is malformed."""

    def __call__(self, request: HttpRequest) -> ApiPrincipal | None:
        scheme, _, token = request.headers.get(self.header, "").partition(" ")
        if scheme.lower() != self.openapi_scheme or not token:
            return None
        return self.authenticate(request, token)

    def authenticate(self, request: HttpRequest, token: str) -> ApiPrincipal | None:
        return api_key_authenticate(raw_key=token)


class GenesisAPI(NinjaAPI):
    def get_openapi_schema(
        self, *, path_prefix: str | None = None, path_params: dict[str, Any] | None = None
    ) -> OpenAPISchema:
        schema = super().get_openapi_schema(path_prefix=path_prefix, path_params=path_params)
        declare_error_responses(schema)  # in place
        declare_schemas(schema, experiments_schemas)
        return schema


api = GenesisAPI(
    title="Genesis control plane",
    version="1",
    description="Routing, outcomes, experiments, benchmarks and costs for fine-tuned agent models. "
                "Every error is JSON {\"detail\", \"code\"}; the codes are listed in the README.",
    auth=ApiKeyAuth(),
    urls_namespace="api-v1",
    # The document and its docs page are plain views, not operations: without this they served any method.
    docs_decorator=get_and_head_only,
)


def error_response(request: HttpRequest, *, status: int, code: str, detail: str, **extra: Any) -> HttpResponse:
    if status == 422 and "errors" not in extra:
        # Every 422 names its fields, not only pydantic's: a service's refusal, an unparsable body.
        extra["errors"] = field_errors(detail)
    return api.create_response(request, {"detail": detail, "code": code, **extra}, status=status)


def _field_name(location: list[Any]) -> str:
    # ninja prefixes the parameter source and name ("body", "payload"); people think in fields.
    parts = [str(part) for part in location]
    if parts[:1] == ["body"] and len(parts) <= 2:
        return WHOLE_BODY  # the body's own parameter ("payload"): the body as a whole is missing or wrong
    if len(parts) >= 2 and parts[0] in {"body", "query", "path", "form", "file"}:
        parts = parts[2:] if len(parts) > 2 else parts[1:]
    return ".".join(parts) or WHOLE_BODY


@api.exception_handler(ValidationError)
def on_validation_error(request: HttpRequest, exc: ValidationError) -> HttpResponse:
    errors = [{"field": _field_name(list(error.get("loc", []))), "message": error.get("msg", "")} for error in exc.errors]
    detail = "; ".join(f"{error['field']}: {error['message']}" for error in errors)
    return error_response(request, status=422, code="invalid_field", detail=detail, errors=errors)


@api.exception_handler(AuthenticationError)
def on_authentication_error(request: HttpRequest, exc: AuthenticationError) -> HttpResponse:
    return error_response(
        request, status=401, code="unauthenticated",
        detail="missing or invalid API key: send 'Authorization: Bearer <key>'",
    )


@api.exception_handler(DomainError)
def on_domain_error(request: HttpRequest, exc: DomainError) -> HttpResponse:
    response = error_response(request, status=exc.status_code, code=exc.code, detail=exc.api_message)
    if exc.status_code == 503:
        response["Retry-After"] = str(RETRY_AFTER_SECONDS)
    return response


@api.exception_handler(HttpError)
def on_http_error(request: HttpRequest, exc: HttpError) -> HttpResponse:
    # ninja answers an unparsable JSON body with 400; the contract calls every invalid body 422.
    status = 422 if exc.status_code == 400 else exc.status_code
    code = {401: "unauthenticated", 403: "forbidden", 404: "not_found", 422: "invalid_field"}.get(status, "malformed_request")
    return error_response(request, status=status, code=code, detail=str(exc))


@api.exception_handler(RequestDataTooBig)
def on_body_too_large(request: HttpRequest, exc: RequestDataTooBig) -> HttpResponse:
    limit = settings.DATA_UPLOAD_MAX_MEMORY_SIZE
    return error_response(
        request, status=413, code="payload_too_large",
        detail=f"the request body is larger than the API accepts ({limit:,} bytes, files in multipart "
               f"uploads excepted); send fewer events per request (POST /outcomes takes at most 1 000)",
    )


@api.exception_handler(UploadTooLarge)
def on_upload_too_large(request: HttpRequest, exc: UploadTooLarge) -> HttpResponse:
    # Raised while the body is parsed, before the endpoint runs: nothing was stored (genesis/uploads.py).
    return error_response(request, status=413, code="payload_too_large", detail=str(exc))


# ninja types a handler's exception as `E | type[E]`.
def _malformed(request: HttpRequest, exc: Exception | type[Exception]) -> HttpResponse:
    return error_response(request, status=400, code="malformed_request", detail=f"the request body could not be parsed: {exc}")


for _parse_error in (MultiPartParserError, TooManyFieldsSent, TooManyFilesSent, UnreadablePostError):
    api.add_exception_handler(_parse_error, _malformed)


def _database_unavailable(request: HttpRequest, exc: Exception | type[Exception]) -> HttpResponse:
    # The database (or the connection to it) failed: worth retrying, not a bug. Hosts and
    # credentials stay in the log.
    logger.warning("database unavailable answering %s %s: %s", request.method, request.path, type(exc).__name__)
    response = error_response(
        request, status=503, code="service_unavailable",
        detail=f"the database is unreachable; retry in {RETRY_AFTER_SECONDS} s",
    )
    response["Retry-After"] = str(RETRY_AFTER_SECONDS)
    return response


for _db_error in (OperationalError, InterfaceError):
    api.add_exception_handler(_db_error, _database_unavailable)


@api.exception_handler(DataError)
def on_unstorable_text(request: HttpRequest, exc: DataError) -> HttpResponse:
    # The validation layer (genesis/validation.py) refuses NUL before any query, naming the field; this
    # only keeps an endpoint that forgot to use it from answering 500 for the client's bad text.
    if "NUL" not in str(exc):
        return on_unexpected_error(request, exc)
    logger.error("%s %s reached the database with a NUL: use genesis.validation types", request.method, request.path)
    return error_response(request, status=422, code="invalid_field",
                          detail="a text value contains the NUL character (\\u0000), which cannot be stored")


@api.exception_handler(Exception)
def on_unexpected_error(request: HttpRequest, exc: Exception) -> HttpResponse:
    logger.exception("unexpected error answering %s %s", request.method, request.path)
    return error_response(request, status=500, code="internal_error", detail="internal error; it has been logged")


@api.exception_handler(Http404)
def on_not_found(request: HttpRequest, exc: Http404) -> HttpResponse:
    return error_response(request, status=404, code="not_found", detail=str(exc) or "not found")


def _mount_routers() -> None:
    # Experiments first: POST /route is the hot path, and URLs are matched in this order.
    api.add_router("/", experiments_router)
    api.add_router("/", models_router)
    api.add_router("/", costs_router)
    api.add_router("/", audits_router)
    api.add_router("/", launch_router)


_mount_routers()
