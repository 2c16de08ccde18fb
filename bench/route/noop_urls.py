"""The project's URLs with one more endpoint on the same NinjaAPI: `POST /api/v1/bench/noop`, the
baseline `POST /api/v1/route` is measured against — same middleware, same URL depth, same API-key
auth, and nothing else (no body parsing, no work)."""

from django.http import HttpRequest, HttpResponse
from ninja import Router

from genesis.api import api

noop_router = Router(tags=["bench"])


@noop_router.post("/noop")
def noop(request: HttpRequest) -> HttpResponse:
    return HttpResponse(b"{}", content_type="application/json")


# Before genesis.urls reads api.urls, so the router is part of the one API.
api.add_router("/bench", noop_router)

from genesis.urls import urlpatterns  # noqa: E402,F401
