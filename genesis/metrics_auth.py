"""An optional bearer token for /metrics (genesis/urls.py wraps genesis.metrics.metrics_view with it).

The exposition names each agent's spend (`genesis_cost_usd_total{agent=…}`), budgets and rollout state.
With `GENESIS_METRICS_TOKEN` set, a scrape must send `Authorization: Bearer <token>` — Prometheus'
`authorization` scrape setting (README › Monitoring) — or it is answered 401; unset, /metrics stays
open, for a scraper that reaches the web process only over a private network."""

from __future__ import annotations

import functools
import hmac
from collections.abc import Callable

from django.conf import settings
from django.http import HttpRequest, HttpResponse

View = Callable[[HttpRequest], HttpResponse]


def presents_token(request: HttpRequest, token: str) -> bool:
    scheme, _, presented = request.headers.get("Authorization", "").partition(" ")
    # In constant time, and as bytes: compare_digest raises on a str with non-ASCII characters, which a
    # client may well send.
    return scheme.lower() == "bearer" and hmac.compare_digest(presented.strip().encode(), token.encode())


def metrics_token_required(view: View) -> View:
    @functools.wraps(view)
    def guarded(request: HttpRequest) -> HttpResponse:
        token = settings.GENESIS_METRICS_TOKEN
        if token and not presents_token(request, token):
            refused = HttpResponse("/metrics needs 'Authorization: Bearer <GENESIS_METRICS_TOKEN>'\n", status=401,
                                   content_type="text/plain; charset=utf-8")
            refused["WWW-Authenticate"] = 'Bearer realm="metrics"'
            return refused
        return view(request)

    return guarded
