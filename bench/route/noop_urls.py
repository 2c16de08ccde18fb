"""The project's URLs with two more endpoints for bench/route/run.py:

- `POST /api/v1/bench/noop` on the same NinjaAPI: the same middleware, URL depth and API-key auth as
  every API call, and nothing else (no body parsing, no work);
- `POST /bare/route`: the baseline the issue sets — a bare Django + django-ninja endpoint with the same
  bearer check and the same body schema as /route, served with no middleware at all (noop_wsgi.py),
  answering a fixed body of /route's shape.
"""

import json

from django.http import HttpRequest, HttpResponse
from django.urls import path
from ninja import NinjaAPI, Router

from experiments.api import RouteIn
from genesis.api import ApiKeyAuth, api

noop_router = Router(tags=["bench"])


@noop_router.post("/noop")
def noop(request: HttpRequest) -> HttpResponse:
    return HttpResponse(b"{}", content_type="application/json")


# Before genesis.urls reads api.urls, so the router is part of the one API.
api.add_router("/bench", noop_router)

bare_api = NinjaAPI(title="bare baseline", auth=ApiKeyAuth(), urls_namespace="bare", docs_url=None, openapi_url=None)
BARE_ANSWER = {"agent": "qa_agent", "model": "open-mistral-7b", "provider": "simulator", "variant": "live",
               "experiment": None, "stage_percent": None}


@bare_api.post("/route")
def bare_route(request: HttpRequest, payload: RouteIn) -> HttpResponse:
    return HttpResponse(json.dumps({**BARE_ANSWER, "agent": payload.agent}), content_type="application/json")


from genesis.urls import urlpatterns as project_urlpatterns  # noqa: E402

urlpatterns = [*project_urlpatterns, path("bare/", bare_api.urls)]
