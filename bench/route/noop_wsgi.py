"""genesis.wsgi with bench/route/noop_urls.py as the URL conf (adds the no-op baseline endpoint).
Serve with: gunicorn --pythonpath bench/route noop_wsgi:application"""

import os
import sys
from pathlib import Path

sys.path[:0] = [str(Path(__file__).resolve().parent), str(Path(__file__).resolve().parents[2])]
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "genesis.settings")

import django  # noqa: E402

django.setup()

from django.conf import settings  # noqa: E402
from django.core.wsgi import get_wsgi_application  # noqa: E402

settings.ROOT_URLCONF = "noop_urls"
application = get_wsgi_application()
