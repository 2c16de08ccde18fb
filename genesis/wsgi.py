"""The WSGI application: API calls through a short middleware stack, everything else through all of it.

`/api/` requests use none of what sessions, CSRF, authentication, messages, clickjacking headers,
history and the django-prometheus middlewares give the admin (API calls authenticate by bearer key,
ninja views are CSRF-exempt, and their metrics are the genesis_* ones), yet that stack cost a quarter
of an API call's time (bench/route). So /api/ has a handler of its own built from
`settings.API_MIDDLEWARE`; the admin, /metrics and the probes keep `settings.MIDDLEWARE`.
"""

import os
from wsgiref.types import StartResponse, WSGIApplication, WSGIEnvironment

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "genesis.settings")

import django  # noqa: E402
from django.conf import settings  # noqa: E402
from django.core.handlers.wsgi import WSGIHandler  # noqa: E402
from django.http import HttpResponseBase  # noqa: E402

from genesis.middleware import API_PREFIX  # noqa: E402  (the paths the API chain answers for)


class MiddlewareListWSGIHandler(WSGIHandler):
    """A WSGIHandler whose middleware chain is `middleware` instead of `settings.MIDDLEWARE`."""

    def __init__(self, middleware: list[str]) -> None:
        self._middleware = list(middleware)
        super().__init__()

    def load_middleware(self, is_async: bool = False) -> None:
        # BaseHandler reads settings.MIDDLEWARE; swapped only while the chain is built, at start-up.
        full = settings.MIDDLEWARE
        settings.MIDDLEWARE = self._middleware
        try:
            super().load_middleware(is_async)
        finally:
            settings.MIDDLEWARE = full


def split_application() -> WSGIApplication:
    django.setup(set_prefix=False)
    api_handler, full_handler = MiddlewareListWSGIHandler(settings.API_MIDDLEWARE), WSGIHandler()

    def application(environ: WSGIEnvironment, start_response: StartResponse) -> HttpResponseBase:
        handler = api_handler if environ.get("PATH_INFO", "").startswith(API_PREFIX) else full_handler
        return handler(environ, start_response)

    return application


application = split_application()
