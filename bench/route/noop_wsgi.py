"""genesis.wsgi with bench/route/noop_urls.py as the URL conf, and `/bare/` served with no middleware.
Serve with: gunicorn --pythonpath bench/route noop_wsgi:application"""

import os
import sys
from collections.abc import Iterable
from pathlib import Path
from wsgiref.types import StartResponse, WSGIEnvironment

sys.path[:0] = [str(Path(__file__).resolve().parent), str(Path(__file__).resolve().parents[2])]
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "genesis.settings")

import django  # noqa: E402

django.setup()

from django.conf import settings  # noqa: E402

settings.ROOT_URLCONF = "noop_urls"

from genesis.wsgi import MiddlewareListWSGIHandler, split_application  # noqa: E402

project = split_application()
bare = MiddlewareListWSGIHandler([])


def application(environ: WSGIEnvironment, start_response: StartResponse) -> Iterable[bytes]:
    return (bare if environ.get("PATH_INFO", "").startswith("/bare/") else project)(environ, start_response)
